"""Hook specifications of the polydiff plugin system (pluggy project name ``"polydiff"``).

A plugin is a module found through the ``polydiff`` entry-point group, e.g. in its pyproject::

    [project.entry-points.polydiff]
    mydomain = "mypackage.polydiff_plugin"

At its top level that module defines functions decorated with :data:`hookimpl` whose names are the hooks
below (a plugin implements only those it needs). The module must import only cheap things at top level;
heavy libraries are imported inside the hook functions or components. Hook names and argument names are
stable API: pluggy calls implementations by keyword, and an implementation may accept a subset of the
arguments.

Samples handed to the artifact and evaluation hooks follow the batch contract (:mod:`polydiff.batch`):
a mapping with ``x`` (batch, ...) float tensor on the CPU and optional ``presence``, ``known`` and
``cond`` (e.g. ``cond["label"]`` for class-conditional samples). ``domain`` is the ``domain`` class
attribute of the data module that produced the model; every implementation returns ``None`` for a
domain that is not its own, so one call reaches all plugins and only the right one answers. These two
domain hooks are ``firstresult``: one plugin owns a domain, and the first non-``None`` answer is the answer
(the plugin registered last is asked first).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import pluggy

PROJECT = "polydiff"

#: Decorator for hook specifications (used only in this module).
hookspec = pluggy.HookspecMarker(PROJECT)
#: Decorator plugins put on their hook implementations: ``@hookimpl def polydiff_register(registry): ...``.
hookimpl = pluggy.HookimplMarker(PROJECT)

#: Component kinds a plugin may register (:meth:`polydiff.plugins_manager.Registry.add`).
COMPONENT_KINDS = (
    "datamodule",   # DiffusionDataModule subclasses
    "backbone",     # nn.Module called backbone(x, t, cond)
    "conditioner",  # nn.Module turning raw conditions into backbone cond tensors
    "module",       # DiffusionModule subclasses (special training logic)
    "process",      # GaussianProcess or DiscreteProcess subclasses
    "space",        # Space subclasses
    "schedule",     # VPSchedule subclasses (noise schedules of the VP process)
    "loss",         # loss classes (DiffusionLoss and its kin) named in module configs
    "noise",        # NoiseField subclasses
    "metric",       # callables or torchmetrics classes
    "sampler",      # sampler functions usable by name
    "task",         # named task -> path of its default YAML config
)


@dataclass(frozen=True)
class FileFormat:
    """A file format of a domain, returned by :func:`polydiff_file_formats`.

    Args:
        name: short name, e.g. ``"png"``, ``"pdb"``, ``"nifti"``.
        suffixes: file suffixes with the dot, lower case, e.g. ``(".nii", ".nii.gz")``.
        domain: the domain the format belongs to.
        read: ``read(path) -> dict`` returning a batch-contract mapping (at least ``x``), or None if
            the format is write-only.
        write: ``write(samples, path) -> Path`` writing a batch-contract mapping atomically, or None if
            read-only.
        description: one line shown by ``polydiff plugins``.
    """

    name: str
    suffixes: tuple[str, ...]
    domain: str
    read: Callable[[str | Path], Mapping[str, Any]] | None = None
    write: Callable[[Mapping[str, Any], str | Path], Path] | None = None
    description: str = ""
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def matches(self, path: str | Path) -> bool:
        name = str(path).lower()
        return any(name.endswith(s) for s in self.suffixes)


@dataclass(frozen=True)
class CheckpointConverter:
    """A foreign checkpoint format (e.g. a paper's released weights) that a plugin turns into a polydiff one,
    returned by :func:`polydiff_checkpoint_converters`.

    Args:
        name: short name, e.g. ``"csdi_official"`` (``polydiff convert --format NAME``).
        description: one line for ``polydiff convert --list``.
        detect: ``detect(raw) -> bool``: whether the loaded mapping (``torch.load(weights_only=True)``) is this
            format; must not raise.
        convert: ``convert(raw, source, options) -> dict``: a polydiff checkpoint (``hyper_parameters``,
            ``state_dict``, ``polydiff`` extras, optionally ``datamodule_hyper_parameters``) that
            :meth:`polydiff.training.DiffusionModule.from_checkpoint` rebuilds; ``source`` names the file in
            errors, ``options`` are the ``--set KEY=VALUE`` strings of ``polydiff convert``.
    """

    name: str
    description: str
    detect: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[Mapping[str, Any], str, Mapping[str, str]], dict]


@hookspec
def polydiff_register(registry) -> None:
    """Register the plugin's components in ``registry`` (:class:`polydiff.plugins_manager.Registry`).

    Call ``registry.add(kind, obj, name=None)`` for every component, with ``kind`` one of
    :data:`COMPONENT_KINDS`; ``name`` defaults to ``obj.__name__``. Registered classes become usable by
    short name in YAML configs (``backbone: UNet`` or ``class_path: UNet``). Tasks are registered as
    ``registry.add("task", "/path/to/config.yaml", name="image/digits")``. Called once per plugin manager.
    """


@hookspec
def polydiff_file_formats() -> Sequence[FileFormat]:
    """Return the :class:`FileFormat` objects (readers/writers) of the plugin's domain.

    Results of all plugins are concatenated; ``polydiff.plugins_manager.find_format(path)`` picks the
    one whose suffix matches a file.
    """


@hookspec(firstresult=True)
def polydiff_write_artifacts(domain: str, samples: Mapping[str, Any], out_dir: Path,
                             context: Mapping[str, Any]) -> list[Path] | None:
    """Turn samples into files a person looks at (PNG grids, plots, PDB/PLY/NIfTI/WAV files).

    Args:
        domain: the data module's domain; return ``None`` unless it is this plugin's domain.
        samples: batch-contract mapping of CPU tensors (``x`` in the data module's normalised
            representation, optional ``presence``/``known``/``cond``).
        out_dir: an existing directory to write into; write atomically (:func:`polydiff.io.atomic_write`).
        context: extra information, keys may be absent: ``datamodule`` (the DiffusionDataModule, to
            undo normalisation), ``module`` (the DiffusionModule), ``stage`` (``"val"``, ``"fit"``,
            ``"predict"``, ``"sample"``, ``"evaluate"``), ``step`` (global step), ``prefix`` (file name
            prefix), ``reference`` (real data in the same representation, for side-by-side plots). Every
            stage calls the hooks through :func:`polydiff.evaluation.write_and_evaluate`.

    Returns:
        The paths written, or ``None`` for another domain.
    """


@hookspec(firstresult=True)
def polydiff_evaluate(domain: str, samples: Mapping[str, Any], datamodule,
                      context: Mapping[str, Any]) -> dict[str, float] | None:
    """Evaluate samples against the reference data with the domain's standard metrics.

    Args:
        domain: the data module's domain; return ``None`` unless it is this plugin's domain.
        samples: batch-contract mapping of CPU tensors (as in :func:`polydiff_write_artifacts`).
        datamodule: the DiffusionDataModule; ``datamodule.reference_data()`` gives real data.
        context: as in :func:`polydiff_write_artifacts`; also ``generator`` (torch.Generator) when the
            metric itself draws random numbers, ``cache_dir`` for metric models worth caching, and
            ``checkpoint`` (the checkpoint path) under ``polydiff evaluate``, for files kept beside it.

    Returns:
        ``{metric name: float}`` (names unique across plugins, e.g. ``"image/accuracy"`` or
        ``"accuracy"``), or ``None`` for another domain.
    """


@hookspec
def polydiff_commands() -> Mapping[str, tuple[str, Callable, Callable]]:
    """Extra ``polydiff`` subcommands: ``{name: (help, add_arguments(parser), run(args) -> int | None)}``.

    ``add_arguments`` receives an ``argparse.ArgumentParser`` for the subcommand; ``run`` receives the
    parsed ``argparse.Namespace`` and returns an exit code (None = 0). Names must not clash with the
    built-in commands (fit, validate, test, predict, sample, evaluate, plugins, datasets).
    """


@hookspec
def polydiff_checkpoint_converters() -> Sequence[CheckpointConverter]:
    """Foreign checkpoint formats this plugin converts (:class:`CheckpointConverter`). ``polydiff convert``
    writes the converted file; ``polydiff sample``/``evaluate`` and plugin commands that load through
    :func:`polydiff.training.load_model_checkpoint` accept the foreign file directly."""


@hookspec
def polydiff_datasets() -> Sequence[Any]:
    """Datasets this plugin knows, for ``polydiff datasets list | download | verify``.

    Return :class:`polydiff.datasets.DatasetInfo` records (name, domain, description, files with url and
    sha256, licence, citation); results of all plugins are concatenated, a name given twice is an error.
    polydiff's own registry (:mod:`polydiff.datasets`) answers through this hook too
    (entry point ``datasets = "polydiff.datasets.plugin"``).
    """
