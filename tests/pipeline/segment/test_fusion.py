from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agcl.pipeline import fuse_labels

probs = st.integers(1, 4).flatmap(
    lambda k: arrays(np.float64, (k, 5, 3), elements=st.floats(0, 1, allow_nan=False))
)


@settings(deadline=None, max_examples=60)
@given(p=probs, threshold=st.floats(0, 0.99))
def test_fusion_properties(p, threshold):
    k = p.shape[0]
    ids = [2 * i + 3 for i in range(k)]
    out = fuse_labels(p, ids, threshold=threshold)
    assert out.shape == p.shape[1:]
    assert set(np.unique(out)) <= {0, *ids}
    top = p.max(axis=0)
    # background exactly where no organ passes the threshold
    np.testing.assert_array_equal(out == 0, top <= threshold)
    for j, organ in enumerate(ids):
        won = out == organ
        # the winner has the highest probability there
        assert (p[j][won] == top[won]).all()
    # a single organ is plain thresholding
    np.testing.assert_array_equal(
        fuse_labels(p[:1], [7], threshold=threshold) == 7, p[0] > threshold
    )


@settings(deadline=None, max_examples=30)
@given(p=probs, data=st.data())
def test_fusion_is_equivariant_to_organ_order_without_ties(p, data):
    k = p.shape[0]
    p = p + np.arange(k)[:, None, None] * 1e-9  # break exact ties
    perm = data.draw(st.permutations(range(k)))
    ids = np.arange(1, k + 1)
    a = fuse_labels(p, ids)
    b = fuse_labels(p[list(perm)], ids[list(perm)])
    np.testing.assert_array_equal(a, b)


def test_ties_go_to_first_and_torch_input():
    p = torch.tensor([[0.8, 0.3], [0.8, 0.9]])
    np.testing.assert_array_equal(fuse_labels(p, [4, 5]), [4, 5])


def test_fusion_errors():
    p = np.full((2, 3), 0.7)
    with pytest.raises(ValueError, match="organ_ids"):
        fuse_labels(p, [1])
    with pytest.raises(ValueError, match="organ_ids"):
        fuse_labels(p, [0, 1])
    with pytest.raises(ValueError, match="threshold"):
        fuse_labels(p, threshold=1.0)
    with pytest.raises(ValueError, match="probabilities"):
        fuse_labels(np.zeros(3))
    with pytest.raises(TypeError, match="probabilities"):
        fuse_labels([[0.1]])
