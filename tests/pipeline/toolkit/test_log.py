"""epochs.jsonl after a kill: the run folder's one appended file (issue 25: "A damaged or partial
file found on resume is rebuilt when its stage can rebuild it, or refused with its path")."""

from __future__ import annotations

from agcl.pipeline.toolkit.log import EpochLog


def test_a_line_cut_short_by_a_kill_is_skipped_when_it_is_the_last(tmp_path):
    log = EpochLog(tmp_path / "epochs.jsonl", run_id="r1")
    log.write(stage="coarse", epoch=1, loss=0.5)
    with open(log.path, "a", encoding="utf-8") as fh:
        fh.write('{"stage": "coarse", "epo')  # killed while writing epoch 2's line
    assert [(r["stage"], r["epoch"], r["run"]) for r in log.read()] == [("coarse", 1, "r1")]


def test_the_resumed_run_continues_after_a_line_cut_short(tmp_path):
    log = EpochLog(tmp_path / "epochs.jsonl", run_id="r1")
    log.write(stage="coarse", epoch=1, loss=0.5)
    with open(log.path, "a", encoding="utf-8") as fh:
        fh.write('{"stage": "coarse", "epo')
    resumed = EpochLog(tmp_path / "epochs.jsonl", run_id="r1")
    resumed.write(stage="coarse", epoch=2, loss=0.25)
    assert [(r["epoch"], r["loss"]) for r in resumed.read()] == [(1, 0.5), (2, 0.25)]
