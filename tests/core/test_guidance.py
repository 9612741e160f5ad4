"""Guidance wrappers against exact answers on a Gaussian mixture.

With the mixture p(x) = Σ_k w_k N(μ_k, Σ_k) and a label y = component, the conditional model is the exact
denoiser of component y, and Bayes gives ∇log p_t(x | y) = ∇log p_t(x) + ∇log p_t(y | x): classifier guidance
with the exact posterior log p_t(y | x_t) and s = 1 must reproduce the conditional model exactly.
"""

import pytest
import torch

from polydiff import VP, ConfigError, Prediction, ShapeError
from polydiff.guidance import ClassifierFreeGuidance, ClassifierGuidance
from polydiff.samplers import sample
from polydiff.testing import ExactDenoiser, GaussianMixture

F64 = torch.float64
MIX = GaussianMixture.grid(widths=(0.1, 0.3))
PROC = VP()
K = MIX.means.shape[0]
NULL = K  # the "no label" token


class Conditional(torch.nn.Module):
    """Exact denoiser of component cond['label'] (or of the whole mixture for the null label)."""

    def __init__(self):
        super().__init__()
        self.process = PROC
        self.full = ExactDenoiser(MIX, PROC)
        self.parts = [ExactDenoiser(GaussianMixture(MIX.means[k:k + 1], MIX.covs[k:k + 1]), PROC) for k in range(K)]
        self.calls = 0

    def forward(self, x, t, cond=None):
        self.calls += 1
        t = torch.as_tensor(t, dtype=F64).expand(x.shape[0])
        label = cond["label"]
        x0, eps = torch.empty_like(x), torch.empty_like(x)
        for k in label.unique().tolist():
            m = label == k
            p = (self.full if k == NULL else self.parts[k])(x[m], t[m])
            x0[m], eps[m] = p.x0, p.eps
        return Prediction(x0=x0, eps=eps)


def posterior_logp(x, t, cond):
    a, s = PROC.alpha_sigma(torch.as_tensor(t, dtype=F64).expand(x.shape[0]))
    logp_k, _ = MIX._components(x, a, s)
    return torch.log_softmax(logp_k, 1).gather(1, cond["label"][:, None]).squeeze(1)


def test_cfg_combination_and_consistency():
    model = Conditional()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.full((32,), 0.4, dtype=F64)
    cond = {"label": torch.randint(0, K, (32,), generator=torch.Generator().manual_seed(1))}
    pc, pu = model(x, t, cond), model(x, t, {"label": torch.full((32,), NULL)})
    for w in (0.0, 1.0, 3.0):
        for batched in (True, False):
            model.calls = 0
            g = ClassifierFreeGuidance(model, w, {"label": NULL}, batched=batched)(x, t, cond)
            assert model.calls == (1 if batched else 2)
            torch.testing.assert_close(g.eps, pu.eps + w * (pc.eps - pu.eps))
            a, s = PROC.alpha_sigma(t)
            torch.testing.assert_close(a[:, None] * g.x0 + s[:, None] * g.eps, x)
    # callable null_cond
    g = ClassifierFreeGuidance(model, 2.0, lambda c: {"label": torch.full_like(c["label"], NULL)})(x, t, cond)
    torch.testing.assert_close(g.eps, pu.eps + 2 * (pc.eps - pu.eps))


