"""Property-based fuzzing of every reader polydiff has: each registered file format's ``read`` (CSV/Parquet series,
PLY/PCD/OFF/OBJ/XYZ/NPY/NPZ point clouds, NIfTI and PNG scans, PNG images — and whatever a new domain
registers: a readable format without a seed here fails :func:`test_every_registered_reader_has_a_seed`), the
series table loader, the checkpoint loader and model rebuild, and YAML configs.

Valid files are mutated by truncation, byte flips, inserted/deleted bytes and, for text formats, edits of the
fields (numbers replaced by nan/inf/huge/negative/garbage tokens); checkpoints also get structural edits of
their hyper-parameters. Every reader must either return finite, well-shaped data or raise a
:class:`polydiff.PolydiffError` — never another exception, a non-finite value, or a hang (each call runs under a
10 s alarm).

The example budget is fixed and derandomized (same examples every run; about a minute in all on two
cores); ``POLYDIFF_FUZZ_EXAMPLES=5000 pytest tests/security/test_fuzz_readers.py`` runs a longer campaign
(see docs/security.md).
"""

from __future__ import annotations

import gzip
import io
import os
import re
import signal
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from polydiff.errors import PolydiffError  # noqa: E402
from polydiff.plugins_manager import get_plugin_manager  # noqa: E402

EXAMPLES = int(os.environ.get("POLYDIFF_FUZZ_EXAMPLES", "30"))
FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
HANG_SECONDS = 10


class Hang(Exception):
    """A reader took longer than HANG_SECONDS (not a PolydiffError: the test fails)."""


@contextmanager
def time_limit(seconds: int = HANG_SECONDS):
    def on_alarm(signum, frame):
        raise Hang(f"reader still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


# -- seeds: one or more valid files per registered format ------------------------------------------------
def _points(n: int = 24) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(n, 3)).astype(np.float32)


def _via(writer: Callable, suffix: str) -> Callable[[Path], bytes]:
    def make(tmp: Path) -> bytes:
        path = tmp / f"seed{suffix}"
        writer(path)
        return path.read_bytes()

    return make


def _pc(fn_name: str, suffix: str, **kw):
    def write(path):
        from polydiff.plugins.pointcloud import io as pio

        getattr(pio, fn_name)(_points(), path, **kw)

    return _via(write, suffix)


def _npz(path):
    np.savez(path, coords=_points())


def _off_mesh(path):
    path.write_text("OFF\n4 2 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n")


def _obj_mesh(path):
    path.write_text("# mesh\nv 0 0 0\nv 1 0 0\nv 0 1 0\nv 0 0 1\nf 1 2 3\nf 1/1 2/2 4/4\nf -1 -2 -3\n")


def _csv(path):
    path.write_text("time,a,b\n0,1.5,2\n1,,3\n2,4,-5e-3\n3,6,\n4,7.25,8\n")


def _csv_dates(path):
    path.write_text("date,x\n2020-01-01 00:00,1\n2020-01-01 01:00,2\n2020-01-01 02:00,\n2020-01-01 03:00,4\n")


def _parquet(path):
    import pandas as pd

    pd.DataFrame({"t": [0, 1, 2, 3], "a": [1.0, np.nan, 3.0, 4.0], "b": [0.5, 1.5, 2.5, np.nan]}).to_parquet(path)


def _nifti(gz: bool, ndim: int = 3):
    def write(path):
        import nibabel as nib

        shape = (6, 5, 4) if ndim == 3 else (6, 5)
        data = np.random.default_rng(0).random(shape).astype(np.float32)
        nib.save(nib.Nifti1Image(data, np.diag([1.0, 1.2, 2.0, 1.0])), str(path))

    return _via(write, ".nii.gz" if gz else ".nii")


def _png(mode: str):
    def write(path):
        from PIL import Image

        rng = np.random.default_rng(0)
        if mode == "I;16":
            Image.fromarray(rng.integers(0, 65535, (8, 8), dtype=np.uint16)).save(path)
        else:
            arr = rng.integers(0, 255, (8, 8, 3) if mode == "RGB" else (8, 8), dtype=np.uint8)
            Image.fromarray(arr).save(path)

    return _via(write, ".png")


