from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agcl.metrics import dice


def test_dice_by_hand():
    a = np.array([1, 1, 1, 0, 0], bool)
    b = np.array([0, 1, 1, 1, 1], bool)
    assert dice(a, b) == 2 * 2 / 7
    assert dice(torch.tensor([1, 0, 1]), torch.tensor([1, 0, 0])) == 2 / 3


@settings(deadline=None, max_examples=50)
@given(a=arrays(np.bool_, st.integers(1, 40)), data=st.data())
def test_dice_properties(a, data):
    b = data.draw(arrays(np.bool_, a.shape))
    d = dice(a, b)
    assert 0.0 <= d <= 1.0
    assert d == dice(b, a)
    assert dice(a, a) == 1.0
    # float64 oracle
    total = a.sum() + b.sum()
    assert d == pytest.approx(1.0 if total == 0 else 2 * (a & b).sum() / total, abs=1e-15)
