"""agcl._owned and the caches built on it: agcl replaces only folders it made (issue 25: "Never
delete or overwrite what agcl did not create", synthetic CT phantoms and 2-D scenes alike)."""

from __future__ import annotations

import json
import re

import pytest

from agcl._owned import (
    INVENTORY,
    MARKER,
    FolderNotOwnedError,
    check_replaceable,
    is_owned,
    write_owned_folder,
)

THESIS = "four years of work"


def _writer(files):
    def write(tmp):
        for name, text in files.items():
            (tmp / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp / name).write_text(text)

    return write


def _names(folder):
    return sorted(p.name for p in folder.iterdir())


def _user_folder(path):
    path.mkdir(parents=True)
    (path / "thesis.txt").write_text(THESIS)
    return path


def test_a_new_folder_is_written_and_marked(tmp_path):
    root = tmp_path / "cache"
    assert write_owned_folder(root, "demo", _writer({"a/b.txt": "1"}), n=2) == root
    assert (root / "a" / "b.txt").read_text() == "1"
    assert json.loads((root / MARKER).read_text()) == {"kind": "demo", "n": 2}
    assert json.loads((root / INVENTORY).read_text()) == ["a/b.txt"]
    assert is_owned(root) and is_owned(root, "demo") and not is_owned(root, "other")
    assert _names(tmp_path) == ["cache"]  # the temporary sibling is gone


def test_an_owned_folder_is_replaced_and_an_empty_one_used(tmp_path):
    root = tmp_path / "cache"
    write_owned_folder(root, "demo", _writer({"old.txt": "x"}))
    write_owned_folder(root, "demo", _writer({"new.txt": "y"}))
    assert _names(root) == [INVENTORY, MARKER, "new.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    write_owned_folder(empty, "demo", _writer({"a.txt": "z"}))
    assert _names(empty) == [INVENTORY, MARKER, "a.txt"]
    assert _names(tmp_path) == ["cache", "empty"]


@pytest.mark.parametrize("marker", [None, "{not json", '{"kind": "other"}', '["demo"]'])
def test_a_folder_agcl_did_not_make_is_refused_and_untouched(tmp_path, marker):
    root = _user_folder(tmp_path / "mine")
    if marker is not None:  # no marker, a damaged one, another kind's
        (root / MARKER).write_text(marker)
    calls = []
    with pytest.raises(FolderNotOwnedError, match=re.escape(str(root))):
        write_owned_folder(root, "demo", calls.append)
    assert calls == []  # refused before any work
    assert (root / "thesis.txt").read_text() == THESIS
    assert _names(tmp_path) == ["mine"]
    # a ValueError: the command line turns it into exit status 2
    with pytest.raises(ValueError, match="did not create"):
        check_replaceable(root, "demo", what="phantoms")


def test_check_replaceable_accepts_absent_empty_and_owned_folders_and_refuses_a_file(tmp_path):
    check_replaceable(tmp_path / "absent", "demo", what="x")
    (tmp_path / "empty").mkdir()
    check_replaceable(tmp_path / "empty", "demo", what="x")
    write_owned_folder(tmp_path / "owned", "demo", _writer({"a": "1"}))
    check_replaceable(tmp_path / "owned", "demo", what="x")
    with pytest.raises(FolderNotOwnedError, match="owned"):
        check_replaceable(tmp_path / "owned", "other", what="x")
    (tmp_path / "file").write_text(THESIS)
    with pytest.raises(FolderNotOwnedError, match="is a file"):
        write_owned_folder(tmp_path / "file", "demo", _writer({"a": "1"}))
    assert (tmp_path / "file").read_text() == THESIS


@pytest.mark.parametrize("error", [ValueError, KeyboardInterrupt])
@pytest.mark.parametrize("earlier", [False, True])
def test_an_interrupted_write_leaves_no_temporary_folder_and_keeps_the_earlier_one(
    tmp_path, error, earlier
):
    root = tmp_path / "cache"
    if earlier:
        write_owned_folder(root, "demo", _writer({"old.txt": "x"}))

    def write(tmp):
        _writer({"half.txt": "y" * 1000})(tmp)
        raise error("stopped mid-write")

    with pytest.raises(error):
        write_owned_folder(root, "demo", write)
    assert _names(tmp_path) == (["cache"] if earlier else [])
    if earlier:
        assert _names(root) == [INVENTORY, MARKER, "old.txt"]


@pytest.mark.parametrize("where", ["thesis.txt", "a/thesis.txt"])
def test_a_file_the_user_added_to_an_owned_folder_keeps_it_from_being_replaced(tmp_path, where):
    root = tmp_path / "cache"
    write_owned_folder(root, "demo", _writer({"a/b.txt": "1"}))
    (root / where).write_text(THESIS)
    with pytest.raises(FolderNotOwnedError, match=re.escape(f"did not write ({where})")):
        write_owned_folder(root, "demo", _writer({"new.txt": "2"}))
    assert (root / where).read_text() == THESIS and (root / "a" / "b.txt").read_text() == "1"
    assert _names(tmp_path) == ["cache"]


@pytest.mark.parametrize("inventory", [None, "{not json", '{"a/b.txt": 1}'])
def test_an_owned_folder_without_a_readable_file_list_is_not_replaced(tmp_path, inventory):
    root = tmp_path / "cache"
    write_owned_folder(root, "demo", _writer({"a/b.txt": "1"}))
    if inventory is None:
        (root / INVENTORY).unlink()
    else:
        (root / INVENTORY).write_text(inventory)
    with pytest.raises(FolderNotOwnedError, match="missing or damaged"):
        write_owned_folder(root, "demo", _writer({"new.txt": "2"}))
    assert (root / "a" / "b.txt").read_text() == "1"


# --- the caches: synthetic CT phantoms and synthetic 2-D scenes ---
TINY_GRID = {"shape": (24, 24, 8), "spacing": (14.6, 14.6, 24.0)}


def test_phantoms_refuse_a_cache_folder_holding_the_users_files(tmp_path):
    from agcl.data.synthetic import ensure_btcv_like

    root = _user_folder(tmp_path / "cache")
    with pytest.raises(FolderNotOwnedError, match=re.escape(str(root))):
        ensure_btcv_like(root, 2, ("contrast",), quiet=True, **TINY_GRID)
    assert _names(root) == ["thesis.txt"] and (root / "thesis.txt").read_text() == THESIS
    assert _names(tmp_path) == ["cache"]


def test_phantoms_are_reused_rewritten_for_other_arguments_and_cleaned_up_on_errors(
    tmp_path, monkeypatch
):
    import agcl.data.synthetic as synthetic

    root = tmp_path / "cache"
    folders = synthetic.ensure_btcv_like(root, 2, ("contrast",), seed=1, quiet=True, **TINY_GRID)
    assert folders == {"contrast": root / "contrast"} and is_owned(root, "synthetic-ct")
    image = root / "contrast" / "RawData" / "Training" / "img" / "img0001.nii.gz"
    first = image.read_bytes()
    calls = []
    monkeypatch.setattr(synthetic, "write_btcv_like", lambda *a, **k: calls.append(a))
    synthetic.ensure_btcv_like(root, 2, ("contrast",), seed=1, quiet=True, **TINY_GRID)
    assert calls == []  # reused: the marker records the arguments
    monkeypatch.undo()
    synthetic.ensure_btcv_like(root, 2, ("contrast",), seed=2, quiet=True, **TINY_GRID)
    assert image.read_bytes() != first  # another seed: agcl's own folder is rewritten
    # an argument error or Ctrl-C while writing: no temporary folder left (issue 26, row 27)
    with pytest.raises(ValueError, match="spacing"):
        synthetic.ensure_btcv_like(
            tmp_path / "bad",
            2,
            ("contrast",),
            quiet=True,
            shape=(24, 24, 8),
            spacing=(0.0, 1.0, 1.0),
        )

    def interrupted(tmp, *args, **kwargs):
        (tmp / "contrast").mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "write_btcv_like", interrupted)
    with pytest.raises(KeyboardInterrupt):
        synthetic.ensure_btcv_like(root, 2, ("contrast",), seed=3, quiet=True, **TINY_GRID)
    assert _names(tmp_path) == ["cache"]
    assert json.loads((root / MARKER).read_text())["seed"] == 2  # the earlier phantoms are intact
    # the user's notes saved into agcl's cache folder: reused, never deleted
    monkeypatch.undo()
    (root / "thesis.txt").write_text(THESIS)
    synthetic.ensure_btcv_like(root, 2, ("contrast",), seed=2, quiet=True, **TINY_GRID)
    with pytest.raises(FolderNotOwnedError, match=r"did not write \(thesis\.txt\)"):
        synthetic.ensure_btcv_like(root, 2, ("contrast",), seed=4, quiet=True, **TINY_GRID)
    assert (root / "thesis.txt").read_text() == THESIS


