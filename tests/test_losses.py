"""Masked losses: the mean over labelled rows; no labels add nothing and never a NaN."""
import math

import pytest
import torch
import torch.nn.functional as F

from taskloom import Batch, MultiTaskModel, Task, masked_loss, task_losses
from taskloom.trunks import MLP


def _grads(model):
    return [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in model.parameters()]


def test_gradient_with_masked_rows_equals_gradient_on_labelled_subset():
    torch.manual_seed(0)
    tasks = [Task("a", "multiclass", 3), Task("b", "regression")]
    model = MultiTaskModel(MLP(6, (16,)), tasks=tasks)
    x = torch.randn(10, 6)
    targets = {"a": torch.randint(0, 3, (10,)), "b": torch.randn(10)}
    mask = torch.tensor([1, 0, 1, 1, 0, 0, 1, 0, 1, 1], dtype=torch.bool)
    targets_with_garbage = dict(targets, a=torch.where(mask, targets["a"], 0), b=torch.where(mask, targets["b"], float("nan")))
    losses = task_losses(model(x), Batch(x, targets_with_garbage, {"a": mask, "b": mask}), {t.name: t for t in tasks})
    sum(losses.values()).backward()
    masked = _grads(model)
    model.zero_grad()
    subset = Batch(x[mask], {k: v[mask] for k, v in targets.items()})
    sum(task_losses(model(subset.inputs), subset, {t.name: t for t in tasks}).values()).backward()
    for got, expected in zip(masked, _grads(model)):
        torch.testing.assert_close(got, expected)


def test_task_without_labels_in_batch_contributes_nothing():
    tasks = {"a": Task("a", "binary"), "b": Task("b", "binary")}
    outputs = {"a": torch.randn(4, 1, requires_grad=True), "b": torch.randn(4, 1, requires_grad=True)}
    batch = Batch(torch.zeros(4, 1), {"a": torch.ones(4), "b": torch.full((4,), float("nan"))},
                  {"b": torch.zeros(4, dtype=torch.bool)})
    losses = task_losses(outputs, batch, tasks)
    assert list(losses) == ["a"]
    lone = masked_loss(tasks["b"], outputs["b"], batch.targets["b"], batch.masks["b"])
    lone.backward()
    assert lone.item() == 0.0 and torch.isfinite(outputs["b"].grad).all() and (outputs["b"].grad == 0).all()


def test_class_and_sample_weights_give_weighted_means():
    torch.manual_seed(1)
    logits, target = torch.randn(6, 3), torch.tensor([0, 1, 2, 2, 1, 0])
    task = Task("c", "multiclass", 3, class_weights=[1.0, 2.0, 0.5])
    expected = F.cross_entropy(logits, target, weight=torch.tensor([1.0, 2.0, 0.5]))
    torch.testing.assert_close(masked_loss(task, logits, target), expected)
    plain = Task("c", "multiclass", 3)
    weights = torch.tensor([1.0, 0.0, 3.0, 1.0, 2.0, 1.0])
    rows = F.cross_entropy(logits, target, reduction="none")
    torch.testing.assert_close(masked_loss(plain, logits, target, sample_weight=weights), (rows * weights).sum() / weights.sum())


def test_binary_and_regression_losses_match_torch():
    torch.manual_seed(2)
    out, y = torch.randn(5, 1), torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0])
    torch.testing.assert_close(masked_loss(Task("b", "binary"), out, y), F.binary_cross_entropy_with_logits(out[:, 0], y))
    torch.testing.assert_close(masked_loss(Task("r", "regression"), out, y), F.mse_loss(out[:, 0], y))
    out3, y3 = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(masked_loss(Task("r", "regression", 3), out3, y3), F.mse_loss(out3, y3))
    labels = (torch.rand(5, 3) > 0.5).float()
    torch.testing.assert_close(masked_loss(Task("m", "multilabel", 3), out3, labels),
                               F.binary_cross_entropy_with_logits(out3, labels))


def _bce(z: float, y: float) -> float:
    """Binary cross-entropy of one logit, by its definition -[y log s(z) + (1 - y) log(1 - s(z))]."""
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def _ce(scores: list[float], y: int) -> float:
    """Cross-entropy of one row of class scores: log-sum-exp minus the true class's score."""
    return math.log(sum(math.exp(s) for s in scores)) - scores[y]


