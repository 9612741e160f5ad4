"""Sampler hooks: the per-step callback, the progress bar, x̂₀ clipping/thresholding, condition-only known
entries, starting from a given x at t_start, DDIM inversion, PNDM at few steps and the grid cache."""

import pytest
import torch

from polydiff import EDM, VE, VP, ConfigError, Denoiser, Prediction, RectifiedFlow, ShapeError
from polydiff.samplers import DETERMINISTIC, SAMPLERS, Context, make_grid, sample
from polydiff.testing import ExactDenoiser, GaussianMixture

F64 = torch.float64
MIX = GaussianMixture.grid(widths=(0.1, 0.3))
FAST = {"annealed_langevin": {"steps_per_level": 2}, "sde_adaptive": {"abstol": 0.05, "reltol": 0.05},
        "ode_adaptive": {"rtol": 1e-3, "atol": 1e-3}}
ALL = sorted(SAMPLERS)
FIXED = [n for n in ALL if n not in ("annealed_langevin", "ode_adaptive", "sde_adaptive")]


class Spy(torch.nn.Module):
    """Exact mixture denoiser that records the cond mappings it is called with."""

    def __init__(self, process):
        super().__init__()
        self.inner, self.process, self.seen = ExactDenoiser(MIX, process), process, []

    def forward(self, x, t, cond=None):
        self.seen.append(dict(cond or {}))
        return self.inner(x, t)


def run(name, model, **kw):
    return sample(model, sampler=name, steps=kw.pop("steps", 6), generator=torch.Generator().manual_seed(0),
                  **FAST.get(name, {}), **kw)


# -- callback -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_callback_sees_every_step_and_identity_return_changes_nothing(name):
    model = ExactDenoiser(MIX, VP())
    calls = []

    def cb(d):
        assert set(d) == {"x", "i", "t", "alpha", "sigma", "denoised", "steps"}
        assert d["x"].shape == (8, 2) and d["t"].shape == (8,) and d["t"].dtype == F64
        assert d["denoised"].shape == (8, 2) and d["alpha"].shape == (8,) and d["sigma"].shape == (8,)
        calls.append((d["i"], d["t"][0].item(), d["x"].clone()))
        return d["x"]

    plain = run(name, model, shape=(8, 2))
    hooked = run(name, model, shape=(8, 2), callback=cb)
    assert torch.equal(plain, hooked)
    assert [c[0] for c in calls] == list(range(len(calls)))
    times = [c[1] for c in calls]
    assert all(a >= b for a, b in zip(times, times[1:])) and times[-1] == 0.0
    torch.testing.assert_close(calls[-1][2], hooked)  # the last callback sees the result
    if name in FIXED:
        grid = make_grid(VP(), 6)
        assert len(calls) == 6 and times == grid[1:].tolist()


def test_callback_replacement_is_used_and_checked():
    model = ExactDenoiser(MIX, VP())
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))

    def shift_at_3(d):
        return d["x"] + 1.0 if d["i"] == 3 else None

    grid = make_grid(VP(), 6)
    out = sample(model, x_T, steps=6, callback=shift_at_3)
    # equal to restarting plain DDIM from the shifted state at grid column 4
    mid = sample(model, x_T, steps=6, callback=lambda d: d["x"] if d["i"] == 3 else None)
    states = {}
    sample(model, x_T, steps=6, callback=lambda d: states.setdefault(d["i"], d["x"].clone()))
    restart = SAMPLERS["ddim"](model, states[3] + 1.0, grid[4:])
    torch.testing.assert_close(out, restart, atol=1e-6, rtol=0)
    assert not torch.allclose(out, mid)
    with pytest.raises(ShapeError, match="callback returned"):
        sample(model, x_T, steps=3, callback=lambda d: d["x"][:2])
    with pytest.raises(ConfigError, match="callback must be callable"):
        sample(model, x_T, steps=3, callback=3)


