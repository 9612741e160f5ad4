"""polydiff's dataset registry as a plugin: ``polydiff datasets`` gets these entries through the
``polydiff_datasets`` hook (entry point ``datasets = "polydiff.datasets.plugin"``), the same way it gets a
third-party plugin's datasets; the engine never imports :mod:`polydiff.datasets` itself."""

from __future__ import annotations

from polydiff.hookspecs import hookimpl


@hookimpl
def polydiff_datasets():
    from . import load_all

    return list(load_all().values())
