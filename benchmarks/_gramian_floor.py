"""The arithmetic floor of an exact per-task Gramian step on an MLP trunk, against equal weighting's step.

Counts multiply-adds (the matrix products; element-wise work and the optimizer are left out)
and the bytes an exact Gramian must hold, for a hard-sharing model whose trunk is a stack of
``nn.Linear`` layers (``widths`` = input, hidden...) and whose K heads are Linear(d, 1).

Equal weighting: the forward, then one backward (every layer's weight gradient, and the
input gradient of every layer above the first).

Exact Gramian (any engine): the same forward and heads, then for each task the input gradients
of the trunk's layers above the first (the D_t of every layer: K passes of the activation
backward, which no reordering shares between tasks), and each layer's factors in the cheaper
order, K N in out (the weight gradients D_t^T X) or N^2 in + K N^2 out (through X X^T). The
weighted update needs at least one more multiply-add per parameter and task. The Gram of K
task vectors that live in a space of min(N, in) x out dimensions per layer needs all K at once
(or recomputation), so K x sum over layers of min(N, in) x out numbers are the memory floor.
"""
from __future__ import annotations

from typing import Any, Sequence


def gramian_floor(widths: Sequence[int], batch: int, k: int, bytes_per_number: int = 4) -> dict[str, Any]:
    """Multiply-adds of equal weighting's step and of an exact Gramian step, their ratio, and the bytes floor."""
    layers = list(zip(widths[:-1], widths[1:]))
    n, d = batch, widths[-1]
    forward = n * sum(i * o for i, o in layers) + k * n * d
    activation_backward = n * sum(i * o for i, o in layers[1:])
    equal = forward + n * sum(i * o for i, o in layers) + activation_backward + 2 * k * n * d
    factors = sum(min(k * n * i * o, n * n * i + k * n * n * o) for i, o in layers)
    parameters = sum(i * o + o for i, o in layers)
    gramian = forward + 2 * k * n * d + k * activation_backward + factors + k * parameters
    held = k * sum(min(n, i) * o + o for i, o in layers)
    return {"equal_multiply_adds": equal, "gramian_multiply_adds": gramian,
            "ratio": round(gramian / equal, 3), "factor_bytes": held * bytes_per_number}