def test_callback_sees_the_state_after_replacement():
    model = ExactDenoiser(MIX, VP())
    known = torch.tensor([[True, False]]).expand(16, 2)
    x_known = torch.full((16, 2), 0.7)
    seen = []
    out = sample(model, shape=(16, 2), sampler="ddpm", steps=8, known=known, x_known=x_known,
                 generator=torch.Generator().manual_seed(0), callback=lambda d: seen.append(d) and None)
    a, s = seen[3]["alpha"][:, None].float(), seen[3]["sigma"][:, None].float()
    z = (seen[3]["x"][:, 0:1] - a * 0.7) / s  # known entries are fresh draws of q(x_t | x_known)
    assert abs(z.mean()) < 1.0 and 0.3 < z.std() < 2.0
    assert torch.equal(seen[-1]["x"][:, 0], x_known[:, 0]) and torch.equal(out[:, 0], x_known[:, 0])


def test_progress_bar_gives_the_same_samples():
    model = ExactDenoiser(MIX, VP())
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    for name in ("ddim", "ode_adaptive"):
        a = sample(model, x_T, sampler=name, steps=5, progress=True)
        b = sample(model, x_T, sampler=name, steps=5)
        assert torch.equal(a, b)
    # automatic: off when stderr is not a terminal (as under pytest) even for many steps
    ctx = Context(model, x_T, make_grid(VP(), 200))
    assert ctx._bar is None
    assert Context(model, x_T, make_grid(VP(), 2), progress=True)._bar is not None


def test_registered_sampler_written_on_context_gets_the_hooks():
    def my_euler(model, x_T, grid, generator=None, **common):
        ctx = Context(model, x_T, grid, generator, **common)
        x = ctx.start(x_T)
        for i in range(ctx.steps):
            pred = ctx.at(x, i)
            x = ctx.alpha[0, i + 1].item() * pred.x0 + ctx.sigma[0, i + 1].item() * pred.eps
            x = ctx.end_step(ctx.after_step(x, i + 1), i, pred.x0)
        return ctx.finish(x)

    model = ExactDenoiser(MIX, VP())
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    n = []
    out = sample(model, x_T, sampler=my_euler, steps=5, clip_x0=0.2, callback=lambda d: n.append(d["i"]))
    ref = sample(model, x_T, sampler="ddim", steps=5, clip_x0=0.2)
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
    assert n == [0, 1, 2, 3, 4] and out.abs().max() <= 0.2 + 1e-6


# -- x̂₀ clipping and thresholding -------------------------------------------------------------------------


class Far(torch.nn.Module):
    """x̂₀ = 3 everywhere: far outside [−1, 1]."""

    def __init__(self, process):
        super().__init__()
        self.process = process

    def forward(self, x, t, cond=None):
        a, s = self.process.alpha_sigma(t)
        x0 = torch.full_like(x, 3.0)
        return Prediction(x0=x0, eps=(x - a[:, None].to(x) * x0) / s[:, None].to(x))


@pytest.mark.parametrize("kw", [{"clip_x0": 1.0}, {"dynamic_threshold": 0.995}])
def test_clipped_prediction_stays_consistent(kw):
    proc = VP()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, generator=g)
    ctx = Context(Far(proc), x, make_grid(proc, 4), **kw)
    pred = ctx.at(x, 1)
    a, s = proc.alpha_sigma(ctx.t_cols[1])
    torch.testing.assert_close(a[:, None].float() * pred.x0 + s[:, None].float() * pred.eps, x, atol=1e-5, rtol=0)
    assert pred.x0.abs().max() <= 1.0
    if "dynamic_threshold" in kw:  # clip to s = 3 then divide by s: exactly 1
        torch.testing.assert_close(pred.x0, torch.ones_like(x))


def test_dynamic_threshold_is_imagens():
    """s = max(1, percentile_p |x̂₀|) per sample, x̂₀ ← clip(x̂₀, −s, s)/s (Saharia et al. 2022, App. E)."""
    proc = VP()

    class Given(torch.nn.Module):
        process = proc

        def forward(self, x, t, cond=None):
            return Prediction(x0=self.x0, eps=torch.zeros_like(x))

    m = Given()
    m.x0 = torch.tensor([[0.1, -0.5, 0.9, 0.2], [4.0, -2.0, 1.0, 0.5]])
    ctx = Context(m, torch.zeros(2, 4), make_grid(proc, 3), dynamic_threshold=0.5)
    out = ctx.at(torch.zeros(2, 4), 0).x0
    s1 = torch.quantile(m.x0[1].abs(), 0.5)  # 1.5
    torch.testing.assert_close(out[0], m.x0[0])  # s = 1: plain clip to [−1, 1] changes nothing here
    torch.testing.assert_close(out[1], m.x0[1].clamp(-s1, s1) / s1)
    capped = Context(m, torch.zeros(2, 4), make_grid(proc, 3), dynamic_threshold=0.5, threshold_max=1.2)
    torch.testing.assert_close(capped.at(torch.zeros(2, 4), 0).x0[1], m.x0[1].clamp(-1.2, 1.2) / 1.2)
    for bad in ({"clip_x0": -1.0}, {"dynamic_threshold": 1.5}, {"threshold_max": 2.0},
                {"dynamic_threshold": 0.9, "threshold_max": 0.5}):
        with pytest.raises(ConfigError):
            Context(m, torch.zeros(2, 4), make_grid(proc, 3), **bad)


