"""Reliability: atomic checkpoints (exception and SIGKILL while saving), bitwise resume on CPU (mid-epoch, with
EMA, condition dropout, dropout RNG and data order), weights_only loading, and one clear error line for
unknown config keys, unknown component names and wrong data shapes."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from polydiff import cli
from polydiff.checkpointing import AtomicCheckpointIO, PolydiffCheckpoint
from polydiff.errors import DataError, ShapeError
from polydiff.testing_data import MixtureDataModule
from polydiff.training import DiffusionModule


def test_exception_while_saving_keeps_previous_checkpoint(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def crashing_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise KeyboardInterrupt  # as if the job were interrupted mid-write

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    old = io.load_checkpoint(path)
    assert old["step"] == 1 and torch.equal(old["w"], torch.ones(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # the temporary file is gone


def test_sigkill_while_saving_keeps_previous_checkpoint(tmp_path):
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"step": 1}, path)
    started = tmp_path / "started"
    script = textwrap.dedent(f"""
        import time, torch
        from polydiff.checkpointing import AtomicCheckpointIO, PolydiffCheckpoint
        def slow_save(obj, f, *a, **k):
            f.write(b"x" * 4096); f.flush()
            open({str(started)!r}, "w").close()
            time.sleep(60)
        torch.save = slow_save
        AtomicCheckpointIO().save_checkpoint({{"step": 2}}, {str(path)!r})
        """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while not started.exists():
            assert proc.poll() is None, "saver exited early"
            assert time.time() < deadline
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(path, weights_only=True) == {"step": 1}


class _Losses(Callback):
    def __init__(self):
        self.losses, self.steps = [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].detach().clone())
        self.steps.append(trainer.global_step)


def _setup():
    torch.manual_seed(0)
    dm = MixtureDataModule(n_train=96, n_val=32, batch_size=32, conditional=True, seed=3)
    module = DiffusionModule(
        backbone={"class_path": "MLP", "init_args": {"dim": 2, "hidden": 32, "depth": 2, "num_classes": 9,
                                                      "dropout": 0.2}},
        num_classes=9, cond_drop_prob=0.3, ema_decay=0.9, lr=1e-2, warmup_steps=3,
        val_num_samples=4, sample_steps=3, final_num_samples=0, seed=11)
    return dm, module


def _trainer(tmp_path, callbacks, **kw):
    return L.Trainer(max_steps=10, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False, default_root_dir=tmp_path, callbacks=callbacks,
                     num_sanity_val_steps=0, limit_val_batches=1, **kw)


def test_resume_is_bitwise_identical_to_uninterrupted_run(tmp_path):
    # 3 batches per epoch: the checkpoint at step 5 is in the middle of the second epoch
    dm, module = _setup()
    rec_a = _Losses()
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=5, save_top_k=-1)
    trainer = _trainer(tmp_path, [rec_a, ckpt_cb])
    trainer.fit(module, dm)
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    ckpt = tmp_path / "ck" / "epoch=1-step=5.ckpt"
    assert ckpt.is_file() and rec_a.steps == list(range(1, 11))

    dm_b, module_b = _setup()
    rec_b = _Losses()
    _trainer(tmp_path, [rec_b]).fit(module_b, dm_b, ckpt_path=ckpt, weights_only=True)
    assert rec_b.steps == list(range(6, 11))
    for a, b in zip(rec_a.losses[5:], rec_b.losses):
        assert torch.equal(a, b), (rec_a.losses[5:], rec_b.losses)
    sa, sb = module.state_dict(), module_b.state_dict()
    assert sa.keys() == sb.keys() and any(k.startswith("ema.") for k in sa)
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k

    # without the restored generator/RNG/data order the continuation is different (the test can fail)
    dm_c, module_c = _setup()
    rec_c = _Losses()
    raw = torch.load(ckpt, weights_only=True)
    raw.pop("polydiff")
    raw["loops"]["fit_loop"].pop("combined_loader", None)
    torch.save(raw, tmp_path / "stripped.ckpt")
    _trainer(tmp_path, [rec_c]).fit(module_c, dm_c, ckpt_path=tmp_path / "stripped.ckpt", weights_only=True)
    assert not all(torch.equal(a, c) for a, c in zip(rec_a.losses[5:], rec_c.losses))


def _cli_error(capsys, argv):
    code = cli.main(argv)
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.startswith("polydiff: error:")]
    assert code == 2 and len(lines) == 1 and "Traceback" not in captured.err + captured.out, captured.err
    return lines[0]


CONFIG = """\
trainer: {max_steps: 2, accelerator: cpu, limit_val_batches: 1, enable_model_summary: false, logger: false}
model:
  class_path: DiffusionModule
  init_args:
    backbone: {class_path: MLP, init_args: {dim: DIM, hidden: 16, depth: 1}}
    val_num_samples: 0
    final_num_samples: 0
