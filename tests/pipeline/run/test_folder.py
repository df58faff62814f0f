"""RunFolder: a run folder belongs to its run; an earlier run is never replaced by accident and
``overwrite`` removes only the run's own files (issue 25, "A run folder that belongs to the
run")."""

from __future__ import annotations

import json
import re

import pytest

from agcl.pipeline.run import MANIFEST, RunExistsError, RunFolder, RunFolderError

NOTE = "my notes on this run"
# the user's files in a run folder, also inside the run's own sub-folders
USER_FILES = ["checkpoints/my_finetune.pt", "notes.txt", "predictions/reviewed/contrast_0002.txt"]


def _tree(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def _finished_run(root):
    """A run as the pipeline leaves it: its files recorded in run.json, plus the user's notes
    (in the folder and inside the run's own sub-folders)."""
    folder = RunFolder.open(root)
    for rel in (
        "checkpoints/coarse.pt",
        "coarse/contrast_0001.nii.gz",
        "predictions/contrast_0002.nii.gz",
        "epochs.jsonl",
        "results.json",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
        folder.own(root / rel)
    folder.save()
    for rel in USER_FILES:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(NOTE)
    return folder


def test_a_new_run_in_an_absent_empty_or_unrelated_folder(tmp_path):
    absent = RunFolder.open(tmp_path / "a" / "b")
    assert (tmp_path / "a" / "b" / MANIFEST).is_file() and len(absent.run_id) == 12
    (tmp_path / "empty").mkdir()
    assert RunFolder.open(tmp_path / "empty").run_id != absent.run_id
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text(NOTE)
    RunFolder.open(mine)
    assert _tree(mine) == sorted([MANIFEST, "notes.txt"])
    assert (mine / "notes.txt").read_text() == NOTE
    data = json.loads((mine / MANIFEST).read_text())
    assert data["stages"] == {} and data["files"] == [] and data["runs"] == []


def test_an_earlier_run_is_refused_without_resume_or_overwrite(tmp_path):
    root = tmp_path / "run"
    _finished_run(root)
    before = {rel: (root / rel).read_text() for rel in _tree(root)}
    with pytest.raises(RunExistsError) as err:
        RunFolder.open(root)
    message = str(err.value)
    assert str(root) in message and "--resume" in message and "--overwrite" in message
    assert isinstance(err.value, RunFolderError) and isinstance(err.value, ValueError)
    assert {rel: (root / rel).read_text() for rel in _tree(root)} == before  # nothing touched
    with pytest.raises(RunFolderError, match="exclude each other"):
        RunFolder.open(root, resume=True, overwrite=True)


def test_resume_continues_the_same_run(tmp_path):
    root = tmp_path / "run"
    first = _finished_run(root)
    again = RunFolder.open(root, resume=True)
    assert again.run_id == first.run_id and again.manifest.data == first.manifest.data
    assert (root / "checkpoints" / "coarse.pt").is_file()


def test_overwrite_removes_only_the_runs_own_files(tmp_path):
    root = tmp_path / "run"
    first = _finished_run(root)
    new = RunFolder.open(root, overwrite=True)
    assert new.run_id != first.run_id
    # the user's files are kept, also inside the run's folders; folders the run emptied are gone
    assert _tree(root) == sorted([MANIFEST, *USER_FILES])
    assert all((root / rel).read_text() == NOTE for rel in USER_FILES)
    assert not (root / "coarse").exists()
    data = json.loads((root / MANIFEST).read_text())
    assert data["run_id"] == new.run_id and data["files"] == [] and data["stages"] == {}


def test_overwrite_clears_the_sub_runs_it_lists(tmp_path):
    root = tmp_path / "run"
    folder = _finished_run(root)
    sub_dir = root / "ablation" / "ce"
    sub = RunFolder.open(sub_dir)
    (sub_dir / "checkpoints").mkdir()
    (sub_dir / "checkpoints" / "segment.pt").write_text("x")
    sub.own(sub_dir / "checkpoints" / "segment.pt", save=True)
    (sub_dir / "mine.txt").write_text(NOTE)
    folder.own_run(sub_dir)
    RunFolder.open(root, overwrite=True)
    assert _tree(root) == sorted([MANIFEST, *USER_FILES, "ablation/ce/mine.txt"])


def test_a_folder_holding_names_a_run_writes_but_no_manifest_is_refused(tmp_path):
    root = tmp_path / "out"
    (root / "coarse").mkdir(parents=True)
    (root / "coarse" / "my_maps.nii.gz").write_text(NOTE)
    (root / "results.json").write_text(NOTE)
    for flags in ({}, {"resume": True}, {"overwrite": True}):
        with pytest.raises(
            RunFolderError, match=r"not an agcl run folder but holds coarse, results\.json"
        ):
            RunFolder.open(root, **flags)
    assert _tree(root) == ["coarse/my_maps.nii.gz", "results.json"]


def _legacy_run(root):
    """A run written before run.json existed, with the user's files beside it."""
    for rel in (
        "checkpoints/coarse.pt",
        "checkpoints/pretrain.pt",
        "checkpoints/segment.pt",
        "coarse/contrast_0001.nii.gz",
        "coarse/contrast_0001.prob.pt",
        "predictions/contrast_0002.nii.gz",
        "epochs.jsonl",
        "results.json",
        "results.md",
        "fig3_embeddings_pca.png",
        "ablation/ce/checkpoints/segment.pt",
        "ablation/ce/epochs.jsonl",
    ):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(rel)
    for rel in ("notes.txt", "checkpoints/my_finetune.pt", "ablation/ce/notes.txt"):
        (root / rel).write_text(NOTE)


def test_a_run_without_manifest_is_cleared_of_its_files_only_and_cannot_be_resumed(tmp_path):
    root = tmp_path / "old"
    _legacy_run(root)
    before = _tree(root)
    with pytest.raises(RunExistsError, match="--overwrite"):
        RunFolder.open(root)
    with pytest.raises(RunFolderError, match="cannot be resumed"):
        RunFolder.open(root, resume=True)
    assert _tree(root) == before
    RunFolder.open(root, overwrite=True)
    assert _tree(root) == sorted(
        [MANIFEST, "notes.txt", "checkpoints/my_finetune.pt", "ablation/ce/notes.txt"]
    )


@pytest.mark.parametrize(
    "content",
    [
        '{"stages": {',
        "",
        "[1, 2]",
        '{"stages": []}',
        "\udcff",
        '{"stages": {}, "files": "results.json"}',
        '{"stages": {}, "files": [5]}',
        '{"stages": {}, "runs": {}}',
    ],
)
def test_a_damaged_manifest_is_refused_naming_it(tmp_path, content):
    root = tmp_path / "run"
    _finished_run(root)
    path = root / MANIFEST
    if content == "\udcff":
        path.write_bytes(b"\xff\xfe{")  # not UTF-8
    else:
        path.write_text(content)
    before = _tree(root)
    for flags in ({"resume": True}, {"overwrite": True}):
        with pytest.raises(RunFolderError, match=re.escape(str(path))):
            RunFolder.open(root, **flags)
    assert _tree(root) == before  # overwrite removed nothing it could not trust


@pytest.mark.parametrize("where", ["files", "runs"])
@pytest.mark.parametrize("outside", ["../victim.txt", "{abs}", "link/victim.txt"])
def test_manifest_paths_outside_the_folder_are_refused(tmp_path, where, outside):
    victim = tmp_path / "victim.txt"
    victim.write_text(NOTE)
    root = tmp_path / "run"
    folder = _finished_run(root)
    (root / "link").symlink_to(tmp_path, target_is_directory=True)
    entry = str(victim) if outside == "{abs}" else outside
    # a sub-run entry names the folder that holds the victim
    folder.manifest.data[where].append(entry if where == "files" else entry.rsplit("/", 1)[0])
    folder.save()
    before = _tree(root)
    with pytest.raises(RunFolderError, match="outside the run folder"):
        RunFolder.open(root, overwrite=True)
    assert victim.read_text() == NOTE
    assert _tree(root) == before  # refused before anything was removed


def test_a_sub_run_is_not_cleared_when_the_manifest_is_refused(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text(NOTE)
    root = tmp_path / "run"
    folder = _finished_run(root)
    sub_dir = root / "ablation" / "ce"
    sub = RunFolder.open(sub_dir)
    (sub_dir / "results.json").write_text("x")
    sub.own(sub_dir / "results.json", save=True)
    folder.own_run(sub_dir)
    folder.manifest.data["files"].append("../victim.txt")
    folder.save()
    with pytest.raises(RunFolderError, match="outside the run folder"):
        RunFolder.open(root, overwrite=True)
    assert (sub_dir / "results.json").is_file() and victim.read_text() == NOTE


def test_a_file_where_the_folder_should_be(tmp_path):
    (tmp_path / "out").write_text(NOTE)
    with pytest.raises(RunFolderError, match="is a file"):
        RunFolder.open(tmp_path / "out")
    assert (tmp_path / "out").read_text() == NOTE


def test_only_recorded_files_are_removed_and_paths_stay_inside(tmp_path):
    root = tmp_path / "run"
    folder = _finished_run(root)
    folder.remove(
        [
            root / "checkpoints" / "coarse.pt",
            root / "notes.txt",
            root / "checkpoints" / "my_finetune.pt",
        ]
    )
    assert not (root / "checkpoints" / "coarse.pt").exists()
    assert (root / "notes.txt").read_text() == NOTE
    assert (root / "checkpoints" / "my_finetune.pt").is_file()
    assert folder.rel(root / "coarse" / "x.nii.gz") == "coarse/x.nii.gz"
    with pytest.raises(RunFolderError, match="outside the run folder"):
        folder.rel(tmp_path / "elsewhere.txt")
    with pytest.raises(RunFolderError, match="outside the run folder"):
        folder.own(tmp_path / "elsewhere.txt")


def test_paths_relative_to_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = RunFolder.open("runs/a")
    (tmp_path / "runs" / "a" / "epochs.jsonl").write_text("x")
    folder.own("runs/a/epochs.jsonl", save=True)
    assert json.loads((tmp_path / "runs" / "a" / MANIFEST).read_text())["files"] == ["epochs.jsonl"]


def test_other_ranks_read_and_write_nothing(tmp_path):
    root = tmp_path / "run"
    _finished_run(root)
    before = (root / MANIFEST).read_text()
    other = RunFolder.open(root, main=False)  # no RunExistsError: rank 0 decides
    other.own(root / "notes.txt")
    other.remove([root / "checkpoints" / "coarse.pt"])
    other.save()
    assert (root / MANIFEST).read_text() == before
    assert (root / "checkpoints" / "coarse.pt").is_file()
    assert not RunFolder.open(tmp_path / "new", main=False).path.exists()


@pytest.mark.parametrize("entry", [".", "", "ablation/.."])
def test_a_manifest_listing_its_own_folder_as_a_sub_run_is_refused(tmp_path, entry):
    root = tmp_path / "run"
    folder = _finished_run(root)
    folder.manifest.data["runs"].append(entry)
    folder.save()
    before = _tree(root)
    with pytest.raises(RunFolderError, match="sub-run"):
        RunFolder.open(root, overwrite=True)
    assert _tree(root) == before
