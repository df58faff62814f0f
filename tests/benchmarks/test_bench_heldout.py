"""benchmarks/bench_heldout.py scores a run's checkpoints exactly as the run scores its own
held-out cases (else its figures on more phantoms would not be comparable with results.json)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from agcl.data import PreparedCases
from agcl.pipeline import run_pipeline
from tests.pipeline._tiny import tiny_cohort, tiny_config

ROOT = Path(__file__).resolve().parents[2]


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _fake_run(root: Path, stages: dict) -> Path:
    """A folder with the checkpoint files bench_heldout looks for and a run.json recording
    ``stages`` (``{name: complete}``); enough for the checks made before anything is loaded."""
    (root / "checkpoints").mkdir(parents=True)
    for name in ("coarse.pt", "segment.pt"):
        (root / "checkpoints" / name).write_bytes(b"")
    (root / "run.json").write_text(
        json.dumps({"stages": {k: {"complete": v} for k, v in stages.items()}})
    )
    return root


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_heldout", ROOT / "benchmarks" / "bench_heldout.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("channel", ["mask", "probability"])
def test_scores_equal_the_runs_own_held_out_results(tmp_path, channel):
    module = _bench()
    train, test = tiny_cohort(tmp_path / "data")
    # trained on ground-truth attention and long enough that stage 3 finds something (a Dice of 0
    # everywhere would make the comparison below vacuous)
    cfg = tiny_config(
        **{
            "coarse.attention_channel": channel,
            "coarse.epochs": 20,
            "coarse.source": "gt",
            "segment.epochs": 6,
        }
    )
    result = run_pipeline(
        train, test, cfg, tmp_path / "run", write_predictions=False, embed_patches_per_slice=0
    )
    assert result["mean"]["dice"] > 0.05
    assert module.unfinished_stages(tmp_path / "run") == []
    before = _files(tmp_path / "run")
    cases = PreparedCases(
        [c for c, _ in test],
        [m for _, m in test],
        clip_hu=cfg.clip_hu,
        percentiles=cfg.percentiles,
        organs=dict(module.BTCV_ORGANS),
        body=cfg.coarse.body_mask,
    )  # as main() prepares them
    summary = module.summarize(module.score_cases(tmp_path / "run", cases, overrides={}))
    assert _files(tmp_path / "run") == before  # the run folder is only read
    assert summary["cases"] == len(test)
    assert summary["mean_dice"] == pytest.approx(result["mean"]["dice"], abs=1e-9)
    assert summary["coarse_mean_dice"] == pytest.approx(result["coarse_mean"]["dice"], abs=1e-9)
    for name, row in summary["per_organ"].items():
        assert row["dice"] == result["per_organ"][name]["dice"], name
        assert row["min_recall"] == result["attention_recall_min"][name], name
    # an inference-only override changes the fusion, not the checkpoints
    strict = module.summarize(
        module.score_cases(tmp_path / "run", cases, overrides={"segment.threshold": 0.99})
    )
    assert strict["coarse_mean_dice"] == summary["coarse_mean_dice"]
    assert strict["mean_dice"] < summary["mean_dice"] and strict["missed"] > summary["missed"]


def test_only_inference_fields_can_be_overridden_and_the_run_must_exist(tmp_path, capsys):
    module = _bench()
    with pytest.raises(SystemExit):
        module.main(["--run", str(tmp_path), "--set", "segment.epochs=3"])
    err = capsys.readouterr().err
    assert (
        "segment.coarse_weight" in err
        and "'segment.epochs=3'" in err
        and "fixed by the run's checkpoints" in err
    )
    with pytest.raises(SystemExit):
        module.main(["--run", str(tmp_path), "--set", "segment.coarse_weight=0.6"])
    assert f"{tmp_path / 'checkpoints' / 'segment.pt'} not found" in capsys.readouterr().err


def test_an_unfinished_run_is_refused(tmp_path, capsys):
    module = _bench()
    run = _fake_run(tmp_path / "run", {"coarse": True, "segment": False})
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--run", str(run), "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "records stage(s) segment as not finished" in capsys.readouterr().err
    (run / "run.json").write_text("{not json")
    with pytest.raises(SystemExit):
        module.main(["--run", str(run), "--out", str(tmp_path / "out")])
    assert "is not a readable run manifest" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_outputs_go_next_to_the_run_never_inside_it(tmp_path, capsys):
    module = _bench()
    run = _fake_run(tmp_path / "runs" / "demo", {"coarse": True, "segment": True})
    sub = _fake_run(run / "ablation" / "supcon", {"coarse": True, "segment": True})
    assert module.default_out(run) == tmp_path / "runs" / "demo_heldout"
    # a sub-run's default lies under the outermost run's sibling, not inside that run
    assert module.default_out(sub) == tmp_path / "runs" / "demo_heldout" / "ablation" / "supcon"
    assert module.default_out(tmp_path / "runs" / "other") == tmp_path / "runs" / "other_heldout"
    before = _files(run)
    for out in (run, run / "eval", sub / "eval", run / "ablation"):
        with pytest.raises(SystemExit) as exit_info:
            module.main(["--run", str(sub), "--out", str(out)])
        assert exit_info.value.code == 2
        assert f"lies inside the run folder {run.resolve()}" in capsys.readouterr().err
    assert _files(run) == before
