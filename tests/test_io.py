import os

import pytest
import torch

from agcl._io import atomic_save, safe_load


def test_atomic_save_round_trip_and_no_temp_left(tmp_path):
    path = tmp_path / "sub" / "ckpt.pt"
    state = {"w": torch.arange(6.0).reshape(2, 3), "epoch": 3}
    atomic_save(state, path)
    loaded = safe_load(path)
    assert loaded["epoch"] == 3
    torch.testing.assert_close(loaded["w"], state["w"], rtol=0, atol=0)
    assert os.listdir(path.parent) == ["ckpt.pt"]


def test_atomic_save_keeps_old_file_when_write_fails(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"epoch": 1}, path)

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        atomic_save({"bad": Unpicklable()}, path)
    assert safe_load(path) == {"epoch": 1}
    assert os.listdir(tmp_path) == ["ckpt.pt"]


def test_safe_load_missing_file_names_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        safe_load(tmp_path / "nope.pt")


def test_safe_load_truncated_file_names_path(tmp_path):
    path = tmp_path / "ckpt.pt"
    atomic_save({"w": torch.randn(100)}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="ckpt.pt"):
        safe_load(path)
