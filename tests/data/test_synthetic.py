"""The MMoE synthetic generator (Ma et al. 2018, section 3): its correlation knob does what it says."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from taskloom.data.datasets import load_dataset
from taskloom.task import Task


@pytest.mark.parametrize("p", [-0.5, 0.0, 0.3, 0.9, 1.0])
def test_cosine_between_task_weights_equals_correlation(p):
    splits = load_dataset("synthetic", n=50, d=20, num_tasks=3, correlation=p, c=2.0)
    w = splits.info["task_weights"]
    assert np.allclose(np.linalg.norm(w, axis=1), 2.0)
    for k in (1, 2):
        cosine = w[0] @ w[k] / (np.linalg.norm(w[0]) * np.linalg.norm(w[k]))
        assert cosine == pytest.approx(p, abs=1e-9)
    if abs(p) < 1:
        assert w[1] @ w[2] / 4.0 == pytest.approx(p**2, abs=1e-9)


def test_label_correlation_increases_with_the_knob():
    correlations = []
    for p in (0.0, 0.5, 0.9, 1.0):
        splits = load_dataset("synthetic", n=4000, d=50, correlation=p, seed=4)
        y = torch.cat([splits.train.targets["y1"][:, None], splits.train.targets["y2"][:, None]], 1).numpy()
        correlations.append(np.corrcoef(y.T)[0, 1])
    assert all(a < b for a, b in zip(correlations, correlations[1:])), correlations
    assert abs(correlations[0]) < 0.1 and correlations[-1] > 0.95


def test_shapes_and_determinism():
    a = load_dataset("synthetic", n=200, d=10, num_tasks=4, seed=7)
    b = load_dataset("synthetic", n=200, d=10, num_tasks=4, seed=7)
    assert [t.name for t in a.tasks] == ["y1", "y2", "y3", "y4"] and a.input_shape == (10,)
    assert a.info["sizes"] == {"train": 140, "val": 20, "test": 40}
    assert torch.equal(a.train.inputs, b.train.inputs) and torch.equal(a.test.targets["y4"], b.test.targets["y4"])


def test_bad_knobs_are_refused():
    with pytest.raises(ValueError, match="correlation"):
        load_dataset("synthetic", n=10, correlation=1.5)
    with pytest.raises(ValueError, match="num_tasks"):
        load_dataset("synthetic", n=10, d=2, num_tasks=3)


def test_renamed_tasks_and_refused_weights():
    splits = load_dataset("synthetic", n=100, d=5, tasks=[Task("second", "regression", target="y2")])
    assert list(splits.train.targets) == ["second"]
    with pytest.raises(ValueError, match="'y9' is not one of"):
        load_dataset("synthetic", n=100, d=5, tasks=[Task("a", "regression", target="y9")])
    with pytest.raises(ValueError, match="task 'a': sample_weight"):
        load_dataset("synthetic", n=100, d=5, tasks=[Task("a", "regression", target="y1", sample_weight="w")])