def test_scenes_refuse_a_devkit_agcl_did_not_write_and_keep_the_users_other_files(tmp_path):
    pytest.importorskip("PIL")
    from agcl.data.synthetic2d import ensure_voc_like

    cache = tmp_path / "cache"
    devkit = _user_folder(cache / "VOCdevkit")  # the user's own devkit inside the cache folder
    (devkit / "VOC2012").mkdir()
    (devkit / "VOC2012" / "note.txt").write_text("annotations")
    with pytest.raises(FolderNotOwnedError, match=re.escape(str(devkit))):
        ensure_voc_like(cache, 2, 1, size=32, quiet=True)
    assert sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*")) == [
        "VOCdevkit",
        "VOCdevkit/VOC2012",
        "VOCdevkit/VOC2012/note.txt",
        "VOCdevkit/thesis.txt",
    ]
    # the cache folder may hold the user's files beside agcl's devkit: they are left alone
    other = _user_folder(tmp_path / "other")
    written = ensure_voc_like(other, 2, 1, size=32, quiet=True)
    assert written == other / "VOCdevkit" and is_owned(written, "synthetic-voc")
    ensure_voc_like(other, 3, 1, size=32, quiet=True)  # other arguments: agcl's devkit is rewritten
    assert json.loads((written / MARKER).read_text())["n_train"] == 3
    assert (other / "thesis.txt").read_text() == THESIS
    assert _names(other) == ["VOCdevkit", "thesis.txt"]
