"""Plugin discovery (entry-point group ``polydiff``) and the registry of components by short name.

:func:`get_plugin_manager` returns a :class:`PolydiffPluginManager` (a ``pluggy.PluginManager`` with the
specifications of :mod:`polydiff.hookspecs`) that has imported every plugin declared in the ``polydiff``
entry-point group — first-party plugins are declared in polydiff's own pyproject exactly like a
third-party one. Importing a plugin never brings the CLI down: a plugin whose import fails is recorded
with its error, as ``missing extra`` (a third-party package is not installed; the record carries the exact
``pip install`` command) or ``broken`` (any other exception). A plugin that imports is still ``missing
extra`` when a requirement of its distribution's extra named like the plugin is absent or too old (read from
the distribution's metadata, before anything fails at ``fit``). ``polydiff plugins`` shows the records.

The :class:`Registry` maps short names to components per kind, so a YAML config can say
``backbone: UNet`` or ``class_path: UNet`` instead of the full import path.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .errors import ConfigError, PluginError

GROUP = "polydiff"
CORE = "polydiff"  # plugin name under which the engine's own components are registered


@dataclass
class PluginInfo:
    """What ``polydiff plugins`` shows about one plugin."""

    name: str
    module: str
    distribution: str = ""
    version: str = ""
    status: str = "ok"  # "ok" | "missing extra" | "broken"
    error: str = ""
    missing: str = ""  # the missing third-party module
    pip: str = ""  # the command that installs what is missing
    components: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def summary(self) -> str:
        """One line: which plugin, what is wrong, what to do."""
        if self.status == "ok":
            return f"plugin {self.name!r} ({self.module}) loaded"
        if self.status == "missing extra":
            return f"plugin {self.name!r} needs {self.missing!r}, which is not installed: {self.pip}"
        return f"plugin {self.name!r} ({self.module}) is broken: {self.error}"


class Registry:
    """Components by kind and short name, filled by the ``polydiff_register`` hook.

    ``add(kind, obj, name=None)`` registers; ``get(kind, name)`` looks up and raises a
    :class:`ConfigError` listing the known names; ``class_path(name)`` gives the import path a
    jsonargparse config needs for a short class name.
    """

    def __init__(self):
        self._items: dict[str, dict[str, Any]] = {k: {} for k in hookspecs.COMPONENT_KINDS}
        self._owner: dict[tuple[str, str], str] = {}
        self.current_plugin: str = CORE
        #: plugin name -> one line saying why it is unavailable (filled by the plugin manager); named in the
        #: error for an unknown component, since such a plugin may be the one that provides it.
        self.unavailable: dict[str, str] = {}
        self._notes: dict[tuple[str, str], str] = {}

    def unavailable_hint(self) -> str:
        """``"; plugins that are broken or miss their extra and may provide it: ..."`` or ``""``."""
        if not self.unavailable:
            return ""
        return "; plugins that are broken or miss their extra and may provide it: " + "; ".join(
            self.unavailable[k] for k in sorted(self.unavailable))

    def add(self, kind: str, obj: Any, name: str | None = None, note: str | None = None) -> Any:
        """Register ``obj`` as ``kind`` ``name``; ``note`` is one line ``polydiff plugins`` shows beside the
        component (e.g. a measured limitation users must know before choosing it)."""
        if kind not in self._items:
            raise PluginError(
                f"plugin {self.current_plugin!r} registers unknown component kind {kind!r}; "
                f"expected one of {list(hookspecs.COMPONENT_KINDS)}"
            )
        if name is None:
            name = getattr(obj, "__name__", None)
            if name is None:
                raise PluginError(f"plugin {self.current_plugin!r}: registry.add({kind!r}, ...) needs a name for {obj!r}")
        if kind == "task":
            obj = Path(obj)
        prev = self._items[kind].get(name)
        if prev is not None and prev is not obj and self._owner[(kind, name)] != self.current_plugin:
            raise PluginError(
                f"plugin {self.current_plugin!r} registers {kind} {name!r}, already registered by "
                f"plugin {self._owner[(kind, name)]!r}"
            )
        self._items[kind][name] = obj
        self._owner[(kind, name)] = self.current_plugin
        if note:
            self._notes[(kind, name)] = str(note)
        return obj

    def notes(self, plugin: str | None = None) -> dict[str, str]:
        """``{"kind:name": note}`` of the components registered with a note (by ``plugin`` only, if given)."""
        return {f"{k}:{n}": v for (k, n), v in self._notes.items()
                if plugin is None or self._owner.get((k, n)) == plugin}

    def get(self, kind: str, name: str) -> Any:
        items = self._items.get(kind)
        if items is None:
            raise ConfigError(f"unknown component kind {kind!r}; expected one of {list(hookspecs.COMPONENT_KINDS)}")
        if name not in items:
            raise ConfigError(f"unknown {kind} {name!r}; registered {kind}s: {sorted(items) or 'none'}"
                              f"{self.unavailable_hint()}")
        return items[name]

    def find(self, name: str, kinds: Iterable[str] | None = None) -> tuple[str, Any] | None:
        """(kind, obj) of the first kind that has ``name``, or None."""
        for kind in kinds or self._items:
            if name in self._items[kind]:
                return kind, self._items[kind][name]
        return None

    def names(self, kind: str | None = None) -> list[str]:
        if kind is None:
            return sorted({n for items in self._items.values() for n in items})
        return sorted(self._items[kind])

    def items(self, kind: str) -> dict[str, Any]:
        return dict(self._items[kind])

    def owner(self, kind: str, name: str) -> str:
        return self._owner[(kind, name)]

    def by_plugin(self, plugin: str) -> list[str]:
        """``kind:name`` strings of everything a plugin registered."""
        return [f"{k}:{n}" for (k, n), p in self._owner.items() if p == plugin]

    def resolve(self, path: str, kinds: Iterable[str] | None = None) -> tuple[str, str, Any] | None:
        """(kind, name, obj) of a registered component named by ``path``, or None; never imports anything.

        ``path`` is a short name (looked up in ``kinds``, default all) or a full class path that equals a
        registered class's ``module.qualname`` (any kind), or names it through a module that is already
        imported (a re-export such as ``polydiff.backbones.MLP``). This is how names read from files
        (checkpoints, ``sample --config``) become code: only registered components can be reached.
        """
        if not isinstance(path, str) or not path:
            return None
        if "." not in path:
            hit = self.find(path, kinds)
            return (hit[0], path, hit[1]) if hit is not None else None
        module, _, attr = path.rpartition(".")
        alias = sys.modules.get(module)
        target = alias.__dict__.get(attr) if alias is not None else None
        for kind, items in self._items.items():
            for name, obj in items.items():
                if not isinstance(obj, type):
                    continue
                if f"{obj.__module__}.{obj.__qualname__}" == path or (target is not None and target is obj):
                    return kind, name, obj
        return None

    def class_path(self, name: str, kinds: Iterable[str] | None = None) -> str:
        """Full import path of a registered class given by short name (an import path is returned as is)."""
        if "." in name:
            return name
        hit = self.find(name, kinds)
        if hit is None or not isinstance(hit[1], type):
            known = sorted({n for k in (kinds or self._items) for n, o in self._items[k].items() if isinstance(o, type)})
            what = "/".join(kinds) if kinds else "component"
            raise ConfigError(f"unknown {what} {name!r}; registered names: {known}{self.unavailable_hint()}")
        obj = hit[1]
        return f"{obj.__module__}.{obj.__qualname__}"


class PolydiffPluginManager(pluggy.PluginManager):
    """A pluggy manager that records every plugin it tried, with its status, and owns the registry."""

    def __init__(self):
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.registry = Registry()
        self.infos: dict[str, PluginInfo] = {}

    # -- loading -----------------------------------------------------------------------------------
    def load_entrypoints(self, group: str = GROUP) -> None:
        """Import every entry point of ``group``; failures are recorded, never raised."""
        for ep in _entry_points(group):
            if ep.name in self.infos:
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                module=ep.value,
                distribution=dist.metadata["Name"] if dist is not None else "",
                version=dist.version if dist is not None else "",
            )
            self.infos[ep.name] = info
            try:
                plugin = ep.load()
            except ModuleNotFoundError as exc:
                _record_import_failure(info, exc, dist)
                self._note_unavailable(info)
                continue
            except KeyboardInterrupt:  # the user's Ctrl-C still stops the program
                raise
            except BaseException as exc:  # noqa: BLE001 - a broken plugin (even one calling sys.exit) must not
                _mark_broken(info, exc)   # bring the CLI down
                self._note_unavailable(info)
                continue
            self._register_plugin(plugin, info)
            if info.ok and dist is not None:
                _check_extra(info, dist)
            self._note_unavailable(info)

    def _note_unavailable(self, info: PluginInfo) -> None:
        if not info.ok:
            self.registry.unavailable[info.name] = info.summary()

    def add_plugin(self, plugin: Any, name: str, version: str = "") -> PluginInfo:
        """Register an already imported plugin object (a module or any object with hook functions)."""
        info = PluginInfo(name=name, module=getattr(plugin, "__name__", repr(plugin)), version=version)
        self.infos[name] = info
        self._register_plugin(plugin, info)
        return info

    def _register_plugin(self, plugin: Any, info: PluginInfo) -> None:
        try:
            self.register(plugin, name=info.name)
        except Exception as exc:  # noqa: BLE001 - e.g. pluggy.PluginValidationError for a malformed hook
            _mark_broken(info, exc)
            return
        impl = _own_impl(self.hook.polydiff_register, info.name)
        if impl is None:
            return
        self.registry.current_plugin = info.name
        try:
            impl.function(registry=self.registry)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - SystemExit included, as at import
            _mark_broken(info, exc, during="polydiff_register")
            self.unregister(name=info.name)
        finally:
            self.registry.current_plugin = CORE
        info.components = self.registry.by_plugin(info.name)

    # -- queries -----------------------------------------------------------------------------------
    def ok_plugins(self) -> list[str]:
        return [n for n, i in self.infos.items() if i.ok]

    def file_formats(self) -> list[hookspecs.FileFormat]:
        out: list[hookspecs.FileFormat] = []
        for result in self.hook.polydiff_file_formats():
            out.extend(result or [])
        return out

    def find_format(self, path: str | Path) -> hookspecs.FileFormat:
        formats = self.file_formats()
        for fmt in formats:
            if fmt.matches(path):
                return fmt
        raise PluginError(
            f"{path}: no installed plugin reads or writes this file type; known suffixes: "
            f"{sorted({s for f in formats for s in f.suffixes})}"
        )

    def commands(self) -> dict[str, tuple[str, Any, Any]]:
        out: dict[str, tuple[str, Any, Any]] = {}
        for result in self.hook.polydiff_commands():
            out.update(result or {})
        return out

    def checkpoint_converters(self) -> dict[str, hookspecs.CheckpointConverter]:
        """Every :class:`~polydiff.hookspecs.CheckpointConverter` the plugins declare, by name."""
        out: dict[str, hookspecs.CheckpointConverter] = {}
        for result in self.hook.polydiff_checkpoint_converters():
            for conv in result or []:
                if conv.name in out and out[conv.name] is not conv:
                    raise PluginError(f"checkpoint converter {conv.name!r} is declared by two plugins")
                out[conv.name] = conv
        return out

    def convert_checkpoint(self, raw, source: str, options=None, name: str | None = None) -> dict | None:
        """``raw`` converted by the converter ``name`` (or the first whose ``detect`` accepts it); None if
        no converter recognises it."""
        convs = self.checkpoint_converters()
        if name is not None:
            if name not in convs:
                raise PluginError(f"unknown checkpoint format {name!r}; installed converters: {sorted(convs) or 'none'}")
            return convs[name].convert(raw, source, dict(options or {}))
        for conv in convs.values():
            if conv.detect(raw):
                return conv.convert(raw, source, dict(options or {}))
        return None

    def write_artifacts(self, domain: str, samples, out_dir, context=None) -> list[Path]:
        """Paths written by every plugin that handles ``domain`` (usually exactly one)."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        result = self.hook.polydiff_write_artifacts(domain=domain, samples=samples, out_dir=out_dir,
                                                    context=dict(context or {}))
        return [Path(p) for p in (result or [])]

    def evaluate(self, domain: str, samples, datamodule, context=None) -> dict[str, float]:
        result = self.hook.polydiff_evaluate(domain=domain, samples=samples, datamodule=datamodule,
                                             context=dict(context or {}))
        return {k: float(v) for k, v in (result or {}).items()}

    def datasets(self) -> dict[str, Any]:
        """Every dataset the plugins declare through ``polydiff_datasets``, by name."""
        out: dict[str, Any] = {}
        for result in self.hook.polydiff_datasets():
            for info in result or []:
                if info.name in out and out[info.name] is not info:
                    raise PluginError(f"dataset {info.name!r} is declared by two plugins")
                out[info.name] = info
        return out


