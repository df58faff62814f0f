"""A run folder that belongs to its run: never overwritten by accident, cleared only of its own
files.

:meth:`RunFolder.open` decides what may happen to ``--out``:

* absent, empty, or holding only files agcl would not write: a new run (nothing of yours is
  touched; a folder holding names agcl writes, such as ``checkpoints/``, is refused);
* holding an earlier run (its ``run.json``): refused (:class:`RunExistsError`) unless
  ``resume=True`` (continue it: every stage is checked against its record, see
  :mod:`agcl.pipeline.run.manifest`) or ``overwrite=True`` (the earlier run's own files, as its
  manifest lists them, are removed first; anything else in the folder is kept);
* holding a run written before manifests existed: ``overwrite=True`` removes the files such a
  run writes; it cannot be resumed (its inputs were never recorded).

Every file of the run is written atomically and recorded (:meth:`RunFolder.own`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from agcl._atomic import write_json
from agcl.pipeline.run.manifest import MANIFEST, Manifest

__all__ = ["RUN_NAMES", "RunExistsError", "RunFolder", "RunFolderError"]

#: the top-level names a run writes (a folder holding any of them without a manifest is refused)
RUN_NAMES = (
    "run.json",
    "checkpoints",
    "coarse",
    "predictions",
    "epochs.jsonl",
    "results.json",
    "results.md",
    "ablation",
    "ablation.json",
    "ablation.md",
)
# what a run written before run.json existed holds (removed by overwrite=True)
_LEGACY_GLOBS = (
    "checkpoints/coarse.pt",
    "checkpoints/coarse2d.pt",
    "checkpoints/pretrain.pt",
    "checkpoints/segment.pt",
    "coarse/*.nii.gz",
    "coarse/*.prob.pt",
    "coarse/*.png",
    "predictions/*.nii.gz",
    "predictions/*.png",
    "epochs.jsonl",
    "results.json",
    "results.md",
    "ablation.json",
    "ablation.md",
    "fig*.png",
)


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (the message says why and what to do)."""


class RunExistsError(RunFolderError):
    """``--out`` holds an earlier run and neither ``resume`` nor ``overwrite`` was given."""


def _is_legacy_run(path: Path) -> bool:
    return (path / "epochs.jsonl").is_file() or any((path / "checkpoints").glob("*.pt"))


def _inside(root: Path, rel: str) -> Path:
    target = (root / rel).resolve()
    if root.resolve() not in target.parents and target != root.resolve():
        raise RunFolderError(
            f"{root / MANIFEST} lists {rel!r}, which lies outside the run folder; refusing to "
            "touch it (the manifest was edited or damaged)"
        )
    return target