@pytest.mark.parametrize("name", [n for n in ALL if n not in ("euler_maruyama", "pc")])
def test_clip_keeps_every_sampler_in_range(name):
    """Samplers whose last step lands on α x̂₀ (the SDE discretisations do not) end inside the clip range."""
    out = run(name, Far(VP()), shape=(8, 2), clip_x0=1.0)
    assert torch.isfinite(out).all() and out.abs().max() <= 1.0 + 1e-5


@pytest.mark.parametrize("name", [n for n in ALL if n not in ("euler_maruyama", "pc", "pndm")])
def test_x0_fn_maps_every_prediction(name):
    """x0_fn (e.g. Diffusion-LM's clamping onto word vectors) reaches every sampler: with x̂₀ snapped to the
    nearest of two points, a sampler whose last step lands on α x̂₀ ends exactly on those points (not the SDE
    discretisations, nor PLMS, whose last step mixes the ε̂ of four steps)."""
    points = torch.tensor([-2.0, 3.0])

    def snap(x0):
        return points[(x0[..., None] - points).abs().argmin(-1)]

    out = run(name, Far(VP()), shape=(8, 2), x0_fn=snap)
    assert torch.isin(out, points).all()


def test_x0_fn_keeps_the_prediction_consistent_and_checks_its_output():
    proc = VP()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    ctx = Context(Far(proc), x, make_grid(proc, 4), x0_fn=torch.round)
    pred = ctx.at(x, 1)
    a, s = proc.alpha_sigma(ctx.t_cols[1])
    torch.testing.assert_close(a[:, None].float() * pred.x0 + s[:, None].float() * pred.eps, x, atol=1e-5, rtol=0)
    assert torch.equal(pred.x0, torch.round(pred.x0))
    with pytest.raises(ShapeError, match="x0_fn returned"):
        Context(Far(proc), x, make_grid(proc, 4), x0_fn=lambda x0: x0[:, :1]).at(x, 1)
    with pytest.raises(ConfigError, match="x0_fn must be callable"):
        Context(Far(proc), x, make_grid(proc, 4), x0_fn=3.0)


# -- condition-only known entries ----------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_condition_mode_conditions_without_replacing(name):
    """The model sees known/observed, but x_t is never replaced and no extra noise is drawn: with a model that
    ignores cond, the free entries equal the unconditional run bitwise; known entries equal x_known."""
    model = Spy(VP())
    known = torch.zeros(8, 2, dtype=torch.bool)
    known[:, 0] = True
    x_known = torch.full((8, 2), 5.0)  # far from the data: replacement would drag the free entries along
    plain = run(name, Spy(VP()), shape=(8, 2))
    cond_only = run(name, model, shape=(8, 2), known=known, x_known=x_known, known_mode="condition")
    replaced = run(name, Spy(VP()), shape=(8, 2), known=known, x_known=x_known)
    assert torch.equal(cond_only[:, 1], plain[:, 1]) and torch.equal(cond_only[:, 0], x_known[:, 0])
    assert not torch.equal(replaced[:, 1], plain[:, 1])
    assert torch.equal(model.seen[0]["known"], known) and torch.equal(model.seen[0]["observed"][:, 0], x_known[:, 0])
    with pytest.raises(ConfigError, match="known_mode"):
        run(name, model, shape=(8, 2), known=known, x_known=x_known, known_mode="keep")


# -- starting from a given state at t_start ----------------------------------------------------------------


