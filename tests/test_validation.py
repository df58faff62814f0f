import pytest
import torch

from agcl._validation import (
    check_choice,
    check_in_range,
    check_int,
    check_integer_tensor,
    check_ndim,
    check_positive,
    check_tensor,
)


def test_check_tensor_rejects_non_tensor():
    with pytest.raises(TypeError, match="features must be a torch.Tensor; got list"):
        check_tensor("features", [1, 2])


def test_check_ndim_prints_layout_and_shape():
    with pytest.raises(
        ValueError, match=r"features must be \(B, V, D\) or \(M, D\); got shape \(2,\)"
    ):
        check_ndim("features", torch.zeros(2), (2, 3), "(B, V, D) or (M, D)")


def test_check_integer_tensor_cases():
    check_integer_tensor("labels", torch.tensor([0, 1, 2]), numel=3)
    with pytest.raises(TypeError, match="labels must be an integer tensor"):
        check_integer_tensor("labels", torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="labels must have 4 entries"):
        check_integer_tensor("labels", torch.tensor([0, 1, 2]), numel=4, what="one per sample")
    with pytest.raises(ValueError, match="labels must be non-negative; got minimum -3"):
        check_integer_tensor("labels", torch.tensor([0, -3]))
    with pytest.raises(ValueError, match="labels must be 1-D"):
        check_integer_tensor("labels", torch.zeros(2, 2, dtype=torch.long))


def test_scalar_checks():
    assert check_positive("temperature", 0.1) == 0.1
    with pytest.raises(ValueError, match="temperature must be a finite number > 0; got 0"):
        check_positive("temperature", 0)
    with pytest.raises(ValueError, match="nan"):
        check_positive("temperature", float("nan"))
    with pytest.raises(TypeError, match="temperature must be a real number; got str"):
        check_positive("temperature", "0.1")
    assert check_positive("w", 0.0, allow_zero=True) == 0.0
    with pytest.raises(ValueError, match=r"p must lie in \[0, 1\]; got 2"):
        check_in_range("p", 2, 0, 1)
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum'; got 'avg'"):
        check_choice("reduction", "avg", ("mean", "sum"))


def test_check_int():
    assert check_int("block_size", 4, low=1) == 4
    assert check_int("anchor_start", 0, low=0, high=3) == 0
    with pytest.raises(TypeError, match="block_size must be an int; got float"):
        check_int("block_size", 2.0, low=1)
    with pytest.raises(TypeError, match="flag must be an int; got bool"):
        check_int("flag", True)
    with pytest.raises(ValueError, match="block_size must be an int >= 1; got 0"):
        check_int("block_size", 0, low=1)
    with pytest.raises(ValueError, match=r"num_anchors must lie in \[0, 2\]; got 3"):
        check_int("num_anchors", 3, low=0, high=2)
    with pytest.raises(ValueError, match="depth must be an int <= 5; got 6"):
        check_int("depth", 6, high=5)