def register_task_configs(registry: Registry, package: str, folder: str = "configs",
                          prefix: str | None = None) -> dict[str, Path]:
    """Register every ``*.yaml`` in ``folder`` of the installed ``package`` as a task named ``<prefix>/<stem>``.

    Call it from ``polydiff_register``; ``prefix`` defaults to the plugin's entry-point name. Ship the folder
    as package data (setuptools: ``[tool.setuptools.package-data] mypkg = ["configs/*.yaml"]``) so that the
    tasks exist in a wheel, not only in a source checkout. ``polydiff fit --config <prefix>/<stem>`` then
    finds the YAML by task name. Returns ``{task name: path}``.
    """
    import importlib.resources

    root = Path(str(importlib.resources.files(package) / folder))
    if not root.is_dir():
        raise PluginError(f"plugin {registry.current_plugin!r}: package {package!r} has no folder {folder!r} "
                          f"of task configs (looked in {root}); is it declared as package data?")
    prefix = prefix or registry.current_plugin
    tasks = {f"{prefix}/{p.stem}": p for p in sorted(root.glob("*.yaml"))}
    for name, path in tasks.items():
        registry.add("task", path, name=name)
    return tasks


def _entry_points(group: str):
    return list(md.entry_points(group=group))


def _own_impl(caller, plugin_name: str):
    for impl in caller.get_hookimpls():
        if impl.plugin_name == plugin_name:
            return impl
    return None


