"""Package-level contracts: what `import agcl` loads, and the lazy public API."""

import subprocess
import sys

import pytest

import agcl

HEAVY = ("scipy", "nibabel", "tqdm", "matplotlib", "triton")


def test_import_agcl_loads_nothing_heavy():
    code = (
        "import sys, agcl; "
        f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import agcl pulled in: {out.stdout.strip()}"


def test_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        agcl.NotAThing  # noqa: B018


def test_every_public_name_resolves():
    for name in agcl.__all__:
        assert getattr(agcl, name) is not None, name
