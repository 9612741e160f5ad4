"""Time-series dataset parsers: exact arrays against the official CSDI tensors and hand-read values."""

import pickle
import tarfile

import numpy as np
import pytest
import torch

from polydiff.datasets import aqi36, csv_series, ett, physionet2012 as physio
from polydiff.errors import ConfigError, DataError


@pytest.fixture
def ts(shared_data):
    return shared_data / "timeseries"


@pytest.fixture
def golden(ts):
    return torch.load(ts / "csdi_parity" / "csdi_official_golden.pt", weights_only=True)


def test_physionet_fixture_matches_official_parsing(ts, golden, tmp_path):
    folder = ts / "fixtures" / "physionet2012_tiny" / "set-a"
    rec = physio.load_records(folder)
    assert rec.record_ids == golden["physio_ids"]
    np.testing.assert_array_equal(np.nan_to_num(rec.values), golden["physio_observed_values_raw"].numpy())
    np.testing.assert_array_equal(rec.observed_mask, golden["physio_observed_masks"].numpy() == 1)
    gt = physio.csdi_eval_masks(rec.observed_mask, 0.1, seed=1)
    np.testing.assert_array_equal(gt, golden["physio_gt_masks_ratio0.1_seed1"].numpy() == 1)
    # the same records read straight from a .tar.gz (no extraction) give identical arrays
    archive = tmp_path / "set-a.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname="set-a")
    rec2 = physio.load_records(archive)
    assert rec2.record_ids == rec.record_ids
    np.testing.assert_array_equal(rec2.values, rec.values)


def test_physionet_record_rules():
    text = (
        "Time,Parameter,Value\n00:00,RecordID,1\n00:00,Weight,80\n00:10,HR,70\n00:50,HR,75\n"
        "01:05,Temp,36.6\n47:59,ALP,12\n48:00,HR,99\n02:00,Unknown,3\n"
    )
    a = physio.parse_record(text)
    assert a.shape == (48, 35)
    hr, temp, alp = (physio.ATTRIBUTES.index(k) for k in ("HR", "Temp", "ALP"))
    assert a[0, hr] == 75.0  # last value within the hour wins
    assert a[1, temp] == 36.6 and a[47, alp] == 12.0
    assert np.isfinite(a).sum() == 3  # 48:00, RecordID, Weight and unknown parameters are dropped
    with pytest.raises(DataError, match="Time,Parameter,Value"):
        physio.parse_record("a,b,c\n1,2,3\n", name="bad.txt")
    with pytest.raises(DataError, match="'Value' must be numeric"):
        physio.parse_record("Time,Parameter,Value\n00:01,HR,abc\n")


def test_physionet_split_and_normalisation(ts):
    tr, va, te = physio.csdi_split(4000, seed=1, nfold=0)
    assert (len(tr), len(va), len(te)) == (2800, 400, 800)
    assert sorted(np.concatenate([tr, va, te]).tolist()) == list(range(4000))
    rec = physio.load_records(ts / "fixtures" / "physionet2012_tiny" / "set-a")
    d_train = physio.prepare_csdi(rec, 0.1, seed=1, stats="train")
    d_all = physio.prepare_csdi(rec, 0.1, seed=1, stats="all")
    hr = physio.ATTRIBUTES.index("HR")
    obs = rec.observed_mask
    train_hr = rec.values[d_train.train][..., hr][obs[d_train.train][..., hr]]
    assert d_train.mean[hr] == pytest.approx(train_hr.mean(), rel=1e-12)
    assert d_all.mean[hr] == pytest.approx(rec.values[..., hr][obs[..., hr]].mean(), rel=1e-12)
    assert d_train.mean[hr] != d_all.mean[hr]
    assert np.all(d_train.data[~obs] == 0)
    assert d_train.eval_mask.sum() == sum(int(m.sum() * 0.1) for m in obs)


def test_physionet_outcomes(ts):
    out = physio.load_outcomes(ts / "fixtures" / "physionet2012_tiny" / "Outcomes-a.txt")
    assert out.loc[132539].tolist() == [6, 1, 5, -1, 0]
    assert out.loc[132540].tolist() == [16, 8, 8, -1, 0]


