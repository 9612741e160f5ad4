"""A short, seeded training loop of a text diffusion module on a data module's batches, shared by the text tests."""

from __future__ import annotations

import torch


def train_steps(module, dm, steps: int, lr: float = 3e-3) -> list[dict]:
    """``steps`` AdamW steps of ``module.compute_loss`` on ``dm``'s training batches (cycling); the logged terms
    of every step, as floats."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(module.parameters(), lr)
    g = torch.Generator().manual_seed(0)
    history = []
    batches = iter(())
    for _ in range(steps):
        batch = next(batches, None)
        if batch is None:
            batches = iter(dm.train_dataloader())
            batch = next(batches)
        terms = module.compute_loss(batch, g)
        opt.zero_grad()
        terms["loss"].backward()
        opt.step()
        history.append({k: float(v.detach()) for k, v in terms.items()})
    return history
