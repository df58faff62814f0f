"""``agcl predict``: apply a finished run to new scans (one NIfTI file or a folder of them).

For every scan it writes ``<case>.nii.gz`` (the label map, organ codes of BTCV, with the scan's
own affine and header, in the scan's own orientation) and ``<case>.json`` (each organ's source of
attention -- the coarse threshold, or the fallback region when no voxel reached it, which can mean
the organ is absent -- its attention and predicted voxel counts and volume, the body's size, and
the warnings), where ``<case>`` is the scan's case id: its file name without ``.nii``/``.nii.gz``
and without nnU-Net's channel suffix ``_0000``.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

from agcl.cli._common import UserError, check_device, user_errors

__all__ = ["build_parser", "case_id", "find_scans", "main"]

EPILOG = """\
examples:
  agcl predict --run runs/btcv_full --input scan.nii.gz --out preds/
  agcl predict --run runs/btcv_full --input /data/nnUNet_raw/Dataset017_BTCV/imagesTs \\
      --out preds/ --device cuda
  agcl predict --run RUN --input scans/ --out preds/ --coarse-dir totalseg/ \\
      --coarse-labels totalseg_to_btcv.json

--input: a NIfTI file (.nii or .nii.gz, any orientation) or a folder of them (an nnU-Net
imagesTs/imagesTr folder too: only channel _0000 is read). With --coarse-dir, each scan's coarse
label map is found by its case id (as in agcl train --coarse-dir) and stage 1 is not run.

The attention of every organ, its fallback region and so every predicted voxel stay inside the
patient's body (the largest component above -500 HU, holes filled), unless --no-body-mask.

exit status: 0 done; 2 a usage or input error (a run folder that is unfinished or not a run,
an input that is not NIfTI, an output that exists without --overwrite).
"""

_CHANNEL = re.compile(r"_\d{4}$")


def case_id(path: str | Path, *, channel: bool = False) -> str:
    """The case id of a scan or label file: the name without ``.nii.gz``/``.nii`` and, with
    ``channel``, without an nnU-Net channel suffix (``_0000``).

    Examples:
        >>> case_id("imagesTs/BTCV_0031_0000.nii.gz", channel=True), case_id("img0001.nii")
        ('BTCV_0031', 'img0001')
        >>> case_id("contrast_0002.nii.gz")  # a label map: the suffix is part of the id
        'contrast_0002'
    """
    name = Path(path).name
    for ext in (".nii.gz", ".nii"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return _CHANNEL.sub("", name) if channel else name


def _is_nifti(path: Path) -> bool:
    return path.name.endswith((".nii", ".nii.gz"))


def _channel_layout(names: list[str]) -> bool:
    """Whether file names (without extension) are nnU-Net channel files ``<case>_XXXX``: every
    name ends with a 4-digit suffix, every case has its channel ``_0000`` and no channel twice.
    ``case_0001``, ``case_0002``, ... are cases, not channels of one case ``case``.

    Examples:
        >>> _channel_layout(["a_0000", "a_0001", "b_0000"])
        True
        >>> _channel_layout(["case_0001", "case_0002"])
        False
    """
    groups: dict[str, list[str]] = {}
    for name in names:
        if not _CHANNEL.search(name):
            return False
        groups.setdefault(name[:-5], []).append(name[-4:])
    return all("0000" in chans and len(set(chans)) == len(chans) for chans in groups.values())


def find_scans(path: str | Path) -> list[tuple[str, Path]]:
    """``[(case id, scan)]`` of ``--input``: the file itself, or the folder's ``.nii``/``.nii.gz``
    files, sorted. In a folder of nnU-Net channel files (every file ``<case>_XXXX``, every case
    with its ``_0000``) only channel ``_0000`` is read and the suffix is not part of the id; a
    single file loses a ``_0000`` suffix.

    Raises:
        UserError: no such file or folder, a file that is not NIfTI, a folder without scans,
            two scans with one case id.
    """
    p = Path(path)
    if not p.exists():
        raise UserError(f"--input {p} does not exist")
    if p.is_file():
        if not _is_nifti(p):
            raise UserError(f"--input {p} is not a NIfTI file (.nii or .nii.gz)")
        name = case_id(p)
        return [(name[:-5] if name.endswith("_0000") else name, p)]
    files = [f for f in sorted(p.iterdir()) if f.is_file() and _is_nifti(f)]
    if not files:
        raise UserError(f"--input {p} holds no NIfTI scan (.nii or .nii.gz)")
    channels = _channel_layout([case_id(f) for f in files])
    scans = [
        (case_id(f, channel=channels), f)
        for f in files
        if not channels or case_id(f).endswith("_0000")
    ]  # other nnU-Net channels: agcl reads the CT
    ids: dict[str, Path] = {}
    for key, f in scans:
        if key in ids:
            raise UserError(f"{ids[key]} and {f} have the same case id {key!r}")
        ids[key] = f
    return scans


def build_parser(prog: str = "agcl predict") -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split(": ", 1)[1],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--run", required=True, metavar="RUN_DIR", help="a finished run folder (agcl train's --out)"
    )
    ap.add_argument(
        "--input", required=True, metavar="PATH", help="a NIfTI scan or a folder of scans"
    )
    ap.add_argument(
        "--out", required=True, metavar="DIR", help="where the label maps and reports are written"
    )
    ap.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default: %(default)s)")
    ap.add_argument(
        "--coarse-dir",
        default=None,
        help="your own coarse label maps for the scans (skips stage 1)",
    )
    ap.add_argument(
        "--coarse-labels",
        default=None,
        metavar="FILE.json",
        help="{their_code: btcv_code} translating the codes of --coarse-dir's maps",
    )
    ap.add_argument(
        "--no-body-mask", action="store_true", help="do not bound the attention by the body"
    )
    ap.add_argument(
        "--overwrite",
        action="store_true",
        help="replace outputs of an earlier agcl predict in --out",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    """``agcl predict``; returns the exit status."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.coarse_labels and not args.coarse_dir:
        ap.error("--coarse-labels needs --coarse-dir (it translates the codes of those maps)")
    return user_errors("predict", lambda: _main(args))


