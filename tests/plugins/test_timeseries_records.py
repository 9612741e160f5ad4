"""`polydiff impute` on raw records with the published CSDI weights (issue 24): never-measured variables are
imputed, columns are matched by name, the training statistics travel with the checkpoint, the CLI equals the
Python path, folders/long files are imputed record by record, and bad records get errors naming file and line."""

import json
import shutil

import numpy as np
import pandas as pd
import pytest
import torch

from polydiff import Denoiser
from polydiff.cli import main
from polydiff.datasets import physionet2012 as physio
from polydiff.errors import DataError
from polydiff.plugins.timeseries import csdi, official
from polydiff.plugins.timeseries.imputation import impute, point_estimate, series_noise, series_seed
from polydiff.plugins.timeseries.records import Record, align, read_inputs

RECORDS = ("132539", "132540", "132541")  # 17, 10 and 4 of the 35 variables never measured in 48 h
FAST = ["--samples", "2", "--sampler", "ddim", "--steps", "3"]


@pytest.fixture(scope="module")
def ts_data():
    import os
    from pathlib import Path

    shared = Path(os.environ.get("POLYDIFF_SHARED_DATA", Path(__file__).resolve().parents[3] / "shared" / "data"))
    root = shared / "timeseries"
    if not (root / "csdi_pretrained" / "model.pth").exists():
        msg = f"{root} is absent: these tests need the project's shared data folder (../shared/data)"
        if os.environ.get("POLYDIFF_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(msg + " and POLYDIFF_REQUIRE_SHARED_DATA=1 is set", pytrace=False)
        pytest.skip(msg)
    return {"model": root / "csdi_pretrained" / "model.pth", "set_a": root / "physionet2012",
            "records": root / "fixtures" / "physionet2012_tiny" / "set-a", "tiny": root / "fixtures" / "physionet2012_tiny"}


@pytest.fixture(scope="module")
def converted(ts_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("convert") / "csdi_physionet.ckpt"
    assert main(["convert", "--ckpt", str(ts_data["model"]), "--out", str(out)]) == 0
    return out


def _copy(ts_data, dest, ids=RECORDS):
    dest.mkdir(parents=True, exist_ok=True)
    for i in ids:
        shutil.copy(ts_data["records"] / f"{i}.txt", dest / f"{i}.txt")
    return dest


def test_official_statistics_match_set_a(ts_data):
    """The shipped statistics are CSDI's: every set-a patient's observed values, parsed by our parser."""
    mean, std = official.official_physionet_stats(ts_data["set_a"])
    np.testing.assert_array_equal(mean, np.array(official.PHYSIONET_MEAN))
    np.testing.assert_array_equal(std, np.array(official.PHYSIONET_STD))
    # the same as the data module's official option (stats="all") computes for its own normalisation
    rec = physio.load_records(ts_data["set_a"] / "set-a.tar.gz", max_records=200)
    d = physio.prepare_csdi(rec, stats="all")
    m, s = physio.feature_stats(rec.values, rec.observed_mask)
    np.testing.assert_allclose(d.mean, m) and np.testing.assert_allclose(d.std, s)


def test_converted_checkpoint_keeps_statistics_and_loads(converted, ts_data):
    from polydiff.checkpointing import load_checkpoint
    from polydiff.training import DiffusionModule

    raw = load_checkpoint(converted)
    meta = raw["polydiff"]["data"]
    assert meta["feature_names"] == list(physio.ATTRIBUTES)
    assert meta["mean"] == list(official.PHYSIONET_MEAN) and meta["std"] == list(official.PHYSIONET_STD)
    assert meta["units"][physio.ATTRIBUTES.index("HR")] == "bpm" and meta["interval_seconds"] == 3600.0
    assert "all set-a patients" in meta["statistics"]
    module = DiffusionModule.from_checkpoint(converted)
    assert module.data_metadata == meta and tuple(module.sample_shape) == (35, 48)
    ref = csdi.load_official(ts_data["model"]).state_dict()
    got = module.denoiser.backbone.state_dict()
    assert all(torch.equal(ref[k], got[k]) for k in ref)
    direct = DiffusionModule.from_checkpoint(ts_data["model"])  # the official file, converted in memory
    assert direct.data_metadata == meta


def test_statistics_round_trip_through_a_fit_checkpoint(ts_data, tmp_path):
    """A data module's names, statistics, units and interval are written into the checkpoint and read back."""
    from polydiff.checkpointing import atomic_torch_save
    from polydiff.plugins.timeseries.data import PhysioNetDataModule
    from polydiff.training import DiffusionModule

    dm = PhysioNetDataModule(root=str(ts_data["tiny"]), batch_size=4)
    dm.setup("fit")
    module = DiffusionModule(backbone={"class_path": "CSDIBackbone", "init_args": {"num_features": 35, "channels": 8,
                                                                                   "layers": 1}},
                             process="vp", ema_decay=0.0)
    module.attach_datamodule(dm)
    ckpt = {"hyper_parameters": dict(module.hparams), "state_dict": module.state_dict()}
    module.on_save_checkpoint(ckpt)
    atomic_torch_save(ckpt, tmp_path / "m.ckpt")
    back = DiffusionModule.from_checkpoint(tmp_path / "m.ckpt").data_metadata
    assert back["feature_names"] == list(physio.ATTRIBUTES)
    np.testing.assert_array_equal(back["mean"], dm.mean) and np.testing.assert_array_equal(back["std"], dm.std)
    assert back["units"][physio.ATTRIBUTES.index("Temp")] == "°C" and back["interval"] == "1 h"
    assert "training patients" in back["statistics"]


def test_columns_matched_by_name():
    names = ["a", "b", "c"]
    v = np.array([[1.0, np.nan], [2.0, 5.0]])
    rec = Record("r", "r.csv", "t", np.arange(2), ["c", "a"], v)  # reordered, 'b' missing
    al = align(rec, names)
    np.testing.assert_array_equal(al.values[:, 0], [np.nan, 5.0])
    np.testing.assert_array_equal(al.values[:, 2], [1.0, 2.0])
    assert np.isnan(al.values[:, 1]).all() and al.absent == ["b"] and al.never_observed == ["b"]
    with pytest.raises(DataError, match=r"r.csv: column\(s\) \['zz'\] are not variables of the model"):
        align(Record("r", "r.csv", "t", np.arange(2), ["a", "zz"], v), names)
    with pytest.raises(DataError, match="r.csv: no observed value of any"):
        align(Record("r", "r.csv", "t", np.arange(2), ["a", "b"], np.full((2, 2), np.nan)), names)


def test_cli_official_checkpoint_imputes_never_measured_variables(ts_data, tmp_path, capsys):
    """A raw PhysioNet record with 17 variables never measured, through the CLI with the official model.pth:
    every one of the 48 x 35 cells gets a finite value; observed values are kept; the gaps are reported."""
    src = ts_data["records"] / "132539.txt"
    code = main(["impute", "--ckpt", str(ts_data["model"]), "--input", str(src), "--out", str(tmp_path / "o.csv"), *FAST])
    assert code == 0
    out = pd.read_csv(tmp_path / "o.csv")
    assert out.shape[0] == 48 and list(out.columns[1:36]) == list(physio.ATTRIBUTES)
    assert np.isfinite(out.iloc[:, 1:].to_numpy(np.float64)).all()
    raw = physio.parse_record(src.read_bytes())
    obs = ~np.isnan(raw)
    np.testing.assert_array_equal(out[list(physio.ATTRIBUTES)].to_numpy()[obs], raw[obs])
    never = [a for k, a in enumerate(physio.ATTRIBUTES) if not obs[:, k].any()]
    assert len(never) == 17
    assert ", ".join(never) in capsys.readouterr().out


def test_cli_equals_python_path_and_batching(ts_data, converted, tmp_path):
    """`polydiff impute` on a folder equals load_official + impute on the set-a preparation to 1e-5 in
    standardised units (both put the three records in one network call; another grouping changes float32
    rounding only: checked at 1e-3)."""
    folder = _copy(ts_data, tmp_path / "in")
    assert main(["impute", "--ckpt", str(converted), "--input", str(folder), "--out", str(tmp_path / "out"),
                 *FAST]) == 0
    assert main(["impute", "--ckpt", str(converted), "--input", str(folder), "--out", str(tmp_path / "one"),
                 "--batch-size", "2", *FAST]) == 0  # one window per call
    rec = physio.load_records(folder)
    mean, std = np.array(official.PHYSIONET_MEAN), np.array(official.PHYSIONET_STD)
    z = physio.normalise(rec.values, rec.observed_mask, mean, std)
    x = torch.as_tensor(np.swapaxes(z, 1, 2).copy(), dtype=torch.float32)
    known = torch.as_tensor(np.swapaxes(rec.observed_mask, 1, 2).copy())
    den = Denoiser(csdi.load_official(ts_data["model"]).eval(), csdi.csdi_process(), "eps")
    noise = series_noise([series_seed(0, r) for r in rec.record_ids], 2)
    med = point_estimate(impute(den, x, known, 2, noise_fn=noise, sampler="ddim", steps=3)).numpy()
    summary = pd.read_csv(tmp_path / "out" / "summary.csv", dtype={"record": str})
    assert (summary["status"] == "ok").all() and summary["record"].tolist() == list(RECORDS)
    for b, rid in enumerate(rec.record_ids):
        cli = pd.read_csv(tmp_path / "out" / f"{rid}.csv")[list(physio.ATTRIBUTES)].to_numpy()
        cli_z = (cli - mean) / std
        np.testing.assert_allclose(cli_z, med[b].T, rtol=0, atol=1e-5)
        one = pd.read_csv(tmp_path / "one" / f"{rid}.csv")[list(physio.ATTRIBUTES)].to_numpy()
        np.testing.assert_allclose((one - mean) / std, med[b].T, rtol=0, atol=1e-3)
    row = summary.set_index("record").loc[RECORDS[0]]
    assert row["never_observed"].count(";") == 16 and "RecordID" in row["ignored_parameters"]


def test_cli_reordered_and_missing_columns(ts_data, converted, tmp_path, capsys):
    """A wide CSV export of a record: columns in another order give the same imputation; dropped columns come
    back imputed and reported; an unknown column is an error naming it."""
    raw = physio.parse_record((ts_data["records"] / "132541.txt").read_bytes())
    df = pd.DataFrame(raw, columns=list(physio.ATTRIBUTES))
    df.insert(0, "hour", np.arange(48))
    cols = list(df.columns)
    variants = {"same": cols, "reordered": [cols[0]] + cols[1:][::-1],
                "dropped": [c for c in cols if c not in ("HR", "Na", "Glucose")]}
    results = {}
    for name, order in variants.items():
        d = tmp_path / name
        d.mkdir()
        df[order].to_csv(d / "patient.csv", index=False)
        assert main(["impute", "--ckpt", str(converted), "--input", str(d / "patient.csv"), "--out",
                     str(d / "o.csv"), *FAST]) == 0
        results[name] = pd.read_csv(d / "o.csv")
    out = capsys.readouterr().out
    assert list(results["reordered"].columns) == list(results["same"].columns)  # the model's order
    pd.testing.assert_frame_equal(results["reordered"], results["same"], rtol=1e-12)
    assert np.isfinite(results["dropped"][["HR", "Na", "Glucose"]].to_numpy()).all()
    assert "HR, Na" in out and "Glucose" in out
    df.assign(Foo=1.0).to_csv(tmp_path / "unknown.csv", index=False)
    code = main(["impute", "--ckpt", str(converted), "--input", str(tmp_path / "unknown.csv"), "--out",
                 str(tmp_path / "u.csv"), *FAST])
    err = capsys.readouterr().err
    assert code != 0 and "unknown.csv: column(s) ['Foo'] are not variables of the model" in err


def _bad_inputs(folder):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.txt").write_text("")
    (folder / "header.txt").write_text("Time,Param,Value\n00:00,HR,80\n")
    (folder / "text.txt").write_text("Time,Parameter,Value\n00:00,HR,80\n01:00,HR,high\n")
    (folder / "clock.txt").write_text("Time,Parameter,Value\n00:00,HR,80\nnoon,HR,81\n")
    (folder / "nothing.txt").write_text("Time,Parameter,Value\n00:00,RecordID,1\n00:00,Age,54\n")
    return {"empty": "empty.txt: empty file", "text": "text.txt: line 3: column 'Value' must be numeric, found 'high'",
            "clock": "clock.txt: line 3: column 'Time' must hold HH:MM values, found 'noon'",
            "nothing": "nothing.txt: no observed value of any of the model's 35 variables"}


def test_bad_records_named_with_file_and_line(ts_data, converted, tmp_path, capsys):
    folder = _copy(ts_data, tmp_path / "in", RECORDS[:1])
    expected = _bad_inputs(folder)
    (folder / "header.txt").unlink()  # not a PhysioNet record: covered below as a single file
    # batch mode: the good record is imputed, each bad one is reported in the summary
    assert main(["impute", "--ckpt", str(converted), "--input", str(folder), "--out", str(tmp_path / "out"),
                 *FAST]) == 0
    s = pd.read_csv(tmp_path / "out" / "summary.csv", dtype={"record": str}).set_index("record")
    assert s.index.tolist() == [RECORDS[0], "clock", "empty", "nothing", "text"]  # input order
    assert s.loc[RECORDS[0], "status"] == "ok" and (tmp_path / "out" / f"{RECORDS[0]}.csv").exists()
    for name, msg in expected.items():
        assert msg in s.loc[name, "status"], (name, s.loc[name, "status"])
    # single files and --strict: a one-line error naming the file (and line)
    (folder / "header.txt").write_text("Time,Param\n")  # not a PhysioNet record: read as a wide table
    expected["header"] = "header.txt: has a header but no rows"
    for name, msg in expected.items():
        code = main(["impute", "--ckpt", str(converted), "--input", str(folder / f"{name}.txt"), "--out",
                     str(tmp_path / "o.csv"), *FAST])
        err = capsys.readouterr().err
        assert code != 0 and msg in err, (name, err)
    code = main(["impute", "--ckpt", str(converted), "--input", str(folder), "--out", str(tmp_path / "o2"), "--strict",
                 *FAST])
    assert code != 0


def test_long_file_with_record_column(ts_data, converted, tmp_path):
    """One long CSV with a record-id column: one output per record, and each record equals its imputation alone
    (same grouping, one window per call: its noise is its own)."""
    frames = []
    for rid in RECORDS[:2]:
        raw = physio.parse_record((ts_data["records"] / f"{rid}.txt").read_bytes())
        df = pd.DataFrame(raw[:30], columns=list(physio.ATTRIBUTES))  # 30 h: padded to the model's 48
        df.insert(0, "hour", np.arange(30))
        df.insert(0, "patient", rid)
        frames.append(df)
    pd.concat(frames).to_csv(tmp_path / "long.csv", index=False)
    assert main(["impute", "--ckpt", str(converted), "--input", str(tmp_path / "long.csv"), "--record-column",
                 "patient", "--out", str(tmp_path / "out"), "--batch-size", "2", *FAST]) == 0
    s = pd.read_csv(tmp_path / "out" / "summary.csv", dtype={"record": str})
    assert s["record"].tolist() == list(RECORDS[:2]) and (s["padded_rows"] == 18).all()
    alone = tmp_path / "alone" / f"{RECORDS[1]}.csv"
    alone.parent.mkdir()
    frames[1].drop(columns=["patient"]).to_csv(alone, index=False)
    assert main(["impute", "--ckpt", str(converted), "--input", str(alone), "--out", str(tmp_path / "a.csv"),
                 "--batch-size", "2", *FAST]) == 0
    got = pd.read_csv(tmp_path / "out" / f"{RECORDS[1]}.csv")
    assert len(got) == 30
    pd.testing.assert_frame_equal(got, pd.read_csv(tmp_path / "a.csv"), rtol=1e-12)


def test_evaluate_accepts_official_checkpoint(ts_data, tmp_path):
    cfg = tmp_path / "data.yaml"
    cfg.write_text(f"data:\n  class_path: PhysioNetDataModule\n  init_args:\n    root: {ts_data['tiny']}\n"
                   "    stats: all\n")
    out = tmp_path / "m.json"
    assert main(["evaluate", "--ckpt", str(ts_data["model"]), "--config", str(cfg), "--num", "4", "--sampler", "ddim",
                 "--steps", "5", "--out", str(out)]) == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert 0 < metrics["mae"] < 0.7  # mean imputation's MAE on PhysioNet is 0.70 (MANIFEST)


def test_plugins_lists_sssd_note(capsys):
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "SSSDBackbone" in out and "not competitive at CPU scale" in out and "+156 %" in out


def test_read_inputs_folders_and_archives(ts_data, tmp_path):
    import tarfile

    entries, skipped = read_inputs(ts_data["tiny"])
    assert len(entries) == 32 and skipped == ["Outcomes-a.txt"]
    with tarfile.open(tmp_path / "set-x.tar.gz", "w:gz") as tf:
        for rid in RECORDS[::-1]:
            tf.add(ts_data["records"] / f"{rid}.txt", arcname=f"set-x/{rid}.txt")
    got, _ = read_inputs(tmp_path / "set-x.tar.gz")
    assert [r.name for r in got] == list(RECORDS)
    ref = {r.name: r for r in entries}
    for r in got:
        np.testing.assert_array_equal(r.values, ref[r.name].values)
        assert r.ignored == ref[r.name].ignored and r.source.endswith(f"set-x.tar.gz:{r.name}.txt")


def test_interval_mismatch_is_reported(capsys):
    from polydiff.plugins.timeseries.command import ModelSeries, _warn_interval

    model = ModelSeries(2, 48, ["a", "b"], None, None, 3600.0)
    times = pd.date_range("2024-01-01", periods=4, freq="30min").to_numpy()
    _warn_interval(Record("r", "r.csv", "t", times, ["a"], np.ones((4, 1))), model)
    assert "r.csv: rows are 1800 s apart, the model was trained on steps of 3600 s" in capsys.readouterr().err
    _warn_interval(Record("r", "r.csv", "t", times[::2], ["a"], np.ones((2, 1))), model)
    assert capsys.readouterr().err == ""
