"""hypergrad: hypergradients and bilevel optimisation, from Python.

The functions mirror the command line ``hypergrad``::

    import hypergrad as hg
    hg.info()                                            # `hypergrad info --json`
    hg.hypergradient("ridge", X, y, X_val, y_val, theta=0.0, method="cg")   # `grad --json`
    hg.run("hyperclean", X, y, X_val, y_val, method="nhgd", outer_steps=20) # `run --json`

and the scikit-learn estimators ``LassoHO``, ``ElasticNetHO``, ``WeightedLassoHO`` (ℓ1
penalties chosen by hypergradient descent on a held-out or cross-validation criterion) and
``HyperCleaner`` (per-sample weights that clean corrupted labels) live in
``hypergrad.estimators`` (they need scikit-learn) and are re-exported here.
"""

from . import _native
from ._api import hypergradient, info, run

__version__ = _native.__version__

_ESTIMATORS = ("LassoHO", "ElasticNetHO", "WeightedLassoHO", "HyperCleaner")

__all__ = ["__version__", "info", "hypergradient", "run", *_ESTIMATORS]


def __getattr__(name):
    # The estimators import scikit-learn, which the functions above do not need.
    if name in _ESTIMATORS:
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'hypergrad' has no attribute '{name}'")


def __dir__():
    return sorted(list(globals()) + list(_ESTIMATORS))
