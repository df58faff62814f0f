"""Stage 1 of the CT domain on disk: each case's coarse maps written from the stage-1 model and
recorded in ``run.json`` (rebuilt when missing, damaged or made from other inputs), or the
user's own coarse maps checked against the cases before any training.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from agcl.pipeline.run.manifest import file_record
from agcl.pipeline.toolkit.fingerprint import stage_fingerprint

__all__ = ["check_coarse_dir", "stale_reason", "write_coarse_maps"]


def write_coarse_maps(domain: Any, ctx: Any, ckpt: Path) -> None:
    """Write every case's coarse probabilities and label map from the stage-1 checkpoint
    ``ckpt``, recording each in the run's manifest; a case whose recorded maps still hold (same
    image, same checkpoint and settings, files intact) is kept."""
    from agcl.data import case_stem, save_like
    from agcl.pipeline.coarse import (
        coarse_probabilities,
        labels_from_probabilities,
        load_coarse,
    )
    from agcl.sampling import save_probabilities

    manifest, folder = ctx.folder.manifest, ctx.out / "coarse"
    inputs_common = {
        "checkpoint": ctx.book.digest("coarse", ckpt),
        "fields": stage_fingerprint("coarse_maps", domain.config)["fields"],
    }
    loaded = None
    for cases, which in ((domain.train_cases, "train"), (domain.test_cases, "test")):
        for i, (raw, rec) in enumerate(zip(cases.cases, domain.records(which))):
            stem = case_stem(raw)
            files = {"prob": folder / f"{stem}.prob.pt", "labels": folder / f"{stem}.nii.gz"}
            inputs = {"image": rec["image"]["sha256"], **inputs_common}
            why = stale_reason(manifest.map_record(stem), inputs, files, ctx.folder)
            if why is None:
                continue
            if why != "new":
                print(f"[coarse] map of {stem} rebuilt: {why}", flush=True)
            if loaded is None:
                model, ids, cfg = load_coarse(ckpt, ctx.device)
                # how stage 1 trained is the checkpoint's; how it predicts is this run's (overlap)
                loaded = (
                    model,
                    ids,
                    dataclasses.replace(cfg.coarse, overlap=domain.config.coarse.overlap),
                )
            model, ids, grid = loaded
            case = cases[i]
            prob = coarse_probabilities(
                model, case.image, grid, spacing=case.spacing, device=ctx.device
            )
            save_probabilities(files["prob"], prob, ids, case.image.shape)
            save_like(
                labels_from_probabilities(prob, ids, case.image.shape),
                case.reference,
                files["labels"],
            )
            ctx.folder.own(*files.values())
            manifest.set_map(
                stem,
                {
                    "inputs": inputs,
                    "files": {ctx.folder.rel(p): file_record(p)["sha256"] for p in files.values()},
                },
            )
            ctx.folder.save()


def check_coarse_dir(domain: Any) -> None:
    """Every case of ``domain`` has a map in its ``coarse_dir`` on its image's grid (a missing or
    misplaced one raises now, not in stage 3); one warning lists the codes that name no organ."""
    from agcl.data import find_coarse_file, load_volume, remap_labels
    from agcl.sampling import check_coarse_map

    unmapped: set[int] = set()
    empty = []
    for cases in (domain.train_cases, domain.test_cases):
        for i, raw in enumerate(cases.cases):
            path = find_coarse_file(domain.coarse_dir, str(raw.case_id), str(raw.modality))
            vol = load_volume(path, kind="label")
            case = cases[i]
            check_coarse_map(path, vol, case)
            lab = case.label
            if (
                cases is domain.train_cases
                and lab is not None
                and not np.isin(lab, domain.organ_ids).any()
            ):
                empty.append(str(raw.label_path))
            if domain.coarse_labels is not None:
                unmapped |= remap_labels(vol.array, domain.coarse_labels)[1]
            else:
                unmapped |= {
                    int(v)
                    for v in np.unique(vol.array)
                    if v != 0 and int(v) not in domain.organ_ids
                }
    if empty and len(empty) == len(domain.train_cases):
        raise ValueError(
            f"no training case holds any of the organs {domain.organ_ids} in its labels (all "
            f"background, e.g. {empty[0]}): nothing to learn; check the label files and "
            "config.organs"
        )
    if empty:
        warnings.warn(
            f"{len(empty)} training case(s) hold none of the organs {domain.organ_ids} in their "
            f"labels: {', '.join(empty[:3])}{' ...' if len(empty) > 3 else ''}",
            UserWarning,
            stacklevel=3,
        )
    if unmapped:
        how = (
            "coarse_labels maps no organ to"
            if domain.coarse_labels is not None
            else "no organ of this run has (pass coarse_labels to translate them)"
        )
        warnings.warn(
            f"the coarse maps in {domain.coarse_dir} hold codes {sorted(unmapped)} that {how}; "
            "they give no attention (map a code to 0 to silence this)",
            UserWarning,
            stacklevel=3,
        )


def stale_reason(
    record: Mapping[str, Any] | None,
    inputs: Mapping[str, Any],
    files: Mapping[str, Path],
    folder: Any,
) -> str | None:
    """Why a case's coarse maps must be (re)built; ``None`` when the recorded ones still hold."""
    if record is None:
        return "new"
    if record.get("inputs") != dict(inputs):
        return "its image or stage 1 changed"
    for path in files.values():
        if not path.is_file():
            return f"{path.name} is missing"
        want = record.get("files", {}).get(folder.rel(path))
        if want != file_record(path)["sha256"]:
            return f"{path.name} is damaged or was changed"
    return None