def test_x_T_with_t_start_starts_there_without_noising():
    proc = VP("linear", num_steps=1000)
    model = ExactDenoiser(MIX, proc)
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    out = sample(model, x, steps=10, t_start=0.4, generator=torch.Generator().manual_seed(1))
    ref = SAMPLERS["ddim"](model, x, make_grid(proc, 10, t_start=0.4))
    assert torch.equal(out, ref)


# -- PNDM at few steps -----------------------------------------------------------------------------------


class Half(torch.nn.Module):
    def forward(self, x, t, cond=None):
        return 0.5 * x


@pytest.mark.parametrize("parameterization", ["eps", "x0", "v", "score", "flow", "edm"])
@pytest.mark.parametrize("steps", [1, 2, 3, 4])
def test_pndm_never_calls_the_model_at_sigma_zero(parameterization, steps):
    proc = VP("linear", num_steps=1000)
    model = Denoiser(Half(), proc, parameterization=parameterization)
    times = []

    def spy(x, t, cond):
        times.append(t.clone())
        return model(x, t, cond)

    spy.process = proc
    info = {}
    out = sample(spy, shape=(2, 2), sampler="pndm", steps=steps, generator=torch.Generator().manual_seed(0),
                 info=info)
    assert torch.isfinite(out).all()
    assert all((proc.sigma(t) > 0).all() for t in times)
    assert info["nfe"] == steps + 3 * min(3, steps - 1)  # docs/samplers.md


def test_pndm_prk_on_a_grid_ending_above_zero_noise():
    proc = VP("linear", num_steps=1000)
    info = {}
    sample(ExactDenoiser(MIX, proc), shape=(2, 2), sampler="pndm", steps=2, t_end=0.1, info=info)
    assert info["nfe"] == 2 + 3 * 2


# -- DDIM inversion --------------------------------------------------------------------------------------


@pytest.mark.parametrize("proc", [VP(), VP("linear", num_steps=1000), EDM(), RectifiedFlow()], ids=repr)
def test_ddim_inversion_round_trip_converges(proc):
    """Encode with ddim_invert, decode with sample(x_T=…, t_start=…): with the exact denoiser the round trip
    is two Euler discretisations of the same PF-ODE, so the error falls like 1/N."""
    from polydiff.samplers import ddim_invert

    m = ExactDenoiser(MIX, proc)
    x0 = MIX.sample(64, torch.Generator().manual_seed(0)).double()
    errs = []
    for n in (25, 100, 400):
        x_t = ddim_invert(m, x0, steps=n, t_end=0.5)
        back = sample(m, x_T=x_t, sampler="ddim", steps=n, t_start=0.5)
        errs.append((back - x0).abs().max().item())
    a, s = proc.alpha_sigma(torch.tensor([0.5], dtype=F64))
    assert (x_t - a * x0).std() > 0.5 * s.item()  # really at a noisy level, not a copy of x0
    assert errs[0] / errs[1] > 2.5 and errs[1] / errs[2] > 2.5, errs
    assert errs[2] < 0.02, errs


def test_ddim_inversion_never_calls_the_model_at_sigma_zero_and_takes_hooks():
    from polydiff.samplers import ddim_invert

    proc = VP("linear", num_steps=1000)
    model = Denoiser(Half(), proc, parameterization="x0")
    seen, info = [], {}
    x_t = ddim_invert(model, torch.randn(3, 2, generator=torch.Generator().manual_seed(0)), steps=4, t_end=0.6,
                      callback=lambda d: seen.append(d["t"][0].item()), info=info)
    assert torch.isfinite(x_t).all() and info["nfe"] == 4
    torch.testing.assert_close(torch.tensor(seen, dtype=F64), make_grid(proc, 4, t_start=0.6).flip(0)[1:])
    with pytest.raises(ConfigError, match="unknown grid"):
        ddim_invert(model, torch.zeros(2, 2), grid="cosine")
    with pytest.raises(ShapeError, match="x0"):
        ddim_invert(model, torch.zeros(2))


