"""polydiff point-cloud plugin: shape generation (Luo & Hu 2021 DPM), completion with fixed known points
(PVD protocol), CPU metrics (Chamfer, exact EMD, MMD/COV/1-NNA as PointFlow), point-cloud files
(PLY, PCD, OFF, OBJ, XYZ, NPY) and data modules (procedural shapes, ShapeNet PC15k, ModelNet, fixture).

Found through the ``polydiff`` entry-point group (``pointcloud = "polydiff.plugins.pointcloud"``). Top
level imports only the hook machinery; torch, scipy, plyfile and matplotlib come with the submodules.
"""

from __future__ import annotations

from polydiff.hookspecs import FileFormat, hookimpl
from polydiff.plugins_manager import register_task_configs

DOMAIN = "pointcloud"

__all__ = ["DOMAIN", "polydiff_register", "polydiff_file_formats", "polydiff_write_artifacts",
           "polydiff_evaluate", "polydiff_commands"]


@hookimpl
def polydiff_register(registry) -> None:
    from . import data, metrics
    from .luohu import PointwiseNet
    from .module import LuoHuModule

    for cls in (data.ProceduralPointClouds, data.TextShapes, data.ShapeNetPC15k, data.ModelNetPointClouds,
                data.FixturePointClouds):
        registry.add("datamodule", cls)
    registry.add("module", LuoHuModule)
    registry.add("backbone", PointwiseNet)
    for fn in (metrics.chamfer_distance, metrics.earth_movers_distance, metrics.generation_metrics,
               metrics.completion_metrics):
        registry.add("metric", fn)
    register_task_configs(registry, __name__, "configs", prefix=DOMAIN)


def _reader(fn):
    def read(path):
        import torch

        x = torch.from_numpy(fn(path))
        return {"x": x if x.ndim == 3 else x[None]}

    return read


def _writer(fn):
    def write(samples, path):
        return fn(samples["x"] if isinstance(samples, dict) else samples, path)

    return write


@hookimpl
def polydiff_file_formats():
    from . import io

    spec = [("ply", (".ply",), io.read_ply, io.write_ply, "PLY point clouds/meshes (plyfile; ascii or binary)"),
            ("pcd", (".pcd",), io.read_pcd, io.write_pcd, "PCL point clouds (DATA ascii or binary)"),
            ("off", (".off",), io.read_off, io.write_off, "OFF meshes (ModelNet; 'OFF490 ...' headers accepted)"),
            ("obj", (".obj",), io.read_obj, io.write_obj, "Wavefront OBJ vertices (and faces)"),
            ("xyz", (".xyz",), io.read_xyz, io.write_xyz, "whitespace-separated x y z text"),
            ("npy", (".npy", ".npz"), io.read_npy, io.write_npy, "numpy (N, 3)/(B, N, 3); npz 'coords' (Point-E)")]
    return [FileFormat(name=n, suffixes=s, domain=DOMAIN, read=_reader(r), write=_writer(w), description=d)
            for n, s, r, w, d in spec]


@hookimpl
def polydiff_write_artifacts(domain, samples, out_dir, context):
    if domain != DOMAIN:
        return None
    from .artifacts import write_artifacts

    prefix = context.get("prefix") or (context.get("stage") or "samples")
    return write_artifacts(samples, out_dir, prefix=prefix, datamodule=context.get("datamodule"))


@hookimpl
def polydiff_evaluate(domain, samples, datamodule, context):
    if domain != DOMAIN:
        return None
    from .evaluation import evaluate_samples

    return evaluate_samples(samples, datamodule, context)


def _complete_arguments(parser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint of a point model trained with polydiff fit")
    parser.add_argument("--input", required=True, help="partial cloud (.ply, .pcd, .xyz, .npy, .obj, .off)")
    parser.add_argument("--out", required=True, help="completed cloud; format from the suffix")
    parser.add_argument("--num-points", type=int, default=2048, help="points of the completed cloud (PVD: 2048)")
    parser.add_argument("--sampler", default="ddpm", help="engine sampler (default ancestral DDPM)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: all steps of the chain)")
    parser.add_argument("--seed", type=int, default=0)


def _complete_run(args) -> int:
    from .cli import run_complete

    return run_complete(args)


@hookimpl
def polydiff_commands():
    return {"complete": ("complete a partial point cloud with a trained point model (known points kept exactly)",
                         _complete_arguments, _complete_run)}