def _by_format(name: str, suffix: str, sample: Callable[[], dict]):
    """A seed written by the format's own writer."""
    def write(path):
        _formats()[name].write(sample(), path)

    return _via(write, suffix)


def _sdf(path):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    from polydiff.plugins.molecule.io import write_sdf

    mols = []
    for smi in ("CC(=O)[O-]", "OCC#N"):
        mol = Chem.AddHs(Chem.MolFromSmiles(smi))
        AllChem.EmbedMolecule(mol, randomSeed=0)
        mols.append(mol)
    write_sdf(mols, path)


def _mol2(path):
    path.write_text("@<TRIPOS>MOLECULE\nwater\n 3 2 0 0 0\nSMALL\nNO_CHARGES\n\n@<TRIPOS>ATOM\n"
                    "      1 O1     0.0000    0.0000    0.0000 O.3     1  HOH1   0.0000\n"
                    "      2 H1     0.9572    0.0000    0.0000 H       1  HOH1   0.0000\n"
                    "      3 H2    -0.2400    0.9266    0.0000 H       1  HOH1   0.0000\n"
                    "@<TRIPOS>BOND\n     1     1     2    1\n     2     1     3    1\n")


def _tone(rate: int) -> dict:
    t = torch.arange(rate // 10) / rate
    return {"x": (0.3 * torch.sin(2 * torch.pi * 440 * t))[None, None], "cond": {"sample_rate": torch.tensor([rate])}}


def _angles() -> dict:
    g = torch.Generator().manual_seed(0)
    return {"x": (torch.rand(1, 12, 6, generator=g) * 2 - 1) * 3.0}


SEEDS: dict[str, list[tuple[str, Callable[[Path], bytes]]]] = {
    "pdb": [(".pdb", _by_format("pdb", ".pdb", _angles))],
    "mmcif": [(".cif", _by_format("mmcif", ".cif", _angles))],
    "timeseries_csv": [(".csv", _via(_csv, ".csv")), (".csv", _via(_csv_dates, ".csv")),
                       (".parquet", _via(_parquet, ".parquet"))],
    "ply": [(".ply", _pc("write_ply", ".ply", binary=True)), (".ply", _pc("write_ply", ".ply", binary=False))],
    "pcd": [(".pcd", _pc("write_pcd", ".pcd", binary=False)), (".pcd", _pc("write_pcd", ".pcd", binary=True))],
    "off": [(".off", _pc("write_off", ".off")), (".off", _via(_off_mesh, ".off"))],
    "obj": [(".obj", _pc("write_obj", ".obj")), (".obj", _via(_obj_mesh, ".obj"))],
    "xyz": [(".xyz", _pc("write_xyz", ".xyz"))],
    "npy": [(".npy", _pc("write_npy", ".npy")), (".npz", _via(_npz, ".npz"))],
    "nifti": [(".nii", _nifti(False)), (".nii.gz", _nifti(True)), (".nii", _nifti(False, ndim=2))],
    "png-slice": [(".png", _png("L")), (".png", _png("I;16"))],
    "png": [(".png", _png("RGB")), (".png", _png("L"))],
    "wav": [(".wav", _by_format("wav", ".wav", lambda: _tone(8000))),
            (".wav", _by_format("wav", ".wav", lambda: _tone(16000)))],
    "flac": [(".flac", _by_format("flac", ".flac", lambda: _tone(8000)))],
    "ogg": [(".ogg", _by_format("ogg", ".ogg", lambda: _tone(8000)))],
    "sdf": [(".sdf", _via(_sdf, ".sdf"))],
    "mol2": [(".mol2", _via(_mol2, ".mol2"))],
}
TEXT_SUFFIXES = (".csv", ".off", ".obj", ".xyz", ".pcd", ".ply", ".yaml", ".pdb", ".cif", ".sdf", ".mol2")


_FORMATS: dict = {}


def _formats():
    if not _FORMATS:
        _FORMATS.update({f.name: f for f in get_plugin_manager(reload=True).file_formats() if f.read is not None})
    return _FORMATS


def test_every_registered_reader_has_a_seed():
    """A new domain's file format must be added to SEEDS (so the fuzzer covers it)."""
    missing = sorted(set(_formats()) - set(SEEDS))
    assert not missing, f"add valid seed files for {missing} to SEEDS in {__file__}"


# -- mutations --------------------------------------------------------------------------------------------
FIELD_VALUES = ["nan", "NaN", "inf", "-inf", "1e309", "-1", "0", "99999999999", "-99999999999", "", "abc", "1e-320",
                "0x10", "1,2", "\x00", "3.4e39", "-0", "２"]
NUMBER = re.compile(rb"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


@st.composite
def mutated(draw, data: bytes, text: bool):
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        n = len(out)
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "field", "field"] if text else
                                  ["truncate", "flip", "flip", "insert", "delete"]))
        if op == "truncate":
            out = out[: draw(st.integers(0, max(n - 1, 0)))]
        elif op == "flip" and n:
            i = draw(st.integers(0, n - 1))
            out[i] ^= draw(st.integers(1, 255))
        elif op == "insert":
            i = draw(st.integers(0, n))
            out[i:i] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete" and n:
            i = draw(st.integers(0, n - 1))
            del out[i:i + draw(st.integers(1, 16))]
        elif op == "field":
            spans = [m.span() for m in NUMBER.finditer(bytes(out))]
            if spans:
                a, b = spans[draw(st.integers(0, len(spans) - 1))]
                out[a:b] = draw(st.sampled_from(FIELD_VALUES)).encode()
    return bytes(out)


