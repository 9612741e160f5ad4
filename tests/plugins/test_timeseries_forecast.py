"""Forecasting end to end with both models on the real ETTh1 table: `polydiff fit` on the shipped
forecasting configs, then `polydiff impute --horizon` appends the forecast rows to a user's CSV."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from polydiff.cli import main
from polydiff.datasets import ett
from polydiff.plugins.timeseries.data import ETTDataModule
from polydiff.plugins_manager import get_plugin_manager

from tests.conftest import require_shared

TINY = {
    "csdi_etth1.yaml": ["--model.init_args.backbone.init_args.channels=8", "--model.init_args.backbone.init_args.layers=1"],
    "sssd_etth1.yaml": ["--model.init_args.backbone.init_args.channels=8", "--model.init_args.backbone.init_args.layers=1",
                        "--model.init_args.backbone.init_args.skip_channels=8",
                        "--model.init_args.backbone.init_args.state_size=8"],
}


def test_ett_forecast_windows_hide_exactly_the_horizon():
    root = require_shared("timeseries", "ett_small")
    dm = ETTDataModule("ETTh1", root=str(root), window=192, stride=1, horizon=24, batch_size=4, seed=1)
    dm.setup("fit")
    assert len(dm.train_set) == 8640 - 192 + 1                     # every training window, stride 1
    b = next(iter(dm.train_dataloader()))
    assert b["x"].shape == (4, 7, 192)
    assert b["known"][..., :168].all() and not b["known"][..., 168:].any()
    v = dm.val_set[0]
    assert v["known"][:, :168].all() and not v["known"][:, 168:].any()
    raw = ett.load_csv("ETTh1", root).to_numpy()
    np.testing.assert_allclose(v["x"].numpy().T * dm.std + dm.mean, raw[8640:8832], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("config", sorted(TINY))
def test_fit_then_forecast_a_csv(config, tmp_path):
    root = require_shared("timeseries", "ett_small")
    path = get_plugin_manager().registry.get("task", f"timeseries/{Path(config).stem}")
    cwd = os.getcwd()
    os.chdir(tmp_path)  # the logger writes runs/ under the working directory
    try:
        code = main(["fit", "--config", str(path), f"--data.init_args.root={root}", "--data.init_args.batch_size=4",
                     "--data.init_args.stride=96", "--trainer.max_steps=2", "--trainer.limit_train_batches=2",
                     "--trainer.limit_val_batches=1", "--trainer.check_val_every_n_epoch=1",
                     f"--trainer.default_root_dir={tmp_path}", "--model.init_args.val_num_samples=2",
                     "--model.init_args.val_sample_every_n_epochs=1", "--model.init_args.final_num_samples=0",
                     *TINY[config]])
    finally:
        os.chdir(cwd)
    assert code == 0
    metrics = pd.read_csv(next(tmp_path.rglob("metrics.csv")))
    assert np.isfinite(metrics["val/mae"].dropna()).all() and len(metrics["val/mae"].dropna()) == 1
    ckpt = next(tmp_path.rglob("last.ckpt"))
    window = torch.load(ckpt, map_location="cpu", weights_only=True)["polydiff"]["sample_shape"][1]

    history = ett.load_csv("ETTh1", root).iloc[-(window - 24):]      # the last hours before the forecast
    history.reset_index().to_csv(tmp_path / "history.csv", index=False)
    code = main(["impute", "--ckpt", str(ckpt), "--csv", str(tmp_path / "history.csv"),
                 "--out", str(tmp_path / "forecast.csv"), "--horizon", "24", "--samples", "4"])
    assert code == 0
    out = pd.read_csv(tmp_path / "forecast.csv", parse_dates=["date"])
    assert len(out) == window
    future = out.iloc[-24:]
    np.testing.assert_array_equal(future["date"].diff().iloc[1:], pd.Timedelta(hours=1))
    assert future["date"].iloc[0] == history.index[-1] + pd.Timedelta(hours=1)
    np.testing.assert_allclose(out["OT"].iloc[:-24], history["OT"], rtol=1e-12)   # history kept as given
    assert future[list(ett.COLUMNS)].notna().all().all()                          # every future value forecast
    assert (future["OT_q05"] <= future["OT_q50"]).all() and (future["OT_q50"] <= future["OT_q95"]).all()
    assert (tmp_path / "forecast.png").exists()
