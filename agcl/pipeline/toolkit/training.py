"""The epoch loop every stage runs (:func:`fit`: resume, checkpoints, log, progress bar) and its
mixed precision (:class:`MixedPrecision`)."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from agcl.pipeline.config import AMP_CHOICES
from agcl.pipeline.toolkit import distributed as dd
from agcl.pipeline.toolkit.checkpoint import (
    capture_rng,
    load_stage,
    load_weights,
    restore_rng,
    save_stage,
)
from agcl.pipeline.toolkit.log import EpochLog

__all__ = ["AMP_CHOICES", "EpochCallback", "MixedPrecision", "amp_dtype", "fit"]

EpochCallback = Callable[[str, int, Mapping[str, Any]], None]
_END = object()


def amp_dtype(amp: str, device: str | torch.device, name: str = "amp") -> torch.dtype | None:
    """The autocast dtype of an ``amp`` setting on ``device`` (``None``: float32).

    "auto" is bfloat16 on a CUDA GPU that supports it (Ampere and later: no gradient scaler,
    no overflow), float16 (with a gradient scaler) on older GPUs, bfloat16 on a CPU whose oneDNN
    has native bf16 kernels (AVX512-BF16 or AMX), float32 elsewhere (emulated bf16 would be
    slower than float32).

    Raises:
        ValueError: ``amp`` not one of :data:`AMP_CHOICES`; "fp16" on a CPU (``name`` is the
            config field named in the message).

    Examples:
        >>> amp_dtype("off", "cpu") is None, amp_dtype("bf16", "cpu")
        (True, torch.bfloat16)
    """
    kind = torch.device(device).type
    if amp == "off":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        if kind != "cuda":
            raise ValueError(
                f"{name}='fp16' needs a CUDA device; got {device!r} (use 'bf16' or 'auto' on a CPU)"
            )
        return torch.float16
    if amp == "auto":
        if kind == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if (
            kind == "cpu"
            and torch.backends.mkldnn.is_available()
            and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        ):
            return torch.bfloat16
        return None
    raise ValueError(f"{name} must be one of {', '.join(map(repr, AMP_CHOICES))}; got {amp!r}")


class MixedPrecision:
    """One stage's mixed precision: autocast forward passes and a (scaled) optimiser step.

    ``forward(model)`` is ``model`` run under autocast with float32 outputs, so losses and
    their reductions stay float32; ``step(loss, optimizer)`` is ``backward`` + ``step``, through
    a gradient scaler for float16.

    Examples:
        >>> mp = MixedPrecision("off", "cpu")
        >>> mp.forward(torch.nn.Linear(2, 1))(torch.ones(1, 2)).dtype
        torch.float32
    """

    def __init__(self, amp: str, device: str | torch.device, name: str = "amp") -> None:
        self.dtype = amp_dtype(amp, device, name)
        self.device_type = torch.device(device).type
        self.scaler = (
            torch.amp.GradScaler(self.device_type) if self.dtype == torch.float16 else None
        )

    def forward(self, model: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        if self.dtype is None:
            return model

        def run(*args: Any, **kwargs: Any) -> torch.Tensor:
            with torch.autocast(device_type=self.device_type, dtype=self.dtype):
                out = model(*args, **kwargs)
            return out.float() if isinstance(out, torch.Tensor) and out.is_floating_point() else out

        return run

    def step(self, loss: torch.Tensor, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler is None:
            loss.backward()
            optimizer.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(optimizer)
            self.scaler.update()


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
    return inner if isinstance(inner, torch.nn.Module) else model


def fit(
    *,
    stage: str,
    epochs: int,
    ckpt_path: Path,
    settings: Mapping[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    epoch_batches: Callable[[int], Iterable[Any]],
    step: Callable[[Any], float | None],
    resume: bool,
    log: EpochLog,
    callback: EpochCallback | None = None,
    extra: Callable[[], Mapping[str, Any]] | None = None,
    device: str | torch.device = "cpu",
    collective: bool = True,
    steps_per_epoch: int | None = None,
) -> dict[str, Any]:
    """Train ``model`` for ``epochs`` epochs with a checkpoint after each; resume when asked.

    ``epoch_batches(epoch)`` yields the epoch's batches (its randomness must derive from the
    seed and the epoch so a resumed run repeats it); ``step(batch)`` runs one optimisation step
    and returns the batch loss (``None``: the batch was skipped and is not counted). Under
    torchrun (``collective``) all ranks stop an epoch as soon as one has no batch left.
    ``collective=False`` (a stage that only rank 0 runs) skips the per-epoch loss averaging and
    barrier across ranks. ``steps_per_epoch`` stops each epoch after that many steps (``None``:
    every batch). Returns ``{"epoch", "loss", "skipped", "resumed_from"}``.
    """
    if steps_per_epoch is not None and (
        isinstance(steps_per_epoch, bool)
        or not isinstance(steps_per_epoch, int)
        or steps_per_epoch < 1
    ):
        raise ValueError(
            f"steps_per_epoch must be None or a positive integer; got {steps_per_epoch!r}"
        )
    start, resumed_from = 1, 0
    if resume:
        ckpt = load_stage(ckpt_path, stage=stage, config=settings)
        if ckpt is not None:
            load_weights(_unwrap(model), ckpt["model"], ckpt_path)
            if ckpt["complete"] and ckpt["epoch"] >= epochs:
                _say(f"[{stage}] complete in {ckpt_path} (epoch {ckpt['epoch']}); skipped")
                return {
                    "epoch": ckpt["epoch"],
                    "loss": ckpt["extra"].get("loss"),
                    "skipped": True,
                    "resumed_from": ckpt["epoch"],
                }
            if ckpt["optimizer"]:
                optimizer.load_state_dict(ckpt["optimizer"])
            if ckpt["rng"]:
                restore_rng(ckpt["rng"])
            start = resumed_from = ckpt["epoch"] + 1
            _say(f"[{stage}] resuming from epoch {start} of {epochs} ({ckpt_path})")
    loss = float("nan")
    count = 0
    for epoch in range(start, epochs + 1):
        t0 = time.perf_counter()
        model.train()
        total, count = 0.0, 0
        bar = tqdm(
            total=steps_per_epoch,
            desc=f"{stage} {epoch}/{epochs}",
            leave=True,
            disable=not dd.is_main() or None,
            file=sys.stdout,
            dynamic_ncols=True,
        )
        batches = iter(epoch_batches(epoch))
        sync = collective and dd.is_distributed()
        while steps_per_epoch is None or count < steps_per_epoch:
            batch = next(batches, _END)
            more = batch is not _END
            # under torchrun every rank stops when the first one runs out (DDP needs equal steps)
            if sync:
                more = dd.all_true(more, device)
            if not more:
                break
            try:
                value = step(batch)
            except (
                ValueError
            ) as err:  # a loss refusing non-finite logits: did the training diverge?
                if not _finite_weights(model):
                    raise _diverged(stage, epoch, count + 1, optimizer) from err
                raise
            if value is None:  # a batch the step skipped (e.g. a single sample)
                continue
            if not math.isfinite(value):
                raise _diverged(stage, epoch, count + 1, optimizer)
            total += value
            count += 1
            bar.update(1)
            bar.set_postfix(loss=f"{total / count:.4f}")
        close = getattr(batches, "close", None)
        if close is not None:
            close()  # ends a DataLoader's workers early when steps_per_epoch stopped the epoch
        bar.close()
        loss = total / count if count else float("nan")
        if collective:
            loss = dd.all_mean(loss, device)
        record: dict[str, Any] = {
            "stage": stage,
            "epoch": epoch,
            "epochs": epochs,
            "loss": loss,
            "steps": count,
            "time_s": round(time.perf_counter() - t0, 3),
        }
        if dd.is_main():
            save_stage(
                ckpt_path,
                stage=stage,
                epoch=epoch,
                epochs=epochs,
                config=dict(settings),
                model=_unwrap(model).state_dict(),
                optimizer=optimizer.state_dict(),
                rng=capture_rng(),
                extra={"loss": loss, **(dict(extra()) if extra else {})},
            )
            log.write(**record)
            if not sys.stdout.isatty():
                _say(f"[{stage}] epoch {epoch}/{epochs} loss {loss:.4f} ({record['time_s']:.1f} s)")
        if collective:
            dd.barrier()
        if callback is not None:
            callback(stage, epoch, record)
    if count == 0 and start <= epochs and not math.isfinite(loss):
        raise RuntimeError(
            f"{stage}: no training batch was produced (no attention/organ voxels in the training "
            "cases?)"
        )
    return {"epoch": epochs, "loss": loss, "skipped": False, "resumed_from": resumed_from}


def _finite_weights(model: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters() if p.is_floating_point())


def _diverged(stage: str, epoch: int, step: int, optimizer: torch.optim.Optimizer) -> RuntimeError:
    lrs = sorted({float(g.get("lr", float("nan"))) for g in optimizer.param_groups})
    return RuntimeError(
        f"{stage}: training diverged at epoch {epoch}, step {step} (a non-finite loss or weights) "
        f"with learning rate {', '.join(f'{lr:g}' for lr in lrs)}; lower {stage}.lr (or use "
        "amp='off'), then start the stage again (--overwrite)"
    )


def _say(message: str) -> None:
    if dd.is_main():
        print(message, flush=True)
