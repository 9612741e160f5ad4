"""The ``polydiff`` command.

* ``fit | validate | test | predict`` — Lightning's ``LightningCLI`` (YAML ``--config``, ``--print_config``,
  subclass mode for the model and the data), after the plugins are loaded so that configs may use the short
  names of registered components (``class_path: UNet``, ``backbone: MLP``).
* ``sample`` — draw samples from a checkpoint and write the domain's files through the plugins' artifact hook.
* ``evaluate`` — draw samples and print the domain's metrics (rich table) and write them as JSON.
* ``optimize-schedule`` — fit a sampler's time grid for a number of steps to the model (GITS dynamic programming,
  :func:`polydiff.samplers.optimize_grid`) and store it in the checkpoint, written atomically; ``sample`` and
  ``evaluate`` with that sampler and ``--steps`` then use it (``--grid KIND`` overrides).
* ``plugins`` — every plugin with its version, status, components and the pip command for missing extras.
* ``datasets list | download | verify`` — the dataset registry of :mod:`polydiff.datasets`.
* ``new-plugin NAME`` — write a ready third-party plugin package (:mod:`polydiff.scaffold`).
* plus the subcommands plugins add through ``polydiff_commands``.

Errors the user can fix (unknown config keys, unknown component names, wrong data shapes, missing files) are
printed as one line ``polydiff: error: ...`` with exit status 2, not as a traceback.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, DataError, PolydiffError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# main() passes LightningCLI the preprocessed argv explicitly, which differs from sys.argv on purpose.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
BUILTIN_COMMANDS = (*LIGHTNING_COMMANDS, "sample", "evaluate", "optimize-schedule", "plugins", "datasets", "new-plugin",
                    "convert")


class CLIError(PolydiffError):
    """A command-line error (reported as one line)."""


# -- config preprocessing -------------------------------------------------------------------------------
def _resolve_config_file(path: str, registry, tmpdir: Path) -> str:
    import yaml

    from .plugins_manager import resolve_config_names
    from .components import load_yaml_config

    p = Path(path)
    if not p.is_file():
        task = registry.items("task").get(path)
        if task is None:
            raise ConfigError(f"config file {path} not found, and no plugin registers a task of that name; "
                              f"registered tasks: {registry.names('task') or 'none'}")
        p = path = Path(task)
    cfg = load_yaml_config(p)
    if not cfg:
        return str(path)

    resolved = resolve_config_names(cfg, registry)
    if resolved == cfg:
        return str(path)
    out = tmpdir / f"{len(list(tmpdir.iterdir()))}_{p.name}"
    out.write_text(yaml.safe_dump(resolved, sort_keys=False))
    return str(out)


def preprocess_args(argv: list[str], registry, tmpdir: Path) -> list[str]:
    """Resolve short component names in ``--config`` files and ``--*.class_path NAME`` arguments."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg in ("--config", "-c") and i + 1 < len(argv):
            out += [arg, _resolve_config_file(argv[i + 1], registry, tmpdir)]
            i += 2
            continue
        if arg.startswith("--config="):
            out.append("--config=" + _resolve_config_file(arg.split("=", 1)[1], registry, tmpdir))
            i += 1
            continue
        key, eq, val = arg.partition("=")
        if key.startswith("--") and key.endswith(".class_path"):
            kind = key[2:-len(".class_path")].split(".")[-1]
            kinds = _kinds_for(kind)
            if eq:
                out.append(f"{key}={registry.class_path(val, kinds)}")
                i += 1
            elif i + 1 < len(argv):
                out += [arg, registry.class_path(argv[i + 1], kinds)]
                i += 2
            else:
                out.append(arg)
                i += 1
            continue
        out.append(arg)
        i += 1
    return out


def _kinds_for(key: str):
    from .hookspecs import COMPONENT_KINDS

    special = {"model": ("module",), "data": ("datamodule",)}
    if key in special:
        return special[key]
    return (key,) if key in COMPONENT_KINDS else None


# -- Lightning commands ---------------------------------------------------------------------------------
DEFAULT_ROOT = "runs"
_DEFAULT_LOGGERS = {"lightning.pytorch.loggers.TensorBoardLogger": "polydiff",
                    "lightning.pytorch.loggers.CSVLogger": "polydiff_csv"}


