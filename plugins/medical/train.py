"""Small, dependency-free training loops for the benchmark and tests (the CLI trains through
``polydiff fit`` and the engine's Lightning module instead).

* :func:`fit_denoiser` — ε-prediction with ``polydiff.losses.DiffusionLoss`` (Ho et al. 2020, L_simple,
  Eq. 14), noise drawn from the given space (simplex noise for AnoDDPM, Wyatt et al. 2022, §3.2),
  Adam and an exponential moving average of the weights (Ho et al. 2020, App. B: decay 0.9999; here
  0.999 because CPU runs are a few thousand steps). With labels it trains a class-conditional model
  whose labels are replaced by the null label with probability ``p_uncond`` (Ho & Salimans 2022, Alg. 1;
  their p_uncond ∈ {0.1, 0.2}).
* ``max_level``: draw training steps only from 1 … max_level of the T-step chain. AnoDDPM queries the
  model only at t ≤ t_λ (and the counterfactual methods only at t ≤ L), so on a CPU budget the
  benchmark spends all updates there; the paper trains on all T levels.
* :func:`fit_classifier` — cross-entropy of the noise-aware classifier on x_t = α_t x + σ_t ε at times
  drawn like the diffusion model's (Dhariwal & Nichol 2021, §4; Wolleb et al. 2022).
"""

from __future__ import annotations

import copy
import time

import torch

from polydiff import ConfigError, Euclidean, Space

Tensor = torch.Tensor


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator):
    for _ in range(steps):
        yield torch.randint(0, n, (batch_size,), generator=generator)


@torch.no_grad()
def _ema_update(ema, model, decay):
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.mul_(decay).add_(pm.detach(), alpha=1 - decay)
    for be, bm in zip(ema.buffers(), model.buffers()):
        be.copy_(bm)


class _MaxLevelLoss:
    """DiffusionLoss whose training steps are drawn uniformly from 1 … max_level of the discrete chain."""

    def __init__(self, loss, max_level: int):
        self.loss, self.max_level = loss, max_level

    def __call__(self, denoiser, batch, generator=None, space=None):
        process = denoiser.process
        if process.num_steps is None or not 1 <= self.max_level <= process.num_steps:
            raise ConfigError(f"max_level={self.max_level} needs a discrete process with at least that many steps")
        original = process.sample_time
        T, m = process.num_steps, self.max_level

        def sample_time(n, generator=None, device=None):
            idx = torch.randint(1, m + 1, (n,), generator=generator, device=device)
            return idx.to(torch.float64) / T

        process.sample_time = sample_time
        try:
            return self.loss(denoiser, batch, generator=generator, space=space)
        finally:
            process.sample_time = original


def fit_denoiser(denoiser, images: Tensor, labels: Tensor | None = None, steps: int = 1000, batch_size: int = 16,
                 lr: float = 2e-4, space: Space | None = None, generator: torch.Generator | None = None,
                 p_uncond: float = 0.2, null_label: int | None = None, ema_decay: float = 0.999,
                 log_every: int = 100, augment_flip: bool = False, max_level: int | None = None, log=print,
                 checkpoint_every: int = 0, checkpoint_fn=None, max_seconds: float | None = None):
    """Train ``denoiser`` (a polydiff ``Denoiser``) on ``images`` (N, C, ...) and return its EMA copy.

    ``checkpoint_fn(ema, step)`` is called every ``checkpoint_every`` steps (long CPU runs). ``max_seconds``
    stops training after that much wall time (a time budget on top of the step budget); the EMA copy's
    ``trained_steps`` attribute says how many steps were taken."""
    from polydiff.losses import DiffusionLoss

    if images.ndim < 3:
        raise ConfigError(f"fit_denoiser: images must be (N, C, ...), got {tuple(images.shape)}")
    if labels is not None and null_label is None:
        raise ConfigError("fit_denoiser: labels given but no null_label for classifier-free dropout")
    g = generator or torch.Generator().manual_seed(0)
    space = space or Euclidean()
    loss_fn = DiffusionLoss(parameterization="eps", weighting="uniform")
    if max_level is not None:
        loss_fn = _MaxLevelLoss(loss_fn, int(max_level))
    opt = torch.optim.Adam(denoiser.parameters(), lr=lr)
    ema = copy.deepcopy(denoiser).eval()
    ema.trained_steps = 0
    denoiser.train()
    start, running = time.time(), 0.0
    for step, idx in enumerate(_batches(images.shape[0], batch_size, steps, g), 1):
        x = images[idx]
        if augment_flip:
            flip = torch.rand(x.shape[0], generator=g) < 0.5
            x = torch.where(flip.reshape(-1, *([1] * (x.ndim - 1))), x.flip(-1), x)
        batch = {"x": x}
        if labels is not None:
            y = labels[idx].clone()
            y[torch.rand(y.shape[0], generator=g) < p_uncond] = null_label
            batch["cond"] = {"label": y}
        loss = loss_fn(denoiser, batch, generator=g, space=space)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        _ema_update(ema, denoiser, ema_decay)
        running += float(loss.detach())
        if log and log_every and step % log_every == 0:
            log(f"step {step}/{steps} loss {running / log_every:.4f} ({time.time() - start:.0f}s)")
            running = 0.0
        if checkpoint_fn is not None and checkpoint_every and step % checkpoint_every == 0:
            checkpoint_fn(ema, step)
        ema.trained_steps = step
        if max_seconds is not None and time.time() - start > max_seconds:
            if log:
                log(f"time budget of {max_seconds:.0f}s reached after {step} of {steps} steps")
            break
    return ema


def fit_classifier(classifier, process, images: Tensor, labels: Tensor, steps: int = 500, batch_size: int = 32,
                   lr: float = 3e-4, generator: torch.Generator | None = None, space: Space | None = None,
                   log_every: int = 100, log=print):
    """Train the noise-aware classifier p(y | x_t, t); returns the mean training accuracy of the last 100 steps."""
    g = generator or torch.Generator().manual_seed(0)
    space = space or Euclidean()
    opt = torch.optim.AdamW(classifier.parameters(), lr=lr, weight_decay=0.05)
    classifier.train()
    # Balanced batches: diseased slices are usually rare.
    weights = torch.ones(len(labels), dtype=torch.float64)
    for c in labels.unique():
        weights[labels == c] = 1.0 / float((labels == c).sum())
    accs = []
    for step in range(1, steps + 1):
        idx = torch.multinomial(weights, batch_size, replacement=True, generator=g)
        x, y = images[idx], labels[idx].long()
        t = process.sample_time(batch_size, generator=g)
        x_t = process.q_sample(x, t, space.noise(x.shape, generator=g, dtype=x.dtype))
        logits = classifier(x_t, t)
        loss = torch.nn.functional.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        accs.append(float((logits.argmax(-1) == y).float().mean()))
        if log and log_every and step % log_every == 0:
            log(f"classifier step {step}/{steps} loss {float(loss):.4f} acc {sum(accs[-log_every:]) / log_every:.3f}")
    classifier.eval()
    tail = accs[-100:]
    return sum(tail) / len(tail)
