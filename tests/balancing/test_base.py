"""The balancing interface's seeded generator: draws on the asked device, resumed from a saved state."""
from __future__ import annotations

import logging

import torch

from taskloom.balancing.base import SeededGenerator


def test_a_loaded_state_continues_the_draws():
    first = SeededGenerator(5)
    assert first.state().numel() == 0  # nothing drawn yet
    torch.rand(3, generator=first.on("cpu"))
    saved = first.state()
    expected = torch.rand(4, generator=first.on("cpu"))
    second = SeededGenerator(5)
    second.load(saved)
    torch.testing.assert_close(second.state(), saved)  # saved again before any draw: unchanged
    torch.testing.assert_close(torch.rand(4, generator=second.on("cpu")), expected)
    assert second.on("cpu").device == torch.device("cpu")


def test_an_empty_or_foreign_state_starts_from_the_seed(caplog):
    fresh = torch.rand(2, generator=torch.Generator().manual_seed(9))
    empty = SeededGenerator(9)
    empty.load(torch.empty(0, dtype=torch.uint8))
    torch.testing.assert_close(torch.rand(2, generator=empty.on("cpu")), fresh)
    foreign = SeededGenerator(9)
    foreign.load(torch.zeros(16, dtype=torch.uint8))  # the size of another device's generator state
    with caplog.at_level(logging.WARNING, logger="taskloom.balancing.base"):
        torch.testing.assert_close(torch.rand(2, generator=foreign.on("cpu")), fresh)
    assert "cannot resume" in caplog.text
    assert SeededGenerator(None).on("cpu") is None  # no seed: torch's global generator