def _mark_broken(info: PluginInfo, exc: BaseException, during: str = "import") -> None:
    info.status = "broken"
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" ({Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    info.error = f"{type(exc).__name__} during {during}: {exc}{where}"


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _record_import_failure(info: PluginInfo, exc: ModuleNotFoundError, dist) -> None:
    """A missing third-party module means a missing extra; a missing module of polydiff or of the plugin's
    own package is a bug (broken)."""
    missing = (exc.name or "").split(".")[0]
    own = {info.module.split(".")[0].split(":")[0], "polydiff"}
    if not missing or missing in own:
        _mark_broken(info, exc)
        return
    info.status = "missing extra"
    info.missing = missing
    info.error = f"ModuleNotFoundError: {exc}"
    info.pip = _pip_command(info, missing, dist)


def _installed_version(name: str) -> str | None:
    """Installed version of distribution ``name``, or None."""
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _extra_requirements(dist, extra: str) -> list:
    """The ``packaging`` requirements that ``dist``'s extra ``extra`` adds (those whose marker needs it)."""
    from packaging.requirements import InvalidRequirement, Requirement

    out = []
    for text in dist.requires or []:
        try:
            req = Requirement(text)
        except InvalidRequirement:
            continue
        if req.marker is None or _norm(req.name) == _norm(dist.metadata["Name"]):
            continue
        if req.marker.evaluate({"extra": extra}) and not req.marker.evaluate({"extra": ""}):
            out.append(req)
    return out