def test_cfg_rescale():
    model = Conditional()
    x = torch.randn(16, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.full((16,), 0.3, dtype=F64)
    cond = {"label": torch.zeros(16, dtype=torch.long)}
    pc = model(x, t, cond)
    plain = ClassifierFreeGuidance(model, 5.0, {"label": NULL})(x, t, cond)
    full = ClassifierFreeGuidance(model, 5.0, {"label": NULL}, rescale=1.0)(x, t, cond)
    half = ClassifierFreeGuidance(model, 5.0, {"label": NULL}, rescale=0.5)(x, t, cond)
    torch.testing.assert_close(full.eps.std(1), pc.eps.std(1))  # Lin et al. Eq. 15
    torch.testing.assert_close(half.eps, 0.5 * full.eps + 0.5 * plain.eps)  # Eq. 16
    a, s = PROC.alpha_sigma(t)
    torch.testing.assert_close(a[:, None] * full.x0 + s[:, None] * full.eps, x)
    with pytest.raises(ConfigError, match="rescale"):
        ClassifierFreeGuidance(model, 1.0, {"label": NULL}, rescale=2.0)


def test_classifier_guidance_with_exact_posterior_is_the_conditional_model():
    model = Conditional()
    x = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    cond = {"label": torch.randint(0, K, (32,), generator=torch.Generator().manual_seed(1))}
    uncond = lambda x, t, c: model(x, t, {"label": torch.full_like(c["label"], NULL)})  # noqa: E731
    uncond.process = PROC
    guided = ClassifierGuidance(uncond, posterior_logp, scale=1.0)
    for tv in (0.05, 0.3, 0.8):
        t = torch.full((32,), tv, dtype=F64)
        g, pc = guided(x, t, cond), model(x, t, cond)
        torch.testing.assert_close(g.eps, pc.eps, atol=1e-8, rtol=1e-6)
        torch.testing.assert_close(g.x0, pc.x0, atol=1e-8, rtol=1e-6)


def test_guided_sampling_hits_the_class():
    """CFG w = 1 samples the chosen component; w = 3 sharpens it (fewer samples away from the mode)."""
    model = Conditional()
    label = torch.full((300,), 4, dtype=torch.long)  # the centre component (mean 0, 0)
    target = MIX.means[4].float()
    spread = {}
    for w in (1.0, 3.0):
        guided = ClassifierFreeGuidance(model, w, {"label": NULL})
        x = sample(guided, shape=(300, 2), sampler="dpmpp_2m", steps=25, cond={"label": label},
                   generator=torch.Generator().manual_seed(0))
        spread[w] = (x - target).norm(dim=1)
    std = MIX.covs[4, 0, 0].sqrt().item()
    assert abs(spread[1.0].pow(2).mean().div(2).sqrt().item() - std) < 0.2 * std
    assert spread[3.0].pow(2).mean() < spread[1.0].pow(2).mean()


def test_guidance_bad_input():
    model = Conditional()
    with pytest.raises(ConfigError, match="null_cond"):
        ClassifierFreeGuidance(model, 1.0, 3)
    with pytest.raises(ConfigError, match="log_prob"):
        ClassifierGuidance(model, "not callable")
    bad = ClassifierGuidance(model, lambda x, t, c: x.sum(1, keepdim=True).expand(-1, 3))
    with pytest.raises(ShapeError, match="log_prob returned shape"):
        bad(torch.zeros(4, 2, dtype=F64), torch.full((4,), 0.5, dtype=F64), {"label": torch.zeros(4, dtype=torch.long)})


def test_cfg_keeps_entries_the_null_condition_does_not_name():
    seen = []

    class Spy(Conditional):
        def forward(self, x, t, cond=None):
            seen.append(dict(cond))
            return super().forward(x, t, cond)

    model = Spy()
    x, t = torch.zeros(4, 2, dtype=F64), torch.full((4,), 0.5, dtype=F64)
    presence = torch.ones(4, 2, dtype=torch.bool)
    cond = {"label": torch.zeros(4, dtype=torch.long), "presence": presence}
    ClassifierFreeGuidance(model, 2.0, lambda c: {"label": torch.full_like(c["label"], NULL)})(x, t, cond)
    assert len(seen) == 1 and torch.equal(seen[0]["presence"], torch.cat([presence, presence]))
    assert torch.equal(seen[0]["label"], torch.tensor([0, 0, 0, 0, NULL, NULL, NULL, NULL]))
    seen.clear()
    ClassifierFreeGuidance(model, 2.0, {"label": NULL, "extra": torch.ones(4)})(x, t, cond)
    assert len(seen) == 2 and "extra" in seen[1] and "extra" not in seen[0]  # different keys: two calls
