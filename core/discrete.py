"""Discrete-state diffusion for categorical data (tokens, categories, residue types): D3PM and MDLM.

Structured Denoising Diffusion Models in Discrete State-Spaces (Austin et al. 2021, "D3PM") corrupt
each of the (batch, ...) integer entries independently with a Markov chain q(x_t|x_{t−1}) = Cat(x_{t−1} Q_t)
over K classes. Two transition families are implemented, both with closed-form products
Q̄_{t|s} = Q_{s+1} ⋯ Q_t, parameterised by the signal level ᾱ(t) ∈ [0, 1] (a = ᾱ(t)/ᾱ(s)):

* ``uniform``   Q = a I + (1 − a)/K 11ᵀ (Austin et al. 2021, §3.1 and App. A.2; Hoogeboom et al. 2021).
* ``absorbing`` Q = a I + (1 − a) 1 e_mᵀ with an extra [MASK] state m = K (App. A.2; the masked
                diffusion of MDLM, Sahoo et al. 2024). States are then K + 1, data classes K.

Schedules (the ``get_diffusion_betas`` of the D3PM release): ``mutual_info`` — I(x_t; x_0) falls
linearly to 0 (Austin et al. 2021, §4; for absorbing it is β_t = 1/(T − t + 1), i.e. ᾱ(t) = 1 − t, which
is also MDLM's linear schedule; for uniform it is solved numerically for a uniform data marginal);
``cosine`` — ᾱ(t) = cos(((t + s)/(1 + s)) π/2) / cos((s/(1 + s)) π/2), s = 0.008 (their default for
uniform, after Hoogeboom et al. 2021); ``linear`` — β_i = linspace(β_start, β_end, T) (Ho et al. 2020's,
1e-4 … 0.02 at T = 1000, scaled by 1000/T, clipped at 0.999), discrete chains only.

The model is x_0-parameterised: ``model(x_t, t, cond) -> logits`` of shape (batch, ..., K) over the data
classes, t ∈ [0, 1] of shape (batch,), and p_θ(x_{t−1}|x_t) ∝ Σ_{x̃0} q(x_{t−1}, x_t|x̃0) p̃_θ(x̃0|x_t)
(Austin et al. 2021, Eq. 4) or — the default, see :meth:`DiscreteProcess.reverse` — the mean of the
exact posteriors under p̃_θ, which is the true reverse kernel when p̃_θ is exact. For the absorbing chain
unmasked entries are carried over (p̃ = one-hot of x_t; MDLM's "SUBS" parameterisation, Sahoo et al.
2024, §3.2), which the true posterior satisfies anyway.

Losses: :class:`D3PMLoss` is the hybrid L_vb + λ·CE with λ = 0.01 (Austin et al. 2021, Eq. 5;
their code estimates L_vb by the term of the drawn step); :class:`MDLMLoss` is the continuous-time
Rao-Blackwellised NELBO of masked diffusion (Sahoo et al. 2024, Eq. 10). :func:`d3pm_vlb` is the full
variational bound in nats and bits per token. Samplers are in :mod:`polydiff.discrete_samplers`.

Masks: ``presence`` (False = padding: never noised, generated or scored; it holds the placeholder id 0
in x_t, the model sees ``cond["presence"]``) and ``known`` (prompt tokens: kept at their clean value in
x_t, in training and sampling, as for prompted masked diffusion) are boolean tensors of x's shape;
losses count only present, unknown entries.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch
from torch import nn

from .batch import RESERVED_COND_KEYS
from .checks import check_mask
from .errors import ConfigError, ShapeError
from .processes import _ddt

__all__ = [
    "DiscreteProcess", "D3PMLoss", "MDLMLoss", "d3pm_vlb", "x0_probs", "sample_categorical", "unpack_tokens",
    "categorical_kl", "TRANSITIONS", "SCHEDULES", "DiscreteDenoiser", "LogitGuidance",
]

Tensor = torch.Tensor
F64 = torch.float64
TRANSITIONS = ("uniform", "absorbing")
SCHEDULES = ("mutual_info", "cosine", "linear")
LOG2 = math.log(2.0)
_TINY = 1e-30


class DiscreteProcess:
    """A D3PM forward process on K classes (see the module docstring).

    Args:
        num_classes: K, the number of data classes (the absorbing chain adds state K = [MASK]).
        transition: ``uniform`` or ``absorbing``.
        schedule: ``mutual_info`` (default), ``cosine`` or ``linear``.
        num_steps: T of the discrete chain (times i/T); ``None`` for continuous time (MDLM).
        cosine_s: offset s of the cosine schedule (0.008).
        beta_start, beta_end: endpoints of the linear schedule at T = 1000 (Ho et al. 2020).
    """

    def __init__(
        self,
        num_classes: int,
        transition: str = "absorbing",
        schedule: str = "mutual_info",
        num_steps: int | None = 1000,
        cosine_s: float = 0.008,
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
    ):
        if int(num_classes) < 2:
            raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
        if transition not in TRANSITIONS:
            raise ConfigError(f"unknown transition {transition!r}; expected one of {TRANSITIONS}")
        if schedule not in SCHEDULES:
            raise ConfigError(f"unknown discrete schedule {schedule!r}; expected one of {SCHEDULES}")
        if num_steps is not None and int(num_steps) < 1:
            raise ConfigError(f"num_steps must be a positive integer or None, got {num_steps}")
        if schedule == "linear" and num_steps is None:
            raise ConfigError("the linear β schedule is defined for a discrete chain only; pass num_steps")
        self.num_classes = int(num_classes)
        self.transition = transition
        self.schedule = schedule
        self.num_steps = None if num_steps is None else int(num_steps)
        self.cosine_s = cosine_s
        self.mask_id = self.num_classes if transition == "absorbing" else None
        self.num_states = self.num_classes + (1 if transition == "absorbing" else 0)
        if schedule == "linear":
            T = self.num_steps
            betas = torch.linspace(beta_start * 1000 / T, beta_end * 1000 / T, T, dtype=F64).clamp(max=0.999)
            self._grid_log_ab = torch.cat([torch.zeros(1, dtype=F64), torch.cumsum(torch.log1p(-betas), 0)])

    def __repr__(self):
        return (
            f"DiscreteProcess(num_classes={self.num_classes}, transition={self.transition!r}, "
            f"schedule={self.schedule!r}, num_steps={self.num_steps})"
        )

    # -- schedule ----------------------------------------------------------------------------------
    def alpha_bar(self, t) -> Tensor:
        """ᾱ(t) = probability that an entry is still uncorrupted at time t (float64, elementwise)."""
        t = torch.as_tensor(t, dtype=F64)
        if self.schedule == "linear":
            pos = torch.clamp(t, 0.0, 1.0) * self.num_steps
            lo = torch.clamp(torch.floor(pos).long(), max=self.num_steps - 1)
            g = self._grid_log_ab.to(t.device)
            return torch.exp(g[lo] + (pos - lo) * (g[lo + 1] - g[lo]))
        if self.schedule == "cosine":
            s = self.cosine_s
            f = torch.cos((t + s) / (1 + s) * math.pi / 2) / math.cos(s / (1 + s) * math.pi / 2)
            return torch.clamp(f, 0.0, 1.0)
        # mutual information falls linearly: ᾱ = 1 − t for absorbing, numerically for uniform
        if self.transition == "absorbing":
            return torch.clamp(1 - t, 0.0, 1.0)
        return self._uniform_mi_alpha_bar(t)

    def _uniform_mi(self, ab: Tensor) -> Tensor:
        """I(x_t; x_0) for uniform x_0 and uniform transitions with signal ᾱ: log K − H(row)."""
        k = self.num_classes
        p_same = ab + (1 - ab) / k
        p_other = (1 - ab) / k
        h = -(torch.special.xlogy(p_same, p_same) + (k - 1) * torch.special.xlogy(p_other, p_other))
        return math.log(k) - h

    def _uniform_mi_alpha_bar(self, t: Tensor) -> Tensor:
        target = (1 - torch.clamp(t, 0.0, 1.0)) * math.log(self.num_classes)
        lo, hi = torch.zeros_like(target), torch.ones_like(target)
        for _ in range(60):  # I is increasing in ᾱ
            mid = 0.5 * (lo + hi)
            below = self._uniform_mi(mid) < target
            lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        return 0.5 * (lo + hi)

    def alpha_bar_derivative(self, t) -> Tensor:
        """dᾱ/dt (float64), by autograd."""
        return _ddt(self.alpha_bar, t)

    def betas(self) -> Tensor:
        """β_i = 1 − ᾱ(i/T)/ᾱ((i−1)/T), i = 1 … T, of the discrete chain."""
        if self.num_steps is None:
            raise ConfigError("betas exist only for a discrete chain (num_steps=T)")
        ab = self.alpha_bar(torch.arange(self.num_steps + 1, dtype=F64) / self.num_steps)
        return 1 - ab[1:] / ab[:-1]

    def _ratio(self, t, s) -> Tensor:
        """a = ᾱ(t)/ᾱ(s) (signal kept from s to t), 0 where ᾱ(s) = 0."""
        ab_t, ab_s = self.alpha_bar(t), self.alpha_bar(s)
        return torch.where(ab_s > 0, ab_t / torch.where(ab_s > 0, ab_s, torch.ones_like(ab_s)), torch.zeros_like(ab_t))

    # -- transition matrices (dense; for small K and tests) -------------------------------------
    def transition_matrix(self, t, s) -> Tensor:
        """Q̄_{t|s} as a dense (num_states, num_states) float64 matrix, rows = x_s, columns = x_t (scalar t, s)."""
        a = self._ratio(torch.as_tensor(t, dtype=F64), torch.as_tensor(s, dtype=F64))
        n = self.num_states
        eye = torch.eye(n, dtype=F64)
        if self.transition == "uniform":
            return a * eye + (1 - a) / n * torch.ones(n, n, dtype=F64)
        q = a * eye
        q[:, self.mask_id] += 1 - a
        q[self.mask_id] = eye[self.mask_id]
        return q

    def step_matrix(self, i: int) -> Tensor:
        """One-step Q_i of the discrete chain (Austin et al. 2021, §3.1): Q̄_{i/T | (i−1)/T}."""
        if self.num_steps is None:
            raise ConfigError("step_matrix exists only for a discrete chain (num_steps=T)")
        return self.transition_matrix(i / self.num_steps, (i - 1) / self.num_steps)

    # -- marginals and posteriors (matrix-free, any K) --------------------------------------------
    def _expand(self, a: Tensor, like: Tensor) -> Tensor:
        """Per-sample (batch,) float64 coefficient → broadcast against ``like`` (batch, ...); scalars pass."""
        a = torch.as_tensor(a, dtype=F64, device=like.device)
        if a.ndim == 0:
            return a
        return a.reshape(a.shape[0], *([1] * (like.ndim - 1)))

    def propagate(self, probs: Tensor, t, s) -> Tensor:
        """Row vector times Q̄_{t|s}: the law of x_t given a law ``probs`` (..., num_states) of x_s."""
        if probs.shape[-1] != self.num_states:
            raise ShapeError(f"probs has {probs.shape[-1]} states in its last dim; expected {self.num_states}")
        a = self._expand(self._ratio(t, s), probs)
        total = probs.sum(-1, keepdim=True)
        if self.transition == "uniform":
            return a * probs + (1 - a) * total / self.num_states
        m = self.mask_id  # the last state
        to_mask = probs[..., m:] + (1 - a) * (total - probs[..., m:])
        return torch.cat([a * probs[..., :m], to_mask], dim=-1)

    def likelihood(self, x_t: Tensor, t, s) -> Tensor:
        """q(x_t | x_s = j) for every state j, shape (..., num_states): the column x_t of Q̄_{t|s}."""
        a = self._expand(self._ratio(t, s), x_t.unsqueeze(-1))
        onehot = torch.nn.functional.one_hot(x_t, self.num_states).to(F64)
        if self.transition == "uniform":
            return a * onehot + (1 - a) / self.num_states
        e_m = torch.zeros(self.num_states, dtype=F64, device=x_t.device)
        e_m[self.mask_id] = 1.0
        # x_t = m: reached from m surely and from any other state with probability 1 − a; x_t = k: a from k.
        from_any = e_m + (1 - a) * (1 - e_m)
        return torch.where((x_t == self.mask_id).unsqueeze(-1), from_any, a * onehot)

    def q_probs(self, x0: Tensor, t) -> Tensor:
        """q(x_t | x_0), shape (..., num_states), for integer x_0 (Austin et al. 2021, Eq. 3 left)."""
        onehot = torch.nn.functional.one_hot(x0, self.num_states).to(F64)
        return self.propagate(onehot, t, torch.zeros_like(torch.as_tensor(t, dtype=F64)))

    def posterior(self, x_t: Tensor, x0_probs: Tensor, t, s) -> Tensor:
        """p(x_s | x_t) ∝ q(x_t | x_s) Σ_{x0} q(x_s | x0) p(x0), shape (..., num_states), for s < t.

        With one-hot x0_probs it is the exact posterior q(x_s|x_t, x_0) (Austin et al. 2021, Eq. 3); with
        the model's p̃_θ(x̃0|x_t) it is their Eq. 4."""
        zero = torch.zeros_like(torch.as_tensor(s, dtype=F64))
        prior_s = self.propagate(x0_probs.to(F64), s, zero)
        unnorm = self.likelihood(x_t, t, s) * prior_s
        return unnorm / unnorm.sum(-1, keepdim=True).clamp_min(_TINY)

    def reverse(self, x_t: Tensor, p0: Tensor, t, s, form: str = "bayes") -> Tensor:
        """The model's reverse kernel p_θ(x_s | x_t) from p̃_θ(x̃0 | x_t) = ``p0`` (..., num_states), s < t.

        ``bayes``: Σ_{x̃0} q(x_s | x_t, x̃0) p̃_θ(x̃0|x_t) — the mean of the exact posteriors, equal to the true
        reverse kernel q(x_s|x_t) when p̃_θ is the true q(x_0|x_t) (the x_0-parameterisation of Campbell et al.
        2022, Eq. 7, in discrete time); at s = 0 it is p̃_θ itself.
        ``d3pm``: ∝ Σ_{x̃0} q(x_s, x_t | x̃0) p̃_θ(x̃0|x_t) (Austin et al. 2021, Eq. 4), and p̃_θ at s = 0 as
        in their release. The two agree whenever q(x_t|x̃0) is the same for every x̃0 that p̃_θ supports —
        always for the absorbing process (with carry-over), and for one-hot p̃_θ; for the uniform process
        Eq. 4 reweights x̃0 by q(x_t|x̃0), so its optimum is not the posterior that the CE term fits."""
        if form not in ("bayes", "d3pm"):
            raise ConfigError(f"unknown reverse form {form!r}; expected 'bayes' or 'd3pm'")
        p0 = p0.to(F64)
        zero = torch.zeros_like(torch.as_tensor(s, dtype=F64))
        if form == "d3pm":
            at_zero = self._expand((torch.as_tensor(s, dtype=F64) <= 0).to(F64), p0)
            return torch.where(at_zero > 0, p0, self.posterior(x_t, p0, t, s))
        lik_t0 = self.likelihood(x_t, t, zero)  # q(x_t | x_0 = k)
        w = torch.where(lik_t0 > 0, p0 / torch.where(lik_t0 > 0, lik_t0, torch.ones_like(lik_t0)), torch.zeros_like(p0))
        unnorm = self.likelihood(x_t, t, s) * self.propagate(w, s, zero)
        return unnorm / unnorm.sum(-1, keepdim=True).clamp_min(_TINY)

    def q_sample(self, x0: Tensor, t, generator: torch.Generator | None = None) -> Tensor:
        """Draw x_t ~ q(x_t | x_0) (integer tensor like x_0)."""
        return sample_categorical(self.q_probs(x0, t), generator)

    def prior_probs(self, shape, device=None) -> Tensor:
        """The stationary law at t = 1: uniform, or all mass on [MASK]."""
        p = torch.zeros(*shape, self.num_states, dtype=F64, device=device)
        if self.transition == "uniform":
            return p + 1.0 / self.num_states
        p[..., self.mask_id] = 1.0
        return p

    def prior_sample(self, shape, generator: torch.Generator | None = None, device=None) -> Tensor:
        if self.transition == "absorbing":
            return torch.full(tuple(shape), self.mask_id, dtype=torch.long, device=device)
        return torch.randint(0, self.num_states, tuple(shape), generator=generator,
                             device=_rng_device(generator, device)).to(device)