def test_binary_class_weights_weigh_each_row_by_its_label():
    z, y = [0.5, -1.0, 2.0, 0.0, -0.3], [1.0, 0.0, 0.0, 1.0, 1.0]
    w0, w1 = 0.25, 3.0
    task = Task("b", "binary", class_weights=[w0, w1])
    rows = [(w1 if label else w0, _bce(logit, label)) for logit, label in zip(z, y)]
    expected = sum(w * loss for w, loss in rows) / sum(w for w, _ in rows)
    got = masked_loss(task, torch.tensor(z).reshape(-1, 1), torch.tensor(y))
    assert math.isclose(got.item(), expected, rel_tol=1e-6)


def test_multilabel_class_weights_are_positive_weights_per_label():
    z = [[0.2, -1.5, 1.0], [2.0, 0.1, -0.7]]
    y = [[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]]
    positive = [2.0, 0.5, 4.0]
    task = Task("m", "multilabel", 3, class_weights=positive)
    per_row = [
        sum(-(p * t * math.log(1 / (1 + math.exp(-s))) + (1 - t) * math.log(1 - 1 / (1 + math.exp(-s))))
            for s, t, p in zip(scores, labels, positive)) / 3
        for scores, labels in zip(z, y)
    ]
    got = masked_loss(task, torch.tensor(z), torch.tensor(y))
    assert math.isclose(got.item(), sum(per_row) / 2, rel_tol=1e-6)
    masked = masked_loss(task, torch.tensor(z), torch.tensor(y), torch.tensor([False, True]))
    assert math.isclose(masked.item(), per_row[1], rel_tol=1e-6)


def test_mask_sample_weight_and_class_weight_multiply():
    scores = [[1.0, 0.0, -1.0], [0.3, 0.2, 0.1], [-0.5, 2.0, 0.0], [0.0, 0.0, 3.0], [1.5, -2.0, 0.5]]
    labels = [2, 99, 1, 0, 2]  # row 1 is unlabelled and holds garbage
    mask = [True, False, True, True, True]
    sample = [1.0, 5.0, 2.0, 0.5, 0.0]
    classes = [1.0, 2.0, 0.5]
    task = Task("c", "multiclass", 3, class_weights=classes)
    terms = [(s * classes[y], _ce(row, y)) for row, y, m, s in zip(scores, labels, mask, sample) if m]
    expected = sum(w * loss for w, loss in terms) / sum(w for w, _ in terms)
    batch = Batch(torch.zeros(5, 1), {"c": torch.tensor(labels)}, {"c": torch.tensor(mask)},
                  {"c": torch.tensor(sample)})
    got = task_losses({"c": torch.tensor(scores)}, batch, {"c": task})["c"]
    assert math.isclose(got.item(), expected, rel_tol=1e-6)


def test_task_losses_take_a_list_of_tasks_or_a_mapping_and_refuse_anything_else():
    tasks = [Task("a", "regression"), Task("b", "binary")]
    outputs = {"a": torch.tensor([[1.0], [3.0]]), "b": torch.tensor([[0.0], [0.0]])}
    batch = Batch(torch.zeros(2, 1), {"a": torch.tensor([0.0, 1.0]), "b": torch.tensor([1.0, 0.0])})
    from_list = task_losses(outputs, batch, tasks)
    from_mapping = task_losses(outputs, batch, {t.name: t for t in tasks})
    assert from_list.keys() == from_mapping.keys() == {"a", "b"}
    assert from_list["a"].item() == pytest.approx((1.0 + 4.0) / 2)  # mean squared error by hand
    assert from_list["b"].item() == pytest.approx(math.log(2))  # logit 0: cross-entropy log 2 for either label
    assert all(torch.equal(from_list[n], from_mapping[n]) for n in from_list)
    with pytest.raises(TypeError, match="list of Task objects or a mapping"):
        task_losses(outputs, batch, "a")
    with pytest.raises(TypeError, match=r"\[1\] str"):
        task_losses(outputs, batch, [tasks[0], "b"])
    with pytest.raises(TypeError, match="every value must be a taskloom Task"):
        task_losses(outputs, batch, {"a": tasks[0], "b": "binary"})
    with pytest.raises(ValueError, match="unique"):
        task_losses(outputs, batch, [tasks[0], tasks[0]])
