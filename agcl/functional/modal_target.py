"""Functional form of the modal-target supervised contrastive loss (AGCL, Eq. 3)."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from agcl import _distributed
from agcl._validation import check_choice, check_in_range, check_int, check_positive
from agcl._warnings import warn_user
from agcl.functional._contrastive_rows import build_rows, positive_keys
from agcl.kernels import BACKENDS, Backend, get_lse_fn, modal_target_loss_naive, resolve_backend

__all__ = ["REDUCTIONS", "modal_target_supcon_loss"]  # Backend: agcl.kernels.Backend, re-used here

Reduction = Literal["mean", "sum", "none"]
REDUCTIONS: tuple[str, ...] = ("mean", "sum", "none")


def _from_lse(
    z: torch.Tensor,
    lse: torch.Tensor,
    key: torch.Tensor,
    mod_key: torch.Tensor | None,
    temperature: float,
    partial_weight: float,
    a: int,
    n: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-anchor loss from the row lse and class sums, in O(M D) (no pairwise pass).

    ``sum_{j in P_i} z_i . z_j = z_i . (C_{y_i} - z_i)`` with ``C_y`` the sum of class ``y``'s rows;
    partial positives use the modality sums minus the class sums the same way.
    """
    zero = torch.zeros(int(key.max()) + 1, z.shape[1], dtype=z.dtype, device=z.device)
    class_sum = zero.index_add(0, key, z)
    class_n = torch.bincount(key).to(z.dtype)
    za, ka = z[a : a + n], key[a : a + n]
    own = class_sum[ka]
    pos_sum = (za * (own - za)).sum(dim=1) / temperature
    count = class_n[ka] - 1.0
    if mod_key is not None and partial_weight > 0:
        ma = mod_key[a : a + n]
        zero_m = torch.zeros(int(mod_key.max()) + 1, z.shape[1], dtype=z.dtype, device=z.device)
        mod_sum = zero_m.index_add(0, mod_key, z)
        mod_n = torch.bincount(mod_key).to(z.dtype)
        pos_sum = pos_sum + partial_weight * (za * (mod_sum[ma] - own)).sum(dim=1) / temperature
        count = count + partial_weight * (mod_n[ma] - class_n[ka])
    valid = count > 0
    safe = torch.where(valid, count, torch.ones_like(count))
    loss = torch.where(valid, lse - pos_sum / safe, torch.zeros_like(lse))
    return loss, valid


def _reduce(
    loss: torch.Tensor, valid: torch.Tensor, reduction: str, world: int, z: torch.Tensor
) -> torch.Tensor:
    """Reduce per-anchor losses; across ranks, return the global value with gradients scaled by
    the world size (DDP averages gradients over ranks)."""
    n_valid = valid.sum()
    if world > 1:
        n_valid = _distributed.all_reduce_sum(n_valid)
    if int(n_valid) == 0:
        warn_user(
            "no anchor has a positive (every key occurs once): the contrastive loss is 0; "
            "check the labels, or pass views/(B, V, D) features for self-supervised positives"
        )
        if reduction != "none":
            return z.sum() * 0.0 + 0.0  # attached to the graph; +0.0 turns -0.0 into 0.0
    if reduction == "none":
        local = loss
    elif reduction == "sum":
        local = loss.sum()
    else:
        local = loss.sum() / n_valid.clamp_min(1).to(loss.dtype)
    if world == 1:
        return local
    value = local.detach() if reduction == "none" else _distributed.all_reduce_sum(local)
    scaled = local * world
    return scaled + (value - scaled).detach()


def _per_anchor_shape(x: torch.Tensor, out_shape: tuple[int, ...]) -> torch.Tensor:
    """View-major rows ``(V * B,)`` back to ``(B, V)`` (3-D input) or ``(M,)``."""
    if len(out_shape) == 2:
        b, v = out_shape
        return x.reshape(v, b).transpose(0, 1)
    return x


