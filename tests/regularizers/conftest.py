"""Regularizer tests run in float64 (closed forms are checked to 1e-10), restored afterwards."""
import pytest
import torch


@pytest.fixture(autouse=True)
def float64_default():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)