def _main(args: argparse.Namespace) -> int:
    from tqdm.auto import tqdm

    from agcl._atomic import write_json
    from agcl.data import (
        BTCV_ORGANS,
        find_coarse_file,
        load_coarse_labels,
        load_volume,
        remap_labels,
        save_like,
    )
    from agcl.pipeline import load_run, predict_volume

    device = check_device(args.device)
    scans = find_scans(args.input)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a folder")
    targets = [(out / f"{key}.nii.gz", out / f"{key}.json") for key, _ in scans]
    clash = [str(p) for pair in targets for p in pair if p.exists()]
    if clash and not args.overwrite:
        raise UserError(
            f"--out {out} already holds {', '.join(clash[:3])}{' ...' if len(clash) > 3 else ''}; "
            "pass --overwrite to replace them, or choose another --out"
        )
    try:
        run = load_run(args.run, device=device)
    except ValueError as err:
        raise UserError(str(err)) from None
    mapping = load_coarse_labels(args.coarse_labels) if args.coarse_labels else None
    names = {k: BTCV_ORGANS.get(k, str(k)) for k in run.organ_ids}
    out.mkdir(parents=True, exist_ok=True)
    summary: list[dict[str, Any]] = []
    for (key, scan), (label_path, report_path) in zip(
        tqdm(scans, desc="predict", unit="scan", file=sys.stdout, disable=len(scans) < 2), targets
    ):
        vol = load_volume(scan, kind="image")
        coarse = None
        if args.coarse_dir:
            coarse = load_volume(find_coarse_file(args.coarse_dir, key, ""), kind="label").array
            if mapping is not None:
                coarse, _ = remap_labels(coarse, mapping)
        pred = predict_volume(
            vol,
            run=run,
            coarse_labels=coarse,
            body_mask=False if args.no_body_mask else None,
            return_intermediates=True,
        )
        save_like(pred.labels, vol, label_path)
        report = {
            "case": key,
            "input": str(scan),
            "output": str(label_path),
            "shape": list(pred.labels.shape),
            "spacing": [float(s) for s in vol.spacing],
            "run": str(args.run),
            **pred.report(names, vol.spacing),
        }
        write_json(report_path, report)
        summary.append(report)
        for warning in pred.warnings:
            print(f"{key}: {warning}", flush=True)
    print(f"wrote {len(summary)} label map(s) and report(s) to {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
