"""Masked losses: the mean over labelled rows; no labels add nothing and never a NaN."""
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
