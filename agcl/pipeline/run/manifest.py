"""``run.json``: what every stage of a run was made from, so a resumed run never mixes results.

Per stage, the manifest records the stage's fingerprint (the settings it depends on,
:mod:`agcl.pipeline.toolkit.fingerprint`), the inputs it read (cases with their source paths,
sizes and SHA-256 digests; the coarse maps that fed stages 2-3; the upstream checkpoint's digest)
and, once the stage finished, the digests of what it wrote. A stage resumes only when its
record matches what the run would use now; otherwise the stage and every stage built on it are
redone, and the log says why. The manifest also lists every file the run wrote, so
``--overwrite`` removes exactly those.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agcl.pipeline.toolkit.checkpoint import describe_changes

__all__ = ["MANIFEST", "Manifest", "case_record", "describe_input_changes", "file_record"]

MANIFEST = "run.json"
FORMAT = 1

_DIGESTS: dict[tuple[str, int, int, int, int], str] = {}


def file_digest(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes (remembered per path, inode, size, modification and status-change
    time: a file rewritten with its size and time stamp kept, as ``cp -p`` does, still changes
    its status-change time, which no one can set back)."""
    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def file_record(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``{"path", "size", "sha256"}`` of a file (its absolute path).

    Raises:
        FileNotFoundError: no such file (the path is named).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no file at {p}")
    return {"path": str(p.resolve()), "size": p.stat().st_size, "sha256": file_digest(p)}


def case_record(case: Any) -> dict[str, Any]:
    """What a run read of one :class:`agcl.data.Case`: its id, modality and files."""
    out: dict[str, Any] = {
        "case_id": str(case.case_id),
        "modality": str(case.modality),
        "image": file_record(case.image_path),
    }
    label = getattr(case, "label_path", None)
    out["label"] = None if label is None else file_record(label)
    return out


def _same_file(a: Any, b: Any) -> bool:
    # content decides: a folder moved elsewhere holds the same scans
    if isinstance(a, Mapping) and isinstance(b, Mapping) and "sha256" in a and "sha256" in b:
        return a["sha256"] == b["sha256"] and a.get("size") == b.get("size")
    return a == b


def _case_key(record: Mapping[str, Any]) -> str:
    return f"{record.get('modality')}/{record.get('case_id')}"


def describe_input_changes(
    old: Mapping[str, Any], new: Mapping[str, Any], *, limit: int = 4
) -> list[str]:
    """Readable differences between two stages' inputs (case lists compared case by case, file
    records by content).

    Examples:
        >>> def case(path, digest):
        ...     image = {"path": path, "size": 1, "sha256": digest}
        ...     return {"case_id": "1", "modality": "ct", "image": image}
        >>> a, b = {"cases": [case("/a", "x")]}, {"cases": [case("/b", "y")]}
        >>> describe_input_changes(a, b)
        ['cases: ct/1 image differs (/b)']
    """
    out: list[str] = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if _is_case_list(a) and _is_case_list(b):
            olds, news = {_case_key(r): r for r in a}, {_case_key(r): r for r in b}
            added, removed = sorted(set(news) - set(olds)), sorted(set(olds) - set(news))
            if added:
                out.append(
                    f"{key}: added {', '.join(added[:limit])}{' ...' if len(added) > limit else ''}"
                )
            if removed:
                out.append(
                    f"{key}: removed {', '.join(removed[:limit])}"
                    f"{' ...' if len(removed) > limit else ''}"
                )
            changed = []
            for k in sorted(set(olds) & set(news)):
                for part in sorted(set(olds[k]) | set(news[k])):
                    if not _same_file(olds[k].get(part), news[k].get(part)):
                        where = news[k].get(part)
                        where = where.get("path") if isinstance(where, Mapping) else where
                        changed.append(f"{k} {part} differs ({where})")
            if changed:
                out.append(
                    f"{key}: {'; '.join(changed[:limit])}{' ...' if len(changed) > limit else ''}"
                )
        elif (
            isinstance(a, Mapping)
            and isinstance(b, Mapping)
            and not ("sha256" in a or "sha256" in b)
        ):
            out += [f"{key}.{line}" for line in describe_input_changes(a, b, limit=limit)]
        elif not _same_file(a, b):
            out.append(f"{key} differs")
    return out


def _is_case_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(r, Mapping) and "case_id" in r for r in value)


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Manifest:
    """The records of a run folder (the content of ``run.json``), read and written as a whole.

    Attributes:
        data: ``{"format", "agcl", "run_id", "created", "stages": {name: record}, "maps":
            {case: record}, "files": [relative paths], "runs": [relative paths]}``.
    """

    def __init__(self, data: Mapping[str, Any] | None = None) -> None:
        from agcl import __version__

        self.data: dict[str, Any] = (
            dict(data)
            if data is not None
            else {
                "format": FORMAT,
                "agcl": __version__,
                "run_id": uuid.uuid4().hex[:12],
                "created": _now(),
                "stages": {},
                "maps": {},
                "files": [],
                "runs": [],
            }
        )
        for key, empty in (("stages", {}), ("maps", {}), ("files", []), ("runs", [])):
            self.data.setdefault(key, empty)

    @property
    def run_id(self) -> str:
        return str(self.data.get("run_id", ""))

    # --- stages ---
    def stage(self, name: str) -> dict[str, Any] | None:
        record = self.data["stages"].get(name)
        return dict(record) if isinstance(record, Mapping) else None

    def mismatch(
        self, name: str, fingerprint: Mapping[str, Any], inputs: Mapping[str, Any]
    ) -> str | None:
        """Why the stage's record does not match what the run would use now (``None``: it does,
        or there is no record)."""
        record = self.stage(name)
        if record is None:
            return None
        reasons = []
        changed = describe_changes(record.get("fingerprint", {}), fingerprint)
        if changed:
            reasons.append(changed)
        reasons += describe_input_changes(record.get("inputs", {}), inputs)
        return "; ".join(reasons) or None

    def start(self, name: str, fingerprint: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
        """Record that the stage starts (or continues) with these settings and inputs."""
        old = self.stage(name) or {}
        self.data["stages"][name] = {
            "fingerprint": dict(fingerprint),
            "inputs": dict(inputs),
            "outputs": old.get("outputs", {}),
            "complete": False,
            "updated": _now(),
        }

    def finish(self, name: str, outputs: Mapping[str, Any]) -> None:
        """Record the stage's outputs (``{relative path: file_record}``) and that it is complete."""
        record = self.data["stages"][name]
        record.update(outputs=dict(outputs), complete=True, updated=_now())

    def drop(self, names: Iterable[str]) -> None:
        for name in names:
            self.data["stages"].pop(name, None)

    # --- coarse maps, one record per case ---
    def map_record(self, stem: str) -> dict[str, Any] | None:
        record = self.data["maps"].get(stem)
        return dict(record) if isinstance(record, Mapping) else None

    def set_map(self, stem: str, record: Mapping[str, Any]) -> None:
        self.data["maps"][stem] = dict(record)

    def drop_maps(self) -> None:
        self.data["maps"] = {}

    # --- files ---
    def own(self, relpaths: Sequence[str]) -> None:
        files = self.data["files"]
        for rel in relpaths:
            if rel not in files:
                files.append(rel)

    def own_run(self, relpath: str) -> None:
        if relpath not in self.data["runs"]:
            self.data["runs"].append(relpath)
