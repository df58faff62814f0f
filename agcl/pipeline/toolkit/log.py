"""The epoch log of a run: ``epochs.jsonl``, one JSON line per epoch of every stage."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

__all__ = ["EpochLog"]


class EpochLog:
    """Append-only JSON-lines log: one record per epoch of every stage.

    Each line is written and flushed at once, so a killed run leaves at most its last line cut
    short; :meth:`read` skips such a line (it is the epoch that was never checkpointed).

    Args:
        path: the log file.
        enabled: ``False`` writes nothing (the non-zero ranks under torchrun).
        run_id: written into every record, so the epochs of a run folder's successive
            attempts (a resumed run) can be told apart.

    Examples:
        >>> import tempfile, pathlib
        >>> log = EpochLog(pathlib.Path(tempfile.mkdtemp()) / "epochs.jsonl")
        >>> log.write(stage="pretrain", epoch=1, loss=1.5)
        >>> [r["loss"] for r in log.read()]
        [1.5]
    """

    def __init__(
        self, path: str | os.PathLike[str], *, enabled: bool = True, run_id: str | None = None
    ) -> None:
        self.path = Path(path)
        self.enabled = enabled
        self.run_id = run_id
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, **record: Any) -> None:
        """Append ``record`` (plus a UTC timestamp) as one JSON line, flushed to disk."""
        if not self.enabled:
            return
        head: dict[str, Any] = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if self.run_id is not None:
            head["run"] = self.run_id
        line = json.dumps({**head, **record})
        self._drop_cut_short_line()
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()

    def _drop_cut_short_line(self) -> None:
        # a kill while writing leaves a last line without its newline: that epoch was never
        # checkpointed, so the line goes (else the next record would join it)
        if not self.path.is_file() or self.path.stat().st_size == 0:
            return
        with open(self.path, "rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) == b"\n":
                return
            fh.seek(0)
            data = fh.read()
            fh.seek(data.rfind(b"\n") + 1)
            fh.truncate()

    def drop(self, stages: Iterable[str]) -> None:
        """Remove the records of ``stages`` (stages being redone: their epochs are discarded)."""
        from agcl._atomic import write_text

        if not self.enabled or not self.path.is_file():
            return
        gone = set(stages)
        keep = [r for r in self.read() if r.get("stage") not in gone]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in keep))

    def read(self) -> list[dict[str, Any]]:
        """Every complete record written so far (an empty list when the file does not exist).

        Raises:
            ValueError: a line other than the last is not JSON (the file was edited or damaged).
        """
        if not self.path.exists():
            return []
        with open(self.path, encoding="utf-8") as fh:
            lines = [line for line in fh.read().split("\n") if line.strip()]
        out = []
        for i, line in enumerate(lines):
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as err:
                if (
                    i == len(lines) - 1
                ):  # cut short by a kill while writing: that epoch never finished
                    break
                raise ValueError(
                    f"{self.path} line {i + 1} is not JSON ({err}); the log was edited or damaged"
                ) from None
        return out
