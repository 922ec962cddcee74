"""Regularizers inside the trainer's step: the strength's scaling under its plain-MSE loss, and no proximal
step after an optimizer step that fp16 loss scaling skipped."""
import numpy as np
import pytest
import torch
from sklearn.linear_model import MultiTaskLasso

from regularizers._linear_models import linear_model, regression_problem
from taskloom import MultiTaskDataset, Task
from taskloom.regularizers import L21
from taskloom.train.trainer import Trainer


def full_batch_trainer(model, tasks, regularizer, lr):
    """Plain proximal gradient through Trainer.train_step: SGD without momentum, one batch of every row."""
    return Trainer(model, tasks, optimizer="sgd", momentum=0.0, lr=lr, regularizers=[regularizer], epochs=1)


def test_trainer_strength_is_twice_scikit_learns_alpha():
    """The trainer's loss is sum_t (1/n)||y_t - X w_t - b_t||^2 (MSE, no 1/2): strength s is alpha = s / 2."""
    X, Y, _ = regression_problem(n=120, d=8, T=3, informative=3, seed=1, noise=0.3)
    names = ["y0", "y1", "y2"]
    tasks = [Task(n, "regression") for n in names]
    model = linear_model(8, names)
    strength = 0.2
    design = np.hstack([X, np.ones((len(X), 1))])
    lr = 1.0 / (2 * np.linalg.eigvalsh(design.T @ design / len(X))[-1])
    trainer = full_batch_trainer(model, tasks, L21(model, strength=strength), lr)
    batch = MultiTaskDataset(torch.as_tensor(X), {n: torch.as_tensor(Y[:, t]) for t, n in enumerate(names)}).batch(
        torch.arange(len(X)))
    for _ in range(1000):
        trainer.train_step(batch)
    ours = torch.cat([model.heads[n].weight.detach() for n in names]).numpy()
    theirs = MultiTaskLasso(alpha=strength / 2, tol=1e-14, max_iter=100_000).fit(X, Y)
    assert np.abs(ours - theirs.coef_).max() < 1e-7
    zero_rows = np.abs(theirs.coef_).sum(0) == 0
    assert zero_rows.any() and np.array_equal(np.abs(ours).sum(0) == 0, zero_rows)
    at_alpha = MultiTaskLasso(alpha=strength, tol=1e-14, max_iter=100_000).fit(X, Y)
    assert np.abs(ours - at_alpha.coef_).max() > 1e-2  # strength is not alpha under the trainer's loss


class CountingL21(L21):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def proximal_step(self, lr):
        self.calls += 1
        super().proximal_step(lr)


def test_no_proximal_step_after_a_step_the_grad_scaler_skipped():
    torch.set_default_dtype(torch.float32)  # fp16 autocast works on float32 parameters
    torch.manual_seed(0)
    names = ["y1", "y2"]
    model = linear_model(4, names)
    regularizer = CountingL21(model, strength=0.5)
    trainer = Trainer(model, [Task(n, "regression") for n in names], optimizer="sgd", momentum=0.0, lr=0.1,
                      regularizers=[regularizer], amp="fp16")
    if trainer.scaler.is_enabled() is False:
        pytest.skip("this torch has no GradScaler on the CPU")
    x = torch.randn(8, 4, generator=torch.Generator().manual_seed(1))
    batch = MultiTaskDataset(x, {"y1": x[:, 0], "y2": x[:, 1]}).batch(torch.arange(8))
    before = [p.detach().clone() for p in model.parameters()]
    hook = model.heads["y1"].weight.register_hook(lambda grad: grad * float("inf"))
    scale = trainer.scaler.get_scale()
    trainer.train_step(batch)
    assert trainer.scaler.get_scale() < scale  # the scaler found the inf and skipped the step
    assert regularizer.calls == 0
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # neither step nor shrinkage
    hook.remove()
    trainer.scaler.update(1.0)  # a scale at which these fp16 gradients are finite
    trainer.train_step(batch)
    assert regularizer.calls == 1
    assert not any(torch.equal(a, b) for a, b in zip(before, model.parameters()))