def _check_extra(info: PluginInfo, dist) -> None:
    """Mark a loaded plugin ``missing extra`` when a requirement of its distribution's extra named like the
    plugin is not installed or has a version outside the declared range."""
    extras = {_norm(e): e for e in dist.metadata.get_all("Provides-Extra") or []}
    extra = extras.get(_norm(info.name))
    if extra is None:
        return
    missing = []
    for req in _extra_requirements(dist, extra):
        version = _installed_version(req.name)
        if version is None:
            missing.append(req.name)
        elif req.specifier and not req.specifier.contains(version, prereleases=True):
            missing.append(f"{req.name}{req.specifier} ({version} installed)")
    if missing:
        info.status = "missing extra"
        info.missing = ", ".join(missing)
        info.error = f"extra {extra!r} of {dist.metadata['Name']} is not fully installed: {info.missing}"
        info.pip = f'pip install "{dist.metadata["Name"]}[{extra}]"'


def _pip_command(info: PluginInfo, missing: str, dist) -> str:
    """``pip install "<dist>[<extra>]"`` for the extra that declares the missing requirement (or, failing
    that, the extra named like the plugin); ``pip install <module>`` when the distribution has no extra."""
    if dist is None:
        return f"pip install {missing}"
    dist_name = dist.metadata["Name"]
    extras = set(dist.metadata.get_all("Provides-Extra") or [])
    for req in dist.requires or []:
        m = re.match(r"\s*([A-Za-z0-9_.\-]+)[^;]*;(.*)", req)
        if not m:
            continue
        extra = re.search(r"extra\s*==\s*['\"]([^'\"]+)['\"]", m.group(2))
        if extra and _norm(m.group(1)) == _norm(missing):
            if extra.group(1) == info.name or info.name not in extras:
                return f'pip install "{dist_name}[{extra.group(1)}]"'
    if info.name in extras:
        return f'pip install "{dist_name}[{info.name}]"'
    return f"pip install {missing}"


