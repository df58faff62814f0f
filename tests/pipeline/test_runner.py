from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from agcl._io import safe_load
from agcl.data import load_volume
from agcl.pipeline import (
    EpochLog,
    find_coarse_file,
    predict_volume,
    results_entry,
    run_pipeline,
    write_results,
)
from tests.pipeline._tiny import tiny_cohort, tiny_config


class Interrupt(Exception):
    pass


def _stop_after(stage: str, epoch: int, seen: list):
    def callback(s, e, record):
        seen.append((s, e))
        if (s, e) == (stage, epoch):
            raise Interrupt(f"stopped after {s} epoch {e}")

    return callback


def test_full_pipeline_resume_and_results(tmp_path):
    train, test = tiny_cohort(tmp_path / "data")
    # a 2-epoch coarse model may find nothing: train on ground-truth attention (the paper's option)
    cfg = tiny_config(**{"coarse.source": "gt"})
    out = tmp_path / "run"
    seen: list = []
    with pytest.raises(Interrupt):
        run_pipeline(train, test, cfg, out, callback=_stop_after("pretrain", 1, seen))
    assert seen == [("coarse", 1), ("coarse", 2), ("pretrain", 1)]
    coarse_ckpt = safe_load(out / "checkpoints" / "coarse.pt")
    assert coarse_ckpt["complete"] and coarse_ckpt["epoch"] == 2
    pre = safe_load(out / "checkpoints" / "pretrain.pt")
    assert pre["epoch"] == 1 and not pre["complete"]
    coarse_mtime = (out / "checkpoints" / "coarse.pt").stat().st_mtime_ns

    seen.clear()
    result = run_pipeline(
        train, test, cfg, out, resume=True, callback=lambda s, e, r: seen.append((s, e))
    )
    # stage 1 is not retrained, stage 2 continues from epoch 2, stage 3 runs in full
    assert seen == [("pretrain", 2), ("segment", 1), ("segment", 2)]
    assert (out / "checkpoints" / "coarse.pt").stat().st_mtime_ns == coarse_mtime
    records = EpochLog(out / "epochs.jsonl").read()
    assert [(r["stage"], r["epoch"]) for r in records] == [
        ("coarse", 1),
        ("coarse", 2),
        ("pretrain", 1),
        ("pretrain", 2),
        ("segment", 1),
        ("segment", 2),
    ]
    assert all(np.isfinite(r["loss"]) for r in records)

    # the resumed run equals an uninterrupted run with the same seed (same machine, same threads)
    straight = run_pipeline(train, test, cfg, tmp_path / "straight", write_predictions=False)
    a = safe_load(out / "checkpoints" / "segment.pt")["model"]
    b = safe_load(tmp_path / "straight" / "checkpoints" / "segment.pt")["model"]
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    assert result["mean"] == straight["mean"]

    # results: the contract's keys, organ names, predictions next to the scans
    assert set(result["per_organ"]) == {"spleen", "liver", "stomach"}
    entry = results_entry(result, runtime_s=1.0)
    json_path, md_path = write_results(out, entry)
    data = json.loads(json_path.read_text())
    assert set(data) == {
        "per_organ",
        "mean",
        "config",
        "runtime_s",
        "coarse_mean",
        "attention_recall",
        "attention_recall_min",
        "stage3_only",
        "run_id",
        "probe",
    }
    assert set(data["stage3_only"]) == {"mean", "per_organ"} and set(
        data["stage3_only"]["per_organ"]
    ) == set(data["per_organ"])
    assert set(data["mean"]) == {"dice", "hd95", "assd", "missed", "false_positive"}
    assert all(
        set(v) == {"dice", "hd95", "assd", "missed", "false_positive"}
        for v in data["per_organ"].values()
    )
    assert "| liver |" in md_path.read_text()
    # stage 1 keeps its coarse-grid probabilities; the attention recall is reported per organ
    assert sorted(p.name for p in (out / "coarse").glob("*.prob.pt")) == sorted(
        f"{c.modality}_{c.case_id}.prob.pt" for c, _ in train + test
    )
    assert set(data["attention_recall"]) == {"spleen", "liver", "stomach"}
    assert all(v is None or 0.0 <= v <= 1.0 for v in data["attention_recall"].values())
    assert set(data["attention_recall_min"]) == set(data["attention_recall"])
    for name, mean in data[
        "attention_recall"
    ].items():  # the lowest case is at most the mean, None alike
        low = data["attention_recall_min"][name]
        assert (mean is None) == (low is None) and (low is None or low <= mean + 1e-12)
    text = md_path.read_text()
    assert "## Attention recall" in text and "| organ | recall (mean) | lowest case |" in text
    assert (
        f"probability >= {cfg.coarse.attention_threshold:g}" in text
        and f"{cfg.coarse.margin_mm:g} mm" in text
    )
    assert len(result["predictions"]) == len(test)
    for (case, _), path in zip(test, result["predictions"]):
        saved, ref = nib.load(path), nib.load(case.image_path)
        np.testing.assert_allclose(saved.affine, ref.affine)
        assert saved.shape == ref.shape

    # predict_volume reproduces the pipeline's prediction of a held-out case from the checkpoints
    case = test[0][0]
    labels = predict_volume(
        case.image_path,
        coarse_checkpoint=out / "checkpoints" / "coarse.pt",
        segment_checkpoint=out / "checkpoints" / "segment.pt",
    )
    np.testing.assert_array_equal(labels, load_volume(result["predictions"][0], kind="label").array)

    # coarse_weight (1.0: the coarse probabilities alone inside the attention): predict_volume
    # uses the coarse model's probabilities, the very ones the run stored (float16), as
    # segment_with_attention does
    from agcl.data import preprocess_ct
    from agcl.pipeline import load_segment_model, segment_with_attention
    from agcl.sampling import attention_from_probabilities, densify, load_probabilities

    blended = predict_volume(
        case.image_path,
        coarse_checkpoint=out / "checkpoints" / "coarse.pt",
        segment_checkpoint=out / "checkpoints" / "segment.pt",
        coarse_weight=1.0,
    )
    model, ids, cfg = load_segment_model(out / "checkpoints" / "segment.pt")
    vol = load_volume(case.image_path, kind="image")
    norm = preprocess_ct(vol.array, window=tuple(cfg.clip_hu), percentiles=tuple(cfg.percentiles))
    prob, coarse_ids, _ = load_probabilities(
        out / "coarse" / f"{case.modality}_{case.case_id}.prob.pt"
    )
    from agcl.data import body_mask

    body = body_mask(
        vol.array, spacing=vol.spacing
    )  # the attention stays inside the body (coarse.body_mask)
    att = densify(
        attention_from_probabilities(
            prob,
            coarse_ids,
            norm.shape,
            spacing=vol.spacing,
            margin_mm=cfg.coarse.margin_mm,
            threshold=cfg.coarse.attention_threshold,
            channel=cfg.coarse.attention_channel,
            body=body,
        ),
        ids,
        norm.shape,
    )
    want = segment_with_attention(
        model,
        norm,
        att,
        ids,
        patch_size=cfg.pretrain.patch_size,
        stride=cfg.segment.stride,
        threshold=cfg.segment.threshold,
        batch_size=cfg.segment.inference_batch_size,
        coarse_probability=prob,
        coarse_ids=coarse_ids,
        coarse_weight=1.0,
    )
    np.testing.assert_array_equal(blended, want)
    plain = segment_with_attention(
        model,
        norm,
        att,
        ids,
        patch_size=cfg.pretrain.patch_size,
        stride=cfg.segment.stride,
        threshold=cfg.segment.threshold,
        batch_size=cfg.segment.inference_batch_size,
        coarse_weight=0.0,
    )
    assert (
        want != plain
    ).any()  # the coarse probabilities change the result, so the check above can fail
    # ... and stage 3 alone (coarse_weight=0.0) is what predict_volume gives when asked for it
    alone = predict_volume(
        case.image_path,
        coarse_checkpoint=out / "checkpoints" / "coarse.pt",
        segment_checkpoint=out / "checkpoints" / "segment.pt",
        coarse_weight=0.0,
    )
    np.testing.assert_array_equal(alone, plain)


