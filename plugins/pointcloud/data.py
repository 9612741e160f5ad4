"""Point-cloud data modules (``domain = "pointcloud"``): procedural shapes, ShapeNet PC15k, ModelNet, the fixture.

Every item is ``{"x": (num_points, 3) float32}`` in the *training* normalisation (``normalization``,
default ``shape_unit`` as Luo & Hu). Evaluation re-normalises samples and references with
``eval_normalization`` (default ``shape_bbox``, Luo & Hu's ``test_gen.py``) — both names are part of the
data module's hyper-parameters and its ``state_dict`` (so they are stored in every checkpoint), and the
evaluation hook names the protocol in every metric key.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from polydiff.data import DiffusionDataModule
from polydiff.errors import ConfigError, DataError

from .normalize import MODES, Normalizer


class CloudSet(Dataset):
    """Fixed tensors (n, num_points, 3) as batch-contract items."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i]}


def _subsample(x: np.ndarray, n: int, seed: int, name: str) -> np.ndarray:
    if x.shape[1] < n:
        raise DataError(f"{name}: clouds have {x.shape[1]} points; num_points={n} asks for more")
    if x.shape[1] == n:
        return x
    rng = np.random.default_rng(seed)
    return np.stack([c[rng.permutation(c.shape[0])[:n]] for c in x])


class PointCloudDataModule(DiffusionDataModule):
    """Base: subclasses implement ``load_split(split) -> (n, points, 3)`` in data units.

    Args:
        num_points: points per cloud handed to the model (seeded subset of each shape).
        normalization: training protocol, one of ``shape_unit``, ``shape_bbox``, ``global``, ``none``.
        eval_normalization: protocol applied to samples and references before the metrics.
        eval_emd: also compute the EMD metric set at ``emd_points`` points (exact, slower).
        batch_size, num_workers, seed: see :class:`polydiff.data.DiffusionDataModule`.
    """

    domain = "pointcloud"

    def __init__(self, num_points: int = 2048, normalization: str = "shape_unit",
                 eval_normalization: str = "shape_bbox", eval_emd: bool = False, emd_points: int = 512,
                 batch_size: int = 32, num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        for name, mode in (("normalization", normalization), ("eval_normalization", eval_normalization)):
            if mode not in MODES:
                raise ConfigError(f"{name}={mode!r} is unknown; expected one of {MODES}")
        if num_points < 2:
            raise ConfigError(f"num_points must be >= 2, got {num_points}")
        self.num_points = int(num_points)
        self.normalizer = Normalizer(normalization)
        self.eval_normalizer = Normalizer(eval_normalization)
        self.eval_emd, self.emd_points = eval_emd, int(emd_points)
        self.test_set = None

    # subclasses ----------------------------------------------------------------------------------
    def load_split(self, split: str) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def eval_split(self) -> str:
        """The split used as reference set by evaluation (test where the data have one)."""
        return "test"

    # contract ------------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        train = _subsample(self.load_split("train"), self.num_points, self.seed, f"{type(self).__name__} train")
        self.normalizer.fit(train)
        self.train_set = CloudSet(self.normalizer(torch.as_tensor(train), "train"))
        val = _subsample(self.load_split("val"), self.num_points, self.seed + 1, f"{type(self).__name__} val")
        self.val_set = CloudSet(self.normalizer(torch.as_tensor(val), "val"))

    def reference_data(self, n: int | None = None) -> dict:
        """Held-out clouds (eval split) in the training representation: ``{"x": (n, num_points, 3)}``."""
        split = self.eval_split()
        ref = _subsample(self.load_split(split), self.num_points, self.seed + 2, f"{type(self).__name__} {split}")
        if n is not None:
            ref = ref[:n]
        if self.normalizer.mode == "global" and self.normalizer.mean is None:
            self.setup("fit")
        return {"x": self.normalizer(torch.as_tensor(ref), split)}

    def state_dict(self) -> dict:
        """Stored by Lightning in every checkpoint: the normalisation protocols and fitted statistics."""
        return {"normalization": self.normalizer.state(), "eval_normalization": self.eval_normalizer.state(),
                "num_points": self.num_points}

    def load_state_dict(self, state: dict) -> None:
        if "normalization" in state:
            self.normalizer = Normalizer.from_state(state["normalization"])
        if "eval_normalization" in state:
            self.eval_normalizer = Normalizer.from_state(state["eval_normalization"])

    def protocol(self) -> str:
        return (f"train normalisation {self.normalizer.describe()}, evaluation normalisation "
                f"{self.eval_normalizer.describe()}, {self.num_points} points")


class ProceduralPointClouds(PointCloudDataModule):
    """The procedural chairs/airplanes of the shared data (the benchmark set; 320/32/64 shapes)."""

    def __init__(self, category: str = "chair", root: str | None = None, **kw):
        super().__init__(**kw)
        self.category, self.root = category, root

    def load_split(self, split):
        from polydiff.datasets.pointcloud_procedural import load_procedural

        return load_procedural(self.category, split, self.root)


class ShapeNetPC15k(PointCloudDataModule):
    """PointFlow's ShapeNetCore.v2.PC15k (``<root>/<synset>/{train,val,test}/*.npy``); the model trains on
    the first 10k points of each shape and is evaluated on points of the last 5k, as PointFlow/PVD."""

    def __init__(self, root: str, categories: list[str] | str = "chair", **kw):
        kw.setdefault("normalization", "global")
        super().__init__(**kw)
        self.root = root
        self.categories = [categories] if isinstance(categories, str) else list(categories)

    def load_split(self, split):
        from polydiff.datasets.shapenet_pc15k import load_pc15k

        part = "train_points" if split == "train" else "test_points"
        return load_pc15k(self.root, self.categories, split, part=part)[0]


class ModelNetPointClouds(PointCloudDataModule):
    """ModelNet10/40 meshes sampled area-uniformly; the official test split doubles as validation."""

    def __init__(self, root: str, classes: list[str] | None = None, **kw):
        super().__init__(**kw)
        self.root, self.classes = root, classes

    def load_split(self, split):
        from polydiff.datasets.modelnet import load_modelnet

        official = "train" if split == "train" else "test"
        return load_modelnet(self.root, official, self.classes, num_points=self.num_points, seed=self.seed)[0]


class FixturePointClouds(PointCloudDataModule):
    """The 8 real shapes × 256 points of ``fixture_tiny.npz`` (smoke tests and the CLI test): shapes 0–5
    train, 6 val, 7 test."""

    def __init__(self, path: str, num_points: int = 256, **kw):
        super().__init__(num_points=num_points, **kw)
        self.path = path

    def load_split(self, split):
        p = Path(self.path)
        try:
            x = np.load(p, allow_pickle=False)["real_256"]
        except (OSError, KeyError, ValueError) as exc:
            raise DataError(f"{p}: expected the pointcloud fixture npz with key 'real_256' ({exc})") from exc
        return {"train": x[:6], "val": x[6:7], "test": x[7:8]}[split]