#: The engine's own components, named by import path (``module:attribute``, as entry points name plugins) and
#: loaded when a plugin manager is built. The manager imports no engine module itself, so the modules that use
#: it (training, samplers, the CLI) and the manager never import each other. A list or dict attribute registers
#: each of its items (the backbones: the networks, not the embedding modules exported beside them).
ENGINE_COMPONENTS = (
    ("process", "polydiff.processes:VP"), ("process", "polydiff.processes:VE"), ("process", "polydiff.processes:SubVP"),
    ("process", "polydiff.processes:EDM"), ("process", "polydiff.processes:RectifiedFlow"),
    ("process", "polydiff.discrete:DiscreteProcess"),
    ("space", "polydiff.spaces:Euclidean"), ("space", "polydiff.spaces:Torus"),
    ("space", "polydiff.spaces:ZeroCenterOfMass"), ("noise", "polydiff.spaces:GaussianNoise"),
    ("backbone", "polydiff.backbones:BACKBONES"), ("module", "polydiff.training:DiffusionModule"),
    ("loss", "polydiff.losses:DiffusionLoss"), ("loss", "polydiff.discrete:D3PMLoss"),
    ("loss", "polydiff.discrete:MDLMLoss"), ("schedule", "polydiff.schedules:SCHEDULES"),
    ("space", "polydiff.structured:ProductSpace"), ("backbone", "polydiff.structured:ConcatBackbone"),
    ("backbone", "polydiff.structured:StructuredBackbone"), ("backbone", "polydiff.graphs:PyGBackbone"),
    # the engine's toy data modules (tests, examples, docs)
    ("datamodule", "polydiff.testing_data:MixtureDataModule"), ("datamodule", "polydiff.testing_data:PointSetDataModule"),
    ("datamodule", "polydiff.testing_data:ToyMoleculeDataModule"),
    ("datamodule", "polydiff.testing_data:CategoricalDataModule"),
)


