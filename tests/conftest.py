"""Shared test set-up: one thread, deterministic data."""
from __future__ import annotations

import pytest
import torch

from synthetic_tasks import make_three_task_data

torch.set_num_threads(1)


@pytest.fixture
def three_task_data():
    return make_three_task_data()
