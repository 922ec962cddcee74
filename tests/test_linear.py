"""MultiTaskLinear against scikit-learn's MultiTaskLasso, least squares, and KKT with missing targets."""
import numpy as np
import pytest
from sklearn.linear_model import LinearRegression, MultiTaskLasso

from taskloom.linear import PENALTIES, MultiTaskLinear


def problem(n=150, d=20, T=4, informative=5, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)) + 0.5
    W = np.zeros((d, T))
    W[:informative] = rng.normal(size=(informative, T))
    return X, X @ W + 0.2 * rng.normal(size=(n, T)) + rng.normal(size=T)


def l21_objective(X, Y, coef, intercept, alpha):
    return ((Y - X @ coef.T - intercept) ** 2).sum() / (2 * len(X)) + alpha * np.linalg.norm(coef, axis=0).sum()


@pytest.mark.parametrize("fit_intercept", [True, False])
def test_l21_matches_multitask_lasso_objective_and_support(fit_intercept):
    X, Y = problem()
    alpha = 0.1
    theirs = MultiTaskLasso(alpha=alpha, fit_intercept=fit_intercept, tol=1e-12, max_iter=100_000).fit(X, Y)
    ours = MultiTaskLinear("l21", alpha=alpha, fit_intercept=fit_intercept, tol=1e-12, max_iter=100_000).fit(X, Y)
    assert ours.coef_.shape == theirs.coef_.shape == (4, 20)
    mine = l21_objective(X, Y, ours.coef_, ours.intercept_, alpha)
    reference = l21_objective(X, Y, theirs.coef_, theirs.intercept_, alpha)
    assert abs(mine - reference) / reference < 1e-6
    assert mine == pytest.approx(ours.objective_, rel=1e-10)
    support = np.flatnonzero(np.abs(ours.coef_).sum(axis=0))
    assert 0 < len(support) < 20
    assert np.array_equal(support, np.flatnonzero(np.abs(theirs.coef_).sum(axis=0)))
    assert np.allclose(ours.predict(X), theirs.predict(X), atol=1e-5)
    assert ours.n_iter_ >= 1 and ours.dual_gap_ >= -1e-12


def test_no_penalty_with_missing_targets_is_least_squares_on_labelled_rows():
    X, Y = problem(d=6)
    rng = np.random.default_rng(1)
    Y[rng.random(Y.shape) < 0.3] = np.nan
    model = MultiTaskLinear("none", tol=1e-12, max_iter=50_000).fit(X, Y)
    for t in range(Y.shape[1]):
        rows = ~np.isnan(Y[:, t])
        reference = LinearRegression().fit(X[rows], Y[rows, t])
        assert np.allclose(model.coef_[t], reference.coef_, atol=1e-8)
        assert model.intercept_[t] == pytest.approx(reference.intercept_, abs=1e-8)


def test_l21_with_missing_targets_satisfies_kkt():
    X, Y = problem(seed=2)
    rng = np.random.default_rng(3)
    Y[rng.random(Y.shape) < 0.25] = np.nan
    alpha = 0.05
    model = MultiTaskLinear("l21", alpha=alpha, tol=1e-13, max_iter=100_000).fit(X, Y)
    gradient = np.zeros((20, 4))
    for t in range(4):
        rows = ~np.isnan(Y[:, t])
        residual = Y[rows, t] - X[rows] @ model.coef_[t] - model.intercept_[t]
        assert abs(residual.mean()) < 1e-10  # the intercept is optimal on the labelled rows
        gradient[:, t] = -X[rows].T @ residual / rows.sum()
    W = model.coef_.T
    for j in range(20):
        norm = np.linalg.norm(W[j])
        if norm > 0:
            assert np.allclose(gradient[j] + alpha * W[j] / norm, 0, atol=1e-6)
        else:
            assert np.linalg.norm(gradient[j]) <= alpha + 1e-8


@pytest.mark.parametrize("penalty", PENALTIES)
def test_every_penalty_fits_and_predicts(penalty):
    X, Y = problem(d=8, seed=4)
    model = MultiTaskLinear(penalty, alpha=0.05, tol=1e-8, max_iter=5000).fit(X, Y)
    assert model.coef_.shape == (4, 8) and model.intercept_.shape == (4,)
    assert model.predict(X[:3]).shape == (3, 4)
    assert np.isfinite(model.objective_)
    zero_objective = (((Y - Y.mean(0)) ** 2).sum(axis=0) / (2 * len(X))).sum()
    assert model.objective_ < zero_objective


