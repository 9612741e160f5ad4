"""The Python API checks its inputs as the CLI does (impute, DiffusionLoss, samplers.sample), NIfTI headers and
truncation are caught, and resume after a crash picks the newest valid checkpoint and cleans up."""

import gzip
import struct

import nibabel as nib
import numpy as np
import pytest
import torch

from polydiff import DiffusionLoss, ShapeError, VP, Denoiser
from polydiff.backbones import MLP
from polydiff.checkpointing import atomic_torch_save, find_resume_checkpoint, remove_stale_temp_files
from polydiff.errors import DataError
from polydiff.plugins.medical.io import read_nifti
from polydiff.plugins.timeseries.csdi import CSDIBackbone, csdi_process
from polydiff.plugins.timeseries.imputation import impute
from polydiff.samplers import sample
from polydiff.testing import ExactDenoiser, GaussianMixture


@pytest.fixture(scope="module")
def csdi():
    torch.manual_seed(0)
    net = CSDIBackbone(3, num_steps=10, channels=8, layers=1, feature_embedding_dim=4, time_embedding_dim=8)
    return Denoiser(net, csdi_process(10))


def _series():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 6, generator=g)
    known = torch.rand(2, 3, 6, generator=g) > 0.5
    return x, known


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_impute_refuses_non_finite_known_values(csdi, value):
    x, known = _series()
    with pytest.raises(ShapeError, match=r"observed has 1 NaN or infinite value\(s\) at entries marked known"):
        impute(csdi, x.index_put((torch.tensor([1]), torch.tensor([2]), torch.tensor([3])), torch.tensor(value)),
               known.index_put((torch.tensor([1]), torch.tensor([2]), torch.tensor([3])), torch.tensor(True)), 2)
    # at unknown entries NaN is what "missing" means: fine, and the result is finite
    out = impute(csdi, x.masked_fill(~known, value), known, 2, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out).all()
    assert torch.equal(out[:, 0][known], x[known])  # the known values come back exactly


def test_impute_masks_must_be_boolean_or_exact_zero_one(csdi):
    x, known = _series()
    with pytest.raises(ShapeError, match="known must be boolean or 0/1"):
        impute(csdi, x, torch.full(x.shape, 0.3), 2)
    a = impute(csdi, x, known.float(), 2, generator=torch.Generator().manual_seed(0))  # exact 0/1: converted
    b = impute(csdi, x, known, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b)


def test_impute_converts_float64_and_int64_and_refuses_what_float32_cannot_hold(csdi):
    x, known = _series()
    ref = impute(csdi, x, known, 2, generator=torch.Generator().manual_seed(0))
    out = impute(csdi, x.double(), known, 2, generator=torch.Generator().manual_seed(0))
    assert out.dtype == torch.float32 and torch.equal(out, ref)
    xi = (x * 10).round().long()
    out = impute(csdi, xi, known, 2, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[:, 0][known], xi[known].float())
    with pytest.raises(ShapeError, match="integers beyond"):
        impute(csdi, xi + 2 ** 40, known, 2)
    with pytest.raises(ShapeError, match="beyond torch.float32's range"):
        impute(csdi, x.double() * 1e300, known, 2)


def test_impute_shape_errors_quote_the_callers_shapes(csdi):
    with pytest.raises(ShapeError, match=r"observed of shape \(2, 4, 6\) \(B, K, L\) does not fit the model"):
        impute(csdi, torch.randn(2, 4, 6), torch.ones(2, 4, 6, dtype=torch.bool), 50)
    with pytest.raises(ShapeError, match=r"observed has shape \(3, 6\); expected 3 dims \(B, K, L\)"):
        impute(csdi, torch.randn(3, 6), torch.ones(3, 6, dtype=torch.bool), 2)
    with pytest.raises(ShapeError, match=r"known has shape \(2, 3, 5\) but observed has \(2, 3, 6\)"):
        impute(csdi, torch.randn(2, 3, 6), torch.ones(2, 3, 5, dtype=torch.bool), 2)
    with pytest.raises(ShapeError, match=r"cond\['timepoints'\] has shape \(3, 6\); expected 2 rows"):
        impute(csdi, torch.randn(2, 3, 6), torch.ones(2, 3, 6, dtype=torch.bool), 2,
               cond={"timepoints": torch.zeros(3, 6)})


def test_loss_and_sampler_refuse_mismatched_dtype_and_fractional_masks():
    den = Denoiser(MLP(dim=2, hidden=8, depth=1), VP("linear"))
    with pytest.raises(ShapeError, match=r"batch\['x'\] has dtype torch.float64 but the model's parameters are torch.float32"):
        DiffusionLoss()(den, {"x": torch.randn(4, 2, dtype=torch.float64)})
    model = ExactDenoiser(GaussianMixture.grid(), VP("linear"))
    x_T = torch.randn(4, 2)
    with pytest.raises(ShapeError, match="known must be boolean or 0/1"):
        sample(model, x_T, sampler="ddim", steps=3, known=torch.full((4, 2), 0.3), x_known=torch.zeros(4, 2))


def _nifti_bytes(tmp_path, pixdim=(1.0, 1.0, 2.0)) -> bytes:
    img = nib.Nifti1Image(np.random.default_rng(0).random((8, 8, 4)).astype(np.float32), np.diag([1.0, 1.0, 2.0, 1.0]))
    nib.save(img, tmp_path / "ok.nii")
    raw = bytearray((tmp_path / "ok.nii").read_bytes())
    raw[80:92] = struct.pack("<3f", *pixdim)
    return bytes(raw)