def _trainer_defaults() -> dict[str, Any]:
    loggers = []
    for cls, name in _DEFAULT_LOGGERS.items():
        if cls.endswith("TensorBoardLogger") and not (importlib.util.find_spec("tensorboard")
                                                      or importlib.util.find_spec("tensorboardX")):
            continue
        loggers.append({"class_path": cls, "init_args": {"save_dir": DEFAULT_ROOT, "name": name}})
    return {"default_root_dir": DEFAULT_ROOT, "logger": loggers}


def _follow_default_root_dir(trainer_cfg) -> None:
    """``--trainer.default_root_dir DIR`` moves everything: the default loggers (which Lightning would otherwise
    keep under ``runs/``) write under DIR, and with them the checkpoints and samples (both live in the first
    logger's folder). Loggers the user configured keep their own ``save_dir``."""
    root = trainer_cfg.get("default_root_dir")
    loggers = trainer_cfg.get("logger")
    if not root or str(root) == DEFAULT_ROOT or not isinstance(loggers, list):
        return
    for lg in loggers:
        init = getattr(lg, "init_args", None)
        if (getattr(lg, "class_path", None) in _DEFAULT_LOGGERS and init is not None
                and init.get("save_dir") == DEFAULT_ROOT and init.get("name") == _DEFAULT_LOGGERS[lg.class_path]):
            init["save_dir"] = str(root)


def _make_cli_class():
    from lightning.pytorch.cli import LightningCLI

    class PolydiffCLI(LightningCLI):
        """LightningCLI with polydiff defaults: seed 0, TensorBoard + CSV logs, checkpoints with a ``last.ckpt``,
        ``weights_only`` checkpoint loading, configs saved next to the logs, and ``--ckpt_path last`` / a run
        folder resolved to the newest valid checkpoint (:func:`resolve_ckpt_path`)."""

        def add_arguments_to_parser(self, parser) -> None:
            from .checkpointing import PolydiffCheckpoint

            parser.add_lightning_class_args(PolydiffCheckpoint, "checkpoint")

        def _parse_ckpt_path(self) -> None:
            """Lightning merges a ``--ckpt_path`` file's hyper-parameters into the model config, where jsonargparse
            would import the class paths it names: the file is read by polydiff's loader and every class path
            in it must be registered before Lightning sees it."""
            if self.config.get("subcommand"):
                ckpt_path = self.config[self.config.subcommand].get("ckpt_path")
                if ckpt_path and _is_local_file(ckpt_path):
                    from .checkpointing import load_checkpoint
                    from .components import check_registered

                    hp = load_checkpoint(ckpt_path).get("hyper_parameters") or {}
                    check_registered(hp, f"{ckpt_path}: hyper_parameters")
            super()._parse_ckpt_path()

        def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
            kwargs = super()._prepare_subcommand_kwargs(subcommand)
            if kwargs.get("ckpt_path") is not None:
                kwargs["ckpt_path"] = resolve_ckpt_path(kwargs["ckpt_path"], self.trainer)
            return kwargs

        def before_instantiate_classes(self) -> None:
            cfg = self.config[self.subcommand] if self.subcommand else self.config
            _follow_default_root_dir(cfg["trainer"])

    return PolydiffCLI


def resolve_ckpt_path(value, trainer) -> str | None:
    """What ``--ckpt_path`` means to polydiff.

    * ``last`` or a folder: the checkpoint with the highest recorded ``global_step`` among the files that load
      (:func:`polydiff.checkpointing.find_resume_checkpoint`), in the folder, or for ``last`` in the
      ``checkpoint.dirpath`` if one is configured, else in the newest run of the logger that holds checkpoints
      (``runs/polydiff/version_N/checkpoints``). Stale temporary files there are removed first. The choice is
      printed.
    * a file: checked to be a readable checkpoint with a state_dict (one-line error otherwise).
    * ``best``, ``hpc``, remote URLs: Lightning's meaning.
    """
    from .checkpointing import _is_local, find_resume_checkpoint, load_checkpoint

    value = str(value)
    if value in ("best", "hpc") or not _is_local(value):
        return value
    if value == "last":
        folder = _last_run_folder(trainer)
    elif Path(value).is_dir():
        folder = Path(value)
    else:
        ckpt = load_checkpoint(value)
        state = ckpt.get("state_dict")
        if not isinstance(state, dict) or not all(isinstance(k, str) and hasattr(v, "shape") for k, v in state.items()):
            raise DataError(f"checkpoint {value} has no state_dict of named tensors; expected a file written by "
                            "polydiff fit")
        return value
    path, step = find_resume_checkpoint(folder)
    print(f"polydiff: resuming from {path} (global step {step})", file=sys.stderr, flush=True)
    return str(path)


