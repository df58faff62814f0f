"""The run folder: who owns which file (:class:`RunFolder`) and what each stage was made from
(:class:`Manifest`, ``run.json``)."""

from __future__ import annotations

from agcl.pipeline.run.folder import RUN_NAMES, RunExistsError, RunFolder, RunFolderError
from agcl.pipeline.run.manifest import (
    MANIFEST,
    Manifest,
    case_record,
    describe_input_changes,
    file_record,
)

__all__ = [
    "MANIFEST",
    "RUN_NAMES",
    "Manifest",
    "RunExistsError",
    "RunFolder",
    "RunFolderError",
    "case_record",
    "describe_input_changes",
    "file_record",
]
