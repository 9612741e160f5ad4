"""Model-specific time grids (polydiff.samplers.optimize_grid): the GITS dynamic programme is exact, an
optimised grid lowers the held-out 10-step error of the sampler it was fitted for on the exact GMM oracle, it
works for every process family and on the torus, and it round-trips through a checkpoint and the CLI."""

import itertools
import math

import pytest
import torch

from polydiff import EDM, VE, VP, RectifiedFlow, Torus
from polydiff.errors import ConfigError, DataError
from polydiff.samplers import SAMPLERS, make_grid, optimize_grid, sample
from polydiff.samplers.schedule import gits_dp
from polydiff.testing import ExactDenoiser, GaussianMixture, WrappedNormalMixture

F64 = torch.float64
MIX = GaussianMixture.grid()


def test_gits_dp_finds_the_cheapest_path():
    g = torch.Generator().manual_seed(0)
    m, steps = 7, 3
    cost = torch.rand(m + 1, m + 1, generator=g, dtype=F64)
    path = gits_dp(cost, steps)
    best = min((sum(cost[a, b] for a, b in zip((0, *mid), (*mid, m))).item(), (0, *mid, m))
               for mid in itertools.combinations(range(1, m), steps - 1))
    assert tuple(path) == best[1]
    assert sum(cost[a, b] for a, b in zip(path, path[1:])).item() == pytest.approx(best[0])
    with pytest.raises(ConfigError, match="fine grid"):
        gits_dp(cost, m + 1)


def _reference(model, x_T):
    """The model's own PF-ODE end points: UniPC-3 on 400 log-SNR steps (converged to < 1e-3 here)."""
    return SAMPLERS["unipc"](model, x_T, make_grid(model.process, 400, "log_snr"), order=3)


def _rmse(x, ref):
    return (x.to(F64) - ref.to(F64)).pow(2).sum(1).mean().sqrt().item()


@pytest.mark.parametrize("name", ["dpmpp_2m", "ddim"])
def test_optimised_grid_lowers_the_held_out_10_step_error(name):
    proc = VP("linear", num_steps=1000)
    model = ExactDenoiser(MIX, proc)
    info = {}
    grid = optimize_grid(model, name, 10, shape=(128, 2), generator=torch.Generator().manual_seed(1),
                         fine_steps=40, refine_sweeps=6, info=info)
    assert grid.shape == (11,) and grid.dtype == F64 and grid[0] == 1.0 and grid[-1] == 0.0
    assert (grid[:-1] > grid[1:]).all() and (proc.sigma(grid[:-1]) > 0).all()
    starts = {k: v for k, v in info["errors"].items() if k != "optimized"}
    assert info["errors"]["optimized"] <= min(starts.values())
    # held-out starting points (another seed) against the model's own converged trajectories
    x_T = proc.prior_sample((1000, 2), torch.Generator().manual_seed(7)).to(F64)
    ref = _reference(model, x_T)
    errs = {kind: _rmse(sample(model, x_T, sampler=name, steps=10, grid=kind), ref)
            for kind in ("uniform", "trailing", "log_snr", "karras")}
    opt = _rmse(sample(model, x_T, sampler=name, steps=10, grid=grid), ref)
    assert opt < 0.75 * min(errs.values()), (opt, errs)


@pytest.mark.parametrize("proc", [VE(), EDM(), RectifiedFlow(), VP("cosine")], ids=repr)
def test_every_process_family(proc):
    model = ExactDenoiser(MIX, proc)
    info = {}
    grid = optimize_grid(model, "dpmpp_2m", 5, shape=(64, 2), generator=torch.Generator().manual_seed(0),
                         fine_steps=20, refine_sweeps=2, info=info)
    assert grid.shape == (6,) and grid[0] == 1.0 and grid[-1] == 0.0 and (grid[:-1] > grid[1:]).all()
    assert all(math.isfinite(v) for v in info["errors"].values())
    assert info["errors"]["optimized"] <= min(v for k, v in info["errors"].items() if k != "optimized")
    assert info["errors"]["optimized"] < info["errors"]["uniform"]


def test_torus_space_and_wrapped_distance():
    mix = WrappedNormalMixture([[2.9, 0.0], [-1.5, 2.8]], [[0.09, 0.25], [0.25, 0.06]], [0.6, 0.4])
    proc = VE(sigma_min=0.01, sigma_max=math.pi)
    model = ExactDenoiser(mix, proc)
    info = {}
    grid = optimize_grid(model, "ddim", 4, shape=(64, 2), generator=torch.Generator().manual_seed(0), space=Torus(),
                         fine_steps=16, refine_sweeps=2, info=info)
    assert grid.shape == (5,) and (grid[:-1] > grid[1:]).all()
    assert info["errors"]["optimized"] <= info["errors"]["uniform"]
    out = sample(model, shape=(8, 2), sampler="ddim", steps=4, grid=grid, space=Torus())
    assert out.abs().max() <= math.pi


def test_bad_arguments_are_typed_errors():
    model = ExactDenoiser(MIX, VP())
    with pytest.raises(ConfigError, match="deterministic"):
        optimize_grid(model, "ddpm", 5, shape=(4, 2))
    with pytest.raises(ConfigError, match="fine_steps"):
        optimize_grid(model, "ddim", 10, shape=(4, 2), fine_steps=10)
    with pytest.raises(ConfigError, match="steps"):
        optimize_grid(model, "ddim", 0, shape=(4, 2))
    with pytest.raises(ConfigError, match="candidates"):
        optimize_grid(model, "ddim", 5, shape=(4, 2), candidates=1)


