"""Quick start: train a small projection head with ModalTargetSupConLoss on synthetic clusters.

Samples come from 2 modalities x 4 targets (8 Gaussian clusters in 32-D); each sample gets two
noisy "views". A two-layer MLP maps them to 16-D embeddings trained with the modal-target loss
(AGCL Eq. 3). The loss goes down as same-(modality, target) views pull together.

    python examples/quickstart_loss.py            # 150 steps, a few seconds on a laptop CPU
    python examples/quickstart_loss.py --fast     # 25 steps (used by the tests)
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

from agcl import ModalTargetSupConLoss

N_MODALITIES, N_TARGETS, IN_DIM = 2, 4, 32


def make_batch(centers: torch.Tensor, batch: int, gen: torch.Generator):
    """``batch`` samples with two noisy views each: ``(batch, 2, IN_DIM)`` and their labels."""
    modality = torch.randint(0, N_MODALITIES, (batch,), generator=gen)
    target = torch.randint(0, N_TARGETS, (batch,), generator=gen)
    base = centers[modality, target] + 0.8 * torch.randn(batch, IN_DIM, generator=gen)
    views = base[:, None] + 0.3 * torch.randn(batch, 2, IN_DIM, generator=gen)
    return views, modality, target


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="optimisation steps")
    parser.add_argument("--batch", type=int, default=64, help="samples per batch (2 views each)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--fast", action="store_true", help="25 steps: a smoke run")
    args = parser.parse_args(argv)
    steps = 25 if args.fast else args.steps

    gen = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    centers = 1.5 * torch.randn(N_MODALITIES, N_TARGETS, IN_DIM, generator=gen)
    head = nn.Sequential(nn.Linear(IN_DIM, 64), nn.ReLU(), nn.Linear(64, 16))
    optimiser = torch.optim.Adam(head.parameters(), lr=3e-3)
    loss_fn = ModalTargetSupConLoss(temperature=0.1, partial_weight=0.0)

    history = []
    for step in range(steps):
        views, modality, target = make_batch(centers, args.batch, gen)
        loss = loss_fn(head(views), modality=modality, target=target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(loss.item())
        if step % max(1, steps // 5) == 0 or step == steps - 1:
            print(f"step {step:4d}  loss {history[-1]:.4f}")
    k = min(5, len(history))
    first, last = sum(history[:k]) / k, sum(history[-k:]) / k
    print(f"first {first:.4f} -> last {last:.4f} (mean of {k} steps each)")
    return last


if __name__ == "__main__":
    main()
