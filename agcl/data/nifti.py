"""Read NIfTI volumes in one canonical orientation (RAS) and write label maps back like their scan.

``load_volume`` reorients every file to RAS+ (array axis 0 runs to the patient's Right, axis 1
to Anterior, axis 2 to Superior, so ``array[..., k]`` is the k-th axial slice from the feet up),
whatever the orientation the scanner wrote. ``save_like`` undoes that reorientation and writes
a label map with the reference scan's own affine and header, so a prediction opens on top of
its scan in any viewer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import nibabel as nib
import numpy as np
from nibabel import orientations as ornt

__all__ = ["Volume", "load_volume", "save_like"]

_RAS = ornt.axcodes2ornt(("R", "A", "S"))


@dataclass
class Volume:
    """A volume in canonical RAS orientation, with what is needed to write results back.

    Attributes:
        array: the voxels, canonical RAS orientation; ``float32`` (HU) for images, ``int16``
            for label maps.
        spacing: voxel size in mm along the canonical axes, as Python floats.
        affine: the canonical ``(4, 4)`` voxel-to-world (RAS mm) matrix.
        path: the file read, or ``None`` for a volume built in memory.
        original_affine: the affine stored in the file.
        original_shape: the array shape stored in the file (first three axes).
        header: a copy of the file's NIfTI header (used by :func:`save_like`).
    """

    array: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    path: Path | None = None
    original_affine: np.ndarray | None = None
    original_shape: tuple[int, ...] | None = None
    header: Any = field(default=None, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        """The canonical array shape."""
        return tuple(self.array.shape)


def _open(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"no NIfTI file at {path}")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises several types for broken headers
        raise ValueError(f"could not read {path} as NIfTI: {type(exc).__name__}: {exc}") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ValueError(f"{path} is a {type(img).__name__}, not a NIfTI-1/2 image")
    if len(img.shape) < 3 or any(int(s) != 1 for s in img.shape[3:]):
        raise ValueError(f"{path} must hold a 3-D volume; got shape {tuple(img.shape)}")
    return img


def _to_canonical_transform(affine: np.ndarray) -> np.ndarray:
    return ornt.ornt_transform(ornt.io_orientation(affine), _RAS)


def load_volume(
    path: str | os.PathLike[str], *, kind: Literal["image", "label"] = "image"
) -> Volume:
    """Load a 3-D NIfTI file reoriented to RAS, with its spacing in mm.

    Args:
        path: a ``.nii`` or ``.nii.gz`` file.
        kind: ``"image"`` returns ``float32`` intensities (HU for CT; the file's scale slope
            and intercept applied); ``"label"`` returns ``int16`` integer codes and rejects
            non-integer values.

    Returns:
        A :class:`Volume` whose ``array`` is in canonical RAS orientation.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is unreadable, truncated, not 3-D, or (labels) holds non-integer
            or out-of-range values; the message names the path.

    Examples:
        >>> import tempfile, numpy as np, nibabel as nib
        >>> d = tempfile.mkdtemp()
        >>> lps = np.diag([-0.8, -0.8, 2.5, 1.0])  # scanner-style LPS storage
        >>> data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
        >>> nib.save(nib.Nifti1Image(data, lps), f"{d}/a.nii.gz")
        >>> v = load_volume(f"{d}/a.nii.gz")
        >>> v.array.shape, v.spacing, v.array.dtype
        ((2, 3, 4), (0.8, 0.8, 2.5), dtype('float32'))
        >>> bool(v.affine[0, 0] > 0 and v.affine[1, 1] > 0)  # now RAS
        True
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be one of 'image', 'label'; got {kind!r}")
    path = Path(path)
    img = _open(path)
    try:
        if kind == "image":
            data = np.asarray(img.get_fdata(dtype=np.float32))
        else:
            data = np.asanyarray(img.dataobj)
    except Exception as exc:  # truncated gzip: EOFError, zlib.error, OSError, ...
        raise ValueError(
            f"could not read the voxels of {path} ({type(exc).__name__}: {exc}); "
            "the file may be truncated or corrupt"
        ) from exc
    data = data.reshape(data.shape[:3])
    if kind == "label":
        data = _as_label_codes(data, path)
    transform = _to_canonical_transform(img.affine)
    canonical = np.ascontiguousarray(ornt.apply_orientation(data, transform))
    affine = img.affine @ ornt.inv_ornt_aff(transform, data.shape)
    # NIfTI stores affines in float32: round to 1e-6 mm so 0.8 reads back as 0.8
    spacing = tuple(round(float(s), 6) for s in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))
    return Volume(
        array=canonical,
        spacing=spacing,  # type: ignore[arg-type]
        affine=affine,
        path=path,
        original_affine=np.array(img.affine, dtype=np.float64),
        original_shape=tuple(int(s) for s in data.shape),
        header=img.header.copy(),
    )