def _check_batch(out, where: str) -> None:
    assert isinstance(out, dict) and "x" in out, f"{where}: reader returned {type(out).__name__} without 'x'"
    x = out["x"]
    if isinstance(x, dict):  # a state of named parts (polydiff.structured): each part, and a per-node presence
        assert x, f"{where}: x has no parts"
        for k, v in x.items():
            _check_batch({"x": v}, f"{where} part {k!r}")
        ref = next(iter(x.values()))
        assert all(v.shape[:2] == ref.shape[:2] for v in x.values()), f"{where}: parts differ in (batch, nodes)"
        p = out.get("presence")
        assert p is None or tuple(p.shape) == tuple(ref.shape[:2]), f"{where}: presence {tuple(p.shape)}"
        return
    assert torch.is_tensor(x) and x.is_floating_point(), f"{where}: x is {type(x).__name__} {getattr(x, 'dtype', '')}"
    assert x.ndim >= 2 and all(d > 0 for d in x.shape), f"{where}: x has shape {tuple(x.shape)}"
    assert torch.isfinite(x).all(), f"{where}: x has non-finite values"
    for k, v in out.items():
        if torch.is_tensor(v) and k != "x" and v.shape[:1] != x.shape[:1]:
            raise AssertionError(f"{where}: {k} has shape {tuple(v.shape)} beside x {tuple(x.shape)}")


def _fuzz_file(tmp_path: Path, suffix: str, data: bytes, read: Callable, check: Callable, where: str) -> None:
    path = tmp_path / f"fuzz{suffix}"
    path.write_bytes(data)
    try:
        with time_limit():
            out = read(path)
    except PolydiffError as exc:
        assert str(exc).strip(), f"{where}: typed error without a message"
        return
    check(out, where)


@pytest.mark.parametrize("name, k", [(n, k) for n, seeds in SEEDS.items() for k in range(len(seeds))])
def test_registered_readers_survive_mutations(name, k, tmp_path_factory):
    fmt = _formats().get(name)
    if fmt is None:
        pytest.skip(f"format {name!r} is not registered here (its plugin did not load)")
    suffix, make = SEEDS[name][k]
    tmp = tmp_path_factory.mktemp(f"fuzz_{name}")
    seed = make(tmp)
    _check_batch(fmt.read(tmp / f"seed{suffix}"), f"{name} seed")  # the seed itself is valid
    text = suffix in TEXT_SUFFIXES

    @FUZZ
    @given(data=mutated(seed, text))
    def run(data):
        _fuzz_file(tmp, suffix, data, fmt.read, _check_batch, f"{name}{suffix}")

    run()