def _is_local_file(value) -> bool:
    from .checkpointing import _is_local

    return _is_local(value) and Path(str(value)).is_file()


def _last_run_folder(trainer) -> Path:
    cb = getattr(trainer, "checkpoint_callback", None)
    if cb is not None and getattr(cb, "dirpath", None):
        return Path(cb.dirpath)
    logger = trainer.logger
    if logger is None:
        return Path(trainer.default_root_dir) / "checkpoints"
    root = Path(getattr(logger, "root_dir", None) or logger.save_dir or trainer.default_root_dir)

    def version(p: Path) -> int:
        tail = p.name.rpartition("_")[2]
        return int(tail) if tail.isdigit() else -1

    runs = sorted((p for p in root.glob("version_*") if (p / "checkpoints").is_dir()), key=version)
    if not runs:
        raise DataError(f"--ckpt_path last: no run with checkpoints under {root}; pass the run folder or a "
                        "checkpoint file")
    return runs[-1] / "checkpoints"


def run_lightning(argv: list[str]) -> int:
    from .data import DiffusionDataModule
    from .plugins_manager import get_plugin_manager
    from .training import DiffusionModule

    import logging

    logging.getLogger("lightning.fabric.utilities.seed").setLevel(logging.WARNING)  # "Seed set to 0" is noise
    pm = get_plugin_manager()
    with tempfile.TemporaryDirectory(prefix="polydiff_cfg_") as tmp:
        args = preprocess_args(argv, pm.registry, Path(tmp))
        args = _default_weights_only(args)
        cli_cls = _make_cli_class()
        try:
            cli_cls(
                DiffusionModule,
                DiffusionDataModule,
                subclass_mode_model=True,
                subclass_mode_data=True,
                seed_everything_default=0,
                trainer_defaults=_trainer_defaults(),
                save_config_kwargs={"overwrite": True},
                auto_configure_optimizers=False,
                parser_kwargs={"exit_on_error": False},
                args=args,
            )
        except SystemExit as exc:  # --help / --print_config exit 0
            return int(exc.code or 0)
        except argparse.ArgumentError as exc:
            raise ConfigError(condense_parser_error(str(exc))) from None
    return 0


def _default_weights_only(args: list[str]) -> list[str]:
    """``fit/validate/test/predict --ckpt_path`` load with ``weights_only=True`` unless the user says otherwise."""
    if any(a.startswith("--ckpt_path") for a in args) and not any(a.startswith("--weights_only") for a in args):
        return [*args, "--weights_only=true"]
    return args


def condense_parser_error(msg: str) -> str:
    """jsonargparse reports a bad config as a nested, multi-line explanation; reduce it to one line naming the
    full key and what is wrong (``unknown config key 'model.backbone.hiddenn'``)."""
    path: list[tuple[int, str]] = []
    skip = ("Problem with given class_path", "Does not validate", "Subtypes:", "Errors:", "Given value",
            "Expected a <class 'NoneType'>")
    for raw in msg.splitlines():
        if not raw.strip():
            continue
        indent = len(raw) - len(raw.lstrip(" -"))
        line = raw.strip(" -")
        while path and path[-1][0] >= indent:
            path.pop()
        m = re.match(r'Parser key "([^"]+)":?\s*(.*)', line)
        if m:
            path.append((indent, m.group(1)))
            line = m.group(2)
            if not line:
                continue
        if line.startswith(skip):
            continue
        where = ".".join(k for _, k in path)
        m = (re.search(r"Option '([^']+)' is not accepted", line) or re.search(r'Key "([^"]+)" is not expected', line)
             or re.search(r"does not accept option '([^']+)'", line))
        if m:
            key = f"{where}.{m.group(1)}" if where else m.group(1)
            return f"unknown config key {key!r} (not a parameter there; check spelling and nesting)"
        m = re.search(r"(?:Unrecognized arguments|unrecognized arguments):\s*(.*)", line)
        if m:
            return f"unknown option(s) {m.group(1)}"
        return f"{where}: {line}" if where else line
    first = msg.strip().splitlines()
    return first[0] if first else "invalid arguments"


