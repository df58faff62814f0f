"""resolve_device: devices that exist pass, every other one is refused with what exists."""

from __future__ import annotations

import re

import pytest
import torch

from agcl._device import available_devices, resolve_device

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cpu_strings_and_objects_pass():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" cpu ") == torch.device("cpu")
    assert resolve_device("cpu:0") == torch.device("cpu:0")
    dev = torch.device("cpu")
    assert resolve_device(dev) is dev


@pytest.mark.parametrize("bad", ["bogus", "", "cuda:x", "cuda:-1", "gpu"])
def test_unparsable_strings_are_refused_with_the_devices_here(bad):
    got = re.escape(repr(bad))
    with pytest.raises(
        ValueError, match=f"--device must be a device such as .*got {got}.*devices here: cpu"
    ):
        resolve_device(bad, name="--device")


@pytest.mark.parametrize("bad", [0, 1.5, None, ["cpu"]])
def test_non_strings_are_a_type_error(bad):
    with pytest.raises(TypeError, match=f"dev must be a device string .*got {type(bad).__name__}"):
        resolve_device(bad, name="dev")


def test_a_second_cpu_and_meta_are_refused():
    with pytest.raises(ValueError, match=r"device must be 'cpu' .*got 'cpu:1'"):
        resolve_device("cpu:1")
    with pytest.raises(ValueError, match=r"got 'meta', a 'meta' device, which agcl cannot"):
        resolve_device("meta")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
@pytest.mark.parametrize("value", ["cuda", "cuda:0", torch.device("cuda:1")])
def test_cuda_is_refused_without_a_gpu(value):
    with pytest.raises(ValueError, match=r"device='cuda.*' needs CUDA, but .*Devices here: cpu"):
        resolve_device(value)


def test_the_cpu_build_message_says_to_install_a_cuda_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    with pytest.raises(ValueError, match=r"has no CUDA support; install a CUDA build"):
        resolve_device("cuda")


def test_a_cuda_build_without_a_gpu_names_the_driver(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    with pytest.raises(ValueError, match=r"built for CUDA 12.4 but sees no GPU .*nvidia-smi"):
        resolve_device("cuda:0", name="--device")


def test_gpu_index_past_the_last_is_refused(monkeypatch):
    # Two GPUs as torch reports them: index 1 exists, 7 does not (and the message lists both).
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(
        ValueError,
        match=r"names GPU 7, but this machine has 2 CUDA device\(s\)"
        r"\. Devices here: cpu, cuda:0, cuda:1",
    ):
        resolve_device("cuda:7")
    with pytest.raises(ValueError, match="names GPU 2"):
        resolve_device(torch.device("cuda", 2))


def test_mps_where_unavailable_is_refused(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device='mps' needs Apple's MPS backend"):
        resolve_device("mps")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")
    assert "mps" in available_devices()


def test_xpu_where_unavailable_is_refused():
    if available_devices()[-1].startswith("xpu"):
        pytest.skip("this machine has an XPU")
    with pytest.raises(ValueError, match=r"names an Intel XPU .*\(0 found\)"):
        resolve_device("xpu:0")


# ---------------------------------------------------------------------------- CUDA only
@pytest.mark.cuda
@needs_cuda
def test_cuda_devices_that_exist_pass():
    assert resolve_device("cuda") == torch.device("cuda")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    last = torch.cuda.device_count() - 1
    assert resolve_device(torch.device("cuda", last)) == torch.device("cuda", last)
    assert f"cuda:{last}" in available_devices()
    torch.zeros(1, device=resolve_device("cuda:0"))  # and it is usable


@pytest.mark.cuda
@needs_cuda
def test_cuda_index_one_past_the_last_is_refused():
    count = torch.cuda.device_count()
    with pytest.raises(ValueError, match=f"names GPU {count}, but this machine has {count}"):
        resolve_device(f"cuda:{count}")