# -- stored with the checkpoint, used by sample/evaluate ----------------------------------------------------

import importlib  # noqa: E402
import textwrap  # noqa: E402
from pathlib import Path  # noqa: E402

from polydiff.plugins_manager import get_plugin_manager  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "polydiff-example-plugin"


@pytest.fixture
def swissroll(tmp_path, monkeypatch):
    """The example plugin registered in the process-wide manager (as in test_cli.py); runs in tmp_path."""
    monkeypatch.syspath_prepend(str(EXAMPLE))
    monkeypatch.chdir(tmp_path)
    pm = get_plugin_manager(reload=True)
    pm.add_plugin(importlib.import_module("polydiff_swissroll"), "swissroll", version="0.1.0")
    yield pm
    get_plugin_manager(reload=True)


def _config(path: Path) -> Path:
    path.write_text(textwrap.dedent("""\
        trainer: {max_steps: 3, accelerator: cpu, limit_val_batches: 1, enable_model_summary: false}
        model:
          class_path: DiffusionModule
          init_args:
            backbone: {class_path: ToyMLP, init_args: {hidden: 32}}
            process: {class_path: VP, init_args: {num_steps: 100}}
            sample_steps: 4
            val_num_samples: 16
            final_num_samples: 8
        data:
          class_path: SwissRollDataModule
          init_args: {n_train: 64, n_val: 64, batch_size: 32}
        """))
    return path


def test_schedule_round_trips_through_the_checkpoint_and_the_cli(swissroll, tmp_path, capsys):
    from polydiff import cli
    from polydiff.checkpointing import atomic_torch_save, load_checkpoint
    from polydiff.training import DiffusionModule

    cfg = _config(tmp_path / "swiss.yaml")
    assert cli.main(["fit", "--config", str(cfg)]) == 0
    ckpt = tmp_path / "runs" / "polydiff" / "version_0" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert cli.main(["optimize-schedule", "--ckpt", str(ckpt), "--sampler", "dpmpp_2m", "--steps", "4",
                     "--references", "16", "--fine_steps", "12", "--refine_sweeps", "2", "--restarts", "1",
                     "--candidates", "3"]) == 0
    out = capsys.readouterr().out
    assert "schedule 'dpmpp_2m@4' written to" in out
    raw = load_checkpoint(ckpt)
    entry = raw["polydiff"]["schedules"]["dpmpp_2m@4"]
    assert entry["grid"].shape == (5,) and entry["references"] == 16 and entry["steps"] == 4

    module = DiffusionModule.from_checkpoint(ckpt)
    torch.testing.assert_close(module.schedules["dpmpp_2m@4"]["grid"], entry["grid"])
    seen = []
    module.sample(3, sampler="dpmpp_2m", steps=4, generator=torch.Generator().manual_seed(0),
                  callback=lambda d: seen.append(d["t"][0].item()))
    torch.testing.assert_close(torch.tensor(seen, dtype=F64), entry["grid"][1:])  # the stored grid is used
    seen.clear()
    module.sample(3, sampler="dpmpp_2m", steps=4, grid="uniform", callback=lambda d: seen.append(d["t"][0].item()))
    torch.testing.assert_close(torch.tensor(seen, dtype=F64), make_grid(module.process, 4)[1:])  # explicit grid wins
    seen.clear()
    module.sample(3, sampler="dpmpp_2m", steps=5, callback=lambda d: seen.append(d["t"][0].item()))
    assert len(seen) == 5  # another step count: no stored schedule, the default grid

    # a checkpoint written again by the module (save_checkpoint path) keeps it
    ckpt2 = tmp_path / "again.ckpt"
    hook = {}
    module.on_save_checkpoint(hook)
    raw2 = dict(raw, polydiff={**raw["polydiff"], "schedules": hook["polydiff"]["schedules"]})
    atomic_torch_save(raw2, ckpt2)
    assert torch.equal(DiffusionModule.from_checkpoint(ckpt2).schedules["dpmpp_2m@4"]["grid"], entry["grid"])

    argv = ["evaluate", "--ckpt", str(ckpt), "--num", "16", "--sampler", "dpmpp_2m", "--steps", "4"]
    assert cli.main([*argv, "--out", str(tmp_path / "opt.json")]) == 0
    assert cli.main([*argv, "--grid", "uniform", "--out", str(tmp_path / "uni.json")]) == 0
    import json

    assert json.loads((tmp_path / "opt.json").read_text())["grid_used"] == "optimized"
    assert json.loads((tmp_path / "uni.json").read_text())["grid_used"] == "uniform"
    assert cli.main(["sample", "--ckpt", str(ckpt), "--num", "4", "--sampler", "dpmpp_2m", "--steps", "4",
                     "--out", str(tmp_path / "s")]) == 0
    assert cli.main([*argv, "--grid", "bogus"]) == 2

    # a damaged schedule is a one-line DataError naming the field
    bad = dict(raw, polydiff={**raw["polydiff"], "schedules": {"dpmpp_2m@4": {**entry, "grid": entry["grid"].flip(0)}}})
    atomic_torch_save(bad, tmp_path / "bad.ckpt")
    with pytest.raises(DataError, match="schedules"):
        DiffusionModule.from_checkpoint(tmp_path / "bad.ckpt")
