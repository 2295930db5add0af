"""Folds and grid points across machines on Dask (issue 24 item 7): the estimators pickle, so
joblib's Dask backend runs scikit-learn's searches on a cluster's worker processes. The test
starts a LocalCluster of two worker processes (what a real cluster is, on one machine) and
checks that the distributed search is the serial one, number for number, and that the fits
ran in the workers."""

import sys

import numpy as np
import pytest
from sklearn.datasets import make_regression
from sklearn.model_selection import GridSearchCV, KFold

import hypergrad as hg

distributed = pytest.importorskip("dask.distributed")
joblib = pytest.importorskip("joblib")


@pytest.fixture(scope="module")
def cluster():
    # Two single-threaded worker processes; no dashboard (no port to bind in CI).
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            yield client


def test_gridsearch_on_a_dask_cluster_is_the_serial_search(cluster):
    x, y = make_regression(n_samples=160, n_features=60, n_informative=8, noise=10.0,
                           random_state=1)
    grid = {"val_fraction": [0.2, 0.3, 0.4]}
    folds = KFold(3, shuffle=True, random_state=0)
    serial = GridSearchCV(hg.LassoHO(max_steps=5), grid, cv=folds, n_jobs=1).fit(x, y)
    with joblib.parallel_backend("dask"):
        spread = GridSearchCV(hg.LassoHO(max_steps=5), grid, cv=folds, n_jobs=-1).fit(x, y)
    # The 9 fits ran in the worker processes: each imported hypergrad there.
    imported = cluster.run(lambda: "hypergrad" in sys.modules)
    assert len(imported) == 2 and any(imported.values()), imported
    # Deterministic fits: the same scores to the last bit, the same choice, the same model.
    np.testing.assert_array_equal(spread.cv_results_["mean_test_score"],
                                  serial.cv_results_["mean_test_score"])
    assert spread.best_params_ == serial.best_params_
    np.testing.assert_array_equal(spread.best_estimator_.coef_, serial.best_estimator_.coef_)
