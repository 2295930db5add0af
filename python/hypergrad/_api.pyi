import os
from typing import Any, Callable, Literal, Optional, Union

import numpy as np
import numpy.typing as npt

_Array = Union[npt.ArrayLike, Any]  # a NumPy array or a SciPy sparse matrix
_Theta = Union[None, float, npt.ArrayLike]
_Device = Literal["auto", "cpu", "cuda"]
_Path = Union[str, os.PathLike[str], None]
_Record = dict[str, Any]

def info() -> dict[str, Any]: ...
def hypergradient(
    problem: str,
    X: _Array,
    y: npt.ArrayLike,
    X_val: _Array,
    y_val: npt.ArrayLike,
    *,
    theta: _Theta = ...,
    hyper: Optional[str] = ...,
    method: Optional[str] = ...,
    device: _Device = ...,
    **options: Any,
) -> dict[str, Any]: ...
def run(
    problem: str,
    X: _Array,
    y: npt.ArrayLike,
    X_val: _Array,
    y_val: npt.ArrayLike,
    *,
    X_test: Optional[_Array] = ...,
    y_test: Optional[npt.ArrayLike] = ...,
    theta: _Theta = ...,
    hyper: Optional[str] = ...,
    method: Optional[str] = ...,
    outer_steps: int = ...,
    outer_opt: Optional[str] = ...,
    device: _Device = ...,
    trace: _Path = ...,
    checkpoint: _Path = ...,
    callback: Optional[Callable[[_Record], Optional[bool]]] = ...,
    verbose: bool = ...,
    **options: Any,
) -> dict[str, Any]: ...
