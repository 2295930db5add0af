from ._api import hypergradient as hypergradient, info as info, run as run
from .estimators import (
    ElasticNetHO as ElasticNetHO,
    HyperCleaner as HyperCleaner,
    LassoHO as LassoHO,
    WeightedLassoHO as WeightedLassoHO,
)

__version__: str
__all__: list[str]
