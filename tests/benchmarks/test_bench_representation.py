"""benchmarks/bench_representation.py: the intensity-only baseline separates what intensity
separates and nothing else, and the report on a finished run scores the run's own encoder exactly
as the run did (else the diagnoses would not be comparable with results.json)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from agcl.metrics import pooled_features, probe_embeddings
from agcl.pipeline import run_pipeline
from tests.pipeline._tiny import tiny_cohort, tiny_config

ROOT = Path(__file__).resolve().parents[2]


def _bench():
    spec = importlib.util.spec_from_file_location(
        "bench_representation", ROOT / "benchmarks" / "bench_representation.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _files(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _patches(level: float, n: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(n, 2, 16, 16, generator=gen) * 0.1
    x[:, 0] += level
    x[:, 1] = torch.rand(n, 16, 16, generator=gen)  # attention channel: ignored by the baseline
    return x


def test_intensity_baseline_reads_intensity_and_nothing_else():
    module = _bench()
    enc = module.IntensityQuantiles(quantiles=4)
    gen = torch.Generator().manual_seed(0)
    fit = torch.cat([_patches(-1.0, 40, gen), _patches(1.0, 40, gen)])
    score = torch.cat([_patches(-1.0, 20, gen), _patches(1.0, 20, gen)])
    fz, sz = pooled_features(enc, fit), pooled_features(enc, score)
    assert fz.shape == (80, 9)  # 4 + 4 quantiles and the median
    fit_y = {"level": torch.arange(80) // 40}
    score_y = {"level": torch.arange(40) // 20}
    out = probe_embeddings(fz, fit_y, sz, score_y, k=5, silhouette_key=None)
    assert out["knn"]["level"] == 1.0 and out["linear"]["level"] == 1.0
    # the same intensity with labels that only the attention channel could tell apart: chance
    same_fit = torch.cat([_patches(0.0, 40, gen), _patches(0.0, 40, gen)])
    same_fit[40:, 1] += 5.0
    same_score = torch.cat([_patches(0.0, 100, gen), _patches(0.0, 100, gen)])
    same_score[100:, 1] += 5.0
    out = probe_embeddings(
        pooled_features(enc, same_fit),
        fit_y,
        pooled_features(enc, same_score),
        {"level": torch.arange(200) // 100},
        k=5,
        silhouette_key=None,
    )
    assert 0.35 < out["knn"]["level"] < 0.65 and 0.35 < out["linear"]["level"] < 0.65


def test_report_on_a_run_matches_its_results_and_leaves_it_untouched(tmp_path, capsys):
    module = _bench()
    train, test = tiny_cohort(tmp_path / "data")
    cfg = tiny_config(**{"coarse.source": "gt", "coarse.epochs": 20, "segment.epochs": 6})
    result = run_pipeline(train, test, cfg, tmp_path / "run", write_predictions=False)
    assert result["mean"]["dice"] > 0.05 and result["probe"] is not None
    before = _files(tmp_path / "run")
    out = tmp_path / "report"
    args = [str(tmp_path / "run"), "--random-seeds", "1", "--ablate", "--out", str(out)]
    assert module.main(args) == 0
    assert _files(tmp_path / "run") == before  # the run folder is only read
    entry = json.loads((out / "representation.json").read_text())["runs"][str(tmp_path / "run")]
    # the run's own encoder, probed as the run probed it, gives the run's own figures
    for kind in ("knn", "linear"):
        assert entry["probe"][kind] == pytest.approx(result["probe"][kind], abs=1e-9)
    # and the trained model, scored as the run scored it, its held-out Dice
    assert entry["dice"]["trained"]["blended"] == pytest.approx(result["mean"]["dice"], abs=1e-9)
    assert entry["dice"]["trained"]["stage3_only"] == pytest.approx(
        result["stage3_only"]["mean"]["dice"], abs=1e-9
    )
    assert set(entry["dice"]) == set(module.DIAGNOSES)
    assert len(entry["random"]) == 1 and entry["intensity"]["patches"] > 0
    # each taken-away part changes what stage 3 predicts (else the diagnosis measured nothing)
    for name in ("zero_features", "random_encoder", "zero_image"):
        assert entry["dice"][name]["stage3_only"] != entry["dice"]["trained"]["stage3_only"], name
    assert "intensity quantiles" in (out / "representation.md").read_text()


def test_report_never_goes_into_the_run_folder(tmp_path, capsys):
    module = _bench()
    run = tmp_path / "run"
    run.mkdir()
    for out in (run, run / "sub"):
        with pytest.raises(SystemExit) as exit_info:
            module.main([str(run), "--out", str(out)])
        assert exit_info.value.code == 2
        assert "lies inside the run folder" in capsys.readouterr().err
    assert list(run.iterdir()) == []