def _register_core(registry: Registry) -> None:
    """The engine's own components (:data:`ENGINE_COMPONENTS`), registered under the plugin name ``polydiff``."""
    for kind, target in ENGINE_COMPONENTS:
        obj = md.EntryPoint(name=kind, value=target, group=GROUP).load()
        items = obj.values() if isinstance(obj, dict) else obj if isinstance(obj, (list, tuple)) else [obj]
        for item in items:
            registry.add(kind, item)


_MANAGER: PolydiffPluginManager | None = None


def get_plugin_manager(reload: bool = False, entrypoints: bool = True) -> PolydiffPluginManager:
    """The process-wide plugin manager, created on first use (``reload=True`` builds a fresh one, e.g. after
    installing a plugin or in tests)."""
    global _MANAGER
    if _MANAGER is None or reload:
        pm = PolydiffPluginManager()
        pm.infos[CORE] = PluginInfo(name=CORE, module="polydiff", distribution="polydiff", version=_core_version())
        _register_core(pm.registry)
        pm.infos[CORE].components = pm.registry.by_plugin(CORE)
        if entrypoints:
            pm.load_entrypoints()
        _MANAGER = pm
    return _MANAGER


def _core_version() -> str:
    try:
        return md.version("polydiff")
    except md.PackageNotFoundError:  # pragma: no cover - running from a source tree, not installed
        return ""


def resolve_config_names(cfg: Any, registry: Registry, key: str | None = None) -> Any:
    """Rewrite short component names in a parsed YAML config to full import paths, recursively.

    * ``{class_path: UNet, ...}`` -> ``{class_path: polydiff.backbones.unet.UNet, ...}``
    * ``backbone: UNet`` (a string under a key named after a component kind, or ``model``/``data``) ->
      ``{class_path: ...}`` when the name is registered for that kind.

    An unregistered short ``class_path`` raises :class:`ConfigError` naming it and the known names.
    """
    kinds_for_key = {"model": ("module",), "data": ("datamodule",), "datamodule": ("datamodule",)}
    for k in hookspecs.COMPONENT_KINDS:
        kinds_for_key.setdefault(k, (k,))
    if isinstance(cfg, dict):
        out = {}
        for k, v in cfg.items():
            out[k] = resolve_config_names(v, registry, k)
        cp = out.get("class_path")
        if isinstance(cp, str) and "." not in cp:
            kinds = kinds_for_key.get(key or "")
            hit = registry.find(cp, kinds) or registry.find(cp)
            if hit is None or not isinstance(hit[1], type):
                where = f" (at {key!r})" if key else ""
                known = registry.names(kinds[0]) if kinds else registry.names()
                raise ConfigError(f"unknown component {cp!r}{where}; registered names: {known}"
                                  f"{registry.unavailable_hint()}")
            out["class_path"] = f"{hit[1].__module__}.{hit[1].__qualname__}"
        return out
    if isinstance(cfg, list):
        return [resolve_config_names(v, registry, key) for v in cfg]
    if isinstance(cfg, str) and key in kinds_for_key and "." not in cfg:
        hit = registry.find(cfg, kinds_for_key[key])
        if hit is not None and isinstance(hit[1], type):
            return {"class_path": f"{hit[1].__module__}.{hit[1].__qualname__}"}
    return cfg
