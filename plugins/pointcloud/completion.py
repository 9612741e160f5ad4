"""Shape completion with the known points held fixed (PVD protocol, Zhou et al. 2021, §4.3 and §5.2).

Given a partial cloud P (K points) the model generates M further points so that the completed cloud
has K + M points (PVD: 200 partial + 1848 generated = 2048). The partial points are *known* entries
of the state: the engine's replacement inpainting (:func:`polydiff.samplers.sample` with ``known`` /
``x_known``; Song et al. 2021, App. I.2; Lugmayr et al. 2022, RePaint) keeps them on the forward
trajectory q(x_t | P) at every step and returns them exactly at the end, so any trained point model
(any Denoiser over (batch, points, 3)) completes shapes without retraining.

For Luo & Hu's point-wise decoder the unknown points do not see the known ones through the network:
the coupling is the shape latent, which :func:`complete_luohu` takes from the encoder applied to the
partial cloud (the auto-encoding path of the model, their §4.2) unless a latent is given.
"""

from __future__ import annotations

from typing import Mapping

import torch

from polydiff.errors import ConfigError, ShapeError

Tensor = torch.Tensor


def completion_batch(partial: Tensor, num_missing: int) -> tuple[Tensor, Tensor]:
    """State layout for completion: x_known (batch, K + M, 3) with the partial points first (zeros after)
    and the ``known`` mask (batch, K + M, 1), True on the first K rows."""
    if not torch.is_tensor(partial) or partial.ndim != 3 or partial.shape[-1] != 3:
        raise ShapeError(f"partial has shape {getattr(partial, 'shape', type(partial))}; expected (batch, points, 3)")
    if partial.shape[1] < 1:
        raise ShapeError("partial has no points; completion needs at least one known point")
    if not torch.isfinite(partial).all():
        raise ShapeError("partial contains non-finite coordinates (NaN or inf)")
    if int(num_missing) < 1:
        raise ConfigError(f"num_missing must be >= 1, got {num_missing}")
    b, k, _ = partial.shape
    x_known = torch.cat([partial, partial.new_zeros(b, int(num_missing), 3)], dim=1)
    known = torch.zeros(b, k + int(num_missing), 1, dtype=torch.bool, device=partial.device)
    known[:, :k] = True
    return x_known, known


@torch.no_grad()
def complete(denoiser, partial: Tensor, num_missing: int, cond: Mapping[str, Tensor] | None = None,
             generator: torch.Generator | None = None, sampler: str = "ddpm", steps: int | None = None,
             **sampler_kwargs) -> Tensor:
    """Complete partial clouds (batch, K, 3) with ``num_missing`` generated points each.

    Args:
        denoiser: a polydiff Denoiser over point sets (batch, points, 3).
        partial: the known points, in the model's normalised representation.
        num_missing: points to generate per cloud (M).
        cond: backbone conditions (e.g. ``{"latent": z}``, ``{"embedding": e}``).
        sampler, steps: engine sampler (default: ancestral DDPM on every step of a discrete chain).

    Returns:
        (batch, K + M, 3): the partial points, bit-for-bit unchanged, followed by the generated ones.
    """
    from polydiff import samplers

    x_known, known = completion_batch(partial, num_missing)
    process = denoiser.process
    steps = steps or process.num_steps or 100
    out = samplers.sample(denoiser, shape=tuple(x_known.shape), sampler=sampler, steps=steps, generator=generator,
                          cond=dict(cond or {}), known=known, x_known=x_known, **sampler_kwargs)
    # the engine returns x_known exactly on known entries; assert the contract rather than trust it silently
    if not torch.equal(out[:, : partial.shape[1]], partial):
        raise RuntimeError("sampler changed known points; replacement inpainting contract violated")
    return out


@torch.no_grad()
def complete_luohu(model, partial: Tensor, num_missing: int, generator: torch.Generator | None = None,
                   latent: Tensor | None = None, embedding: Tensor | None = None, **kw) -> Tensor:
    """Completion with a :class:`~.luohu.LuoHuDPM`: latent = encoder mean of the partial cloud (or ``latent``)."""
    was_training = model.training
    model.eval()
    try:
        z = model.encode(partial) if latent is None else latent
        cond = {"latent": z}
        if embedding is not None:
            cond["embedding"] = embedding
        return complete(model.denoiser, partial, num_missing, cond=cond, generator=generator, **kw)
    finally:
        model.train(was_training)