def _check_magnitude(z: torch.Tensor, temperature: float, *, normalized: bool) -> None:
    """Refuse a temperature and rows for which ``M |z|^2 / T`` (a bound on every similarity and
    class sum of the loss) overflows ``z.dtype``: the loss would be NaN. Normalised rows have
    ``|z| = 1``, so there only ``temperature`` can be too small."""
    sq = 1.0 if normalized else float(z.detach().double().pow(2).sum(1).max())
    bound = sq * z.shape[0] / temperature
    if not bound < torch.finfo(z.dtype).max / 4:
        if normalized:
            raise ValueError(
                f"temperature={temperature} is too small for {z.dtype}: similarities up to "
                f"1 / temperature times M={z.shape[0]} rows overflow; use a temperature of at "
                f"least {4 * z.shape[0] / torch.finfo(z.dtype).max:.3g}"
            )
        raise ValueError(
            f"features with normalize=False are too large for {z.dtype}: the largest squared row "
            f"norm {sq:.3g} times M={z.shape[0]} / temperature={temperature} overflows; pass "
            "normalize=True or rescale the features"
        )


def _all_finite(z: torch.Tensor) -> bool:
    """``isfinite(z).all()``, with a clear error under ``torch.func.vmap`` (which cannot branch
    on a batched tensor's values)."""
    try:
        return bool(torch.isfinite(z).all())
    except RuntimeError as exc:
        if not torch._C._are_functorch_transforms_active():
            raise
        raise RuntimeError(
            "modal_target_supcon_loss cannot run under torch.func.vmap on any backend: it checks "
            "the features' values (finite, not overflowing) before computing, which vmap does not "
            "allow. Loop over the batches, or use torch.func.grad / jacrev / hessian with "
            "backend='naive' (see docs/loss.md, 'Higher-order gradients and torch.func')"
        ) from exc


def _check_options(
    temperature: float, partial_weight: float, reduction: str, backend: str, block_size: int | None
) -> None:
    check_positive("temperature", temperature)
    check_in_range("partial_weight", partial_weight, 0.0, 1.0)
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("backend", backend, BACKENDS)
    if block_size is not None:
        check_int("block_size", block_size, low=1)