# -- sample / evaluate ----------------------------------------------------------------------------------
def load_for_sampling(ckpt: str, config: str | None = None):
    """(module, datamodule | None) from a checkpoint; the data module comes from the checkpoint (CLI-made) or
    from the ``data:`` section of ``config``. Both are rebuilt through the plugin registry only."""
    from .components import datamodule_from_checkpoint, datamodule_from_config, load_model_checkpoint
    from .training import DiffusionModule

    raw = load_model_checkpoint(ckpt)
    module = DiffusionModule.from_checkpoint(ckpt, checkpoint=raw)
    dm = datamodule_from_config(config) if config is not None else datamodule_from_checkpoint(raw, ckpt)
    if dm is not None:
        # a data module that stores what sampling needs in its Lightning ``state_dict`` (``samples_from_state``)
        # gets it back first, and then samples from it when its data cannot be read
        state = raw.get(type(dm).__qualname__) if getattr(dm, "samples_from_state", False) else None
        if isinstance(state, Mapping) and state:
            dm.load_state_dict(dict(state))
        try:  # no prepare_data(): sampling must not start a download
            dm.setup("fit")
        except Exception as exc:  # noqa: BLE001 - data gone, offline, or a bad data config
            why = one_line(str(exc) or type(exc).__name__)
            if config is not None:  # the user asked for this data module: its failure is the error
                raise ConfigError(f"{config}: data module {type(dm).__name__} could not be set up ({why})") from None
            if isinstance(state, Mapping) and state:
                print(f"polydiff: warning: data module {type(dm).__name__} could not be set up ({why}); sampling "
                      "from the state it stored in the checkpoint", file=sys.stderr)
                module.attach_datamodule(dm)
                return module, dm
            print(f"polydiff: warning: data module {type(dm).__name__} could not be set up ({why}); sampling "
                  "without it (shape and domain from the checkpoint)", file=sys.stderr)
            return module, None
        module.attach_datamodule(dm)
    return module, dm


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint written by polydiff fit")
    p.add_argument("--config", default=None, help="config whose data: section builds the data module "
                   "(default: the one stored in the checkpoint)")
    p.add_argument("--sampler", default=None, help="sampler name (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="number of sampling steps")
    p.add_argument("--grid", default=None, help="time grid kind (uniform, log_snr, karras, trailing, ...); default: "
                   "the schedule optimised for this sampler and step count when the checkpoint holds one "
                   "(polydiff optimize-schedule), else the configured grid")
    p.add_argument("--guidance_scale", type=float, default=None, help="classifier-free guidance scale w")
    p.add_argument("--num", type=int, default=64, help="number of samples")
    p.add_argument("--seed", type=int, default=0, help="seed of the noise and of the conditions")
    p.add_argument("--sizes", default=None, help="node counts of variable-size samples: N (all N) or LO:HI (drawn "
                   "from the training size histogram restricted to [LO, HI]); default: the whole histogram")


def _sample_kw(args) -> dict:
    kw = {}
    if args.sampler is not None:
        kw["sampler"] = args.sampler
    if args.steps is not None:
        kw["steps"] = args.steps
    if args.guidance_scale is not None:
        kw["guidance_scale"] = args.guidance_scale
    if getattr(args, "grid", None) is not None:
        from .samplers import GRIDS

        if args.grid not in GRIDS:
            raise CLIError(f"--grid {args.grid!r} is not a grid kind; expected one of {list(GRIDS)}")
        kw["grid"] = args.grid
    if getattr(args, "sizes", None) is not None:
        kw["sizes"] = args.sizes
    return kw


def cmd_sample(args) -> int:
    module, _ = load_for_sampling(args.ckpt, args.config)
    out = Path(args.out)
    with _console().status(f"sampling {args.num} {module.domain} samples ..."):
        paths = module.write_samples(args.num, out, seed=args.seed, stage="sample", prefix="samples",
                                     **_sample_kw(args))
    _console().print(f"[bold]{len(paths)} file(s) written[/bold] ({module.domain}, {args.num} samples):")
    for p in paths:
        print(p)
    return 0


def cmd_evaluate(args) -> int:
    import torch

    from .evaluation import write_and_evaluate

    module, dm = load_for_sampling(args.ckpt, args.config)
    if dm is None:
        raise CLIError("evaluate compares samples with the data module's reference data, and none is available: "
                       "pass --config with a data: section")
    with _console().status(f"sampling and evaluating {args.num} {module.domain} samples ..."):
        samples = module.generate(args.num, seed=args.seed, **_sample_kw(args))
        _, metrics = write_and_evaluate(module, samples, "evaluate", evaluate=True,
                                        generator=torch.Generator().manual_seed(args.seed), checkpoint=args.ckpt)
    if not metrics:
        raise CLIError(f"no installed plugin evaluates domain {module.domain!r} (see `polydiff plugins`)")
    from rich.table import Table

    table = Table(title=f"{module.domain}: {args.num} samples, seed {args.seed}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in metrics.items():
        table.add_row(k, f"{v:.6g}")
    _console().print(table)
    out = Path(args.out) if args.out else Path(args.ckpt).with_suffix(".metrics.json")
    record = {"checkpoint": str(args.ckpt), "domain": module.domain, "num": args.num, "seed": args.seed,
              **{k: v for k, v in _sample_kw(args).items()}, "grid_used": _grid_used(module, args), "metrics": metrics}
    from .io import atomic_write_text

    atomic_write_text(out, json.dumps(record, indent=2))
    print(f"metrics written to {out}")
    return 0


def _grid_used(module, args) -> str:
    """What ``sample``/``evaluate`` stepped on: the --grid kind, "optimized" or the configured default."""
    from .checkpointing import schedule_key

    if args.grid is not None:
        return args.grid
    h = module.hparams
    sampler = args.sampler or h.get("sampler") or module.default_sampler
    steps = args.steps or h.get("sample_steps")  # None: the module steps its own chain (e.g. Luo & Hu's T steps)
    if steps is not None and schedule_key(sampler, int(steps)) in module.schedules:
        return "optimized"
    return str(dict(h.sampler_kwargs or {}).get("grid", "uniform"))


def cmd_optimize_schedule(args) -> int:
    from .checkpointing import atomic_torch_save, schedule_key
    from .components import load_model_checkpoint

    module, _ = load_for_sampling(args.ckpt, args.config)
    if module.is_discrete:
        raise CLIError("optimize-schedule needs a continuous (Gaussian) model; this checkpoint's process is discrete")
    opts = {"fine_steps": args.fine_steps, "refine_sweeps": args.refine_sweeps, "restarts": args.restarts,
            "candidates": args.candidates}
    info: dict = {}
    h = module.hparams
    sampler = args.sampler or h.sampler or module.default_sampler
    steps = int(args.steps or h.sample_steps)
    with _console().status(f"optimising the {steps}-step grid of {sampler} on {args.references} reference "
                           "trajectories ..."):
        module.optimize_schedule(sampler, steps, references=args.references, seed=args.seed,
                                 guidance_scale=args.guidance_scale, info=info, **opts)
    key = schedule_key(sampler, steps)
    entry = module.schedules[key]
    raw = load_model_checkpoint(args.ckpt)  # a foreign checkpoint is written back as a polydiff one
    extra = dict(raw.get("polydiff") or {})
    extra["schedules"] = {**dict(extra.get("schedules") or {}), key: entry}
    raw["polydiff"] = extra
    out = Path(args.out) if args.out else Path(args.ckpt)
    atomic_torch_save(raw, out)
    errs = ", ".join(f"{k} {v:.4g}" for k, v in info["errors"].items())
    print(f"grid: {[round(t, 5) for t in entry['grid'].tolist()]}")
    print(f"RMSE to the teacher's end points on the references: {errs}")
    print(f"schedule {key!r} written to {out} (model evaluations per reference: {info['nfe']:.0f})")
    return 0


def cmd_convert(args) -> int:
    """Write a foreign checkpoint (a paper's released weights) as a polydiff checkpoint, atomically."""
    from .checkpointing import atomic_torch_save
    from .plugins_manager import get_plugin_manager
    from .components import load_model_checkpoint
    from .training import DiffusionModule

    convs = get_plugin_manager().checkpoint_converters()
    if args.list:
        for name, conv in sorted(convs.items()):
            print(f"{name}: {conv.description}")
        return 0
    if not args.ckpt or not args.out:
        raise CLIError("convert needs --ckpt IN and --out OUT (or --list)")
    options = {}
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CLIError(f"--set takes KEY=VALUE, got {item!r}")
        options[key] = value
    ckpt = load_model_checkpoint(args.ckpt, options=options, fmt=args.format)
    module = DiffusionModule.from_checkpoint(args.ckpt, checkpoint=ckpt)  # refuses what would not load back
    atomic_torch_save(ckpt, args.out)
    print(f"polydiff convert: wrote {args.out} ({type(module.denoiser.backbone).__name__}, domain {module.domain!r}, "
          f"sample shape {list(module.sample_shape)})")
    return 0


# -- plugins / datasets ---------------------------------------------------------------------------------
def _console():
    from rich.console import Console

    return Console(soft_wrap=True)


def cmd_plugins(args) -> int:
    from rich.table import Table

    from .plugins_manager import get_plugin_manager

    pm = get_plugin_manager()
    table = Table(title="polydiff plugins (entry-point group 'polydiff')")
    for col in ("plugin", "version", "status", "components", "fix"):
        table.add_column(col, overflow="fold")
    style = {"ok": "green", "missing extra": "yellow", "broken": "red"}
    for info in pm.infos.values():
        comps = ", ".join(info.components) if info.components else "-"
        fix = info.pip if info.status == "missing extra" else (info.error if info.status == "broken" else "")
        table.add_row(info.name, info.version or "?", f"[{style[info.status]}]{info.status}[/]", comps, fix)
    con = _console()
    con.print(table)
    for info in pm.infos.values():
        if not info.ok:
            print(info.summary())
    for info in pm.infos.values():
        for comp, note in pm.registry.notes(info.name).items():
            con.print(f"[yellow]note[/] {info.name} {comp}: {note}", highlight=False)
    return 0


def _datasets() -> dict:
    """The datasets every plugin declares through the ``polydiff_datasets`` hook."""
    from .plugins_manager import get_plugin_manager

    return get_plugin_manager().datasets()


def cmd_datasets_list(args) -> int:
    from rich.table import Table

    table = Table(title="polydiff datasets")
    for col in ("name", "domain", "files", "licence", "description"):
        table.add_column(col, overflow="fold")
    for name, info in sorted(_datasets().items()):
        table.add_row(name, info.domain, str(len(info.files)), info.licence, info.description)
    _console().print(table)
    return 0


def _dataset_files(name: str, only: str | None):
    known = _datasets()
    if name not in known:
        raise CLIError(f"unknown dataset {name!r}; declared by the installed plugins: {sorted(known)}")
    info = known[name]
    files = [f for f in info.files if only is None or f.name == only]
    if not files:
        raise CLIError(f"dataset {name!r} has no file {only!r}; files: {[f.name for f in info.files]}")
    return info, files


def cmd_datasets_download(args) -> int:
    info, files = _dataset_files(args.name, args.file)
    for f in files:
        try:
            path = info.fetch(f.name, root=args.root)
        except PolydiffError:
            raise
        except Exception as exc:  # noqa: BLE001 - network/HTTP errors of pooch/requests become one line
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise CLIError(f"download of {args.name}/{f.name} from {f.url} failed: {first}") from None
        print(f"{f.name}: {path}")
    return 0


def cmd_datasets_verify(args) -> int:
    info, files = _dataset_files(args.name, args.file)
    bad = 0
    for f in files:
        try:
            path = info.verify(f.name, root=args.root)
            print(f"ok       {path}" + ("" if f.sha256 else " (no published sha256)"))
        except PolydiffError as exc:
            bad += 1
            print(f"FAILED   {exc}")
    return 1 if bad else 0


def cmd_new_plugin(args) -> int:
    from .scaffold import new_plugin, plugin_names

    root = new_plugin(args.name, args.dest, force=args.force).resolve()
    n = plugin_names(args.name)
    print(f"plugin package written to {root}")
    print(f"  pip install -e \"{root}[{n['name']},test]\" && pytest {root / 'tests'} && polydiff plugins")
    return 0


# -- entry point ----------------------------------------------------------------------------------------
def build_parser(plugin_commands: dict) -> argparse.ArgumentParser:
    parser = _Parser(
        prog="polydiff",
        description="One diffusion engine for many scientific domains.",
        epilog="fit/validate/test/predict take Lightning CLI options: polydiff fit --help. --debug (or "
               "POLYDIFF_DEBUG=1) shows tracebacks instead of one-line errors.",
    )
    sub = parser.add_subparsers(dest="command", metavar="command")
    for name in LIGHTNING_COMMANDS:
        sub.add_parser(name, help=f"Lightning {name} with a YAML --config", add_help=False)
    p = sub.add_parser("sample", help="draw samples from a checkpoint and write the domain's files")
    _add_sampling_args(p)
    p.add_argument("--out", default="samples", help="output directory")
    p.set_defaults(func=cmd_sample)
    p = sub.add_parser("evaluate", help="draw samples and compute the domain's metrics")
    _add_sampling_args(p)
    p.add_argument("--out", default=None, help="JSON file for the metrics (default: <ckpt>.metrics.json)")
    p.set_defaults(func=cmd_evaluate)
    p = sub.add_parser("optimize-schedule", help="fit a sampler's time grid to the model and store it in the checkpoint")
    p.add_argument("--ckpt", required=True, help="checkpoint written by polydiff fit (rewritten atomically)")
    p.add_argument("--config", default=None, help="config whose data: section builds the data module")
    p.add_argument("--sampler", default=None, help="deterministic sampler to fit (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="number of steps of the grid (default: the model's)")
    p.add_argument("--guidance_scale", type=float, default=None, help="classifier-free guidance scale w")
    p.add_argument("--references", type=int, default=256, help="number of reference trajectories")
    p.add_argument("--fine_steps", type=int, default=80, help="intervals of the fine grid searched by the DP")
    p.add_argument("--refine_sweeps", type=int, default=12, help="coordinate-search sweeps after the DP (0: none)")
    p.add_argument("--restarts", type=int, default=2, help="best start grids refined (the best result is kept)")
    p.add_argument("--candidates", type=int, default=8, help="points tried per grid time in each sweep")
    p.add_argument("--seed", type=int, default=0, help="seed of the reference starting points")
    p.add_argument("--out", default=None, help="write the checkpoint here instead of over --ckpt")
    p.set_defaults(func=cmd_optimize_schedule)
    p = sub.add_parser("convert", help="write a foreign checkpoint (e.g. a paper's released weights) as a polydiff "
                       "checkpoint with its hyper-parameters and data statistics")
    p.add_argument("--ckpt", default=None, help="the foreign checkpoint")
    p.add_argument("--out", default=None, help="the polydiff checkpoint to write")
    p.add_argument("--format", default=None, help="converter name (default: the one that recognises the file)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="converter option (repeatable)")
    p.add_argument("--list", action="store_true", help="list the installed converters")
    p.set_defaults(func=cmd_convert)
    p = sub.add_parser("plugins", help="list plugins, their status, components and missing extras")
    p.set_defaults(func=cmd_plugins)
    p = sub.add_parser("datasets", help="list, download or verify datasets")
    dsub = p.add_subparsers(dest="action", metavar="action", required=True)
    q = dsub.add_parser("list", help="registered datasets")
    q.set_defaults(func=cmd_datasets_list)
    for action, func, helptext in (("download", cmd_datasets_download, "download (sha256-checked) into the cache"),
                                   ("verify", cmd_datasets_verify, "check local files against their sha256")):
        q = dsub.add_parser(action, help=helptext)
        q.add_argument("name")
        q.add_argument("--file", default=None, help="only this file of the dataset")
        q.add_argument("--root", default=None, help="folder holding the files (default: the cache)")
        q.set_defaults(func=func)
    p = sub.add_parser("new-plugin", help="write a ready third-party plugin package (entry point, data module, "
                       "backbone, task YAML, conformance test)")
    p.add_argument("name", help="plugin, domain and entry-point name (lower case, e.g. 'seismic')")
    p.add_argument("--dest", default=".", help="folder in which polydiff-NAME/ is created")
    p.add_argument("--force", action="store_true", help="overwrite the files of an existing folder")
    p.set_defaults(func=cmd_new_plugin)
    for name, (helptext, add_arguments, run) in plugin_commands.items():
        if name in BUILTIN_COMMANDS:
            continue
        q = sub.add_parser(name, help=helptext)
        add_arguments(q)
        q.set_defaults(func=run)
    return parser


def _fail(msg: str, code: int = 2) -> int:
    print(f"polydiff: error: {msg}", file=sys.stderr)
    return code


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line as one ``polydiff: error:`` line (no usage block)."""

    def error(self, message):
        raise CLIError(f"{message} (see `{self.prog} --help`)")


def one_line(text: str, limit: int = 400) -> str:
    """``text`` on one line (newlines folded, long messages cut)."""
    text = " ".join(part.strip() for part in str(text).splitlines() if part.strip())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_error(exc: BaseException) -> tuple[int, str]:
    """(exit status, one-line message) for an exception that reached :func:`main`.

    Status 2 is a bad input the user can fix: a polydiff typed error anywhere in the exception's chain (Lightning
    and jsonargparse wrap ours), a bad command line or config, a missing or unreadable file, a checkpoint
    whose weights do not fit its model. Anything else is status 1, reported as unexpected."""
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    for e in seen:
        if isinstance(e, PolydiffError):
            return 2, one_line(str(e))
    for e in seen:
        if isinstance(e, argparse.ArgumentError):
            return 2, one_line(condense_parser_error(str(e)))
        if isinstance(e, OSError) and getattr(e, "filename", None):
            return 2, one_line(f"{e.filename}: {e.strerror or e}")
        if type(e).__name__ in ("MisconfigurationException", "YAMLError") or type(e).__module__.startswith("yaml"):
            return 2, one_line(str(e))
        if isinstance(e, RuntimeError) and str(e).startswith("Error(s) in loading state_dict"):
            return 2, one_line("the checkpoint's weights do not fit the configured model: " + str(e), 300)
    first = one_line(str(exc), 300) or "(no message)"
    return 1, (f"unexpected {type(exc).__name__}: {first} (a bug in polydiff or a plugin; rerun with --debug or "
               "POLYDIFF_DEBUG=1 for the traceback)")


def debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("POLYDIFF_DEBUG", "").strip().lower() not in ("", "0", "false", "no")


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"polydiff: warning: {one_line(str(message))}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``polydiff``; returns the exit status (also used by tests).

    Every error is one line ``polydiff: error: ...`` on stderr: status 2 for bad input (a file, config or option
    the user can fix), 1 for anything unexpected, 130 for Ctrl-C. ``--debug`` (anywhere on the command line)
    or ``POLYDIFF_DEBUG=1`` shows the traceback instead, and Python's warnings in full."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debug_requested(argv)
    argv = [a for a in argv if a != "--debug"]
    saved_format = warnings.formatwarning
    if not debug:
        warnings.formatwarning = _one_line_warning
    try:
        return _main(argv)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line; --debug shows the traceback
        if debug:
            raise
        code, msg = describe_error(exc)
        return _fail(msg, code)
    finally:
        warnings.formatwarning = saved_format


def _main(argv: list[str]) -> int:
    if argv and argv[0] in LIGHTNING_COMMANDS:
        return run_lightning(argv)
    from .plugins_manager import get_plugin_manager

    pm = get_plugin_manager()
    try:
        commands = pm.commands()
    except Exception as exc:  # noqa: BLE001 - a plugin's command hook must not break the CLI
        print(f"polydiff: warning: a plugin's polydiff_commands failed: {one_line(str(exc))}", file=sys.stderr)
        commands = {}
    parser = build_parser(commands)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


def console_main() -> None:  # pragma: no cover - thin wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
