"""Mel-spectrogram diffusion in the Grad-TTS decoder form (Popov et al. 2021, "Grad-TTS: A Diffusion
Probabilistic Model for Text-to-Speech", ICML).

Grad-TTS diffuses a mel X towards N(μ, I) with the mean-reverting SDE dX_t = ½ (μ − X_t) β_t dt + √β_t dW_t
(Eq. 1 with Σ = I), β_t = β_0 + (β_1 − β_0) t, β_0 = 0.05, β_1 = 20 (§4). Its marginals are
X_t = μ + α(t) (X_0 − μ) + σ(t) ε with the VP α, σ of that β (Eq. 4–5), so the residual Y = X − μ follows the
engine's VP process with the linear schedule exactly: the data module hands the engine Y (``x`` = mel − μ) and
μ as ``cond["mu"]``, the 2-D U-Net sees μ concatenated to its input (``concat_cond: {mu: 1}``, the decoder's
conditioning, §3.2), and decoding adds μ back. Sampling starts from N(μ, τ⁻² I) with temperature τ (§3.3:
τ = 1.5 improves quality): :class:`GradTTSProcess` is the VP process whose prior has standard deviation 1/τ.

Without a text encoder, μ is the mean normalised log-mel of the item's class over the training set (or of all
training items when unlabelled): the "prior mean" of a class-conditional digit generator.
"""

from __future__ import annotations

from polydiff import VP, ConfigError


class GradTTSProcess(VP):
    """The continuous VP process with Grad-TTS's linear β (β_0 = 0.05, β_1 = 20) and prior N(0, τ⁻² I) for the
    residual X − μ (temperature τ; Popov et al. 2021 use τ = 1.5 at inference). Training never draws from the
    prior, so τ only changes sampling."""

    def __init__(self, beta_0: float = 0.05, beta_1: float = 20.0, temperature: float = 1.5):
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        super().__init__("linear", beta_min=beta_0, beta_max=beta_1)
        self.temperature = float(temperature)
        self.prior_std = 1.0 / self.temperature

    def __repr__(self):
        return f"GradTTSProcess(beta_0={self.schedule.beta_min}, beta_1={self.schedule.beta_max}, τ={self.temperature})"
