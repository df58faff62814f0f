"""``ModalTargetSupConLoss``: AGCL's modal-target supervised contrastive loss as a module."""

from __future__ import annotations

import torch
from torch import nn

from agcl._validation import check_int
from agcl.functional.modal_target import Backend, Reduction, _check_options, _loss_and_rows

__all__ = ["ModalTargetSupConLoss"]


class ModalTargetSupConLoss(nn.Module):
    """Modal-target supervised contrastive loss (AGCL Eq. 3), with SupCon and SSCL as cases.

    Positives of an anchor are the other views sharing its ``(modality, target)`` pair (or its
    ``target`` / ``labels`` / ``modality`` when only one is given; its own sample's other views
    when none is). ``partial_weight`` counts same-modality, different-target rows as positives
    with that weight. See :func:`agcl.functional.modal_target_supcon_loss` for the formula, the
    bound ``loss_i >= log(|P_i| + w |Q_i|)``, the row layout and the distributed semantics.

    Args:
        temperature: ``T > 0`` (the paper uses 0.1).
        partial_weight: weight ``w`` in ``[0, 1]`` of partial positives; 0 gives Eq. 3 exactly.
        normalize: L2-normalise rows inside (``False`` if the caller already did).
        reduction: ``"mean"`` (over anchors with a positive), ``"sum"`` or ``"none"``.
        backend: ``"auto"``, ``"torch"``, ``"naive"`` or ``"triton"``.
        gather_distributed: all-gather rows from every rank with gradients (DDP-ready).
        block_size: anchor rows per block of the torch backend (``None``: at most 64 MiB each).
        queue_size: ``K``, rows of earlier batches kept as extra contrast rows (a label-aware
            memory queue; 0, the default, turns it off). Anchors stay the current batch's
            rows; the contrast set is the batch plus the queue as it was before the call; an
            anchor's positives are the other rows of that set with its key (partial positives
            as without a queue). After the call the batch's rows (all views, detached,
            normalised as the loss uses them; the global batch with ``gather_distributed``,
            so every rank holds the same queue) are enqueued and the oldest dropped (FIFO).
            A partly filled queue contributes the rows it has. Queue rows get no gradient.
            Needs labels, modality or target in every call, always the same kind.
        queue_dim: the feature dimension ``D`` of the queue. ``None`` (default): taken from the
            first batch, or from a loaded ``state_dict`` (a fresh module loads any checkpoint).
            Given: the buffers are allocated now and other dimensions raise.

    Shape:
        - features: ``(B, V, D)`` or ``(M, D)``; labels, modality, target: ``(B,)`` / ``(M,)``.
        - output: scalar; ``(B, V)`` or ``(M,)`` with ``reduction="none"``.
        - buffers (with ``queue_size=K``): ``queue_features`` ``(K, D)`` float32,
          ``queue_keys`` ``(K, 2)`` int64 (label columns; the second unused for one label),
          ``queue_state`` ``(3,)`` int64: rows filled, next write position, label columns.

    Raises:
        ValueError, TypeError: bad options here, bad inputs in ``forward`` (messages name the
            argument and print shapes).

    References:
        Lee et al., "Attention-Guided Supervised Contrastive Learning for Semantic
        Segmentation" (AGCL), Eq. 3. Khosla et al., "Supervised Contrastive Learning", 2020.

    Examples:
        >>> loss_fn = ModalTargetSupConLoss(temperature=0.1)
        >>> feats = torch.randn(6, 2, 8, requires_grad=True)
        >>> loss = loss_fn(feats, modality=torch.tensor([0, 0, 0, 1, 1, 1]),
        ...                target=torch.tensor([0, 1, 1, 0, 1, 1]))
        >>> loss.backward(); feats.grad.shape
        torch.Size([6, 2, 8])
    """

    def __init__(
        self,
        temperature: float = 0.1,
        *,
        partial_weight: float = 0.0,
        normalize: bool = True,
        reduction: Reduction = "mean",
        backend: Backend = "auto",
        gather_distributed: bool = False,
        block_size: int | None = None,
        queue_size: int = 0,
        queue_dim: int | None = None,
    ) -> None:
        super().__init__()
        _check_options(temperature, partial_weight, reduction, backend, block_size)
        self.queue_size = check_int("queue_size", queue_size, low=0)
        if queue_dim is not None:
            queue_dim = check_int("queue_dim", queue_dim, low=1)
        self.queue_dim = queue_dim
        if self.queue_size > 0:
            d = queue_dim or 0
            self.register_buffer("queue_features", torch.zeros(self.queue_size if d else 0, d))
            self.register_buffer("queue_keys", torch.zeros(self.queue_size, 2, dtype=torch.long))
            self.register_buffer("queue_state", torch.zeros(3, dtype=torch.long))
        self.temperature = float(temperature)
        self.partial_weight = float(partial_weight)
        self.normalize = bool(normalize)
        self.reduction = reduction
        self.backend = backend
        self.gather_distributed = bool(gather_distributed)
        self.block_size = None if block_size is None else int(block_size)

    def forward(
        self,
        features: torch.Tensor,
        labels: torch.Tensor | None = None,
        *,
        modality: torch.Tensor | None = None,
        target: torch.Tensor | None = None,
        views: int | None = None,
        return_valid: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The loss of ``features``; with ``return_valid``, ``(loss, valid)``. With a queue,
        the batch's rows are enqueued afterwards."""
        n_cols = 2 if modality is not None and target is not None else 1
        out, valid, rows, cols = _loss_and_rows(
            features,
            labels,
            modality=modality,
            target=target,
            views=views,
            temperature=self.temperature,
            partial_weight=self.partial_weight,
            normalize=self.normalize,
            reduction=self.reduction,
            backend=self.backend,
            gather_distributed=self.gather_distributed,
            block_size=self.block_size,
            queue=self.queue(features.shape[-1], n_cols=n_cols, ordered=False)
            if self.queue_size
            else None,
        )
        if self.queue_size:
            self._enqueue(rows, cols)
        return (out, valid) if return_valid else out

    def queue(
        self, d: int | None = None, *, n_cols: int | None = None, ordered: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The queued ``(features (F, D), keys (F, C))``, oldest first (``F`` rows filled).

        ``d`` checks the feature dimension against the queue's (or fixes it, lazily);
        ``n_cols`` the number of label columns (1, or 2 for modality and target);
        ``ordered=False`` returns the full buffers in storage order (no copy; the loss does not
        depend on the order).
        """
        if not self.queue_size:
            raise ValueError("this loss has no queue: pass queue_size=K > 0")
        qf = self.queue_features
        if d is not None and qf.shape[1] != d:
            if qf.shape[0] == 0:  # lazy: the first batch fixes D
                self.queue_features = torch.zeros(self.queue_size, d, device=qf.device)
                qf = self.queue_features
            else:
                raise ValueError(
                    f"features have D={d} but the queue holds rows of D={qf.shape[1]} "
                    f"(queue_dim={self.queue_dim}, or fixed by the first batch / the state_dict)"
                )
        fill, ptr, c = (int(x) for x in self.queue_state)
        if n_cols is not None and c and c != n_cols:
            raise ValueError(
                f"the queue holds {c} label column(s) but this call gives {n_cols}: use the same "
                "kind of labels (labels/target/modality, or modality and target) every call"
            )
        keys = self.queue_keys[:, : (c or n_cols or 1)]
        if fill < self.queue_size or not ordered:
            return qf[:fill], keys[:fill]
        order = torch.arange(ptr, ptr + fill, device=qf.device) % self.queue_size
        return qf[order], keys[order]

    @torch.no_grad()
    def _enqueue(self, rows: torch.Tensor, cols: torch.Tensor) -> None:
        """FIFO: write the last ``min(N, K)`` rows at the pointer, wrapping around."""
        k = self.queue_size
        fill, ptr, _ = (int(x) for x in self.queue_state)
        n = rows.shape[0]
        rows, cols = rows[-k:], cols[-k:]
        idx = (torch.arange(rows.shape[0], device=rows.device) + ptr + (n - rows.shape[0])) % k
        idx = idx.to(self.queue_features.device)
        self.queue_features[idx] = rows.to(self.queue_features)
        self.queue_keys[idx, : cols.shape[1]] = cols.to(self.queue_keys)
        self.queue_state.copy_(torch.tensor([min(fill + n, k), (ptr + n) % k, cols.shape[1]]))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001
        # lazy D: a fresh module takes the queue's shape from the checkpoint
        key = prefix + "queue_features"
        if self.queue_size and self.queue_dim is None and key in state_dict:
            incoming = state_dict[key]
            if incoming.shape != self.queue_features.shape:
                self.queue_features = torch.empty_like(incoming, device=self.queue_features.device)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, partial_weight={self.partial_weight}, "
            f"normalize={self.normalize}, reduction={self.reduction!r}, backend={self.backend!r}"
            + (f", queue_size={self.queue_size}" if self.queue_size else "")
        )
