"""Package-level contracts: what `import agcl` loads, and the lazy public API."""

import subprocess
import sys

import pytest

import agcl

HEAVY = ("scipy", "nibabel", "tqdm", "matplotlib", "triton", "PIL")


def test_import_agcl_loads_nothing_heavy():
    # Compare with what torch and numpy load by themselves (some torch builds import tqdm).
    code = (
        "import sys, torch, numpy; before = set(sys.modules); import agcl; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules and m not in before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import agcl pulled in: {out.stdout.strip()}"


def test_light_subpackages_do_not_import_optional_dependencies():
    code = (
        "import sys, torch, numpy; before = set(sys.modules); "
        "import agcl.losses, agcl.functional, agcl.kernels, agcl.models; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules and m not in before))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"light subpackages pulled in: {out.stdout.strip()}"


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        agcl.NotAThing  # noqa: B018


def test_all_lists_exactly_the_lazy_names():
    assert set(agcl.__all__) == set(agcl._LAZY_ATTRS) | set(agcl._SUBMODULES) | {"__version__"}


def test_every_public_name_resolves():
    for name in agcl.__all__:
        assert getattr(agcl, name) is not None, name