def test_aqi36_fixture_windows(ts):
    root = ts / "fixtures" / "pm25_tiny"
    ground, missing = aqi36.read_table(root / "pm25_ground.txt"), aqi36.read_table(root / "pm25_missing.txt")
    assert ground.shape == (864, 36)
    assert ground.iloc[0, 0] == 138.0 and np.isnan(ground.iloc[0, 29]) and ground.iloc[1, 2] == 121.0
    mean, std = aqi36.csdi_stats(ground)
    tr = aqi36.csdi_windows(ground, missing, "train", valid_index=0)
    va = aqi36.csdi_windows(ground, missing, "valid", valid_index=0)
    te = aqi36.csdi_windows(ground, missing, "test")
    assert len(tr.data) == 7 * 37 and len(va.data) == 37 and len(te.data) == 4 * 2
    assert te.cut_length.tolist() == [0] * 8
    # train window 0 is the first of month 2 (valid_index 0 removes month 1)
    feb = ground[ground.index.month == 2]
    np.testing.assert_array_equal(tr.observed_mask[0], feb.notna().to_numpy()[:36])
    np.testing.assert_allclose(tr.data[0][tr.observed_mask[0]], ((feb.to_numpy()[:36] - mean) / std)[tr.observed_mask[0]])
    # historical patterns only come from months 2, 5, 8, 11 (windows 0-36, 74-110, ...), taken in order:
    # window k borrows the pattern of the k-th eligible window, cyclically
    np.testing.assert_array_equal(tr.hist_mask[0], tr.observed_mask[0])
    np.testing.assert_array_equal(tr.hist_mask[37], tr.observed_mask[74])
    np.testing.assert_array_equal(tr.hist_mask[4 * 37], tr.observed_mask[0])  # 4 eligible months: wraps
    # evaluation targets: recorded in ground, removed in missing
    mar = slice(0, 36)
    g3, m3 = ground[ground.index.month == 3], missing[missing.index.month == 3]
    np.testing.assert_array_equal(te.eval_mask[0], g3.notna().to_numpy()[mar] & m3.isna().to_numpy()[mar])


class _NumpyOnly(pickle.Unpickler):
    def find_class(self, module, name):
        if module.split(".")[0] == "numpy":
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing {module}.{name}")


def test_aqi36_stats_equal_official_meanstd(ts):
    root = ts / "pm25_aqi36"
    ground, missing = aqi36.read_table(root / "pm25_ground.txt"), aqi36.read_table(root / "pm25_missing.txt")
    with open(root / "pm25_meanstd.pk", "rb") as f:
        mean_pk, std_pk = _NumpyOnly(f).load()
    mean, std = aqi36.csdi_stats(ground)
    np.testing.assert_array_equal(mean, mean_pk)
    np.testing.assert_array_equal(std, std_pk)
    te = aqi36.csdi_windows(ground, missing, "test", mean=mean, std=std)
    assert len(te.data) == 82 and te.cut_length.tolist().count(0) == 80 and sorted(set(te.cut_length)) == [0, 12]
    # no entry is evaluated twice: evaluated steps per month add up to the month's evaluated entries
    assert te.eval_mask.sum() == int((ground.notna() & missing.isna())[ground.index.month.isin([3, 6, 9, 12])].sum().sum())


def test_ett_splits(ts):
    root = ts / "ett_small"
    df = ett.load_csv("ETTh1", root)
    assert df.shape == (17420, 7) and df.iloc[0, 0] == 5.827000141143799 and df.iloc[1, 6] == 27.78700065612793
    s = ett.splits("ETTh1", root, history=96)
    assert (len(s.train), len(s.valid), len(s.test)) == (8640, 2880 + 96, 2880 + 96)
    np.testing.assert_allclose(s.train.mean(0), 0, atol=1e-10)
    np.testing.assert_allclose(s.train.std(0), 1, atol=1e-10)
    assert ett.borders("ETTm1") == [(0, 34560), (34560, 46080), (46080, 57600)]
    with pytest.raises(DataError, match="ETTx9"):
        ett.borders("ETTx9")


def _write(tmp_path, text, name="s.csv"):
    p = tmp_path / name
    p.write_text(text)
    return p


def test_csv_series_reads_and_validates(tmp_path):
    p = _write(tmp_path, "time,a,b\n2020-01-01 00:00,1.5,\n2020-01-01 01:00,,2\n2020-01-01 02:00,3,4\n")
    t = csv_series.load_table(p)
    assert t.columns == ["a", "b"] and t.values.shape == (3, 2)
    np.testing.assert_array_equal(t.observed_mask, [[1, 0], [0, 1], [1, 1]])
    assert t.values[2, 1] == 4.0
    df = __import__("pandas").read_csv(p)
    df.to_parquet(tmp_path / "s.parquet")
    tq = csv_series.load_table(tmp_path / "s.parquet")
    np.testing.assert_array_equal(np.nan_to_num(tq.values), np.nan_to_num(t.values))
    cases = {
        "time,a,b\n1,1,x\n2,2,3\n": "'b' is not numeric",
        "time,a,b\n1,1,\n2,2,\n": "'b' has no observed value",
        "time,a\n1,1\n1,2\n": "duplicate timestamp",
        "time,a\n2,1\n1,2\n": "not sorted",
    }
    for text, msg in cases.items():
        with pytest.raises(DataError, match=msg):
            csv_series.load_table(_write(tmp_path, text))
    with pytest.raises(ConfigError, match="window=5 is longer than the series"):
        csv_series.sliding_windows(t.values, 5)
    w = csv_series.sliding_windows(np.arange(10.0)[:, None], 4)
    assert w[:, 0, 0].tolist() == [0, 4, 6]