def _check_table(table, where: str) -> None:
    v = table.values
    assert v.ndim == 2 and v.shape[0] >= 1 and v.shape[1] >= 1 and len(table.times) == v.shape[0], where
    assert not np.isinf(v).any(), f"{where}: inf values"
    assert (~np.isnan(v)).any(axis=0).all(), f"{where}: a column without observations"


@pytest.mark.parametrize("k", range(3))
def test_series_table_loader_survives_mutations(k, tmp_path_factory):
    from polydiff.datasets.csv_series import load_table

    suffix, make = SEEDS["timeseries_csv"][k]
    tmp = tmp_path_factory.mktemp("fuzz_table")
    seed = make(tmp)

    @FUZZ
    @given(data=mutated(seed, suffix == ".csv"))
    def run(data):
        _fuzz_file(tmp, suffix, data, load_table, _check_table, f"load_table{suffix}")

    run()


# -- checkpoints --------------------------------------------------------------------------------------------
def _checkpoint() -> dict:
    from polydiff.training import DiffusionModule

    torch.manual_seed(0)
    module = DiffusionModule(backbone={"class_path": "MLP", "init_args": {"dim": 2, "hidden": 8, "depth": 1}},
                             process={"class_path": "VP", "init_args": {"num_steps": 10}}, final_num_samples=0)
    return {"global_step": 3, "hyper_parameters": dict(module.hparams), "state_dict": module.state_dict(),
            "polydiff": {"sample_shape": [2], "domain": "toy", "plugins": {"polydiff": "0.1.0"}},
            "datamodule_hyper_parameters": {"_class_path": "polydiff.testing_data.MixtureDataModule", "n_train": 8,
                                            "_instantiator": "lightning.pytorch.cli.instantiate_module"}}


def _rebuild(path):
    from polydiff.checkpointing import load_checkpoint
    from polydiff.components import datamodule_from_checkpoint
    from polydiff.training import DiffusionModule

    raw = load_checkpoint(path)
    module = DiffusionModule.from_checkpoint(path, checkpoint=raw)
    datamodule_from_checkpoint(raw, str(path))
    return module


def _check_module(module, where: str) -> None:
    for k, v in module.state_dict().items():
        if v.is_floating_point():
            assert torch.isfinite(v).all(), f"{where}: non-finite weights in {k}"
    assert module.sample_shape == (2,), where


def test_checkpoint_loader_survives_byte_mutations(tmp_path):
    buf = io.BytesIO()
    torch.save(_checkpoint(), buf)
    seed = buf.getvalue()
    (tmp_path / "seed.ckpt").write_bytes(seed)
    _check_module(_rebuild(tmp_path / "seed.ckpt"), "seed")

    @FUZZ
    @given(data=mutated(seed, False))
    def run(data):
        _fuzz_file(tmp_path, ".ckpt", data, _rebuild, _check_module, "checkpoint bytes")

    run()


JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(["", "vp", "MLP", "os.system", "subprocess.Popen", "polydiff.backbones.MLP", "x" * 300,
                       "lightning.pytorch.cli.instantiate_module", "builtins.eval", "DiffusionLoss"]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["class_path", "init_args", "dim", "hidden", "_class_path", "dict_kwargs", "a"]),
                      inner, max_size=3),
    max_leaves=6,
)
HP_KEYS = ["backbone", "process", "space", "loss", "parameterization", "num_classes", "lr", "seed", "sample_steps",
           "_class_path", "_instantiator", "conditioner", "betas", "ema_decay", "bogus"]
TOP_KEYS = ["hyper_parameters", "state_dict", "polydiff", "datamodule_hyper_parameters", "global_step"]


_CKPT: dict = {}


