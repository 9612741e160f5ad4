"""Components from names and specs, read from files as data: the registry-only way from a name to code.

A component may be given as an object, a registry short name (``"MLP"``) or a spec
``{"class_path": "MLP", "init_args": {...}}``. :func:`instantiate` builds it; :func:`resolve_component` is the
one place a name becomes a class, and it consults only the plugin registry (never ``importlib``), so names
read from checkpoints and configs can reach only classes an installed plugin registered.
:func:`rebuild_from_hparams` rebuilds a module or data module from a checkpoint's hyper-parameters,
:func:`load_yaml_config` reads a config with ``yaml.safe_load``, and :func:`datamodule_from_checkpoint` /
:func:`datamodule_from_config` give the data module of a checkpoint or of a config's ``data:`` section.
:func:`plain_value` turns hyper-parameters into ``weights_only``-loadable plain data.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError, DataError, PolydiffError

# The only instantiator LightningCLI writes into hyper-parameters. polydiff never calls it (it would import
# whatever class path the file names); it only recognises it and rebuilds through the registry instead.
LIGHTNING_INSTANTIATOR = "lightning.pytorch.cli.instantiate_module"
# what a constructor raises when a spec holds values of the wrong type or an impossible size (e.g. a layer of
# 10^12 units read from a damaged checkpoint): reported as a ConfigError naming the spec
_BUILD_ERRORS = (TypeError, ValueError, AttributeError, KeyError, IndexError, OverflowError, RuntimeError, MemoryError)


_REGISTRY_SCOPE: ContextVar = ContextVar("polydiff_registry_scope", default=None)


@contextmanager
def registry_scope(registry):
    """Resolve component names through ``registry`` instead of the process-wide plugin manager's inside the
    block (e.g. :func:`polydiff.testing.check_plugin`, which loads the plugin under test into its own manager)."""
    token = _REGISTRY_SCOPE.set(registry)
    try:
        yield registry
    finally:
        _REGISTRY_SCOPE.reset(token)


def resolve_component(path: Any, kind: str, where: str | None = None) -> type:
    """The registered class named by ``path`` (a short name or a full class path equal to a registered
    class's ``module.qualname``); anything else is a one-line :class:`ConfigError` naming ``where`` (the key)
    and the value. Nothing is imported: names read from files (checkpoints, configs given to ``sample``)
    can reach only components that an installed plugin registered."""
    from .hookspecs import COMPONENT_KINDS
    from .plugins_manager import get_plugin_manager

    where = where or kind
    registry = _REGISTRY_SCOPE.get() or get_plugin_manager().registry
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{where}: class_path must be a component name, got {path!r}")
    kinds = (kind,) if kind in COMPONENT_KINDS and "." not in path else None
    hit = registry.resolve(path, kinds)
    if hit is None and kinds is None and "." not in path:
        hit = registry.resolve(path)
    if hit is None or not isinstance(hit[2], type):
        hint = missing_plugin_hint(path)
        if "." not in path and hint == "" and kinds:
            raise ConfigError(f"{where}: unknown {kind} {path!r}; registered {kind}s: {registry.names(kind) or 'none'}")
        raise ConfigError(f"{where}: {path!r} is not a registered component{hint}; only classes registered by "
                          "installed plugins may be named (see `polydiff plugins`)")
    return hit[2]


def missing_plugin_hint(path: str, made_by: Mapping[str, str] | None = None) -> str:
    """`` (it belongs to plugin 'x', which is broken: ...)`` when ``path`` lies in the package of a plugin that
    did not load (or that ``made_by`` names and is not installed); ``""`` otherwise."""
    from .plugins_manager import get_plugin_manager

    infos = get_plugin_manager().infos
    for info in infos.values():
        pkg = info.module.split(":")[0]
        if not info.ok and (path == pkg or path.startswith(pkg + ".")):
            return f" (it belongs to {info.summary()})"
    for name, version in dict(made_by or {}).items():
        if name not in infos:
            return f" (the checkpoint was made with plugin {name!r} {version}, which is not installed here)"
        if not infos[name].ok:
            return f" (the checkpoint was made with {infos[name].summary()})"
    return ""


def instantiate(spec: Any, kind: str, where: str | None = None) -> Any:
    """Build a component from an object (returned unchanged), a registry short name, or a
    ``{"class_path": ..., "init_args": {...}}`` spec whose init args may themselves be specs. Class paths are
    resolved through the plugin registry only (:func:`resolve_component`), never imported. The spec is
    remembered on the object (``_polydiff_spec``) so hyper-parameters stay plain types."""
    where = where or kind
    if spec is None or not isinstance(spec, (str, Mapping)):
        return spec
    if isinstance(spec, str):
        spec = {"class_path": spec, "init_args": {}}
    if "class_path" not in spec:
        raise ConfigError(f"{where}: spec {dict(spec)} has no 'class_path'")
    cls = resolve_component(spec["class_path"], kind, f"{where}.class_path")
    raw_args = spec.get("init_args") or {}
    if not isinstance(raw_args, Mapping):
        raise ConfigError(f"{where}.init_args: expected a mapping of argument names to values, got {raw_args!r}")
    raw_args = {**raw_args, **dict(spec.get("dict_kwargs") or {})}
    bad_keys = [k for k in raw_args if not isinstance(k, str)]
    if bad_keys:
        raise ConfigError(f"{where}.init_args: argument names must be strings, got {bad_keys!r} "
                          "(a stray comma or colon in a YAML flow mapping makes a key of a value)")
    init_args = {k: build_value(v, str(k), f"{where}.init_args.{k}") for k, v in raw_args.items()}
    try:
        obj = cls(**init_args)
    except PolydiffError:
        raise
    except _BUILD_ERRORS as exc:  # wrong types or sizes in a spec (from a file or a caller)
        raise ConfigError(f"{where}: cannot build {cls.__name__} from init_args {sorted(init_args)}: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from None
    try:
        obj._polydiff_spec = {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": plain_value(init_args)}
    except AttributeError:  # objects with __slots__
        pass
    return obj


def build_value(value: Any, key: str, where: str) -> Any:
    """A hyper-parameter value with every nested ``{"class_path": ...}`` spec built (registry only); plain
    values are returned unchanged."""
    if isinstance(value, Mapping):
        if "class_path" in value:
            return instantiate(value, key, where)
        return {k: build_value(v, str(k), f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [build_value(v, key, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def check_registered(value: Any, where: str, kind: str = "module") -> None:
    """Raise a :class:`ConfigError` unless every class path in ``value`` (``_class_path`` / ``class_path`` keys,
    at any depth) names a registered component and ``_instantiator`` is LightningCLI's. For hyper-parameters
    that a third-party parser (LightningCLI) will instantiate: it then only meets registered classes."""
    if isinstance(value, Mapping):
        for k, v in value.items():
            key = f"{where}.{k}"
            if k == "_instantiator":
                if v != LIGHTNING_INSTANTIATOR:
                    raise ConfigError(f"{key}: {v!r} is not accepted; checkpoints may only hold {LIGHTNING_INSTANTIATOR!r}")
            elif k in ("_class_path", "class_path"):
                resolve_component(v, kind if k == "_class_path" else "", key)
            else:
                check_registered(v, key, str(k))
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            check_registered(v, f"{where}[{i}]", kind)


def _resolve_hparams(hp: dict, path, base: type, kind: str, where: str) -> tuple[type, dict]:
    if path is None or path == f"{base.__module__}.{base.__qualname__}":  # the class the caller named in code
        cls = base
    else:
        cls = resolve_component(path, kind, f"{where}._class_path")
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{where}._class_path: {path!r} is not a {base.__name__}")
    args = {}
    for k, v in hp.items():
        if not isinstance(k, str) or not k.isidentifier():
            raise ConfigError(f"{where}: hyper-parameter name {k!r} is not an identifier")
        if isinstance(v, Mapping) and "class_path" in v and v.get("init_args", {}) is None:
            raise ConfigError(
                f"{where}.{k}: was a Python object without a spec; build the module with registry names or "
                "{class_path, init_args} specs (as the CLI does) to rebuild it from a checkpoint")
        args[k] = build_value(v, k, f"{where}.{k}")
    return cls, args


def rebuild_from_hparams(hp: Mapping[str, Any], base: type, kind: str, where: str,
                         default_class_path: str | None = None, made_by: Mapping[str, str] | None = None) -> Any:
    """An object of a registered subclass of ``base`` from hyper-parameters stored in a checkpoint (the
    module's or the data module's): ``_class_path`` must name a registered ``kind``, ``_instantiator`` may only
    be LightningCLI's (recognised, never called), and every nested spec goes through :func:`instantiate`."""
    hp = dict(hp)
    inst = hp.pop("_instantiator", None)
    if inst is not None and inst != LIGHTNING_INSTANTIATOR:
        raise ConfigError(f"{where}._instantiator: {inst!r} is not accepted; checkpoints may only hold "
                          f"{LIGHTNING_INSTANTIATOR!r} (written by the polydiff CLI)")
    path = hp.pop("_class_path", None) or default_class_path
    try:
        cls, args = _resolve_hparams(hp, path, base, kind, where)
    except ConfigError as exc:
        hint = missing_plugin_hint("", made_by)
        if hint and "is not a registered component" in str(exc) and hint not in str(exc):
            raise ConfigError(f"{exc}{hint}") from None
        raise
    try:
        return cls(**args)
    except PolydiffError:
        raise
    except _BUILD_ERRORS as exc:
        raise ConfigError(f"{where}: cannot build {cls.__name__} from the stored hyper-parameters: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}") from None



def plain_value(value: Any) -> Any:
    """A ``weights_only``-loadable description of a hyper-parameter value: plain types as they are, objects
    built from a spec as that spec, other objects as ``{"class_path": ..., "init_args": None}`` (not rebuildable)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): plain_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain_value(v) for v in value]
    spec = getattr(value, "_polydiff_spec", None)
    if spec is not None:
        return spec
    cls = type(value)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}", "init_args": None}


def datamodule_from_checkpoint(checkpoint: Mapping, name: str = "checkpoint"):
    """The data module a CLI-made checkpoint records (``datamodule_hyper_parameters``), rebuilt through the
    plugin registry only; None when the checkpoint records none. Not set up (no download starts)."""
    from .data import DiffusionDataModule

    hp = checkpoint.get("datamodule_hyper_parameters")
    if not hp:
        return None
    if not isinstance(hp, Mapping):
        raise DataError(f"{name}: datamodule_hyper_parameters is a {type(hp).__name__}, expected a mapping")
    if "_class_path" not in hp:
        return None
    extra = checkpoint.get("polydiff") if isinstance(checkpoint.get("polydiff"), Mapping) else {}
    made_by = extra.get("plugins") if isinstance(extra.get("plugins"), Mapping) else None
    return rebuild_from_hparams(hp, DiffusionDataModule, "datamodule", f"{name}: datamodule_hyper_parameters",
                                made_by=made_by)


def load_model_checkpoint(path: str | Path, map_location: Any = "cpu", options: Mapping[str, str] | None = None,
                          fmt: str | None = None) -> dict:
    """A checkpoint as :meth:`polydiff.training.DiffusionModule.from_checkpoint` reads it: a polydiff checkpoint as
    loaded (:func:`polydiff.checkpointing.load_checkpoint`, data only), or a foreign one (a paper's released weights)
    converted by the plugin converter that recognises it (``polydiff_checkpoint_converters``; ``fmt`` names one).
    ``options`` are passed to the converter."""
    from .checkpointing import load_checkpoint
    from .plugins_manager import get_plugin_manager

    raw = load_checkpoint(path, map_location=map_location)
    hp = raw.get("hyper_parameters")
    if fmt is None and isinstance(hp, Mapping) and hp:
        return raw
    converted = get_plugin_manager().convert_checkpoint(raw, str(path), options, name=fmt)
    return raw if converted is None else converted


def load_yaml_config(path: str | Path) -> dict:
    """A YAML config file as a mapping, parsed with ``yaml.safe_load`` (no tags that build Python objects), with
    one-line :class:`ConfigError` for a missing, unreadable, malformed or non-mapping file, or one whose
    aliases expand to an absurd size."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path} not found")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a text file (byte {exc.start} is not UTF-8); expected a YAML config") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    try:
        cfg = yaml.safe_load(text)
    except yaml.constructor.ConstructorError as exc:
        raise ConfigError(f"{path}: {_yaml_where(exc)}YAML tag refused ({exc.problem}); configs are data: "
                          "plain mappings, lists, strings and numbers only") from None
    except yaml.YAMLError as exc:
        what = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}: {_yaml_where(exc)}not valid YAML ({what})") from None
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply") from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping (trainer:, model:, data:, ...), "
                          f"got a {type(cfg).__name__}")
    _check_size(cfg, str(path))
    return cfg


