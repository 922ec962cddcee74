"""Shared fixtures of the loss-level balancing tests: a tiny 2-task problem and a trainer-like step."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from taskloom.balancing import BALANCERS, Balancer
from taskloom.sharing.hard import MultiTaskModel
from taskloom.trunks import MLP

LOSS_METHODS = ["uncertainty", "dwa", "rlw", "gls", "gradnorm", "famo", "stch"]
TASKS = ["reg", "cls"]


def make_problem(seed: int = 0, rows: int = 128, features: int = 6) -> tuple[Tensor, dict[str, Tensor]]:
    """Inputs and targets of a regression task and a binary task that share a linear signal."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, features, generator=generator)
    direction = torch.randn(features, generator=generator)
    reg = (x @ direction).unsqueeze(1) * 3.0 + 0.1 * torch.randn(rows, 1, generator=generator)
    cls = ((x @ direction + x[:, 0]) > 0).float().unsqueeze(1)
    return x, {"reg": reg, "cls": cls}


def make_model(seed: int = 0, features: int = 6, hidden: int = 16) -> MultiTaskModel:
    torch.manual_seed(seed)
    trunk = MLP(features, hidden=(hidden, hidden))
    heads = {"reg": nn.Linear(hidden, 1), "cls": nn.Linear(hidden, 1)}
    return MultiTaskModel(trunk, heads=heads)


def losses_of(model: MultiTaskModel, x: Tensor, targets: dict[str, Tensor]) -> dict[str, Tensor]:
    outputs = model(x)
    return {
        "reg": F.mse_loss(outputs["reg"], targets["reg"]),
        "cls": F.binary_cross_entropy_with_logits(outputs["cls"], targets["cls"]),
    }


def build(name: str, **options) -> Balancer:
    if name == "rlw":
        options.setdefault("seed", 0)
    return BALANCERS.get(name)(TASKS, **options)


def train_step(
    balancer: Balancer, model: MultiTaskModel, optimizer: torch.optim.Optimizer, x: Tensor, targets: dict[str, Tensor]
) -> dict[str, Tensor]:
    """What the trainer does in one step: zero, balancer backward, step, and the post-step hook."""
    optimizer.zero_grad()
    losses = losses_of(model, x, targets)
    balancer.backward(losses, model)
    optimizer.step()
    if balancer.needs_post_step_losses:
        with torch.no_grad():
            balancer.post_step(losses_of(model, x, targets))
    return losses


def check_trains_to_lower_loss(name: str, steps: int = 120, epoch: int = 10, **options) -> None:
    """A short run on the 2-task problem at least halves the summed task loss; every task improves."""
    model = make_model()
    balancer = build(name, **options)
    x, targets = make_problem()
    optimizer = torch.optim.Adam(list(model.parameters()) + list(balancer.parameters()), lr=0.01)
    with torch.no_grad():
        initial = losses_of(model, x, targets)
    running = {task: 0.0 for task in TASKS}
    for step in range(1, steps + 1):
        losses = train_step(balancer, model, optimizer, x, targets)
        for task in TASKS:
            running[task] += float(losses[task].detach()) / epoch
        if step % epoch == 0:
            balancer.on_epoch_end(running)
            running = {task: 0.0 for task in TASKS}
    with torch.no_grad():
        final = losses_of(model, x, targets)
    assert sum(final.values()) < 0.5 * sum(initial.values()), (name, initial, final)
    for task in TASKS:
        assert final[task] < initial[task], (name, task, initial[task], final[task])


def check_state_round_trip(name: str, **options) -> None:
    """A balancer rebuilt from another's ``state_dict`` makes the same next step."""
    model = make_model()
    balancer = build(name, **options)
    x, targets = make_problem()
    optimizer = torch.optim.SGD(list(model.parameters()) + list(balancer.parameters()), lr=0.05)
    for step in range(4):
        losses = train_step(balancer, model, optimizer, x, targets)
        balancer.on_epoch_end({task: float(loss.detach()) + step for task, loss in losses.items()})
    restored = build(name, **options)
    restored.load_state_dict(balancer.state_dict())
    for each in (balancer, restored):
        model.zero_grad()
        each.backward(losses_of(model, x, targets), model)
    assert balancer.last_weights() == restored.last_weights()


def check_absent_task(name: str, **options) -> None:
    """A batch without one task works, reports weights for the present task only, and the next full batch works."""
    model = make_model()
    balancer = build(name, **options)
    x, targets = make_problem()
    optimizer = torch.optim.SGD(list(model.parameters()) + list(balancer.parameters()), lr=0.05)
    train_step(balancer, model, optimizer, x, targets)
    optimizer.zero_grad()
    only = {"reg": losses_of(model, x, targets)["reg"]}
    balancer.backward(only, model)
    optimizer.step()
    if balancer.needs_post_step_losses:
        with torch.no_grad():
            balancer.post_step({"reg": losses_of(model, x, targets)["reg"]})
    assert list(balancer.last_weights()) == ["reg"]
    assert model.heads["cls"].weight.grad is None or not model.heads["cls"].weight.grad.any()
    train_step(balancer, model, optimizer, x, targets)
    weights = balancer.last_weights()
    assert sorted(weights) == sorted(TASKS)
    assert all(torch.isfinite(torch.tensor(w)) for w in weights.values())