def test_single_task_vector_target():
    X, Y = problem(T=1)
    model = MultiTaskLinear("l21", alpha=0.01).fit(X, Y[:, 0])
    assert model.coef_.shape == (1, 20)


def test_input_errors_say_what_to_do():
    X, Y = problem(d=5)
    with pytest.raises(ValueError, match="penalty must be one of"):
        MultiTaskLinear("lasso").fit(X, Y)
    with pytest.raises(ValueError, match="alpha"):
        MultiTaskLinear(alpha=-1).fit(X, Y)
    bad = X.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="row 7"):
        MultiTaskLinear().fit(bad, Y)
    empty = Y.copy()
    empty[:, 1] = np.nan
    with pytest.raises(ValueError, match=r"\[1\] have no labelled row"):
        MultiTaskLinear().fit(X, empty)
    with pytest.raises(ValueError, match="rows of X"):
        MultiTaskLinear().fit(X, Y[:-1])
    with pytest.raises(RuntimeError, match="not fitted"):
        MultiTaskLinear().predict(X)
    with pytest.raises(ValueError, match="n_clusters"):
        MultiTaskLinear("cluster", n_clusters=9).fit(X, Y)


def test_score_is_the_mean_r2_over_tasks_on_labelled_rows():
    from sklearn.metrics import r2_score

    X, Y = problem(n=60, d=5, seed=5)
    model = MultiTaskLinear("l21", alpha=0.05).fit(X, Y)
    holes = Y.copy()
    holes[np.random.default_rng(6).random(Y.shape) < 0.3] = np.nan
    predicted = model.predict(X)
    per_task = [r2_score(holes[~np.isnan(holes[:, t]), t], predicted[~np.isnan(holes[:, t]), t]) for t in range(4)]
    assert model.score(X, holes) == pytest.approx(np.mean(per_task), rel=1e-12)
    assert model.score(X, Y) == pytest.approx(r2_score(Y, predicted), rel=1e-12)  # sklearn's uniform average
    vector = MultiTaskLinear("none").fit(X, Y[:, 0])
    assert vector.predict(X).shape == (60,)
    assert vector.score(X, Y[:, 0]) == pytest.approx(r2_score(Y[:, 0], vector.predict(X)), rel=1e-12)


def test_a_scikit_learn_estimator_in_cross_validation_and_grid_search():
    from sklearn.base import clone, is_regressor
    from sklearn.model_selection import GridSearchCV, KFold, cross_val_score

    X, Y = problem(n=60, d=6, T=3, seed=7)
    estimator = MultiTaskLinear("l21", alpha=0.05, max_iter=np.int64(500))
    assert is_regressor(estimator) and clone(estimator).get_params() == estimator.get_params()
    folds = KFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(estimator, X, Y, cv=folds)
    expected = [MultiTaskLinear("l21", alpha=0.05, max_iter=500).fit(X[a], Y[a]).score(X[b], Y[b])
                for a, b in folds.split(X)]
    assert np.allclose(scores, expected, rtol=1e-12)
    search = GridSearchCV(estimator, {"alpha": [1e-3, 10.0], "max_iter": np.array([200, 400])}, cv=folds).fit(X, Y)
    assert search.best_params_["alpha"] == 1e-3  # alpha = 10 zeroes every coefficient: R^2 about 0
    assert search.best_estimator_.coef_.shape == (3, 6) and search.score(X, Y) > 0.9


def test_max_iter_accepts_numpy_integers_and_refuses_others():
    X, Y = problem(n=40, d=6, seed=8)
    assert MultiTaskLinear(max_iter=np.int32(50)).fit(X, Y).n_iter_ <= 50
    for bad in (2.5, True, 0):
        with pytest.raises(ValueError, match="max_iter must be an integer >= 1"):
            MultiTaskLinear(max_iter=bad).fit(X, Y)


def test_the_gap_rule_is_scikit_learns():
    """Both stop once the gap of (1/(2n))||Y - XW||^2 + alpha ||W||_21 is at most tol ||Yc||_F^2 / n."""
    X, Y = problem(n=80, d=10, seed=9)
    tol = 1e-3
    threshold = tol * ((Y - Y.mean(0)) ** 2).sum() / len(X)
    ours = MultiTaskLinear("l21", alpha=0.05, tol=tol).fit(X, Y)
    theirs = MultiTaskLasso(alpha=0.05, tol=tol).fit(X, Y)
    assert 0 <= ours.dual_gap_ <= threshold and theirs.dual_gap_ <= threshold