@pytest.mark.parametrize("pixdim", [(0.0, 1.0, 2.0), (1.0, -1.0, 2.0), (1.0, 1.0, float("nan")), (float("inf"), 1, 1)])
@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_voxel_sizes_must_be_finite_and_positive(tmp_path, pixdim, suffix, capfd):
    raw = _nifti_bytes(tmp_path, pixdim)
    path = tmp_path / f"bad{suffix}"
    path.write_bytes(gzip.compress(raw) if suffix.endswith(".gz") else raw)
    with pytest.raises(DataError, match=rf"bad{suffix}: NIfTI voxel sizes \(pixdim\) are .*expected finite sizes > 0"):
        read_nifti(path)
    assert "setting" not in capfd.readouterr().err  # nibabel's "repair" log is not shown


def test_nifti_truncation_is_reported_as_truncated(tmp_path):
    raw = _nifti_bytes(tmp_path)
    gz = gzip.compress(raw)
    for n in (len(gz) // 2, 40, len(gz) - 5):
        (tmp_path / "t.nii.gz").write_bytes(gz[:n])
        with pytest.raises(DataError, match=r"t.nii.gz: NIfTI file is truncated"):
            read_nifti(tmp_path / "t.nii.gz")
    (tmp_path / "t.nii").write_bytes(raw[:400])
    with pytest.raises(DataError, match=r"t.nii: NIfTI file is truncated: its header declares \(8, 8, 4\) voxels"):
        read_nifti(tmp_path / "t.nii")
    (tmp_path / "plain.nii.gz").write_bytes(raw)
    with pytest.raises(DataError, match="named .nii.gz but not gzip-compressed"):
        read_nifti(tmp_path / "plain.nii.gz")
    (tmp_path / "good.nii").write_bytes(raw)
    assert read_nifti(tmp_path / "good.nii")[0].shape == (1, 8, 8, 4)


def test_resume_picks_the_highest_valid_step_and_removes_stale_temp_files(tmp_path):
    """A crash can leave last.ckpt older than a step checkpoint, a half-written temp file and a corrupt file:
    resume takes the highest global_step among the files that load, whatever their names and times."""
    ck = tmp_path / "checkpoints"
    atomic_torch_save({"global_step": 40, "state_dict": {}}, ck / "epoch=0-step=40.ckpt")
    atomic_torch_save({"global_step": 30, "state_dict": {}}, ck / "last.ckpt")  # written later, but older
    (ck / "epoch=0-step=50.ckpt").write_bytes(b"PK\x03\x04 half a file")  # newest name, but does not load
    (ck / ".last.ckpt.abc123.tmp").write_bytes(b"x" * 1000)  # left by a killed save
    (ck / "notes.tmp").write_text("not ours")  # not our naming: kept
    path, step = find_resume_checkpoint(tmp_path)
    assert path == ck / "epoch=0-step=40.ckpt" and step == 40
    assert not (ck / ".last.ckpt.abc123.tmp").exists() and (ck / "notes.tmp").exists()
    atomic_torch_save({"global_step": 40, "state_dict": {}}, ck / "last.ckpt")
    assert find_resume_checkpoint(ck)[0] == ck / "last.ckpt"  # a tie goes to last.ckpt
    assert remove_stale_temp_files(ck) == []
    with pytest.raises(DataError, match="no checkpoint to resume from"):
        find_resume_checkpoint(tmp_path / "empty" if (tmp_path / "empty").mkdir() is None else None)


def test_fit_ckpt_path_last_resumes_from_the_newest_valid_checkpoint(tmp_path, monkeypatch, capsys):
    """Through the CLI: after a simulated crash (last.ckpt older than a step checkpoint, a stale temp file and a
    half-written newer file), `fit --ckpt_path last` resumes from the highest global step and says so."""
    import shutil
    import textwrap

    from polydiff import cli

    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.yaml").write_text(textwrap.dedent("""\
        trainer: {max_steps: 2, accelerator: cpu, limit_val_batches: 0, enable_model_summary: false, logger: false,
                  enable_progress_bar: false}
        model:
          class_path: DiffusionModule
          init_args: {backbone: {class_path: MLP, init_args: {dim: 2, hidden: 8, depth: 1}}, final_num_samples: 0}
        data: {class_path: MixtureDataModule, init_args: {n_train: 64, n_val: 8, batch_size: 16}}
        checkpoint: {dirpath: ck, every_n_train_steps: 1, save_top_k: -1}
        """))
    assert cli.main(["fit", "--config", "m.yaml"]) == 0
    ck = tmp_path / "ck"
    assert {p.name for p in ck.iterdir()} == {"epoch=0-step=1.ckpt", "epoch=0-step=2.ckpt", "last.ckpt"}
    shutil.copy(ck / "epoch=0-step=1.ckpt", ck / "last.ckpt")  # the crash: last.ckpt is behind
    (ck / "epoch=0-step=3.ckpt").write_bytes((ck / "epoch=0-step=2.ckpt").read_bytes()[:500])  # half written
    (ck / ".last.ckpt.k3j9x2.tmp").write_bytes(b"\0" * 4096)
    capsys.readouterr()
    assert cli.main(["fit", "--config", "m.yaml", "--ckpt_path", "last", "--trainer.max_steps", "4"]) == 0
    err = capsys.readouterr().err
    assert f"polydiff: resuming from {ck / 'epoch=0-step=2.ckpt'} (global step 2)" in err
    assert not (ck / ".last.ckpt.k3j9x2.tmp").exists()
    assert torch.load(ck / "last.ckpt", weights_only=True)["global_step"] == 4
