"""agcl._atomic: a run-folder file is either the old one or the new one, never a cut-short one,
and a failed write leaves no temporary file (issue 25: every file of the run folder)."""

from __future__ import annotations

import json
import os
import stat

import pytest

from agcl._atomic import atomic_path, write_json, write_text


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def test_write_text_and_json_replace_the_file_and_leave_nothing_else(tmp_path):
    target = tmp_path / "sub" / "results.json"  # missing folders are made
    write_json(target, {"a": 1})
    write_json(target, {"a": 2, "b": [1.5]})
    assert json.loads(target.read_text()) == {"a": 2, "b": [1.5]}
    assert target.read_text().endswith("\n")
    write_text(tmp_path / "notes.md", "dice \u2265 0.8\n")
    assert (tmp_path / "notes.md").read_text(encoding="utf-8") == "dice \u2265 0.8\n"
    assert _names(tmp_path / "sub") == ["results.json"] and _names(tmp_path) == ["notes.md", "sub"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary_one(tmp_path, error):
    target = tmp_path / "contrast_0001.nii.gz"
    target.write_bytes(b"the earlier map")
    seen = []
    with pytest.raises(error):
        with atomic_path(target) as tmp:
            seen.append(tmp)
            tmp.write_bytes(b"half a ma")  # the write is cut short here
            raise error("killed mid-write")
    assert target.read_bytes() == b"the earlier map"
    assert _names(tmp_path) == ["contrast_0001.nii.gz"]
    # the temporary file sits next to the target (a rename, not a copy across file systems) and
    # keeps the target's suffixes, so writers that look at ".nii.gz" or ".png" still work
    assert seen[0].parent == tmp_path and seen[0].name.endswith(".nii.gz") and seen[0] != target


def test_write_json_refuses_nan_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "results.json"
    write_json(target, {"dice": 0.8})
    with pytest.raises(ValueError):
        write_json(target, {"dice": float("nan")})
    assert json.loads(target.read_text()) == {"dice": 0.8}
    assert _names(tmp_path) == ["results.json"]


def test_the_written_file_gets_the_mode_open_would_give(tmp_path):
    # mkstemp makes 0600 files; a results file must stay readable by the group as open() makes it
    old = os.umask(0o022)
    try:
        path = write_text(tmp_path / "a.md", "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