data:
  class_path: polydiff.testing_data.MixtureDataModule
  init_args: {n_train: 64, n_val: 32, batch_size: 32}
"""


def test_one_clear_error_line_each(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    good = CONFIG.replace("DIM", "2")
    cases = {
        "key.yaml": (good.replace("hidden: 16", "hiden: 16"),
                     "unknown config key 'model.backbone.hiden'"),
        "top.yaml": (good.replace("max_steps: 2", "max_step: 2"), "unknown config key 'trainer.max_step'"),
        "name.yaml": (good.replace("class_path: MLP", "class_path: MLPP"),
                      "unknown component 'MLPP' (at 'backbone'); registered names: ["),
        "shape.yaml": (CONFIG.replace("DIM", "3"), "MLP input has shape (32, 2); expected (batch, 3)"),
    }
    for name, (text, expected) in cases.items():
        (tmp_path / name).write_text(text)
        line = _cli_error(capsys, ["fit", "--config", str(tmp_path / name)])
        assert expected in line, (name, line)
    line = _cli_error(capsys, ["fit", "--config", str(tmp_path / "key.yaml"), "--model.init_args.lrr", "1"])
    assert "unknown config key" in line
    line = _cli_error(capsys, ["sample", "--ckpt", str(tmp_path / "missing.ckpt")])
    assert line.endswith("missing.ckpt not found")


class _NoX(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"inputs": torch.zeros(2)}


def test_batches_breaking_the_contract_raise_one_typed_error(tmp_path):
    dm = MixtureDataModule(n_train=8, n_val=8, batch_size=4)
    dm.setup("fit")
    dm.train_set = _NoX()
    module = DiffusionModule(backbone={"class_path": "MLP", "init_args": {"dim": 2}}, final_num_samples=0)
    with pytest.raises(DataError, match=r"items must be mappings with key 'x' \(batch contract\); got \['inputs'\]"):
        L.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_checkpointing=False,
                  limit_val_batches=0, default_root_dir=tmp_path).fit(module, dm)
    with pytest.raises(ShapeError, match=r"a batch must be a mapping with key 'x'.*got \['inputs'\]"):
        dm.check_batch({"inputs": torch.zeros(4, 2)})
    with pytest.raises(ShapeError, match=r"yields batch\['x'\] of shape \(4, 3\); the model was built for items of shape \(2,\)"):
        dm.check_batch({"x": torch.zeros(4, 3)}, (2,))


def test_cli_checkpoint_keeps_last_at_the_final_step(tmp_path):
    """every_n_train_steps=2 with max_steps=5: the periodic save at step 4 and last.ckpt at step 5."""
    dm, module = _setup()
    cb = PolydiffCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=2)
    trainer = L.Trainer(max_steps=5, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[cb],
                        num_sanity_val_steps=0, limit_val_batches=0)
    trainer.fit(module, dm)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["epoch=1-step=4.ckpt", "last.ckpt"]
    assert torch.load(tmp_path / "ck" / "last.ckpt", weights_only=True)["global_step"] == 5
    assert oct((tmp_path / "ck" / "last.ckpt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask
