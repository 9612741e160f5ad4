"""Time-series plugin end to end: data modules on the fixtures, no target leakage, `polydiff fit` on the
tiny fixtures, `polydiff impute` (CSV with quantile bands + PNG) and its bad-input errors."""

import numpy as np
import pandas as pd
import pytest
import torch

from polydiff import Denoiser
from polydiff.batch import backbone_cond
from polydiff.cli import main
from polydiff.plugins.timeseries import csdi, sssd
from polydiff.plugins.timeseries.data import AQI36DataModule, PhysioNetDataModule
from polydiff.plugins.timeseries.imputation import impute

FIXTURES = ("timeseries", "fixtures")


def test_physionet_datamodule_batches(shared_data):
    dm = PhysioNetDataModule(root=str(shared_data.joinpath(*FIXTURES, "physionet2012_tiny")), batch_size=8, seed=3)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (8, 35, 48) and batch["x"].dtype == torch.float32
    assert not (batch["known"] & batch["missing"]).any()             # never conditions on a missing value
    assert (batch["x"][batch["missing"]] == 0).all()
    again = next(iter(dm.train_dataloader()))                          # deterministic masks
    assert torch.equal(again["known"], batch["known"])
    d = dm.prepared
    val = next(iter(dm.val_dataloader()))
    np.testing.assert_array_equal(val["known"].numpy(), np.swapaxes(d.gt_mask[d.valid], 1, 2)[: len(val["x"])])
    np.testing.assert_array_equal(~val["missing"].numpy(), np.swapaxes(d.observed_mask[d.valid], 1, 2)[: len(val["x"])])


def test_aqi36_datamodule_historical_patterns(shared_data):
    dm = AQI36DataModule(root=str(shared_data.joinpath(*FIXTURES, "pm25_tiny")), batch_size=4, seed=0,
                         mask_strategy="historical")
    dm.setup("fit")
    b = next(iter(dm.train_dataloader()))
    assert b["x"].shape == (4, 36, 36)
    assert not (b["known"] & b["missing"]).any()
    # the test windows' known masks hide exactly the evaluation targets
    te = dm.test_windows
    ev = torch.as_tensor(np.swapaxes(te.eval_mask, 1, 2))
    t0 = dm.test_set[0]
    assert torch.equal(~t0["missing"] & ~t0["known"], ev[0])