def _as_label_codes(data: np.ndarray, path: Path) -> np.ndarray:
    if not np.issubdtype(data.dtype, np.integer):
        data = np.asarray(data, dtype=np.float64)
        if not np.isfinite(data).all() or not np.array_equal(data, np.round(data)):
            raise ValueError(
                f"label file {path} holds non-integer values; expected integer organ codes"
            )
    lo, hi = (int(data.min()), int(data.max())) if data.size else (0, 0)
    if lo < np.iinfo(np.int16).min or hi > np.iinfo(np.int16).max:
        raise ValueError(
            f"label file {path} holds codes in [{lo}, {hi}]; expected codes that fit int16"
        )
    return data.astype(np.int16)


def save_like(
    label_array: Any, reference: Volume | str | os.PathLike[str], out_path: str | os.PathLike[str]
) -> Path:
    """Write a canonical-orientation label map in the reference scan's original orientation.

    The inverse of :func:`load_volume`'s reorientation is applied and the file gets the
    reference's original affine and a copy of its header (data type ``int16``, no scaling), so
    it overlays the scan in a viewer. The file is written atomically (a temporary file in the
    same folder, then renamed).

    Args:
        label_array: integer labels in canonical RAS orientation (numpy array or tensor), the
            shape of the reference's canonical array.
        reference: the :class:`Volume` the labels belong to, or the path of its NIfTI file.
        out_path: the ``.nii.gz`` (or ``.nii``) file to write; folders are created.

    Returns:
        ``out_path`` as a ``Path``.

    Raises:
        ValueError: the array's shape differs from the reference's canonical shape, or holds
            non-integer values.

    Examples:
        >>> import tempfile, numpy as np, nibabel as nib
        >>> d = tempfile.mkdtemp()
        >>> lps = np.diag([-0.8, -0.8, 2.5, 1.0])
        >>> nib.save(nib.Nifti1Image(np.zeros((2, 3, 4), np.int16), lps), f"{d}/ct.nii.gz")
        >>> ref = load_volume(f"{d}/ct.nii.gz")
        >>> pred = np.zeros(ref.shape, np.int64); pred[1, 0, 0] = 6
        >>> out = nib.load(str(save_like(pred, ref, f"{d}/pred.nii.gz")))
        >>> np.allclose(out.affine, lps), int(np.asarray(out.dataobj)[0, 2, 0])
        (True, 6)
    """
    if not isinstance(reference, Volume):
        img = _open(Path(reference))
        reference = Volume(
            array=np.empty((0, 0, 0)),
            spacing=(1.0, 1.0, 1.0),
            affine=img.affine,
            path=Path(reference),
            original_affine=np.array(img.affine),
            original_shape=tuple(int(s) for s in img.shape[:3]),
            header=img.header.copy(),
        )
    if reference.original_affine is None or reference.original_shape is None:
        raise ValueError("reference must come from load_volume (it carries no original affine)")
    original_affine = np.asarray(reference.original_affine)
    canonical_shape = _canonical_shape(reference.original_shape, original_affine)
    arr = (
        label_array.detach().cpu().numpy()
        if hasattr(label_array, "detach")
        else np.asarray(label_array)
    )
    if tuple(arr.shape) != tuple(canonical_shape):
        raise ValueError(
            f"label_array must have the reference's canonical shape {tuple(canonical_shape)}; "
            f"got shape {tuple(arr.shape)}"
        )
    arr = _as_label_codes(arr, Path(out_path))
    back = ornt.ornt_transform(_RAS, ornt.io_orientation(original_affine))
    original = np.ascontiguousarray(ornt.apply_orientation(arr, back))
    header = reference.header.copy() if reference.header is not None else None
    cls = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    out = cls(original, original_affine, header=header)
    out.set_data_dtype(np.int16)
    out.header.set_slope_inter(1.0, 0.0)
    out_path = Path(out_path)
    from agcl._atomic import atomic_path

    with atomic_path(out_path) as tmp:  # a killed run never leaves a cut-short map behind
        nib.save(out, str(tmp))
    return out_path


def _canonical_shape(shape: tuple[int, ...], affine: np.ndarray) -> tuple[int, ...]:
    transform = _to_canonical_transform(affine)
    return tuple(int(shape[int(ax)]) for ax in np.argsort(transform[:, 0]))
