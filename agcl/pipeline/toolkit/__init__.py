"""The toolkit every stage shares: the epoch loop and mixed precision, checkpoints and the one
loader of run files, the epoch log, the per-stage fingerprint, the component factories, the
patch streams, DDP, and sliding-window inference. No stage imports another stage's module;
what two stages share lives here."""

from __future__ import annotations

from agcl.pipeline.toolkit.checkpoint import (
    STAGE_KEYS,
    capture_rng,
    check_payload,
    describe_changes,
    load_checkpoint,
    load_stage,
    load_weights,
    restore_rng,
    save_stage,
    seed_everything,
)
from agcl.pipeline.toolkit.distributed import barrier, init_distributed, is_main, wrap_ddp
from agcl.pipeline.toolkit.factories import (
    OPTIMIZER_STAGES,
    OptimizerArg,
    build_encoder,
    build_optimizer,
    resolve_optimizer,
)
from agcl.pipeline.toolkit.fingerprint import NOT_FINGERPRINTED, STAGE_FIELDS, stage_fingerprint
from agcl.pipeline.toolkit.log import EpochLog
from agcl.pipeline.toolkit.streams import epoch_batches, patch_stream
from agcl.pipeline.toolkit.training import EpochCallback, MixedPrecision, amp_dtype, fit
from agcl.pipeline.toolkit.windows import (
    WINDOW_WEIGHTS,
    sliding_window,
    window_starts,
    window_weight,
)

__all__ = [
    "NOT_FINGERPRINTED",
    "OPTIMIZER_STAGES",
    "STAGE_FIELDS",
    "STAGE_KEYS",
    "WINDOW_WEIGHTS",
    "EpochCallback",
    "EpochLog",
    "MixedPrecision",
    "OptimizerArg",
    "amp_dtype",
    "barrier",
    "build_encoder",
    "build_optimizer",
    "capture_rng",
    "check_payload",
    "describe_changes",
    "epoch_batches",
    "fit",
    "init_distributed",
    "is_main",
    "load_checkpoint",
    "load_stage",
    "load_weights",
    "patch_stream",
    "resolve_optimizer",
    "restore_rng",
    "save_stage",
    "seed_everything",
    "sliding_window",
    "stage_fingerprint",
    "window_starts",
    "window_weight",
    "wrap_ddp",
]
