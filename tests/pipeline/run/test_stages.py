"""StageBook: a stage continues only onto a record that still matches; otherwise it and every
stage built on it are redone, and the log says why (issue 25: "stage 1 changed: coarse.epochs
2 -> 4; redoing stages 1-3")."""

from __future__ import annotations

import hashlib

from agcl.pipeline import PipelineConfig
from agcl.pipeline.run import RunFolder
from agcl.pipeline.run.stages import StageBook
from agcl.pipeline.toolkit.fingerprint import stage_fingerprint

# the CT run's dependencies with coarse attention (stages 2-3 read stage 1's maps)
FROM_MAPS = {"coarse": ["pretrain", "segment"], "pretrain": ["segment"]}
# ground-truth attention: stages 2-3 do not read stage 1's output
FROM_GT = {"coarse": [], "pretrain": ["segment"]}
STAGES = ("coarse", "pretrain", "segment")


def _fp(stage, **changes):
    config = PipelineConfig.quick().override(**{"coarse.epochs": 2, **changes})
    return stage_fingerprint(stage, config, organ_ids=[1, 6])


def _book(root, dependents=FROM_MAPS, dropped=None):
    lines: list[str] = []
    folder = RunFolder.open(root, resume=(root / "run.json").exists())
    book = StageBook(
        folder, dependents, on_redo=None if dropped is None else dropped.append, say=lines.append
    )
    return book, lines


def _run_all(root, inputs=None, **changes):
    """Every stage begun, its checkpoint written, and finished, as the pipeline does."""
    book, lines = _book(root)
    for stage in STAGES:
        book.begin(stage, _fp(stage, **changes), inputs or {"cases": []})
        ckpt = root / "checkpoints" / f"{stage}.pt"
        ckpt.parent.mkdir(exist_ok=True)
        ckpt.write_text(f"{stage} {changes}")
        book.done(stage, [ckpt])
    return book, lines


def _checkpoints(root):
    return sorted(p.name for p in (root / "checkpoints").glob("*"))


def test_a_matching_record_is_continued(tmp_path):
    root = tmp_path / "run"
    _run_all(root)
    book, lines = _book(root)
    for stage in STAGES:
        book.begin(stage, _fp(stage), {"cases": []})
    assert lines == [] and _checkpoints(root) == ["coarse.pt", "pretrain.pt", "segment.pt"]
    assert all(book.folder.manifest.stage(s) is not None for s in STAGES)


def test_changed_stage_1_settings_redo_stages_1_to_3_and_say_why(tmp_path):
    root = tmp_path / "run"
    _run_all(root)
    (root / "checkpoints" / "my_finetune.pt").write_text("mine")  # not the run's: kept
    dropped: list = []
    book, lines = _book(root, dropped=dropped)
    book.begin("coarse", _fp("coarse", **{"coarse.epochs": 4}), {"cases": []})
    assert lines == ["[run] stage 1 changed: coarse.epochs: 2 -> 4; redoing stages 1-3"]
    assert _checkpoints(root) == ["my_finetune.pt"]
    assert dropped == [["coarse", "pretrain", "segment"]]
    manifest = book.folder.manifest
    assert manifest.stage("pretrain") is None and manifest.stage("segment") is None
    assert manifest.stage("coarse")["fingerprint"]["fields"]["coarse.epochs"] == 4  # the new record
    assert not manifest.stage("coarse")["complete"]


def test_changed_inputs_of_stage_2_redo_stages_2_and_3_only(tmp_path):
    root = tmp_path / "run"
    _run_all(root, inputs={"cases": [], "attention": {"contrast_0001": "aa"}})
    book, lines = _book(root)
    book.begin("coarse", _fp("coarse"), {"cases": [], "attention": {"contrast_0001": "aa"}})
    book.begin("pretrain", _fp("pretrain"), {"cases": [], "attention": {"contrast_0001": "bb"}})
    assert lines == ["[run] stage 2 changed: attention.contrast_0001 differs; redoing stages 2-3"]
    assert _checkpoints(root) == ["coarse.pt"]


def test_ground_truth_attention_keeps_stages_2_and_3_when_stage_1_changes(tmp_path):
    root = tmp_path / "run"
    _run_all(root)
    book, lines = _book(root, dependents=FROM_GT)
    book.begin("coarse", _fp("coarse", seed=1), {"cases": []})
    assert lines == ["[run] stage 1 changed: seed: 0 -> 1; redoing stage 1"]
    assert _checkpoints(root) == ["pretrain.pt", "segment.pt"]


def test_a_checkpoint_changed_or_missing_on_disk_is_redone(tmp_path):
    root = tmp_path / "run"
    _run_all(root)
    (root / "checkpoints" / "pretrain.pt").write_text("damaged")
    book, lines = _book(root)
    for stage in STAGES:
        book.begin(stage, _fp(stage), {"cases": []})
    assert lines == [
        "[run] stage 2 changed: its output checkpoints/pretrain.pt changed on disk; "
        "redoing stages 2-3"
    ]
    assert _checkpoints(root) == ["coarse.pt"]

    root = tmp_path / "run2"
    _run_all(root)
    (root / "checkpoints" / "segment.pt").unlink()
    book, lines = _book(root)
    for stage in STAGES:
        book.begin(stage, _fp(stage), {"cases": []})
    assert lines == [
        "[run] stage 3 changed: its output checkpoints/segment.pt is missing; redoing stage 3"
    ]


def test_an_unfinished_stage_keeps_its_checkpoint_and_owns_it(tmp_path):
    # killed mid-stage: no outputs recorded yet, the per-epoch checkpoint is continued
    root = tmp_path / "run"
    book, lines = _book(root)
    book.begin("coarse", _fp("coarse"), {"cases": []})
    assert "checkpoints/coarse.pt" in book.folder.manifest.data["files"]  # --overwrite removes it
    (root / "checkpoints").mkdir()
    (root / "checkpoints" / "coarse.pt").write_text("epoch 1")
    book, lines = _book(root)
    book.begin("coarse", _fp("coarse"), {"cases": []})
    assert lines == [] and (root / "checkpoints" / "coarse.pt").read_text() == "epoch 1"


def test_done_records_digests_and_digest_reads_them(tmp_path):
    root = tmp_path / "run"
    book, _ = _run_all(root)
    ckpt = root / "checkpoints" / "segment.pt"
    assert book.digest("segment", ckpt) == hashlib.sha256(ckpt.read_bytes()).hexdigest()
    assert book.digest("segment", root / "checkpoints" / "other.pt") is None
    assert book.folder.manifest.stage("segment")["complete"]


def test_other_ranks_record_nothing(tmp_path):
    root = tmp_path / "run"
    _run_all(root)
    before = (root / "run.json").read_text()
    lines: list[str] = []
    book = StageBook(RunFolder.open(root, main=False), FROM_MAPS, say=lines.append)
    book.begin("coarse", _fp("coarse", seed=5), {"cases": []})
    book.done("coarse", [root / "checkpoints" / "coarse.pt"])
    assert lines == [] and (root / "run.json").read_text() == before
    assert _checkpoints(root) == ["coarse.pt", "pretrain.pt", "segment.pt"]