# -- cached grids and coefficients -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ddim", "ddpm", "heun", "pndm", "dpmpp_2m", "dpmpp_sde", "unipc"])
def test_second_sample_call_builds_no_grid_and_no_coefficients(name):
    from polydiff.samplers import cache_info, clear_cache

    proc = VP("linear", num_steps=1000)
    model = ExactDenoiser(MIX, proc)
    x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
    clear_cache()
    first = sample(model, x_T, sampler=name, steps=8, grid="karras", generator=torch.Generator().manual_seed(1))
    info = cache_info()
    assert info["grid"] == {"hits": 0, "builds": 1}
    tags = {t for t in info if t not in ("grid", "alpha_sigma")}
    assert len(tags) == 1 and info[tags.pop()]["builds"] == 1
    second = sample(model, x_T, sampler=name, steps=8, grid="karras", generator=torch.Generator().manual_seed(1))
    info2 = cache_info()
    assert torch.equal(first, second)
    assert all(v["builds"] == info[k]["builds"] for k, v in info2.items())  # nothing built again
    assert info2["grid"]["hits"] == 1
    # another step count, grid kind, dtype or process builds anew
    sample(model, x_T, sampler=name, steps=9, grid="karras")
    sample(model, x_T.double(), sampler=name, steps=8, grid="karras")
    assert cache_info()["grid"]["builds"] == 2
    assert cache_info()["alpha_sigma"]["builds"] == 3


def test_cache_is_per_process_and_skips_per_sample_grids():
    from polydiff.samplers import cache_info, clear_cache

    clear_cache()
    a, b = VP("cosine", num_steps=100), VP("linear", num_steps=100)
    ga, gb = make_grid(a, 5, "log_snr"), make_grid(b, 5, "log_snr")
    assert not torch.equal(ga, gb)
    ga[0] = 0.5  # callers get a copy: the cached grid is untouched
    assert make_grid(a, 5, "log_snr")[0] == 1.0
    assert cache_info()["grid"] == {"hits": 1, "builds": 2}
    make_grid(a, 5, "log_snr", t_start=torch.tensor([1.0, 0.5], dtype=F64))
    make_grid(a, 5, "log_snr", t_start=torch.tensor([1.0, 0.5], dtype=F64))
    assert cache_info()["grid"] == {"hits": 1, "builds": 2}
    model = ExactDenoiser(MIX, a)
    t_start = torch.tensor([1.0, 0.5], dtype=F64)
    sample(model, shape=(2, 2), steps=4, t_start=t_start)
    assert "ddim" not in cache_info()  # per-sample grids: coefficients built, never stored


def test_sampler_registered_by_a_plugin_gets_the_hooks_by_name():
    import types

    from polydiff.hookspecs import hookimpl
    from polydiff.plugins_manager import get_plugin_manager

    def plugin_euler(model, x_T, grid, generator=None, **common):  # written on the public Context
        ctx = Context(model, x_T, grid, generator, **common)
        x = ctx.start(x_T)
        for i in range(ctx.steps):
            pred = ctx.at(x, i)
            x = ctx.alpha[0, i + 1].item() * pred.x0 + ctx.sigma[0, i + 1].item() * pred.eps
            x = ctx.end_step(ctx.after_step(x, i + 1), i, pred.x0)
        return ctx.finish(x)

    plugin = types.ModuleType("hooked_sampler_plugin")

    @hookimpl
    def polydiff_register(registry):
        registry.add("sampler", plugin_euler, name="plugin_euler")

    plugin.polydiff_register = polydiff_register
    pm = get_plugin_manager(reload=True)
    try:
        pm.add_plugin(plugin, "hooked_sampler_plugin")
        model = Spy(VP())
        known = torch.tensor([[True, False]]).expand(4, 2)
        x_known = torch.full((4, 2), 0.3)
        x_T = torch.randn(4, 2, generator=torch.Generator().manual_seed(0))
        seen = []
        out = sample(model, x_T, sampler="plugin_euler", steps=5, clip_x0=0.2, known=known, x_known=x_known,
                     known_mode="condition", callback=lambda d: seen.append(d["i"]))
        ref = sample(Spy(VP()), x_T, sampler="ddim", steps=5, clip_x0=0.2, known=known, x_known=x_known,
                     known_mode="condition")
        torch.testing.assert_close(out, ref, atol=1e-6, rtol=0)
        assert seen == [0, 1, 2, 3, 4] and out[:, 1].abs().max() <= 0.2 + 1e-6
        assert torch.equal(out[:, 0], x_known[:, 0]) and torch.equal(model.seen[0]["known"], known)
    finally:
        get_plugin_manager(reload=True)
