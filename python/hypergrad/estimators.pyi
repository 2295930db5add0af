from typing import Any, Callable, Literal, Optional, Union

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

_RandomState = Union[int, np.random.RandomState, None]
_Callback = Optional[Callable[[dict[str, Any]], Optional[bool]]]
_Device = Literal["auto", "cpu", "cuda"]

def holdout_indices(
    n: int, val_fraction: float, random_state: _RandomState = ...
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]: ...
def cv_folds(
    n: int, k: int, random_state: _RandomState = ...
) -> list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]]: ...

class _L1HO(RegressorMixin, BaseEstimator):
    criterion: Literal["holdout", "cv"]
    val_fraction: float
    cv: int
    method: str
    search: str
    max_steps: int
    tol: float
    random_state: _RandomState
    device: _Device
    options: Optional[dict[str, Any]]
    callback: _Callback
    verbose: Union[bool, int]
    coef_: npt.NDArray[np.float64]
    theta_: npt.NDArray[np.float64]
    best_loss_: float
    n_iter_: int
    trace_: list[dict[str, Any]]
    n_features_in_: int
    train_indices_: npt.NDArray[np.int64]
    val_indices_: npt.NDArray[np.int64]
    def __init__(
        self,
        criterion: Literal["holdout", "cv"] = ...,
        val_fraction: float = ...,
        cv: int = ...,
        method: str = ...,
        search: str = ...,
        max_steps: int = ...,
        tol: float = ...,
        random_state: _RandomState = ...,
        device: _Device = ...,
        options: Optional[dict[str, Any]] = ...,
        callback: _Callback = ...,
        verbose: Union[bool, int] = ...,
    ) -> None: ...
    def fit(self, X: Any, y: npt.ArrayLike) -> "_L1HO": ...
    def predict(self, X: Any) -> npt.NDArray[np.float64]: ...

class LassoHO(_L1HO):
    alpha_: float

class ElasticNetHO(_L1HO):
    alpha_: float
    l2_: float

class WeightedLassoHO(_L1HO):
    alphas_: npt.NDArray[np.float64]

class HyperCleaner(ClassifierMixin, BaseEstimator):
    method: str
    curvature: Optional[str]
    outer_steps: int
    batch_size: Optional[int]
    inner_steps: Optional[int]
    l2: float
    standardize: bool
    model: str
    activation: str
    inner_solver: Optional[str]
    inner_tol: Optional[float]
    precision: Optional[Literal["f32", "f64"]]
    device: _Device
    random_state: _RandomState
    options: Optional[dict[str, Any]]
    callback: _Callback
    verbose: Union[bool, int]
    classes_: npt.NDArray[Any]
    sample_weight_: npt.NDArray[np.float64]
    theta_: npt.NDArray[np.float64]
    coef_: npt.NDArray[np.float64]
    layer_sizes_: Optional[list[int]]
    activation_: Optional[str]
    mean_: npt.NDArray[np.float64]
    scale_: npt.NDArray[np.float64]
    trace_: list[dict[str, Any]]
    n_features_in_: int
    def __init__(
        self,
        method: str = ...,
        curvature: Optional[str] = ...,
        outer_steps: int = ...,
        batch_size: Optional[int] = ...,
        inner_steps: Optional[int] = ...,
        l2: float = ...,
        standardize: bool = ...,
        model: str = ...,
        activation: str = ...,
        inner_solver: Optional[str] = ...,
        inner_tol: Optional[float] = ...,
        precision: Optional[Literal["f32", "f64"]] = ...,
        device: _Device = ...,
        random_state: _RandomState = ...,
        options: Optional[dict[str, Any]] = ...,
        callback: _Callback = ...,
        verbose: Union[bool, int] = ...,
    ) -> None: ...
    def fit(
        self,
        X: Any,
        y: npt.ArrayLike,
        X_val: Optional[Any] = ...,
        y_val: Optional[npt.ArrayLike] = ...,
    ) -> "HyperCleaner": ...
    def decision_function(self, X: Any) -> npt.NDArray[np.float64]: ...
    def predict(self, X: Any) -> npt.NDArray[Any]: ...
    def predict_proba(self, X: Any) -> npt.NDArray[np.float64]: ...