def test_coarse_dir_replaces_stage_1_and_gt_attention(tmp_path):
    train, test = tiny_cohort(tmp_path / "data")
    # the ground truth as "coarse" label maps, named <case_id>.nii.gz in per-modality folders
    coarse = tmp_path / "coarse"
    for case, _ in train + test:
        folder = coarse / case.modality
        folder.mkdir(parents=True, exist_ok=True)
        nib.save(nib.load(case.label_path), folder / f"{case.case_id}.nii.gz")
    assert find_coarse_file(coarse, "0001", "contrast").name == "0001.nii.gz"
    cfg = tiny_config(
        **{
            "pretrain.method": "none",
            "coarse.source": "gt",
            "segment.epochs": 1,
            "segment.steps_per_epoch": 1,
        }
    )
    seen: list = []
    result = run_pipeline(
        train,
        test,
        cfg,
        tmp_path / "run",
        coarse_dir=coarse,
        callback=lambda s, e, r: seen.append((s, r["steps"])),
    )
    assert seen == [
        ("segment", 1)
    ]  # no stage 1 (own maps), no stage 2 ("none"); one step (steps_per_epoch)
    assert result["checkpoints"]["coarse"] is None and result["checkpoints"]["pretrain"] is None
    assert result["embeddings"] is None
    # attention from the ground truth: stage 1's own score is perfect
    assert result["coarse_mean"]["dice"] == 1.0
    # predict_volume with the user's own label map reproduces the run's prediction (the same
    # sparse attention and channel: graded with the quick preset)
    case = test[0][0]
    labels = predict_volume(
        case.image_path,
        coarse_checkpoint=None,
        segment_checkpoint=result["checkpoints"]["segment"],
        coarse_labels=case.label_path,
    )
    saved = load_volume(result["predictions"][0], kind="label").array
    assert (
        cfg.coarse.attention_channel == "probability" and (saved != 0).any()
    )  # else the equality is vacuous
    np.testing.assert_array_equal(labels, saved)


