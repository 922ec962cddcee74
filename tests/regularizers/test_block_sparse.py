"""Block-sparse L1/L2 and L1/Linf through the trainer's interface, against scikit-learn and closed forms."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import MultiTaskLasso

from taskloom.regularizers import REGULARIZERS, L1Inf, L21
from taskloom.regularizers.prox import group_soft_threshold, prox_l1inf

try:
    from . import _linear_models as lm
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    import _linear_models as lm

TASKS = ["a", "b", "c"]


def sklearn_objective(X, Y, coef, intercept, alpha):
    R = Y - X @ coef.T - intercept
    return (R ** 2).sum() / (2 * X.shape[0]) + alpha * np.linalg.norm(coef, axis=0).sum()


def test_l21_prox_training_reaches_multitask_lasso_objective_and_support():
    X, Y, _ = lm.regression_problem(n=120, d=10, T=3, informative=4, seed=0)
    alpha = 0.08
    reference = MultiTaskLasso(alpha=alpha, tol=1e-12, max_iter=100_000).fit(X, Y)
    model = lm.linear_model(10, TASKS)
    regularizer = REGULARIZERS.get("l21")(model, parameters="heads.{task}.weight", strength=alpha)
    lm.proximal_gradient(model, regularizer, torch.tensor(X), torch.tensor(Y), steps=1500)
    coef = np.stack([model.heads[t].weight.detach().numpy()[0] for t in TASKS])
    intercept = np.array([model.heads[t].bias.item() for t in TASKS])
    ours = sklearn_objective(X, Y, coef, intercept, alpha)
    theirs = sklearn_objective(X, Y, reference.coef_, reference.intercept_, alpha)
    assert abs(ours - theirs) / theirs < 1e-6
    support = np.flatnonzero(np.abs(coef).sum(axis=0))
    assert 0 < len(support) < 10
    assert np.array_equal(support, np.flatnonzero(np.abs(reference.coef_).sum(axis=0)))
    assert regularizer.value() == pytest.approx(alpha * np.linalg.norm(coef, axis=0).sum(), rel=1e-10)


@pytest.mark.parametrize("cls, prox", [(L21, group_soft_threshold), (L1Inf, prox_l1inf)])
def test_proximal_step_applies_the_prox_to_the_feature_matrix(cls, prox):
    model = lm.linear_model(6, TASKS, outputs=2, seed=1)
    regularizer = cls(model, parameters="heads.*.weight", strength=0.5)
    before = torch.cat([model.heads[t].weight.detach().T for t in TASKS], dim=1)  # 6 features x (3 tasks * 2)
    regularizer.proximal_step(0.4)
    after = torch.cat([model.heads[t].weight.detach().T for t in TASKS], dim=1)
    assert torch.allclose(after, prox(before, 0.2), atol=1e-12)
    assert torch.equal(regularizer.feature_matrix().detach(), after)


@pytest.mark.parametrize("name", ["l21", "l1inf"])
def test_large_strength_zeroes_whole_feature_rows(name):
    model = lm.linear_model(6, TASKS, seed=2)
    with torch.no_grad():
        model.heads["a"].weight[0, :3] *= 100  # three strong features survive in every task's column
    regularizer = REGULARIZERS.get(name)(model, strength=1.0)
    regularizer.proximal_step(1.0)
    W = regularizer.feature_matrix().detach()
    zero_rows = (W == 0).all(dim=1)
    assert zero_rows[3:].all() and not zero_rows[:3].any()
    report = regularizer.report()
    assert report["zero_rows"] == 3 and report["rows"] == 6 and report["row_sparsity"] == 0.5
    assert regularizer.penalty() is None


def test_block_sparse_refuses_biases_and_unknown_q():
    model = lm.linear_model(4, TASKS)
    with pytest.raises(ValueError, match="bias"):
        L21(model, parameters="heads.{task}.bias")
    with pytest.raises(ValueError, match="q must be"):
        REGULARIZERS.get("block_sparse")(model, q=3)
