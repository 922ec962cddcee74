"""DSelect-k (Hazimeh et al. 2021): the smooth step's values and ends, selector weights summing to one and
exactly one-hot on the expert whose binary code matches saturated logits, k one-hot selectors mixing exactly
k experts, the static gate's independence of the input, and the entropy penalty."""
from __future__ import annotations

import math

import pytest
import torch

from sharing._helpers import batch, mlp, tasks
from taskloom.sharing import ARCHITECTURES, smooth_step
from taskloom.sharing.dselect_k import binary_codes, selector_weights

GAMMA = 2.0


def build(**options):
    torch.manual_seed(0)
    return ARCHITECTURES.get("dselect_k")(mlp, tasks(), **options)


def test_smooth_step_values_by_hand():
    t = torch.tensor([-5.0, -1.0, -0.5, 0.0, 0.5, 1.0, 5.0], dtype=torch.float64)
    # gamma = 2: S(t) = -t^3/4 + 3t/4 + 1/2 on (-1, 1); S(0.5) = -1/32 + 3/8 + 1/2 = 27/32
    expected = torch.tensor([0.0, 0.0, 5 / 32, 0.5, 27 / 32, 1.0, 1.0], dtype=torch.float64)
    assert torch.equal(smooth_step(t, GAMMA), expected)


def test_smooth_step_is_continuous_with_zero_slope_at_the_ends():
    for end, value in [(-GAMMA / 2, 0.0), (GAMMA / 2, 1.0)]:
        near = torch.tensor([end - 1e-6, end + 1e-6], dtype=torch.float64)
        assert torch.allclose(smooth_step(near, GAMMA), torch.full((2,), value, dtype=torch.float64), atol=1e-9)
        inside = torch.tensor(end * (1 - 1e-4), dtype=torch.float64, requires_grad=True)
        (slope,) = torch.autograd.grad(smooth_step(inside, GAMMA), inside)
        assert abs(float(slope)) < 1e-3  # S'(t) = 3/(2 gamma) (1 - 4 t^2 / gamma^2) -> 0 at |t| = gamma/2
    middle = torch.tensor(0.0, dtype=torch.float64, requires_grad=True)
    (slope,) = torch.autograd.grad(smooth_step(middle, GAMMA), middle)
    assert float(slope) == pytest.approx(3 / (2 * GAMMA))


def test_binary_codes_are_the_expert_indices_least_significant_bit_first():
    assert binary_codes(4).tolist() == [[0, 0], [1, 0], [0, 1], [1, 1]]
    assert binary_codes(8).shape == (8, 3)


def test_selector_weights_sum_to_one_and_match_the_product_formula():
    z = torch.tensor([[0.3, -0.2, 0.9], [-2.0, 0.1, 0.0]], dtype=torch.float64)
    r = selector_weights(z, binary_codes(8).double(), GAMMA)
    assert torch.allclose(r.sum(-1), torch.ones(2, dtype=torch.float64))
    s = smooth_step(z[0], GAMMA)
    assert float(r[0, 5]) == pytest.approx(float(s[0] * (1 - s[1]) * s[2]))  # 5 = 0b101


@pytest.mark.parametrize("signs,expert", [((-1, -1, -1), 0), ((1, -1, -1), 1), ((-1, 1, 1), 6), ((1, 1, 1), 7)])
def test_saturated_bits_select_exactly_the_expert_whose_code_matches_the_signs(signs, expert):
    z = torch.tensor([s * GAMMA / 2 * m for s, m in zip(signs, (1.0, 3.0, 1.5))])
    r = selector_weights(z, binary_codes(8), GAMMA)
    assert torch.equal(r, torch.nn.functional.one_hot(torch.tensor(expert), 8).float())


def test_k_saturated_selectors_mix_exactly_k_experts_with_softmax_weights():
    model = build(num_experts=8, k=3, gamma=GAMMA)
    gate = model.gates["sign"]
    with torch.no_grad():
        gate.z.copy_(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, -1.0], [1.0, -1.0, 1.0]]) * 5)  # experts 0, 3, 5
        gate.alpha.copy_(torch.tensor([0.0, 1.0, 2.0]))
    weights = gate(batch(4).inputs)
    softmax = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
    expected = torch.zeros(8)
    expected[[0, 3, 5]] = softmax
    assert torch.allclose(weights, expected.expand(4, 8))
    assert int((weights[0] > 0).sum()) == 3
    x = batch(4).inputs
    outputs = [e(x) for e in model.experts]
    mixed = sum(float(softmax[i]) * outputs[j] for i, j in enumerate([0, 3, 5]))
    assert torch.allclose(model(x)["sign"], model.heads["sign"](mixed), atol=1e-6)


def test_static_gate_ignores_the_input_and_input_gate_does_not():
    static = build()
    a, b = batch(4, seed=0).inputs, batch(4, seed=1).inputs
    assert torch.equal(static.gates["level"](a), static.gates["level"](b))
    assert all(isinstance(p, torch.nn.Parameter) for p in (static.gates["level"].z, static.gates["level"].alpha))
    per_example = build(gate="input")
    wa = per_example.gates["level"](a)
    assert not torch.equal(wa[0], wa[1])
    assert torch.allclose(wa.sum(-1), torch.ones(4))


def test_entropy_penalty_is_the_weighted_sum_of_selector_entropies_and_zero_when_one_hot():
    model = build(num_experts=4, k=2, gamma=GAMMA, entropy=0.5)
    with torch.no_grad():
        for n, gate in model.gates.items():
            gate.z.zero_()  # every selector uniform over 4 experts: entropy log 4
    assert float(model.regularization().detach()) == pytest.approx(0.5 * 3 * 2 * math.log(4), rel=1e-6)
    with torch.no_grad():
        for gate in model.gates.values():
            gate.z.fill_(GAMMA)
    assert float(model.regularization().detach()) == 0.0
    assert build(entropy=0.0).regularization() is None


@pytest.mark.parametrize("options,field", [
    ({"num_experts": 3}, "num_experts"), ({"num_experts": 1}, "num_experts"), ({"k": 0}, "k"),
    ({"gamma": 0}, "gamma"), ({"gate": "dense"}, "gate"), ({"entropy": -1}, "entropy"),
    ({"gate": "input", "entropy": 0.1}, "entropy"),
])
def test_bad_options_are_refused_naming_the_field(options, field):
    with pytest.raises(ValueError, match=rf"model\.options\.{field}"):
        build(**options)