@pytest.mark.parametrize("source", ["probabilities", "labels", "gt"])
@pytest.mark.parametrize("channel", ["mask", "probability"])
def test_attention_channel_reaches_the_training_volumes(tmp_path, monkeypatch, source, channel):
    """Stages 2 and 3 get the configured channel from every attention source: bool masks for
    "mask", graded float16 masks (0 outside, 0.5 to 1 inside) for "probability"."""
    import agcl.pipeline.pretrain as stage2

    train, test = tiny_cohort(tmp_path / "data")
    coarse = None
    if source == "labels":  # the ground truth as the user's own coarse maps
        coarse = tmp_path / "coarse"
        for case, _ in train + test:
            (coarse / case.modality).mkdir(parents=True, exist_ok=True)
            nib.save(nib.load(case.label_path), coarse / case.modality / f"{case.case_id}.nii.gz")
    seen = {}

    def capture(volumes, *args, **kwargs):
        seen["masks"] = [mask for _, mask in volumes[0]["attention"].values()]
        raise Interrupt("captured")

    monkeypatch.setattr(stage2, "pretrain_encoder", capture)
    cfg = tiny_config(
        **{
            "coarse.attention_channel": channel,
            "coarse.epochs": 1,
            "coarse.source": "gt" if source == "gt" else "coarse",
        }
    )
    with pytest.raises(Interrupt):
        run_pipeline(train, test, cfg, tmp_path / "run", coarse_dir=coarse)
    masks = seen["masks"]
    assert masks
    if channel == "mask":
        assert all(m.dtype == bool for m in masks)
    else:
        assert all(
            m.dtype == np.float16 and m.max() <= 1 and (m[m != 0] >= 0.5).all() for m in masks
        )
        assert any(((m > 0.5) & (m < 1)).any() for m in masks) == (source == "probabilities")


def test_errors(tmp_path):
    train, test = tiny_cohort(tmp_path / "data")
    with pytest.raises(ValueError, match="train and test"):
        run_pipeline(train, [], tiny_config(), tmp_path / "r")
    with pytest.raises(FileNotFoundError, match="0001"):
        find_coarse_file(tmp_path, "0001", "contrast")
    with pytest.raises(ValueError, match="organs"):
        run_pipeline(train, test, tiny_config(organs=(99,)), tmp_path / "r")


def test_summarize_recalls_gives_the_mean_and_the_lowest_case():
    from agcl.pipeline.domains import summarize_recalls

    out = summarize_recalls(
        {6: [0.9, 0.7, 0.8], 1: [], 7: [1.0]}, {6: "liver", 1: "spleen", 7: "stomach"}
    )
    assert out["attention_recall"] == {"liver": pytest.approx(0.8), "spleen": None, "stomach": 1.0}
    assert out["attention_recall_min"] == {"liver": 0.7, "spleen": None, "stomach": 1.0}
