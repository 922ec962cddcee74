"""One-pass moments: merged pieces equal numpy's mean and standard deviation on the whole column."""
from __future__ import annotations

import numpy as np
import pytest

from taskloom.data.moments import RunningMoments


def test_running_moments_merge_equals_numpy_on_the_whole_column():
    values = np.random.default_rng(1).normal(1e8, 0.25, 10_001)
    moments = RunningMoments()
    for piece in np.array_split(values, 37):
        moments.add(piece)
    assert moments.count == len(values)
    assert moments.mean == pytest.approx(values.mean(), rel=1e-15)
    assert moments.std == pytest.approx(values.std(), rel=1e-9)




def test_non_finite_values_are_skipped_and_no_values_give_zero():
    moments = RunningMoments()
    moments.add(np.array([np.nan, np.inf]))
    assert (moments.count, moments.std) == (0, 0.0)
    moments.add(np.array([1.0, np.nan, 3.0]))
    assert (moments.count, moments.mean, moments.std) == (2, 2.0, 1.0)
