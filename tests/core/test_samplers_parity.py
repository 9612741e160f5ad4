"""Parity with diffusers' schedulers on the same time grid and the same exact-ε model.

diffusers' DDPM chain with its default linear β (1e-4 … 0.02, T = 1000) is ``VP("linear", num_steps=1000)``;
diffusers' timestep k is our t = (k + 1)/T. The oracle given to diffusers evaluates our exact ε at that t.
``trailing`` spacing gives integer timesteps in every scheduler, so no σ interpolation differs.
Euler/Heun work in y = x/α and start from y_T = init_noise_sigma · z: we start from α_0 y_T.
"""

import warnings

import pytest
import torch

from polydiff import VP, Prediction
from polydiff.samplers import SAMPLERS, make_grid
from polydiff.testing import ExactDenoiser, GaussianMixture

diffusers = pytest.importorskip("diffusers")
F64 = torch.float64
PROC = VP("linear", num_steps=1000)
MODEL = ExactDenoiser(GaussianMixture.grid(widths=(0.1, 0.3)), PROC)


def run_diffusers(scheduler, z, steps, model=MODEL, **step_kw):
    scheduler.set_timesteps(steps)
    x = z * scheduler.init_noise_sigma
    for k in scheduler.timesteps:
        xin = scheduler.scale_model_input(x, k)
        t = torch.full((x.shape[0],), (float(k) + 1) / 1000, dtype=F64)
        x = scheduler.step(model(xin.to(F64), t).eps, k, x, **step_kw).prev_sample
    return x.to(F64)


def schedulers():
    s = diffusers.schedulers
    lin = dict(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", timestep_spacing="trailing")
    return {
        "ddim": (s.DDIMScheduler(clip_sample=False, **lin), {}, False),
        "dpmpp_2m": (s.DPMSolverMultistepScheduler(**lin), {}, False),
        "dpmpp_3m": (s.DPMSolverMultistepScheduler(solver_order=3, **lin), {"reference_d2": True}, False),
        "euler": (s.EulerDiscreteScheduler(**lin), {}, True),
        "heun": (s.HeunDiscreteScheduler(**lin), {}, True),
        "unipc": (s.UniPCMultistepScheduler(**lin), {}, False),
        "unipc3": (s.UniPCMultistepScheduler(solver_order=3, **lin), {"order": 3}, False),
    }


@pytest.mark.parametrize("steps", [10, 25])
@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m", "dpmpp_3m", "euler", "heun", "unipc", "unipc3"])
def test_matches_diffusers(name, steps):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler, kw, ve_scaled = schedulers()[name]
    z = torch.randn(64, 2, generator=torch.Generator().manual_seed(steps), dtype=F64)
    expected = run_diffusers(scheduler, z, steps)
    grid = make_grid(PROC, steps, "trailing")
    x_T = z * float(scheduler.init_noise_sigma) * PROC.alpha(grid[:1]).item() if ve_scaled else z
    ours = SAMPLERS[name.rstrip("3") if name == "unipc3" else name](MODEL, x_T, grid, **kw)
    err = (ours - expected).abs().max().item()
    assert err < 1e-5, err
    assert expected.abs().max() > 0.5  # a real sample, not a trivially small state


class Channels(torch.nn.Module):
    """MODEL on (batch, 1, 2): diffusers' thresholding needs a channel axis."""

    process = PROC

    def forward(self, x, t, cond=None):
        p = MODEL(x.reshape(-1, 2), t)
        return Prediction(x0=p.x0.reshape(x.shape), eps=p.eps.reshape(x.shape))


@pytest.mark.parametrize("name,options,ours", [
    ("ddim", {"clip_sample": True, "clip_sample_range": 0.5}, {"clip_x0": 0.5}),
    ("ddim", {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.2},
     {"dynamic_threshold": 0.9, "threshold_max": 1.2}),
    ("dpmpp_2m", {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.2},
     {"dynamic_threshold": 0.9, "threshold_max": 1.2}),
    ("unipc", {"thresholding": True, "dynamic_thresholding_ratio": 0.9, "sample_max_value": 1.2},
     {"dynamic_threshold": 0.9, "threshold_max": 1.2}),
])
def test_clipping_and_thresholding_match_diffusers(name, options, ours):
    """diffusers' ``clip_sample`` and dynamic ``thresholding`` (Saharia et al. 2022) equal polydiff's
    ``clip_x0``/``dynamic_threshold``, which clip x̂₀ inside the model call and recompute ε̂ from it: for DDIM
    that is diffusers' ``use_clipped_model_output=True`` (GLIDE's choice; its default keeps the unclipped ε̂,
    so x_t = α x̂₀ + σ ε̂ no longer holds); DPM-Solver++ and UniPC use only x̂₀."""
    s = diffusers.schedulers
    lin = dict(beta_start=1e-4, beta_end=0.02, beta_schedule="linear", timestep_spacing="trailing")
    cls = {"ddim": s.DDIMScheduler, "dpmpp_2m": s.DPMSolverMultistepScheduler, "unipc": s.UniPCMultistepScheduler}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = cls[name](**lin, **options)
        z = torch.randn(64, 1, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
        step_kw = {"use_clipped_model_output": True} if name == "ddim" else {}
        expected = run_diffusers(scheduler, z, 10, Channels(), **step_kw)
    ours_x = SAMPLERS[name](Channels(), z, make_grid(PROC, 10, "trailing"), **ours)
    plain = SAMPLERS[name](Channels(), z, make_grid(PROC, 10, "trailing"))
    assert (ours_x - expected).abs().max().item() < 1e-5
    assert (plain - expected).abs().max().item() > 1e-2  # the clipping mattered