class RunFolder:
    """One run's folder and its manifest.

    Use :meth:`open` (it applies the rules above); ``main=False`` (the non-zero ranks under
    torchrun) reads nothing and writes nothing.
    """

    def __init__(self, path: Path, manifest: Manifest, *, main: bool = True) -> None:
        self.path, self.manifest, self.main = Path(path), manifest, main

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        resume: bool = False,
        overwrite: bool = False,
        main: bool = True,
    ) -> RunFolder:
        """Open ``path`` for a run (see the module notes).

        Raises:
            RunExistsError: an earlier run without ``resume``/``overwrite``.
            RunFolderError: both flags, a file where the folder should be, a damaged
                ``run.json``, a pre-manifest run with ``resume``, or a non-run folder holding
                names a run writes.
        """
        root = Path(path)
        if resume and overwrite:
            raise RunFolderError(
                "resume and overwrite exclude each other: resume continues the run in "
                f"{root}, overwrite replaces it; pass one"
            )
        if not main:
            return cls(root, Manifest(), main=False)
        if root.exists() and not root.is_dir():
            raise RunFolderError(f"the run folder {root} is a file; choose a folder")
        manifest_path = root / MANIFEST
        if manifest_path.exists():
            if not (resume or overwrite):
                raise RunExistsError(
                    f"{root} holds an earlier agcl run ({MANIFEST}); continue it with --resume, or "
                    "replace it with --overwrite (removes only that run's own files, keeps "
                    "anything else in the folder), or choose another --out"
                )
            manifest = cls._read(manifest_path)
            if resume:
                return cls(root, manifest)
            cls._clear(root, manifest)
        elif root.is_dir() and _is_legacy_run(root):
            if resume or not overwrite:
                raise (RunFolderError if resume else RunExistsError)(
                    f"{root} holds a run written by an agcl without {MANIFEST}: its inputs were "
                    "never recorded, so it cannot be resumed safely; replace it with --overwrite "
                    "(removes only the files such a run writes) or choose another --out"
                )
            cls._clear_legacy(root)
        elif root.is_dir():
            clash = [n for n in RUN_NAMES if (root / n).exists()]
            if clash:
                raise RunFolderError(
                    f"{root} is not an agcl run folder but holds {', '.join(clash)}, names a run "
                    "writes; agcl will not overwrite them. Choose another --out"
                )
        root.mkdir(parents=True, exist_ok=True)
        folder = cls(root, Manifest())
        folder.save()
        return folder

    @staticmethod
    def _read(path: Path) -> Manifest:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise RunFolderError(
                f"{path} is not a readable run manifest ({err}); it was edited or damaged. "
                "Move the folder aside or remove that file to start a new run"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
            raise RunFolderError(
                f"{path} does not hold a run manifest (a JSON object with 'stages')"
            )
        for key, kind in (("files", list), ("runs", list), ("maps", dict)):
            value = data.get(key, kind())
            if not isinstance(value, kind) or (
                kind is list and not all(isinstance(v, str) for v in value)
            ):
                raise RunFolderError(
                    f"{path}: '{key}' must be a {'list of paths' if kind is list else 'dict'}; "
                    f"got {value!r:.80}. The manifest was edited or damaged: move the folder "
                    "aside or remove that file to start a new run"
                )
        return Manifest(data)

    @classmethod
    def _clear(cls, root: Path, manifest: Manifest) -> None:
        _remove(root, cls._own_files(root, manifest))

    @classmethod
    def _own_files(cls, root: Path, manifest: Manifest) -> list[Path]:
        """The files of the run and of its sub-runs (the ablation's), every path checked to lie
        inside its folder before anything is removed."""
        files = [_inside(root, rel) for rel in manifest.data.get("files", [])]
        for rel in manifest.data.get("runs", []):
            sub = _inside(root, rel)
            if sub == root.resolve():  # would clear itself without end
                raise RunFolderError(
                    f"{root / MANIFEST} lists its own folder as a sub-run "
                    f"({rel!r}); the manifest was edited or damaged"
                )
            if (sub / MANIFEST).is_file():
                files += cls._own_files(sub, cls._read(sub / MANIFEST))
        return files + [root / MANIFEST]

    @staticmethod
    def _clear_legacy(root: Path) -> None:
        files = [p for pattern in _LEGACY_GLOBS for p in root.glob(pattern) if p.is_file()]
        for sub in sorted(root.glob("ablation/**/epochs.jsonl")):
            files += [
                p for pattern in _LEGACY_GLOBS for p in sub.parent.glob(pattern) if p.is_file()
            ]
        _remove(root, files)

    # --- use ---
    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    def rel(self, path: str | os.PathLike[str]) -> str:
        """``path`` (absolute, or relative to the working directory, as the run's own paths are)
        relative to the run folder (it must lie inside it)."""
        p = Path(path)
        try:
            return p.resolve().relative_to(self.path.resolve()).as_posix()
        except ValueError:
            raise RunFolderError(f"{p} lies outside the run folder {self.path}") from None

    def own(self, *paths: str | os.PathLike[str], save: bool = False) -> None:
        """Record files as written by this run (``--overwrite`` removes exactly these)."""
        if self.main:
            self.manifest.own([self.rel(p) for p in paths])
            if save:
                self.save()

    def own_run(self, path: str | os.PathLike[str]) -> None:
        """Record a sub-run folder (with its own manifest), cleared with this run."""
        if self.main:
            self.manifest.own_run(self.rel(path))
            self.save()

    def save(self) -> None:
        """Write ``run.json`` atomically."""
        if self.main:
            self.path.mkdir(parents=True, exist_ok=True)
            write_json(self.path / MANIFEST, self.manifest.data)

    def remove(self, paths: Iterable[str | os.PathLike[str]]) -> None:
        """Remove files of this run (only those its manifest lists; others are left alone);
        ``paths`` as :meth:`rel` takes them (``folder.path / relative`` for a manifest entry)."""
        if not self.main:
            return
        owned = set(self.manifest.data["files"])
        _remove(self.path, [self.path / r for r in (self.rel(p) for p in paths) if r in owned])


def _remove(root: Path, files: Iterable[Path]) -> None:
    """Remove ``files``, then the folders under ``root`` they leave empty (never ``root``)."""
    root = root.resolve()
    parents: set[Path] = set()
    for f in (p.resolve() if not p.is_symlink() else p for p in files):
        if f.is_file() or f.is_symlink():
            f.unlink()
            parents.add(f.parent)
    for folder in sorted(parents, key=lambda p: len(p.parts), reverse=True):
        d = folder
        while d != root and root in d.parents and d.is_dir() and not any(d.iterdir()):
            d.rmdir()
            d = d.parent
