"""polydiff plugin for a 2-D swiss-roll domain: hook implementations only.

The entry point ``swissroll = "polydiff_swissroll"`` makes polydiff import this module; it must stay cheap to
import, so torch/Lightning come in with the submodules inside the hooks.
"""

from __future__ import annotations

from pathlib import Path

from polydiff.hookspecs import FileFormat, hookimpl

DOMAIN = "swissroll"
CONFIG = Path(__file__).with_name("swissroll.yaml")


@hookimpl
def polydiff_register(registry):
    from .components import SwissRollDataModule, ToyMLP

    registry.add("datamodule", SwissRollDataModule)
    registry.add("backbone", ToyMLP)
    registry.add("task", CONFIG, name="swissroll/default")


@hookimpl
def polydiff_file_formats():
    from .components import read_csv, write_csv

    return [FileFormat(name="points-csv", suffixes=(".csv",), domain=DOMAIN, read=read_csv, write=write_csv,
                       description="2-D points, one 'x,y' row per point")]


@hookimpl
def polydiff_write_artifacts(domain, samples, out_dir, context):
    if domain != DOMAIN:
        return None
    from .components import write_csv, write_scatter

    prefix = context.get("prefix") or "samples"
    paths = [write_csv(samples, Path(out_dir) / f"{prefix}.csv")]
    png = write_scatter(samples, Path(out_dir) / f"{prefix}.png", context.get("datamodule"))
    return paths + ([png] if png is not None else [])


@hookimpl
def polydiff_evaluate(domain, samples, datamodule, context):
    if domain != DOMAIN:
        return None
    from .components import sliced_wasserstein_to_reference

    return {"swissroll/sliced_w2": sliced_wasserstein_to_reference(samples, datamodule, context.get("generator"))}


@hookimpl
def polydiff_commands():
    def add_arguments(parser):
        parser.add_argument("--print", action="store_true", help="print the YAML instead of its path")

    def run(args):
        print(CONFIG.read_text() if args.print else CONFIG)
        return 0

    return {"swissroll-config": ("path of the swiss-roll example config", add_arguments, run)}