@pytest.mark.parametrize("kind", ["csdi", "sssd"])
def test_hidden_targets_never_reach_the_model(kind):
    """Perturbing the values of hidden targets changes neither the backbone's conditioning input nor the
    imputations drawn with a fixed seed."""
    torch.manual_seed(0)
    if kind == "csdi":
        net, proc = csdi.CSDIBackbone(4, channels=8, layers=1), csdi.csdi_process(num_steps=6)
        net.num_steps = 6
        net.step_embedding = csdi.StepEmbedding(6)
        torch.nn.init.normal_(net.output_projection2.weight)
    else:
        net, proc = sssd.SSSDBackbone(4, channels=8, skip_channels=8, layers=1, state_size=8, num_steps=6), \
            sssd.sssd_process(num_steps=6)
        torch.nn.init.normal_(net.out_conv.weight)
    net.eval()
    den = Denoiser(net, proc, "eps")
    x = torch.randn(3, 4, 12)
    presence = torch.rand(3, 4, 12) > 0.2
    known = presence & (torch.rand(3, 4, 12) > 0.5)
    targets = presence & ~known
    x2 = torch.where(targets, x + 100 * torch.randn_like(x), x)
    c1, c2 = backbone_cond({}, x, presence, known), backbone_cond({}, x2, presence, known)
    assert torch.equal(c1["observed"], c2["observed"])
    xt = torch.randn_like(x)
    t = torch.full((3,), 0.5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(net(xt, t, c1), net(xt, t, c2), rtol=0, atol=0)
    s1 = impute(den, x, known, 3, generator=torch.Generator().manual_seed(1))
    s2 = impute(den, x2, known, 3, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)
    assert not torch.equal(s1[:, 0], s1[:, 1])  # samples differ from each other


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from pathlib import Path
    import os

    root = Path(os.environ.get("POLYDIFF_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    fixture = root.joinpath(*FIXTURES, "physionet2012_tiny")
    if not fixture.exists():
        if os.environ.get("POLYDIFF_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"{fixture} is absent and POLYDIFF_REQUIRE_SHARED_DATA=1", pytrace=False)
        pytest.skip(f"{fixture} is absent: these tests need the project's shared data folder (../shared/data)")
    from polydiff.plugins_manager import get_plugin_manager

    config = get_plugin_manager().registry.get("task", "timeseries/csdi_physionet")
    out = tmp_path_factory.mktemp("fit")
    cwd = os.getcwd()
    os.chdir(out)  # the logger writes runs/ under the working directory
    try:
        code = _fit(config, fixture, out)
    finally:
        os.chdir(cwd)
    assert code == 0
    ckpts = sorted(out.rglob("last.ckpt"))
    assert ckpts, "polydiff fit wrote no checkpoint"
    metrics = pd.read_csv(next(out.rglob("metrics.csv")))
    return ckpts[0], metrics, out


def _fit(config, fixture, out):
    return main([
        "fit", "--config", str(config), f"--data.init_args.root={fixture}",
        "--trainer.max_steps=3", f"--trainer.default_root_dir={out}", "--trainer.check_val_every_n_epoch=1",
        "--model.init_args.backbone.init_args.channels=8", "--model.init_args.backbone.init_args.layers=1",
        "--model.init_args.val_num_samples=2", "--model.init_args.val_sample_every_n_epochs=1",
        "--model.init_args.final_num_samples=0", "--data.init_args.batch_size=8",
    ])


def test_cli_fit_on_fixtures(fitted):
    ckpt, metrics, out = fitted
    loss = metrics["val/loss"].dropna()
    assert len(loss) >= 1 and np.isfinite(loss).all()
    assert "val/mae" in metrics and np.isfinite(metrics["val/mae"].dropna()).all()  # evaluation hook ran
    assert list(out.rglob("*.png"))  # artifact hook wrote a plot
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert state["polydiff"]["sample_shape"] == [35, 48] and state["polydiff"]["domain"] == "timeseries"
    meta = state["polydiff"]["data"]  # the training statistics travel with the model
    from polydiff.datasets.physionet2012 import ATTRIBUTES
    assert meta["feature_names"] == list(ATTRIBUTES) and len(meta["mean"]) == len(meta["std"]) == 35
    assert meta["units"][ATTRIBUTES.index("HR")] == "bpm" and meta["interval_seconds"] == 3600.0


def _series(path, k=35, rows=60, seed=0, names=None):
    from polydiff.datasets.physionet2012 import ATTRIBUTES

    rng = np.random.default_rng(seed)
    v = rng.normal(size=(rows, k)).cumsum(0)
    v[rng.random(v.shape) < 0.3] = np.nan
    v[0] = rng.normal(size=k)
    df = pd.DataFrame(v, columns=names or list(ATTRIBUTES[:k]))
    df.insert(0, "time", pd.date_range("2024-01-01", periods=rows, freq="h"))
    df.to_csv(path, index=False)
    return df


def test_impute_command_writes_csv_with_bands_and_png(fitted, tmp_path):
    ckpt, _, _ = fitted
    df = _series(tmp_path / "in.csv")
    code = main(["impute", "--ckpt", str(ckpt), "--csv", str(tmp_path / "in.csv"), "--out", str(tmp_path / "out.csv"),
                 "--samples", "3", "--quantiles", "0.05,0.5,0.95", "--plot-feature", "Na"])
    assert code == 0
    out = pd.read_csv(tmp_path / "out.csv")
    assert len(out) == 60 and {"HR", "HR_q05", "HR_q50", "HR_q95"} <= set(out.columns)
    obs = df["HR"].notna()
    np.testing.assert_allclose(out.loc[obs, "HR"], df.loc[obs, "HR"], rtol=1e-12)  # observed values kept
    assert out["HR"].notna().all()                                                # every gap filled
    miss = ~obs
    assert (out.loc[miss, "HR_q05"] <= out.loc[miss, "HR_q95"]).all()
    np.testing.assert_array_equal(out["HR_q50"], out["HR"])  # q50 is the point estimate (lower median)
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_impute_command_bad_inputs(fitted, tmp_path, capsys):
    ckpt, _, _ = fitted
    cases = []
    _series(tmp_path / "k7.csv", k=7, names=[f"f{i}" for i in range(7)])
    cases.append(("k7.csv", "k7.csv: column(s) ['f0', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6'] are not variables of the model"))
    df = _series(tmp_path / "text.csv")
    df["Lactate"] = "high"
    df.to_csv(tmp_path / "text.csv", index=False)
    cases.append(("text.csv", "'Lactate' is not numeric (e.g. 'high' at line 2)"))
    df = _series(tmp_path / "dup.csv")
    df.loc[5, "time"] = df.loc[4, "time"]
    df.to_csv(tmp_path / "dup.csv", index=False)
    cases.append(("dup.csv", "duplicate timestamp"))
    for name, msg in cases:
        code = main(["impute", "--ckpt", str(ckpt), "--csv", str(tmp_path / name), "--out", str(tmp_path / "o.csv"),
                     "--samples", "2"])
        err = capsys.readouterr().err
        assert code != 0 and msg in err, (name, err)
