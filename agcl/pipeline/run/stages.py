"""The stage bookkeeping of a run: resume a stage only onto a record that still matches.

Before a stage runs, :meth:`StageBook.begin` compares the stage's fingerprint and inputs with
its record in ``run.json``; where they differ (or the stage's checkpoint changed on disk), the
stage and every stage built on it are redone: their checkpoints (files of this run) are removed
and the log says why, e.g. ``stage 1 changed: fields.coarse.epochs: 2 -> 4; redoing stages 1-3``.
After the stage, :meth:`StageBook.done` records the digests of what it wrote.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agcl.pipeline.run.folder import RunFolder
from agcl.pipeline.run.manifest import file_record

__all__ = ["STAGE_LABELS", "StageBook"]

#: how the log names each stage
STAGE_LABELS = {
    "coarse": "stage 1",
    "coarse2d": "stage 1",
    "pretrain": "stage 2",
    "segment": "stage 3",
}


def _say(message: str) -> None:
    print(message, flush=True)


class StageBook:
    """Decides, per stage, whether its checkpoint may be continued, and records what it made.

    Args:
        folder: the run folder (its manifest is read and written; only on the main rank).
        dependents: ``{stage: stages built on it}`` (transitively closed by this class).
        on_redo: called with the stages being redone, after their records are dropped (e.g. to
            drop per-case coarse maps).
        say: where the explanations go (default: printed).
    """

    def __init__(
        self,
        folder: RunFolder,
        dependents: Mapping[str, Sequence[str]],
        *,
        on_redo: Callable[[list[str]], None] | None = None,
        say: Callable[[str], None] = _say,
    ) -> None:
        self.folder, self.dependents, self.on_redo, self.say = folder, dependents, on_redo, say

    def _closure(self, stage: str) -> list[str]:
        out, todo = [], [stage]
        while todo:
            s = todo.pop(0)
            if s not in out:
                out.append(s)
                todo += list(self.dependents.get(s, ()))
        return out

    def _outputs_changed(self, stage: str) -> str | None:
        record = self.folder.manifest.stage(stage)
        if not record or not record.get("complete"):
            return None
        for rel, want in record.get("outputs", {}).items():
            path = self.folder.path / rel
            if not path.is_file():
                return f"its output {rel} is missing"
            if file_record(path)["sha256"] != want.get("sha256"):
                return f"its output {rel} changed on disk"
        return None

    def begin(self, stage: str, fingerprint: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
        """Check the stage's record, redo it (and what is built on it) where it no longer
        matches, then record that it starts with these settings and inputs."""
        if not self.folder.main:
            return
        manifest = self.folder.manifest
        reason = manifest.mismatch(stage, fingerprint, inputs) or self._outputs_changed(stage)
        if reason:
            self.redo(stage, reason)
        manifest.start(stage, fingerprint, inputs)
        # the checkpoint is this run's from its first epoch on (a killed stage's too)
        self.folder.own(self.folder.path / "checkpoints" / f"{stage}.pt")
        self.folder.save()

    def redo(self, stage: str, reason: str) -> None:
        """Drop ``stage`` and its dependents (records and checkpoints), saying why."""
        redo = self._closure(stage)
        labels = sorted({STAGE_LABELS.get(s, s) for s in redo if s in STAGE_LABELS})
        numbers = sorted(int(x.split()[-1]) for x in labels if x.startswith("stage "))
        what = (
            f"stages {numbers[0]}-{numbers[-1]}"
            if len(numbers) > 1 and numbers == list(range(numbers[0], numbers[-1] + 1))
            else ", ".join(labels) or stage
        )
        self.say(f"[run] {STAGE_LABELS.get(stage, stage)} changed: {reason}; redoing {what}")
        manifest = self.folder.manifest
        files = []
        for s in redo:
            record = manifest.stage(s)
            if record:
                files += list(record.get("outputs", {}))
            files += [f"checkpoints/{s}.pt"]
        self.folder.remove([self.folder.path / rel for rel in files])
        manifest.drop(redo)
        if self.on_redo is not None:
            self.on_redo(redo)
        self.folder.save()

    def done(self, stage: str, outputs: Sequence[str | os.PathLike[str]]) -> None:
        """Record the stage as complete with the digests of ``outputs`` (files it wrote)."""
        if not self.folder.main:
            return
        paths = [Path(p) for p in outputs]
        self.folder.own(*paths)
        self.folder.manifest.finish(
            stage, {self.folder.rel(p): file_record(p) for p in paths if p.is_file()}
        )
        self.folder.save()

    def digest(self, stage: str, path: str | os.PathLike[str]) -> str | None:
        """The recorded SHA-256 of a stage's output (``None`` when the stage recorded none)."""
        record = self.folder.manifest.stage(stage) or {}
        return record.get("outputs", {}).get(self.folder.rel(path), {}).get("sha256")
