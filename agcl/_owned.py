"""Private: folders agcl made itself (caches of generated data), marked so they can be replaced.

agcl deletes only what it created. A cache folder it writes (the synthetic phantoms, the
synthetic 2-D scenes) gets a marker file, :data:`MARKER`, naming what made it, and the list of
the files it wrote, :data:`INVENTORY`; such a folder may be rebuilt as long as it holds nothing
else. A folder without the marker that holds anything is the user's, and so is a file added to a
marked folder: refused, never touched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "INVENTORY",
    "MARKER",
    "FolderNotOwnedError",
    "check_replaceable",
    "is_owned",
    "mark_owned",
    "write_owned_folder",
]

MARKER = ".agcl-cache.json"
#: the files agcl wrote into a marked folder (relative POSIX paths, a JSON list)
INVENTORY = ".agcl-cache-files.json"


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
    """Raise unless ``folder`` is absent, empty, or agcl's own ``kind`` folder holding only the
    files agcl wrote.

    Raises:
        FolderNotOwnedError: the folder holds files and no marker (``what`` says what agcl
            wanted to write there); it is marked but holds files agcl did not write (they are
            named), or its list of files is missing or damaged; it is a file.
    """
    path = Path(folder)
    if not path.exists():
        return
    if not path.is_dir():
        raise FolderNotOwnedError(
            f"{path} is a file; agcl needs a folder there for {what}; choose another path"
        )
    if not any(path.iterdir()):
        return
    if is_owned(path, kind):
        foreign = _foreign_files(path)
        if foreign is None:
            raise FolderNotOwnedError(
                f"{path} is marked as agcl's folder of {what}, but its list of files ({INVENTORY}) "
                "is missing or damaged, so agcl cannot tell its files from yours and will not "
                "replace it. Remove the folder yourself, or choose another"
            )
        if foreign:
            shown = ", ".join(foreign[:4]) + (" ..." if len(foreign) > 4 else "")
            raise FolderNotOwnedError(
                f"{path} is agcl's folder of {what} but also holds files agcl did not write "
                f"({shown}); agcl will not replace it. Move those files elsewhere, or choose "
                "another folder"
            )
        return
    raise FolderNotOwnedError(
        f"{path} holds files that agcl did not create (no {MARKER}); it will not write {what} "
        "there, nor delete anything in it. Choose another folder (an empty one, or one agcl made "
        "before)"
    )


def write_owned_folder(
    folder: str | os.PathLike[str], kind: str, write: Callable[[Path], Any], **info: Any
) -> Path:
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
        files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*") if not p.is_dir())
        (tmp / INVENTORY).write_text(json.dumps(files, indent=0) + "\n", encoding="utf-8")
        mark_owned(tmp, kind, **info)
        if root.exists():
            check_replaceable(
                root, kind, what=kind
            )  # again: nothing of the user's appeared meanwhile
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


def _foreign_files(folder: Path) -> list[str] | None:
    """The files in a marked ``folder`` that agcl did not write (``None`` when its list of files
    is missing or damaged: then none can be told apart)."""
    try:
        listed = json.loads((folder / INVENTORY).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(listed, list):
        return None
    known = {str(name) for name in listed} | {MARKER, INVENTORY}
    return sorted(
        rel
        for rel in (p.relative_to(folder).as_posix() for p in folder.rglob("*") if not p.is_dir())
        if rel not in known
    )
