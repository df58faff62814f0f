"""Private: folders agcl made itself (caches of generated data), marked so they can be replaced.

agcl deletes only what it created. A cache folder it writes (the synthetic phantoms, the
synthetic 2-D scenes) gets a marker file, :data:`MARKER`, naming what made it; such a folder may
be rebuilt. A folder without the marker that holds anything is the user's: refused, never
touched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["MARKER", "FolderNotOwnedError", "check_replaceable", "is_owned", "mark_owned", "write_owned_folder"]

MARKER = ".agcl-cache.json"


class FolderNotOwnedError(ValueError):
    """A folder agcl would write or replace holds files agcl did not create."""


def mark_owned(folder: str | os.PathLike[str], kind: str, **info: Any) -> Path:
    """Write the marker into ``folder`` (created by agcl): ``{"kind": kind, **info}``."""
    path = Path(folder) / MARKER
    path.write_text(json.dumps({"kind": kind, **info}, indent=2) + "\n", encoding="utf-8")
    return path


def is_owned(folder: str | os.PathLike[str], kind: str | None = None) -> bool:
    """Whether ``folder`` carries agcl's marker (of ``kind``, when given)."""
    path = Path(folder) / MARKER
    if not path.is_file():
        return False
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and (kind is None or data.get("kind") == kind)


def check_replaceable(folder: str | os.PathLike[str], kind: str, *, what: str) -> None:
    """Raise unless ``folder`` is absent, empty, or agcl's own ``kind`` folder.

    Raises:
        FolderNotOwnedError: the folder holds files and no marker (``what`` says what agcl
            wanted to write there), or is a file.
    """
    path = Path(folder)
    if not path.exists():
        return
    if not path.is_dir():
        raise FolderNotOwnedError(f"{path} is a file; agcl needs a folder there for {what}; choose another path")
    if is_owned(path, kind) or not any(path.iterdir()):
        return
    raise FolderNotOwnedError(
        f"{path} holds files that agcl did not create (no {MARKER}); it will not write {what} there, "
        "nor delete anything in it. Choose another folder (an empty one, or one agcl made before)")


def write_owned_folder(folder: str | os.PathLike[str], kind: str, write: Callable[[Path], Any],
                       **info: Any) -> Path:
    """Build ``folder`` with ``write(tmp)`` in a temporary sibling, mark it, then swap it in.

    An earlier folder is replaced only when it is agcl's own ``kind`` folder (or empty); the
    temporary folder is removed on every exit path (an error, Ctrl-C).

    Raises:
        FolderNotOwnedError: see :func:`check_replaceable`.
    """
    root = Path(folder)
    check_replaceable(root, kind, what=kind)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".tmp", dir=root.parent))
    try:
        write(tmp)
        mark_owned(tmp, kind, **info)
        if root.exists():
            check_replaceable(root, kind, what=kind)  # again: nothing of the user's appeared meanwhile
            old = Path(tempfile.mkdtemp(prefix=f".{root.name}.", suffix=".old", dir=root.parent))
            os.replace(root, old / root.name)
            os.replace(tmp, root)
            shutil.rmtree(old)
        else:
            os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
