"""GradNorm (Chen et al. 2018): weights keep summing to K and move gradient-norm ratios to the target."""
import pytest
import torch
from torch import nn

from taskloom.balancing.gradnorm import GradNorm, last_shared_layer
from taskloom.sharing.hard import MultiTaskModel

try:
    from . import _loss_helpers as helpers
except ImportError:  # tests/ is not a package: pytest puts this folder on sys.path
    import _loss_helpers as helpers


def layer_norms(model, losses):
    weight = last_shared_layer(model).weight
    bias = last_shared_layer(model).bias
    norms = []
    for loss in losses.values():
        grads = torch.autograd.grad(loss, [weight, bias], retain_graph=True)
        norms.append(torch.sqrt(sum(g.pow(2).sum() for g in grads)))
    return torch.stack(norms)


def test_default_layer_is_the_last_shared_linear():
    model = helpers.make_model()
    assert last_shared_layer(model) is model.trunk.layers[3]


@pytest.mark.parametrize("batched", [True, False])
def test_layer_gradient_norms_match_autograd_per_task(batched):
    model = helpers.make_model()
    x, targets = helpers.make_problem()
    losses = helpers.losses_of(model, x, targets)
    balancer = GradNorm(["reg", "cls"], batched=batched)
    norms = balancer._gradient_norms(torch.stack(list(losses.values())), balancer._layer_parameters(model))
    torch.testing.assert_close(norms, layer_norms(model, losses))


def test_first_step_by_hand():
    # L_k = mean(h_k * (w . x)) with heads 1 and 3: ||grad_W L_k|| = (1, 3) * ||mean x||, r = 1 on the first step,
    # target = mean(G) = 2 ||mean x||: sign(G - target) = (-1, +1); Adam's first step moves w by -lr * sign.
    trunk = nn.Linear(2, 1, bias=False)
    heads = {"a": nn.Linear(1, 1, bias=False), "b": nn.Linear(1, 1, bias=False)}
    with torch.no_grad():
        trunk.weight.fill_(1.0)
        heads["a"].weight.fill_(1.0)
        heads["b"].weight.fill_(3.0)
    model = MultiTaskModel(trunk, heads=heads)
    x = torch.tensor([[1.0, 2.0], [3.0, 0.5]])
    balancer = GradNorm(["a", "b"], alpha=1.5, lr=0.1)
    outputs = model(x)
    balancer.backward({name: out.mean() for name, out in outputs.items()}, model)
    torch.testing.assert_close(balancer.task_weights, torch.tensor([1.1, 0.9]))
    # the model got the gradient of the sum with the weights before the update, (1, 1):
    torch.testing.assert_close(trunk.weight.grad, (1.0 + 3.0) * x.mean(0, keepdim=True))


def run_to_fixed_point(first_scale, later_scale, alpha, steps=500):
    """GradNorm on a fixed model whose losses are scaled: returns the weights, the layer norms and the gap."""
    model = helpers.make_model(seed=1)
    x, targets = helpers.make_problem(seed=1)
    balancer = GradNorm(["reg", "cls"], alpha=alpha, lr=0.004)

    def scaled(scale):
        return {n: loss * scale[n] for n, loss in helpers.losses_of(model, x, targets).items()}

    balancer.backward(scaled(first_scale), model)
    norms = layer_norms(model, scaled(later_scale)).detach()
    relative = torch.tensor([later_scale[n] / first_scale[n] for n in ("reg", "cls")])
    target = (relative / relative.mean()).pow(alpha)

    def gap():
        balanced = balancer.task_weights * norms
        return float((balanced - balanced.mean() * target).abs().sum())

    start = gap()
    for _ in range(steps):
        model.zero_grad()
        balancer.backward(scaled(later_scale), model)
        assert float(balancer.task_weights.sum()) == pytest.approx(2.0, abs=1e-5)
    return balancer.task_weights, norms, target, start, gap()


def test_constant_losses_equalize_weighted_gradient_norms():
    # L(t) = L(0): r = 1, so the target is mean(G) for every task and the fixed point is w_k ~ 1 / ||grad_W L_k||.
    scale = {"reg": 0.01, "cls": 1.0}
    weights, norms, target, start, end = run_to_fixed_point(scale, scale, alpha=1.5)
    expected = 2 * (1 / norms) / (1 / norms).sum()
    torch.testing.assert_close(weights, expected, rtol=0.02, atol=0)
    assert end < 0.05 * start


def test_slower_task_gets_a_larger_gradient_norm():
    # alpha = 1 and L/L(0) = (2, 0.5): r = (1.6, 0.4); sum_k r_k = K makes G_k = mean(G) r_k reachable,
    # at w_k ~ r_k / ||grad_W L_k||: the weighted norms end in the ratio 1.6 : 0.4.
    first, later = {"reg": 0.01, "cls": 1.0}, {"reg": 0.02, "cls": 0.5}
    weights, norms, target, start, end = run_to_fixed_point(first, later, alpha=1.0)
    expected = target / norms
    torch.testing.assert_close(weights, 2 * expected / expected.sum(), rtol=0.02, atol=0)
    assert float((weights * norms)[0] / (weights * norms)[1]) == pytest.approx(4.0, rel=0.04)
    assert end < 0.05 * start


def test_absent_task_keeps_its_weight_and_total_stays_k():
    model = helpers.make_model()
    x, targets = helpers.make_problem()
    balancer = GradNorm(["reg", "cls", "other"], lr=0.05)
    losses = helpers.losses_of(model, x, targets)
    balancer.backward(losses, model)
    other = float(balancer.task_weights[2])
    for _ in range(5):
        model.zero_grad()
        balancer.backward(helpers.losses_of(model, x, targets), model)
        assert float(balancer.task_weights[2]) == other
        assert float(balancer.task_weights.sum()) == pytest.approx(3.0, abs=1e-5)
    assert torch.isnan(balancer.initial_losses[2])


def test_layer_option_and_its_errors():
    model = helpers.make_model()
    x, targets = helpers.make_problem()
    balancer = GradNorm(["reg", "cls"], layer="trunk.layers.1")
    balancer.backward(helpers.losses_of(model, x, targets), model)
    with pytest.raises(ValueError, match="alpha"):
        GradNorm(["reg"], alpha=-1.0)


def test_trains_two_tasks_to_lower_loss():
    helpers.check_trains_to_lower_loss("gradnorm")


def test_state_round_trip_and_absent_task():
    helpers.check_state_round_trip("gradnorm")
    helpers.check_absent_task("gradnorm")