def _rng_device(generator: torch.Generator | None, fallback=None):
    """Random numbers are drawn on the generator's device (then moved to the data's)."""
    return generator.device if generator is not None else fallback


def sample_categorical(probs: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Gumbel-max draw from (..., n) probabilities; always consumes one uniform per class and entry."""
    u = torch.rand(probs.shape, generator=generator, dtype=F64, device=_rng_device(generator, probs.device))
    u = u.to(probs.device).clamp(1e-300, 1.0)
    gumbel = -torch.log(-torch.log(u))
    return torch.argmax(torch.log(probs.to(F64).clamp_min(0)) + gumbel, dim=-1)


def x0_probs(model, process: DiscreteProcess, x_t: Tensor, t: Tensor, cond: Mapping | None = None,
             carry_over: bool = True) -> Tensor:
    """p̃_θ(x̃0 | x_t) as (..., num_states) probabilities (zero on [MASK]); unmasked absorbing entries are
    carried over (Sahoo et al. 2024, §3.2)."""
    logits = model(x_t, t, dict(cond or {}))
    want = (*x_t.shape, process.num_classes)
    if tuple(logits.shape) != want:
        raise ShapeError(f"model returned logits of shape {tuple(logits.shape)}; expected {want} (x_t shape + classes)")
    p = torch.softmax(logits.to(F64), dim=-1)
    if process.transition == "absorbing":
        p = torch.cat([p, torch.zeros_like(p[..., :1])], dim=-1)
        if carry_over:
            unmasked = (x_t != process.mask_id).unsqueeze(-1)
            onehot = torch.nn.functional.one_hot(x_t.clamp(max=process.mask_id), process.num_states).to(F64)
            p = torch.where(unmasked, onehot, p)
    return p


def unpack_tokens(batch: Mapping[str, Any], process: DiscreteProcess):
    """Validate a token batch: x (batch, ...) integers in [0, K) where present; presence/known masks of x's
    shape (or broadcastable); returns (x, presence, known, cond, target) with target the bool mask of
    present, unknown entries."""
    if not isinstance(batch, Mapping) or "x" not in batch:
        raise ShapeError("a token batch must be a mapping with key 'x' (and optional presence/known/cond)")
    unknown = set(batch) - {"x", "presence", "known", "cond"}
    if unknown:
        raise ShapeError(f"batch has unknown key(s) {sorted(unknown)}; expected x, presence, known, cond")
    x = batch["x"]
    if not torch.is_tensor(x) or x.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8) or x.ndim < 1:
        raise ShapeError(f"batch['x'] must be an integer tensor of token ids, shape (batch, ...); got "
                         f"{getattr(x, 'dtype', type(x))}")
    x = x.long()
    presence = check_mask(batch.get("presence"), x, "batch['presence']")
    known = check_mask(batch.get("known"), x, "batch['known']")
    present = torch.ones_like(x, dtype=torch.bool) if presence is None else presence.expand_as(x)
    vals = x[present]
    if vals.numel() and (vals.min() < 0 or vals.max() >= process.num_classes):
        raise ShapeError(f"batch['x'] has token ids in [{vals.min().item()}, {vals.max().item()}] at present entries; "
                         f"expected [0, {process.num_classes - 1}]")
    target = present if known is None else present & ~known.expand_as(x)
    cond = dict(batch.get("cond") or {})
    clash = set(cond) & set(RESERVED_COND_KEYS)
    if clash:
        raise ShapeError(f"batch['cond'] uses reserved key(s) {sorted(clash)}; pass masks as batch keys instead")
    if presence is not None:
        cond["presence"] = presence
    if known is not None:
        cond["known"] = known
    return x, presence, known, cond, target


def categorical_kl(p: Tensor, q: Tensor) -> Tensor:
    """KL(p ‖ q) over the last dim, in nats (0·log 0 = 0)."""
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q.clamp_min(_TINY)) * (p > 0)).sum(-1)


def _vb_terms(process: DiscreteProcess, x0: Tensor, x_t: Tensor, p0: Tensor, i: Tensor, form: str) -> Tensor:
    """L_{i−1} per entry (nats): KL(q(x_{i−1}|x_i, x_0) ‖ p_θ(x_{i−1}|x_i)) for i > 1 and −log p̃_θ(x_0|x_1)
    at i = 1 (the decoder of the D3PM release)."""
    T = process.num_steps
    t, s = i.to(F64) / T, (i - 1).to(F64) / T
    onehot = torch.nn.functional.one_hot(x0, process.num_states).to(F64)
    q_post = process.posterior(x_t, onehot, t, s)
    p_post = process.reverse(x_t, p0, t, s, form)
    kl = categorical_kl(q_post, p_post)
    nll0 = -torch.log(torch.gather(p0, -1, x0.unsqueeze(-1)).squeeze(-1).clamp_min(_TINY))
    first = (i == 1).reshape(i.shape[0], *([1] * (x0.ndim - 1)))
    return torch.where(first, nll0, kl)


def _valid(x0: Tensor, presence: Tensor | None) -> Tensor:
    """Token ids with padding replaced by the placeholder 0 (padding ids may be anything, e.g. −100)."""
    return x0 if presence is None else torch.where(presence.expand_as(x0), x0, torch.zeros_like(x0))


def _bound(loss) -> DiscreteProcess:
    if loss.process is None:
        raise ConfigError(f"{type(loss).__name__} has no process: pass one or call .bind(process)")
    return loss.process


class D3PMLoss:
    """Hybrid loss L_vb + λ·E[−log p̃_θ(x_0|x_t)] (Austin et al. 2021, Eq. 5, λ = 0.01), in bits per target
    entry as in their release, which also estimates L_vb by the single term L_{t−1} of a uniformly drawn
    step t ∈ {1, …, T}. ``reverse`` picks p_θ(x_{t−1}|x_t) (:meth:`DiscreteProcess.reverse`: ``bayes``
    default, ``d3pm`` = their Eq. 4). Called ``loss(model, batch, generator=None)`` with a token batch
    (:func:`unpack_tokens`); ``return_components=True`` adds the components ``vb`` and ``ce`` (logged in
    training, :mod:`polydiff.losses`)."""

    def __init__(self, process: DiscreteProcess | None = None, hybrid_weight: float = 0.01, carry_over: bool = True,
                 reverse: str = "bayes"):
        if reverse not in ("bayes", "d3pm"):
            raise ConfigError(f"unknown reverse form {reverse!r}; expected 'bayes' or 'd3pm'")
        if not hybrid_weight >= 0:
            raise ConfigError(f"hybrid_weight must be >= 0, got {hybrid_weight}")
        self.hybrid_weight, self.carry_over, self.reverse = float(hybrid_weight), carry_over, reverse
        self.process = None
        if process is not None:
            self.bind(process)

    def bind(self, process: DiscreteProcess) -> "D3PMLoss":
        """Use ``process`` (a :class:`DiffusionModule` binds its own when the loss is configured without one)."""
        if not isinstance(process, DiscreteProcess):
            raise ConfigError(f"D3PMLoss needs a DiscreteProcess; got {process!r}")
        if process.num_steps is None:
            raise ConfigError("D3PMLoss needs a discrete chain (num_steps=T); use MDLMLoss for continuous time")
        self.process = process
        return self

    def __call__(self, model, batch, generator: torch.Generator | None = None, return_components: bool = False):
        proc = _bound(self)
        x0, presence, known, cond, target = unpack_tokens(batch, proc)
        x0c = _valid(x0, presence)
        n = x0.shape[0]
        i = torch.randint(1, proc.num_steps + 1, (n,), generator=generator, device=_rng_device(generator)).to(x0.device)
        t = i.to(F64) / proc.num_steps
        x_t = torch.where(target, proc.q_sample(x0c, t, generator), x0c)
        p0 = x0_probs(model, proc, x_t, t, cond, self.carry_over)
        vb = _vb_terms(proc, x0c, x_t, p0, i, self.reverse)
        ce = -torch.log(torch.gather(p0, -1, x0c.unsqueeze(-1)).squeeze(-1).clamp_min(_TINY))
        count = target.sum().clamp_min(1)
        w = target.to(vb.dtype)
        vb_mean, ce_mean = (vb * w).sum() / count / LOG2, (ce * w).sum() / count / LOG2
        loss = vb_mean + self.hybrid_weight * ce_mean
        return (loss, {"vb": vb_mean.detach(), "ce": ce_mean.detach()}) if return_components else loss


class MDLMLoss:
    """Continuous-time masked-diffusion NELBO (Sahoo et al. 2024, MDLM, Eq. 10):

        L = E_{t ~ U[t_min, 1]} [ ᾱ'(t)/(1 − ᾱ(t)) Σ_{ℓ masked} log p̃_θ(x_0^ℓ | z_t) ] / #targets,

    in nats per target token (the integral over [t_min, 1] is estimated by one t per sequence, scaled by
    1 − t_min). With the exact denoiser its expectation times the number of tokens is −log p(x) minus the
    (tiny) part of the integral below t_min. t_min = 1e-3 as MDLM's ``sampling_eps``. ``return_components=True``
    adds the component ``masked_fraction`` (the share of tokens masked in the batch; logged in training)."""

    def __init__(self, process: DiscreteProcess | None = None, t_min: float = 1e-3, antithetic: bool = False):
        if not 0 <= t_min < 1:
            raise ConfigError(f"t_min must lie in [0, 1), got {t_min}")
        self.t_min, self.antithetic = float(t_min), antithetic
        self.process = None
        if process is not None:
            self.bind(process)

    def bind(self, process: DiscreteProcess) -> "MDLMLoss":
        """Use ``process`` (a :class:`DiffusionModule` binds its own when the loss is configured without one)."""
        if not isinstance(process, DiscreteProcess) or process.transition != "absorbing":
            raise ConfigError(f"MDLMLoss needs a DiscreteProcess with the absorbing (masked) transition; got {process!r}")
        self.process = process
        return self

    def __call__(self, model, batch, generator: torch.Generator | None = None, return_components: bool = False):
        proc = _bound(self)
        x0, presence, known, cond, target = unpack_tokens(batch, proc)
        x0c = _valid(x0, presence)
        n = x0.shape[0]
        if self.antithetic:  # low-discrepancy times (MDLM §3.5 / Kingma et al. 2021)
            u = torch.rand(1, generator=generator, dtype=F64, device=_rng_device(generator)).cpu()
            u = (u + torch.arange(n, dtype=F64) / n) % 1
        else:
            u = torch.rand(n, generator=generator, dtype=F64, device=_rng_device(generator)).cpu()
        t = (self.t_min + (1 - self.t_min) * u).to(x0.device)
        ab = proc.alpha_bar(t)
        u_mask = torch.rand(x0.shape, generator=generator, dtype=F64, device=_rng_device(generator)).to(x0.device)
        masked = u_mask >= proc._expand(ab, x0.to(F64))
        masked = masked & target
        z_t = torch.where(masked, torch.full_like(x0, proc.mask_id), x0c)
        p0 = x0_probs(model, proc, z_t, t, cond, carry_over=True)
        logp = torch.log(torch.gather(p0, -1, x0c.unsqueeze(-1)).squeeze(-1).clamp_min(_TINY))
        weight = (-proc.alpha_bar_derivative(t) / (1 - ab).clamp_min(_TINY)) * (1 - self.t_min)
        per_seq = (-logp * masked).flatten(1).sum(1)
        loss = (weight.to(per_seq.dtype) * per_seq).sum() / target.sum().clamp_min(1)
        return (loss, {"masked_fraction": masked.float().mean().detach()}) if return_components else loss


@torch.no_grad()
def d3pm_vlb(model, process: DiscreteProcess, batch, generator: torch.Generator | None = None,
             carry_over: bool = True, reverse: str = "bayes") -> dict[str, Tensor]:
    """The full bound −log p(x_0) ≤ L_T + Σ_{i=2}^T L_{i−1} + L_0 (Austin et al. 2021, Eq. 1; Ho et al. 2020,
    Eq. 5) per sequence, one x_i ~ q(x_i|x_0) per term (T model calls). Returns ``nll`` (nats, summed over
    target entries), ``bits_per_token`` and ``terms`` (batch, T+1: L_0 … L_{T−1}, L_T)."""
    if process.num_steps is None:
        raise ConfigError("d3pm_vlb needs a discrete chain (num_steps=T)")
    x0, presence, known, cond, target = unpack_tokens(batch, process)
    x0c = _valid(x0, presence)
    T, n = process.num_steps, x0.shape[0]
    w = target.to(F64)
    terms = torch.zeros(n, T + 1, dtype=F64, device=x0.device)
    for i in range(T, 0, -1):
        idx = torch.full((n,), i, dtype=torch.long, device=x0.device)
        t = idx.to(F64) / T
        x_t = torch.where(target, process.q_sample(x0c, t, generator), x0c)
        p0 = x0_probs(model, process, x_t, t, cond, carry_over)
        terms[:, i - 1] = (_vb_terms(process, x0c, x_t, p0, idx, reverse) * w).flatten(1).sum(1)
    q_T = process.q_probs(x0c, torch.ones(n, dtype=F64))
    prior = process.prior_probs(x0.shape, device=x0.device)
    terms[:, T] = (categorical_kl(q_T, prior) * w).flatten(1).sum(1)
    nll = terms.sum(1)
    tokens = w.flatten(1).sum(1)
    return {"nll": nll, "bits_per_token": nll / (tokens.clamp_min(1) * LOG2), "terms": terms, "tokens": tokens}


class DiscreteDenoiser(nn.Module):
    """The discrete counterpart of :class:`polydiff.Denoiser`: ``denoiser(x_t, t, cond) -> logits`` of
    p̃_θ(x_0 | x_t), shape (batch, ..., K), from a backbone with the same call (x_0-parameterisation, Austin
    et al. 2021 §3.3; there is nothing to convert). It carries ``process`` as the Gaussian denoiser does and
    hands the backbone t in the dtype of its parameters (the engine keeps times in float64)."""

    def __init__(self, net: nn.Module, process: DiscreteProcess):
        super().__init__()
        if not isinstance(process, DiscreteProcess):
            raise ConfigError(f"DiscreteDenoiser needs a DiscreteProcess; got {process!r}")
        self.net, self.process = net, process

    def forward(self, x_t: Tensor, t: Tensor, cond: Mapping | None = None) -> Tensor:
        dtype = next((p.dtype for p in self.net.parameters() if p.is_floating_point()), torch.float32)
        t = torch.as_tensor(t, device=x_t.device).to(dtype).expand(x_t.shape[0])
        return self.net(x_t, t, dict(cond or {}))


class LogitGuidance(nn.Module):
    """Classifier-free guidance on the x_0 logits of a discrete model:

        log p̃_w(x_0 | x_t, c) = log p̃(x_0 | x_t, ∅) + w (log p̃(x_0 | x_t, c) − log p̃(x_0 | x_t, ∅)) + const,

    i.e. p̃_w ∝ p̃(·|c)^w p̃(·|∅)^{1−w}, renormalised over the K classes (the softmax of the returned logits).
    This is Ho & Salimans' (2022, Eq. 6) guidance written for a categorical output, the geometric tilt that
    Nisonoff et al. 2024 ("Unlocking Guidance for Discrete State-Space Diffusion and Flow Models", Eq. 7)
    apply to transition rates and Schiff et al. 2024 ("Simple Guidance Mechanisms for Discrete Diffusion
    Models", §3.1, D-CFG) to the reverse kernel p(z_s|z_t); here it tilts the denoiser p̃_θ(x_0|x_t), which
    every discrete sampler then turns into its reverse kernel. For the masked process the two differ only in
    the unmasking rate: a token leaving [MASK] picks its class from the same tilted law. w = 1 is the
    conditional model, w = 0 the unconditional one.

    Args:
        model: the conditional discrete denoiser (trained with condition dropout).
        scale: w.
        null_cond: ``cond -> cond`` with the null condition (mask keys untouched).
    """

    def __init__(self, model: nn.Module, scale: float, null_cond: Callable[[Mapping], Mapping]):
        super().__init__()
        self.model, self.scale, self.null_cond = model, float(scale), null_cond

    @property
    def process(self):
        return self.model.process

    def forward(self, x_t: Tensor, t: Tensor, cond: Mapping | None = None) -> Tensor:
        cond = dict(cond or {})
        ucond = {**cond, **self.null_cond(cond)}
        lc = torch.log_softmax(self.model(x_t, t, cond).to(F64), dim=-1)
        lu = torch.log_softmax(self.model(x_t, t, ucond).to(F64), dim=-1)
        return lu + self.scale * (lc - lu)