def modal_target_supcon_loss(
    features: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    modality: torch.Tensor | None = None,
    target: torch.Tensor | None = None,
    views: int | None = None,
    temperature: float = 0.1,
    partial_weight: float = 0.0,
    normalize: bool = True,
    reduction: Reduction = "mean",
    backend: Backend = "auto",
    gather_distributed: bool = False,
    block_size: int | None = None,
    return_valid: bool = False,
    queue: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Modal-target supervised contrastive loss (AGCL Eq. 3; SupCon and SSCL/NT-Xent as cases).

    Every row (one view of one sample) is an anchor. Its full positives ``P_i`` are the other
    rows with the same key: the ``(modality, target)`` pair when both are given, else whichever
    of ``target`` / ``labels`` / ``modality`` is given, else the sample index (SSCL, Eq. 2).
    Partial positives ``Q_i`` (same modality, different target; only when both are given) count
    with weight ``w = partial_weight``. With ``s_ij = z_i . z_j / T`` on L2-normalised rows:

        loss_i = lse_i - (sum_{P_i} s_ij + w sum_{Q_i} s_ij) / (|P_i| + w |Q_i|),
        lse_i = log sum_{j != i} exp(s_ij).

    An anchor is valid when ``|P_i| + w |Q_i| > 0``. For ``0 <= w <= 1``,
    ``loss_i >= log(|P_i| + w |Q_i|)`` (each ``-log p_ij`` term is averaged with weights summing
    to 1 and ``sum_j p_ij <= 1``). ``w = 0`` is Eq. 3 exactly.

    Args:
        features: embeddings, ``(B, V, D)`` (B samples with V views each) or ``(M, D)``.
        labels: one integer class per sample (3-D) or per row (2-D); exclusive with
            ``modality``/``target``. May be passed positionally, as in SupContrast.
        modality: integer modality per sample/row.
        target: integer target (organ) per sample/row.
        views: for 2-D features without labels: rows are ``views`` stacked blocks of
            ``B = M / views`` samples (``torch.cat([z_view0, z_view1])``, SimCLR's layout).
        temperature: ``T > 0``.
        partial_weight: ``w`` in ``[0, 1]``; warns and is ignored unless both modality and
            target are given.
        normalize: L2-normalise the rows first (``False`` if the caller already did).
        reduction: ``"mean"`` over valid anchors, ``"sum"`` over valid anchors, or ``"none"``
            (per-anchor, 0 at invalid anchors).
        backend: ``"auto"`` (Triton for CUDA tensors when triton imports, else torch),
            ``"torch"`` (blocked, ``O(block_size * M)`` extra memory), ``"naive"`` (full
            ``M x M`` reference) or ``"triton"`` (CPU only with ``TRITON_INTERPRET=1``).
            Only ``"naive"`` supports double backward (``create_graph=True``) and
            ``torch.func.grad`` / ``jacrev`` / ``hessian``; the others raise there.
        gather_distributed: all-gather rows and labels (with gradients) from every rank when
            ``torch.distributed`` is initialised with more than one process. Local rows are the
            anchors, all rows the contrast set. The value equals the single-process loss of the
            concatenated global batch on every rank; gradients are scaled by the world size so
            that DistributedDataParallel's averaging yields the single-process gradient.
            Ranks may hold different batch sizes.
        block_size: anchor rows per block of the torch backend; ``None`` picks one so that a
            ``(block, M)`` fp32 temporary is at most 64 MiB.
        return_valid: also return the boolean mask of valid anchors.
        queue: ``(queue_features, queue_keys)``, earlier rows added to the contrast set (not
            anchors, no gradient; a memory queue, see ``ModalTargetSupConLoss(queue_size=K)``).
            ``queue_features`` are used as given (detach and normalise them yourself);
            ``queue_keys`` hold the label columns of the call's keys: ``(modality, target)``
            when both are given, else the one of ``target`` / ``labels`` / ``modality`` given.
            An anchor's positives are then the other rows of batch + queue with its key.
            Needs labels (SSCL keys are sample indices, which do not carry across batches).

    Shape:
        - features: ``(B, V, D)`` or ``(M, D)``, rows ordered view-major (``M = V * B``).
        - labels, modality, target: ``(B,)`` for 3-D features, ``(M,)`` for 2-D.
        - output: scalar, or ``(B, V)`` / ``(M,)`` for ``reduction="none"``; valid: the same
          shape as a per-anchor result.
        - queue: ``(K, D)`` features and ``(K, C)`` integer keys, ``C`` = 2 for
          ``(modality, target)``, else 1 (``K = 0`` allowed).

    Returns:
        The loss (float32; float64 when the features are float64 and the backend is not
        Triton); with ``return_valid``, ``(loss, valid)``. When no anchor has a positive it
        returns a zero still attached to the graph and warns.

    Raises:
        TypeError: non-tensor or non-float features, non-integer labels.
        ValueError: wrong shapes, label lengths, negative labels, mixed ``labels`` and
            ``modality``/``target``, ``temperature <= 0``, ``partial_weight`` outside
            ``[0, 1]``, unknown reduction/backend, non-finite features, ``views`` not dividing M,
            ``normalize=False`` with features so large that the similarities overflow.
        ImportError: ``backend="triton"`` without triton installed.
        RuntimeError: double backward (``create_graph=True``) or a ``torch.func`` transform
            with a backend other than ``"naive"``; ``torch.func.vmap`` on any backend.

    References:
        Lee et al., "Attention-Guided Supervised Contrastive Learning for Semantic
        Segmentation" (AGCL), Eq. 2-3. Khosla et al., "Supervised Contrastive Learning",
        NeurIPS 2020. Chen et al., "A Simple Framework for Contrastive Learning" (SimCLR), 2020.

    Examples:
        >>> feats = torch.randn(8, 2, 16)
        >>> loss = modal_target_supcon_loss(
        ...     feats, modality=torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]),
        ...     target=torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]))
        >>> loss.shape, loss.dtype
        (torch.Size([]), torch.float32)
    """
    out, valid, _, _ = _loss_and_rows(
        features,
        labels,
        modality=modality,
        target=target,
        views=views,
        temperature=temperature,
        partial_weight=partial_weight,
        normalize=normalize,
        reduction=reduction,
        backend=backend,
        gather_distributed=gather_distributed,
        block_size=block_size,
        queue=queue,
    )
    return (out, valid) if return_valid else out


def _check_queue(
    queue: object, d: int, n_cols: int, device: torch.device, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(queue, (tuple, list)) and len(queue) == 2):
        raise TypeError(
            "queue must be a (queue_features, queue_keys) pair of tensors; "
            f"got {type(queue).__name__}"
        )
    qf, qk = queue
    if not isinstance(qf, torch.Tensor) or not qf.is_floating_point():
        raise TypeError(f"queue_features must be a floating-point tensor; got {type(qf).__name__}")
    if not isinstance(qk, torch.Tensor) or qk.is_floating_point() or qk.dtype == torch.bool:
        raise TypeError(
            f"queue_keys must be an integer tensor; got {getattr(qk, 'dtype', type(qk))}"
        )
    if qf.ndim != 2 or qf.shape[1] != d:
        raise ValueError(
            f"queue_features must be (K, D) with D={d} like the features; "
            f"got shape {tuple(qf.shape)}"
        )
    if qk.shape != (qf.shape[0], n_cols):
        raise ValueError(
            f"queue_keys must be (K, C) = {(qf.shape[0], n_cols)} (C=2 for modality and target, "
            f"else 1) to match queue_features {tuple(qf.shape)} and this call's labels; got shape "
            f"{tuple(qk.shape)}"
        )
    return qf.detach().to(device=device, dtype=dtype), qk.to(device=device, dtype=torch.long)


def _loss_and_rows(
    features: torch.Tensor,
    labels: torch.Tensor | None,
    *,
    modality: torch.Tensor | None,
    target: torch.Tensor | None,
    views: int | None,
    temperature: float,
    partial_weight: float,
    normalize: bool,
    reduction: str,
    backend: str,
    gather_distributed: bool,
    block_size: int | None,
    queue: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss, the valid mask, and the (gathered, normalised, detached) rows and their label
    columns, which a memory queue enqueues."""
    _check_options(temperature, partial_weight, reduction, backend, block_size)
    temperature, partial_weight = float(temperature), float(partial_weight)  # numpy scalars too
    block_size = None if block_size is None else int(block_size)
    rows, cols, has_partial, out_shape = build_rows(features, labels, modality, target, views)
    if queue is not None and labels is None and modality is None and target is None:
        raise ValueError(
            "queue needs labels, modality or target: without them the positives are the sample's "
            "own views, whose keys (sample indices) mean nothing across batches"
        )
    if partial_weight > 0 and not has_partial:
        warn_user("partial_weight is ignored unless both modality and target are given")
    name = resolve_backend(backend, rows.device)
    dtype = torch.float64 if rows.dtype == torch.float64 and name != "triton" else torch.float32
    with torch.autocast(rows.device.type, enabled=False):
        z = rows.to(dtype)
        if not _all_finite(z):
            raise ValueError("features must be finite; got NaN or inf entries")
        _check_magnitude(z, temperature, normalized=normalize)
        if normalize:
            z = F.normalize(z, dim=1)
        rank, world = _distributed.distributed_world()
        world = world if gather_distributed else 1
        a, n = 0, z.shape[0]
        if world > 1:
            if labels is None and modality is None and target is None:
                # SSCL keys are sample indices: pair them with the rank to keep them distinct
                cols = torch.cat([torch.full_like(cols, rank), cols], dim=1)
            z_all, cols_all, a, _ = _distributed.gather_rows(z, cols)
        else:
            z_all, cols_all = z, cols
        n_batch = z_all.shape[0]
        if queue is not None:
            qf, qk = _check_queue(queue, z.shape[1], cols.shape[1], z.device, dtype)
            z_set, cols_set = torch.cat([z_all, qf]), torch.cat([cols_all, qk])
        else:
            z_set, cols_set = z_all, cols_all
        key, mod_key = positive_keys(cols_set, has_partial)
        w = partial_weight if has_partial else 0.0
        if name == "naive":
            loss, valid = modal_target_loss_naive(
                z_set,
                key,
                temperature,
                modality_key=mod_key,
                partial_weight=w,
                anchor_start=a,
                num_anchors=n,
            )
        else:
            lse_fn = get_lse_fn(name, z.device)
            extra = {} if queue is None else {"grad_rows": n_batch}  # the queue: no gradient
            lse = lse_fn(
                z_set, temperature, anchor_start=a, num_anchors=n, block_size=block_size, **extra
            )
            loss, valid = _from_lse(z_set, lse.to(dtype), key, mod_key, temperature, w, a, n)
        out = _reduce(loss, valid, reduction, world, z)
    if reduction == "none":
        out = _per_anchor_shape(out, out_shape)
    return out, _per_anchor_shape(valid, out_shape), z_all.detach(), cols_all