@st.composite
def edited_checkpoint(draw):
    import copy

    if not _CKPT:
        _CKPT.update(_checkpoint())
    ckpt = copy.deepcopy(_CKPT)
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(["hp", "hp", "top", "state", "dm"]))
        if where in ("hp", "dm", "state") and not isinstance(ckpt.get({"hp": "hyper_parameters", "dm":
                                                                       "datamodule_hyper_parameters"}.get(
                                                                           where, "state_dict")), dict):
            continue  # already replaced by junk
        if where == "state" and not ckpt["state_dict"]:
            continue
        if where == "hp":
            key = draw(st.sampled_from(HP_KEYS))
            if draw(st.booleans()) and key in ckpt["hyper_parameters"]:
                del ckpt["hyper_parameters"][key]
            else:
                ckpt["hyper_parameters"][key] = draw(JUNK)
        elif where == "top":
            ckpt[draw(st.sampled_from(TOP_KEYS))] = draw(JUNK)
        elif where == "dm":
            ckpt["datamodule_hyper_parameters"][draw(st.sampled_from(["_class_path", "n_train", "grid", "zz"]))] = \
                draw(JUNK)
        else:
            key = draw(st.sampled_from(sorted(ckpt["state_dict"])))
            t = ckpt["state_dict"][key]
            kind = draw(st.sampled_from(["nan", "shape", "drop", "dtype"]))
            if kind == "nan":
                ckpt["state_dict"][key] = t.float().fill_(float("nan")) if t.is_floating_point() else t
            elif kind == "shape":
                ckpt["state_dict"][key] = torch.zeros(t.numel() + 1)
            elif kind == "drop":
                del ckpt["state_dict"][key]
            else:
                ckpt["state_dict"][key] = t.to(torch.int64)
    return ckpt


def test_checkpoint_rebuild_survives_field_edits(tmp_path):
    _CKPT.update(_checkpoint())

    @FUZZ
    @given(ckpt=edited_checkpoint())
    def run(ckpt):
        buf = io.BytesIO()
        torch.save(ckpt, buf)
        _fuzz_file(tmp_path, ".ckpt", buf.getvalue(), _rebuild, _check_module, "checkpoint fields")

    run()


# -- YAML configs -----------------------------------------------------------------------------------------
CONFIG = b"""trainer: {max_steps: 2}
model:
  class_path: DiffusionModule
  init_args:
    backbone: {class_path: MLP, init_args: {dim: 2, hidden: 8}}
data:
  class_path: MixtureDataModule
  init_args: {n_train: 16, n_val: 8, grid: 3, batch_size: 4, seed: 1}
"""


def test_yaml_configs_survive_mutations(tmp_path):
    from polydiff.data import DiffusionDataModule
    from polydiff.components import datamodule_from_config

    def check(dm, where):
        assert isinstance(dm, DiffusionDataModule), f"{where}: built {type(dm).__name__}"

    tags = [b"!!python/object/apply:os.system ['true']", b"!!python/name:os.system", b"&a [*a]", b"*undefined",
            b"!!binary AAAA", b"{", b"- - - -", b"\t"]

    @FUZZ
    @given(data=mutated(CONFIG, True), tag=st.none() | st.sampled_from(tags), at=st.integers(0, len(CONFIG)))
    def run(data, tag, at):
        if tag is not None:
            at = min(at, len(data))
            data = data[:at] + tag + data[at:]
        _fuzz_file(tmp_path, ".yaml", data, datamodule_from_config, check, "sample --config YAML")

    run()


def test_gzip_bomb_like_nifti_is_refused_quickly(tmp_path):
    """A header declaring a huge volume over a tiny file: refused as truncated, without allocating it."""
    import nibabel as nib

    img = nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4))
    img.header.set_data_shape((4000, 4000, 4000))
    raw = img.header.binaryblock + b"\x00" * 4 + np.zeros(64, np.float32).tobytes()
    (tmp_path / "big.nii.gz").write_bytes(gzip.compress(raw))
    from polydiff.plugins.medical.io import read_nifti

    with time_limit(5), pytest.raises(PolydiffError, match="truncated"):
        read_nifti(tmp_path / "big.nii.gz")
