"""The ``polydiff`` command.

* ``fit | validate | test | predict`` — Lightning's ``LightningCLI`` (YAML ``--config``, ``--print_config``,
  subclass mode for the model and the data), after the plugins are loaded so that configs may use the short
  names of registered components (``class_path: UNet``, ``backbone: MLP``).
* ``sample`` — draw samples from a checkpoint and write the domain's files through the plugins' artifact hook.
* ``evaluate`` — draw samples and print the domain's metrics (rich table) and write them as JSON.
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
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, PolydiffError

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
# main() passes LightningCLI the preprocessed argv explicitly, which differs from sys.argv on purpose.
warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
BUILTIN_COMMANDS = (*LIGHTNING_COMMANDS, "sample", "evaluate", "plugins", "datasets", "new-plugin")


class CLIError(PolydiffError):
    """A command-line error (reported as one line)."""


# -- config preprocessing -------------------------------------------------------------------------------
def _resolve_config_file(path: str, registry, tmpdir: Path) -> str:
    import yaml

    p = Path(path)
    if not p.is_file():
        task = registry.items("task").get(path)
        if task is None:
            raise ConfigError(f"config file {path} not found, and no plugin registers a task of that name; "
                              f"registered tasks: {registry.names('task') or 'none'}")
        p = path = Path(task)
    try:
        cfg = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    if cfg is None:
        return path
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping (trainer:, model:, data:, ...)")
    from .plugins_manager import resolve_config_names

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
        ``weights_only`` checkpoint loading, and configs saved next to the logs."""

        def add_arguments_to_parser(self, parser) -> None:
            from .checkpointing import PolydiffCheckpoint

            parser.add_lightning_class_args(PolydiffCheckpoint, "checkpoint")

        def before_instantiate_classes(self) -> None:
            cfg = self.config[self.subcommand] if self.subcommand else self.config
            _follow_default_root_dir(cfg["trainer"])

    return PolydiffCLI


def run_lightning(argv: list[str]) -> int:
    from .data import DiffusionDataModule
    from .plugins_manager import get_plugin_manager
    from .training import DiffusionModule

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
    from the ``data:`` section of ``config``."""
    import torch

    from .training import DiffusionModule, _import_path

    path = Path(ckpt)
    if not path.is_file():
        raise ConfigError(f"checkpoint {ckpt} not found")
    module = DiffusionModule.from_checkpoint(path)
    dm = None
    if config is not None:
        dm = _datamodule_from_config(config)
    else:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        hp = dict(raw.get("datamodule_hyper_parameters") or {})
        inst = hp.pop("_instantiator", None)
        if inst is not None and "_class_path" in hp:
            from .data import DiffusionDataModule

            dm = _import_path(inst)(DiffusionDataModule, hp)
    if dm is not None:
        try:  # no prepare_data(): sampling must not start a download
            dm.setup("fit")
        except (PolydiffError, OSError) as exc:
            print(f"polydiff: warning: data module {type(dm).__name__} could not be set up ({exc}); sampling "
                  "without it (shape and domain from the checkpoint)", file=sys.stderr)
            return module, None
        module.attach_datamodule(dm)
    return module, dm


def _datamodule_from_config(config: str):
    import yaml

    from .plugins_manager import get_plugin_manager, resolve_config_names
    from .training import instantiate

    p = Path(config)
    if not p.is_file():
        raise ConfigError(f"config file {config} not found")
    cfg = yaml.safe_load(p.read_text()) or {}
    data = resolve_config_names(cfg, get_plugin_manager().registry).get("data")
    if data is None:
        raise ConfigError(f"{config}: has no 'data:' section")
    return instantiate(data, "datamodule")


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ckpt", required=True, help="checkpoint written by polydiff fit")
    p.add_argument("--config", default=None, help="config whose data: section builds the data module "
                   "(default: the one stored in the checkpoint)")
    p.add_argument("--sampler", default=None, help="sampler name (default: the model's)")
    p.add_argument("--steps", type=int, default=None, help="number of sampling steps")
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

    from .plugins_manager import get_plugin_manager

    module, dm = load_for_sampling(args.ckpt, args.config)
    if dm is None:
        raise CLIError("evaluate compares samples with the data module's reference data, and none is available: "
                       "pass --config with a data: section")
    ctx = {"datamodule": dm, "module": module, "stage": "evaluate", "generator": torch.Generator().manual_seed(args.seed)}
    with _console().status(f"sampling and evaluating {args.num} {module.domain} samples ..."):
        samples = module.generate(args.num, seed=args.seed, **_sample_kw(args))
        metrics = get_plugin_manager().evaluate(module.domain, samples, dm, ctx)
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
              **{k: v for k, v in _sample_kw(args).items()}, "metrics": metrics}
    from .io import atomic_write_text

    atomic_write_text(out, json.dumps(record, indent=2))
    print(f"metrics written to {out}")
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
    parser = argparse.ArgumentParser(
        prog="polydiff",
        description="One diffusion engine for many scientific domains.",
        epilog="fit/validate/test/predict take Lightning CLI options: polydiff fit --help",
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


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``polydiff``; returns the exit status (also used by tests)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] in LIGHTNING_COMMANDS:
            return run_lightning(argv)
        from .plugins_manager import get_plugin_manager

        pm = get_plugin_manager()
        try:
            commands = pm.commands()
        except Exception as exc:  # noqa: BLE001 - a plugin's command hook must not break the CLI
            print(f"polydiff: warning: a plugin's polydiff_commands failed: {exc}", file=sys.stderr)
            commands = {}
        parser = build_parser(commands)
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except PolydiffError as exc:
        return _fail(str(exc))
    except FileNotFoundError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def console_main() -> None:  # pragma: no cover - thin wrapper
    sys.exit(main())


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