def _yaml_where(exc) -> str:
    mark = getattr(exc, "problem_mark", None)
    return f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""


def _check_size(cfg: Any, path: str, limit: int = 100_000) -> None:
    """Refuse configs whose YAML aliases expand (when walked) to more than ``limit`` nodes ("billion laughs")."""
    sizes: dict[int, int] = {}

    def size(v, depth=0) -> int:
        if depth > 200:
            raise ConfigError(f"{path}: YAML nested more than 200 levels deep")
        if not isinstance(v, (dict, list)):
            return 1
        if id(v) in sizes:
            return sizes[id(v)]
        items = v.values() if isinstance(v, dict) else v
        n = 1
        for x in items:
            n += size(x, depth + 1)
            if n > limit:
                raise ConfigError(f"{path}: the config expands to more than {limit} values (YAML aliases?)")
        sizes[id(v)] = n
        return n

    size(cfg)


def datamodule_from_config(path: str | Path):
    """The data module of a YAML config's ``data:`` section (short names or registered class paths only),
    not set up. Used where a config is read outside LightningCLI (``sample/evaluate --config``)."""
    from .plugins_manager import get_plugin_manager, resolve_config_names

    cfg = load_yaml_config(path)
    data = resolve_config_names(cfg, get_plugin_manager().registry).get("data")
    if data is None:
        raise ConfigError(f"{path}: has no 'data:' section")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: data: must be a {{class_path, init_args}} mapping or a data module name, got {data!r}")
    return instantiate(data, "datamodule", f"{path}: data")
