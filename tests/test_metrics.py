"""Metrics against scikit-learn's implementations (a known solution)."""
import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from taskloom.evaluate import metrics as M


def test_metrics_match_scikit_learn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 4, 200))
    assert M.accuracy(torch.tensor(p), torch.tensor(y)) == pytest.approx(skm.accuracy_score(y, p))
    assert M.macro_f1(torch.tensor(p), torch.tensor(y), 4) == pytest.approx(skm.f1_score(y, p, average="macro"))
    b = rng.integers(0, 2, 300)
    s = b + rng.normal(0, 1.2, 300)
    s[:20] = np.round(s[:20])  # ties
    assert M.auroc(torch.tensor(s), torch.tensor(b)) == pytest.approx(skm.roc_auc_score(b, s))
    t, q = rng.normal(size=(50, 2)), rng.normal(size=(50, 2))
    assert M.r2_score(torch.tensor(q), torch.tensor(t)) == pytest.approx(skm.r2_score(t, q))
    assert M.mean_squared_error(torch.tensor(q), torch.tensor(t)) == pytest.approx(skm.mean_squared_error(t, q))
    assert M.mean_absolute_error(torch.tensor(q), torch.tensor(t)) == pytest.approx(skm.mean_absolute_error(t, q))


def test_auroc_undefined_for_one_class():
    assert M.auroc(torch.tensor([0.1, 0.7]), torch.tensor([1, 1])) is None
