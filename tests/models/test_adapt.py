"""adapt_input_conv: hand-computed cases, exact output preservation, logging, errors."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from agcl.models import adapt_input_conv


def test_one_channel_is_the_sum_hand_computed():
    w = torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1, 1)
    assert adapt_input_conv(w, 1).flatten().tolist() == [7.0]


def test_two_channels_hand_computed():
    # repeat [1, 2] * 3/2 = [1.5, 3]; residual (7 - 4.5) / 2 = 1.25 -> [2.75, 4.25]
    w = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64).view(1, 3, 1, 1)
    assert adapt_input_conv(w, 2).flatten().tolist() == [2.75, 4.25]


def test_multiple_of_three_is_plain_repeat_and_rescale():
    w = torch.randn(5, 3, 7, 7, dtype=torch.float64)
    torch.testing.assert_close(
        adapt_input_conv(w, 6), torch.cat([w, w], dim=1) / 2, rtol=1e-12, atol=1e-12
    )


def test_same_channels_is_an_unchanged_copy():
    w = torch.randn(4, 3, 3, 3)
    out = adapt_input_conv(w, 3)
    assert out is not w and torch.equal(out, w)
    out.add_(1.0)
    assert not torch.equal(out, w)


def test_input_not_modified_and_dtype_kept():
    w = torch.randn(4, 3, 3, 3, dtype=torch.float16)
    before = w.clone()
    out = adapt_input_conv(w, 5)
    assert torch.equal(w, before) and out.dtype == torch.float16 and out.shape == (4, 5, 3, 3)


@settings(deadline=None, max_examples=20)
@given(in_chans=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_output_on_channel_repeated_input_is_preserved(in_chans, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(6, 3, 3, 3, generator=g, dtype=torch.float64)
    x = torch.randn(2, 1, 9, 9, generator=g, dtype=torch.float64)
    ref = F.conv2d(x.repeat(1, 3, 1, 1), w, padding=1)
    out = F.conv2d(x.repeat(1, in_chans, 1, 1), adapt_input_conv(w, in_chans), padding=1)
    # float64 oracle; only summation order differs
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)


def test_works_for_non_rgb_sources():
    w = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    out = adapt_input_conv(w, 3)
    torch.testing.assert_close(out.sum(1), w.sum(1), rtol=1e-12, atol=1e-12)


def test_logs_what_it_did(caplog):
    with caplog.at_level(logging.INFO, logger="agcl.models"):
        adapt_input_conv(torch.ones(2, 3, 3, 3), 1)
        adapt_input_conv(torch.ones(2, 3, 3, 3), 4)
    assert "summed 3 pretrained input channels into 1" in caplog.text
    assert "repeated 3 pretrained input channels to 4" in caplog.text


@pytest.mark.parametrize(
    "weight, in_chans, exc, match",
    [
        (torch.ones(3, 3), 1, ValueError, "weight"),
        ([1.0], 1, TypeError, "weight"),
        (torch.ones(2, 3, 3, 3), 0, ValueError, "in_chans"),
        (torch.ones(2, 3, 3, 3), 2.0, TypeError, "in_chans"),
    ],
)
def test_errors(weight, in_chans, exc, match):
    with pytest.raises(exc, match=match):
        adapt_input_conv(weight, in_chans)
