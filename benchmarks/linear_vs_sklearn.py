"""Block-sparse L1/L2 multi-task regression: taskloom's MultiTaskLinear against scikit-learn's MultiTaskLasso.

A synthetic problem (n = 2000, d = 500, T = 20, 50 nonzero feature rows shared by all tasks) is
solved by both at the same alpha and tolerances, side by side in one run. Both stop on the same
rule: the duality gap of (1/(2n))||Y - XW - b||^2 + alpha ||W||_21 at most tol ||Yc||_F^2 / n
(Yc: the centred targets), which is scikit-learn's definition of ``tol`` and taskloom's since
MultiTaskLinear adopted it; scikit-learn in addition only computes the gap once its largest
coordinate update is below tol, which can only make it stop later. The JSON gives each one's
objective, the relative gap between them, precision and recall of the nonzero rows against the
truth, fit times (best of ``--repeats``, both sides on ``--threads`` threads) and their ratio.
Run: python benchmarks/linear_vs_sklearn.py --threads 1
"""
from __future__ import annotations

import argparse
import json
import platform
import time

import numpy as np
import sklearn
import torch
from sklearn.linear_model import MultiTaskLasso
from threadpoolctl import threadpool_info, threadpool_limits

from taskloom.linear import MultiTaskLinear


def make_problem(n: int, d: int, T: int, informative: int, noise: float, seed: int):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    W = np.zeros((d, T))
    rows = rng.choice(d, size=informative, replace=False)
    W[rows] = rng.normal(size=(informative, T))
    Y = X @ W + noise * rng.normal(size=(n, T)) + rng.normal(size=T)
    return X, Y, W


def objective(X, Y, coef, intercept, alpha) -> float:
    residual = Y - X @ coef.T - intercept
    return float((residual ** 2).sum() / (2 * len(X)) + alpha * np.linalg.norm(coef, axis=0).sum())


def support_scores(coef: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    found = np.abs(coef).sum(axis=0) > 0
    true = np.abs(truth).sum(axis=1) > 0
    hits = int((found & true).sum())
    return {"selected_rows": int(found.sum()), "precision": hits / max(int(found.sum()), 1),
            "recall": hits / int(true.sum())}


def timed_fit(make, X, Y, repeats: int):
    best, model = float("inf"), None
    for _ in range(repeats):
        started = time.perf_counter()
        model = make().fit(X, Y)
        best = min(best, time.perf_counter() - started)
    return model, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--d", type=int, default=500)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--informative", type=int, default=50)
    parser.add_argument("--noise", type=float, default=1.0)
    parser.add_argument("--alpha-ratio", type=float, default=0.05, help="alpha as a fraction of alpha_max")
    parser.add_argument("--tols", type=float, nargs="+", default=[1e-4, 1e-8])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, and BLAS/OpenMP threads for sklearn")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    limits = threadpool_limits(limits=args.threads)  # numpy's BLAS and sklearn's OpenMP, for the whole run

    X, Y, truth = make_problem(args.n, args.d, args.tasks, args.informative, args.noise, args.seed)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    alpha_max = float(np.linalg.norm(Xc.T @ Yc, axis=1).max() / args.n)
    alpha = args.alpha_ratio * alpha_max
    runs = []
    for tol in args.tols:
        ours, ours_time = timed_fit(lambda: MultiTaskLinear("l21", alpha=alpha, tol=tol, max_iter=100_000),
                                    X, Y, args.repeats)
        theirs, theirs_time = timed_fit(lambda: MultiTaskLasso(alpha=alpha, tol=tol, max_iter=100_000),
                                        X, Y, args.repeats)
        ours_objective = objective(X, Y, ours.coef_, ours.intercept_, alpha)
        theirs_objective = objective(X, Y, theirs.coef_, theirs.intercept_, alpha)
        same_support = bool(np.array_equal(np.abs(ours.coef_).sum(0) > 0, np.abs(theirs.coef_).sum(0) > 0))
        runs.append({
            "tol": tol,
            "gap_threshold": tol * float((Yc ** 2).sum()) / args.n,
            "taskloom": {"objective": ours_objective, "dual_gap": float(ours.dual_gap_), "n_iter": int(ours.n_iter_),
                         "fit_seconds": ours_time, **support_scores(ours.coef_, truth)},
            "sklearn": {"objective": theirs_objective, "dual_gap": float(theirs.dual_gap_),
                        "n_iter": int(theirs.n_iter_), "fit_seconds": theirs_time, **support_scores(theirs.coef_, truth)},
            "objective_relative_gap": (ours_objective - theirs_objective) / theirs_objective,
            "same_support": same_support,
            "max_abs_coef_difference": float(np.abs(ours.coef_ - theirs.coef_).max()),
            "time_ratio_taskloom_over_sklearn": ours_time / theirs_time,
        })
    print(json.dumps({
        "benchmark": "block-sparse L1/L2 linear multi-task regression vs sklearn MultiTaskLasso",
        "problem": {"n": args.n, "d": args.d, "tasks": args.tasks, "informative_rows": args.informative,
                    "noise": args.noise, "seed": args.seed, "alpha": alpha, "alpha_max": alpha_max},
        "runs": runs,
        "solvers": {"taskloom": "FISTA with restart, float64 torch, duality-gap stop",
                    "sklearn": "block coordinate descent (MultiTaskLasso)"},
        "stopping_rule": "both: duality gap of (1/(2n))||Y - XW - b||^2 + alpha ||W||_21 <= tol * ||Yc||_F^2 / n "
                         "(scikit-learn's tol; sklearn checks the gap only after a coordinate update below tol)",
        "versions": {"sklearn": sklearn.__version__, "torch": torch.__version__, "numpy": np.__version__},
        "machine": {"platform": platform.platform(), "threads": args.threads, "torch_threads": torch.get_num_threads(),
                    "threadpools": [{k: pool.get(k) for k in ("user_api", "internal_api", "num_threads")}
                                    for pool in threadpool_info()],
                    "python": platform.python_version()},
    }, indent=2))
    limits.restore_original_limits()


if __name__ == "__main__":
    main()
