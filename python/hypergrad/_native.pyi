from typing import Any, Callable, Optional

import numpy as np
import numpy.typing as npt

__version__: str

def hypergradient(
    problem: str, x: Any, y: Any, x_val: Any, y_val: Any, theta: Any, options: Optional[dict[str, Any]]
) -> str: ...
def run(
    problem: str,
    x: Any,
    y: Any,
    x_val: Any,
    y_val: Any,
    x_test: Any,
    y_test: Any,
    theta: Any,
    options: Optional[dict[str, Any]],
    callback: Optional[Callable[[str], Any]] = ...,
) -> tuple[str, str]: ...
def info() -> str: ...
def split_indices(n: int, fractions: list[float], seed: int) -> list[list[int]]: ...
def fold_indices(n: int, k: int, seed: int) -> list[tuple[list[int], list[int]]]: ...
def network_probabilities(
    sizes: list[int], activation: str, params: npt.NDArray[np.float64], x: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]: ...
def _spin(seconds: float, panic: bool = ...) -> float: ...
