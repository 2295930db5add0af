"""Usage: python lasso_grid_sklearn.py DIR [grid|lassocv], DIR holding text_{train,val}.svm as
benches/peers/lasso_peers.py writes them (text-like problem, seed 0).

scikit-learn's grid on the held-out split: Lasso warm-started along hypergrad's 100-point
grid (λ_max of the training rows down to λ_max/1000), tol=1e-4 (sklearn's default), scored
on the validation rows; and LassoCV(alphas=100, cv=[(train, val)]) as the benchmark runs it."""
import os, sys, time, warnings
for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(v, "1")
import numpy as np, scipy.sparse as sp
from sklearn.datasets import load_svmlight_file
from sklearn.linear_model import Lasso, LassoCV
from sklearn.exceptions import ConvergenceWarning
warnings.simplefilter("ignore", ConvergenceWarning)
d = 40000
xtr, ytr = load_svmlight_file(sys.argv[1] + "/text_train.svm", n_features=d, zero_based=False)
xva, yva = load_svmlight_file(sys.argv[1] + "/text_val.svm", n_features=d, zero_based=False)
xtr = xtr.tocsc()
which = sys.argv[2] if len(sys.argv) > 2 else "grid"
if which == "grid":
    lmax = np.abs(xtr.T @ ytr).max() / len(ytr)
    lams = np.exp(np.linspace(np.log(lmax), np.log(lmax * 1e-3), 100))
    t0, c0 = time.perf_counter(), time.process_time()
    est = Lasso(alpha=lams[0], fit_intercept=False, warm_start=True, tol=1e-4, selection="cyclic")
    crit = []
    for lam in lams:
        est.set_params(alpha=lam)
        est.fit(xtr, ytr)
        r = yva - xva @ est.coef_
        crit.append(r @ r / len(yva))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    i = int(np.argmin(crit))
    print(f"sklearn grid: wall {wall:.3f} s cpu {cpu:.3f} s best index {i} theta {np.log(lams[i]):.6f} F {crit[i]:.10e}")
else:
    x = sp.vstack([xtr, xva]).tocsc()
    y = np.concatenate([ytr, yva])
    ntr = len(ytr)
    split = [(np.arange(ntr), np.arange(ntr, len(y)))]
    try:
        est = LassoCV(alphas=100, cv=split, fit_intercept=False, n_jobs=1)
    except TypeError:
        est = LassoCV(n_alphas=100, cv=split, fit_intercept=False, n_jobs=1)
    t0, c0 = time.perf_counter(), time.process_time()
    est.fit(x, y)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(f"LassoCV: wall {wall:.3f} s cpu {cpu:.3f} s best alpha {est.alpha_:.6e} F {est.mse_path_.min():.10e}")
