"""GPU-ready CLI: every config lets Lightning pick the accelerator, precision/devices/strategy come from the
command line, and ``--trainer.default_root_dir`` moves logs, checkpoints and samples together."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from polydiff import cli

REPO = Path(__file__).resolve().parents[2]


def _task_configs() -> list[Path]:
    return sorted((REPO / "plugins").glob("*/configs/*.yaml"))


def test_every_task_config_lets_lightning_pick_the_accelerator():
    configs = _task_configs()
    assert len(configs) >= 12
    for path in configs:
        trainer = (yaml.safe_load(path.read_text()) or {}).get("trainer") or {}
        assert trainer.get("accelerator", "auto") == "auto", f"{path.name}: accelerator {trainer.get('accelerator')}"


def _mixture_config(path: Path, steps: int = 2) -> Path:
    path.write_text(textwrap.dedent(f"""\
        trainer: {{max_steps: {steps}, limit_val_batches: 1, enable_model_summary: false, enable_progress_bar: false}}
        model:
          class_path: DiffusionModule
          init_args:
            backbone: {{class_path: MLP, init_args: {{dim: 2, hidden: 16, depth: 1}}}}
            val_num_samples: 0
            final_num_samples: 4
            sample_steps: 2
        data:
          class_path: polydiff.testing_data.MixtureDataModule
          init_args: {{n_train: 64, n_val: 32, batch_size: 32}}
        """))
    return path


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    torch.set_num_threads(n)


def test_default_root_dir_moves_logs_checkpoints_and_samples(in_tmp, capsys):
    cfg = _mixture_config(in_tmp / "m.yaml")
    assert cli.main(["fit", "--config", str(cfg), "--trainer.default_root_dir", "elsewhere"]) == 0
    assert not (in_tmp / "runs").exists()
    run = in_tmp / "elsewhere" / "polydiff_csv" / "version_0"
    if (in_tmp / "elsewhere" / "polydiff").is_dir():  # TensorBoard installed: it is the first logger
        run = in_tmp / "elsewhere" / "polydiff" / "version_0"
        assert list(run.glob("events.out.tfevents.*"))
    assert (in_tmp / "elsewhere" / "polydiff_csv" / "version_0" / "metrics.csv").is_file()
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 2
    assert (run / "samples" / "samples.pt").is_file()
    assert (run / "config.yaml").is_file()


def test_without_default_root_dir_everything_goes_to_runs(in_tmp):
    cfg = _mixture_config(in_tmp / "m.yaml")
    assert cli.main(["fit", "--config", str(cfg)]) == 0
    assert (in_tmp / "runs" / "polydiff_csv" / "version_0" / "metrics.csv").is_file()
    assert list((in_tmp / "runs").glob("*/version_0/checkpoints/last.ckpt"))


def test_user_logger_keeps_its_own_save_dir(in_tmp):
    cfg = _mixture_config(in_tmp / "m.yaml")
    args = ["fit", "--config", str(cfg), "--trainer.default_root_dir", "root",
            "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", "mylogs"]
    assert cli.main(args) == 0
    assert (in_tmp / "mylogs" / "lightning_logs" / "version_0" / "metrics.csv").is_file()


def test_bf16_mixed_precision_trains_on_cpu(in_tmp):
    cfg = _mixture_config(in_tmp / "m.yaml", steps=3)
    assert cli.main(["fit", "--config", str(cfg), "--trainer.precision", "bf16-mixed",
                     "--trainer.accelerator", "cpu", "--trainer.default_root_dir", "bf16"]) == 0
    ckpt = torch.load(next((in_tmp / "bf16").glob("*/version_0/checkpoints/last.ckpt")), weights_only=True)
    assert ckpt["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values() if v.is_floating_point())
    hp = yaml.safe_load(next((in_tmp / "bf16").glob("*/version_0/config.yaml")).read_text())
    assert hp["trainer"]["precision"] == "bf16-mixed"


def test_devices_and_strategy_parse_from_the_command_line(in_tmp, capsys):
    cfg = _mixture_config(in_tmp / "m.yaml")
    assert cli.main(["fit", "--config", str(cfg), "--trainer.devices", "2", "--trainer.strategy", "ddp",
                     "--trainer.precision", "bf16-mixed", "--print_config"]) == 0
    t = yaml.safe_load(capsys.readouterr().out)["trainer"]
    assert (str(t["devices"]), t["strategy"], t["precision"], t["accelerator"]) == ("2", "ddp", "bf16-mixed", "auto")
    # the parsed values build the trainer they say (on the CPU here; a GPU machine takes the same values)
    import lightning as L
    from lightning.pytorch.strategies import DDPStrategy

    trainer = L.Trainer(accelerator="cpu", devices=t["devices"], strategy=t["strategy"], precision=t["precision"],
                        logger=False, enable_checkpointing=False)
    assert trainer.num_devices == 2 and isinstance(trainer.strategy, DDPStrategy)
    assert trainer.precision == "bf16-mixed"
