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


#: phrasings per category (chair, airplane) seen in training: names, parts and what the object is for, so the
#: model must map different wordings of one category (and no category word at all) to one shape class
SHAPE_TRAIN_PROMPTS = (
    ("a chair", "a chair with four legs", "a seat with a backrest", "a piece of furniture to sit on",
     "a wooden dining chair", "a 3D model of a chair", "a point cloud of a chair", "a simple kitchen chair"),
    ("an airplane", "an aeroplane with two wings", "a jet plane", "an aircraft with a tail fin",
     "a passenger plane", "a 3D model of an airplane", "a point cloud of an airplane", "a flying machine with wings"),
)
#: phrasings never seen verbatim in training (validation and sampling)
SHAPE_HELDOUT_PROMPTS = (
    ("a seat with legs and a back", "something you can sit on", "an office chair", "furniture: a chair"),
    ("a plane with wings and a fuselage", "something that flies in the sky", "an airliner", "aircraft: an airplane"),
)


class TextShapes(ProceduralPointClouds):
    """Procedural shapes of several categories described in words: every cloud is paired with one training
    phrasing of its category ("a seat with a backrest", "a jet plane"), ``cond["embedding"]`` its sentence
    embedding (the text plugin's registered ``SentenceEmbedder`` conditioner, looked up by name) for
    text-to-shape generation with classifier-free guidance (null condition: the zero vector).

    Validation clouds and ``sample_inputs`` use held-out phrasings never seen verbatim in training; sampling
    cycles through the categories and adds ``cond["label"]`` (category index), read only by the evaluation
    (a shape classifier's accuracy on the samples, :mod:`.classifier`). The reference set of MMD/COV/1-NNA is
    the test split of all categories.

    Args:
        categories: procedural categories (``chair``, ``airplane``), one class each, in this order.
        train_prompts / heldout_prompts: per category, its phrasings (the same number for every category).
        embedder: the conditioner's registered name or ``{class_path, init_args}`` spec.
        (other arguments as :class:`PointCloudDataModule`; ``root`` as :class:`ProceduralPointClouds`)
    """

    def __init__(self, categories: list[str] | tuple[str, ...] = ("chair", "airplane"), root: str | None = None,
                 train_prompts=SHAPE_TRAIN_PROMPTS, heldout_prompts=SHAPE_HELDOUT_PROMPTS,
                 embedder="SentenceEmbedder", **kw):
        super().__init__(category=None, root=root, **kw)
        from polydiff.prompts import ClassPrompts

        self.categories = [categories] if isinstance(categories, str) else list(categories)
        if len(self.categories) < 2:
            raise ConfigError(f"TextShapes needs at least 2 categories to describe; got {self.categories}")
        self.class_prompts = ClassPrompts(train_prompts, heldout_prompts, embedder)
        if self.class_prompts.num_classes != len(self.categories):
            raise ConfigError(f"train_prompts describe {self.class_prompts.num_classes} categories; "
                              f"categories has {len(self.categories)}")
        self.class_names, self.num_classes = tuple(self.categories), len(self.categories)

    def labelled_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """All categories' clouds of ``split`` (n, points, 3) in data units and their category indices (n,)."""
        from polydiff.datasets.pointcloud_procedural import load_procedural

        parts = [load_procedural(c, split, self.root) for c in self.categories]
        return np.concatenate(parts), np.concatenate([np.full(len(p), k) for k, p in enumerate(parts)])

    def load_split(self, split):
        return self.labelled_split(split)[0]

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        super().setup(stage)
        from polydiff.prompts import PromptedSet

        for name, split, prompts, seed in (("train_set", "train", "train", self.seed),
                                           ("val_set", "val", "heldout", self.seed + 1)):
            labels = torch.as_tensor(self.labelled_split(split)[1])
            setattr(self, name, PromptedSet.build(getattr(self, name).x, labels, self.class_prompts, prompts, seed))

    def reference_data(self, n: int | None = None) -> dict:
        """Test clouds of all categories interleaved (cloud i of category i mod C, as :meth:`example_cond`
        orders samples), so the first n hold every category equally (evaluation truncates to the samples)."""
        x = super().reference_data()["x"]
        labels = torch.as_tensor(self.labelled_split(self.eval_split())[1])
        rank = torch.zeros_like(labels)
        for k in range(self.num_classes):
            rank[labels == k] = torch.arange(int((labels == k).sum()))
        order = torch.argsort(rank * self.num_classes + labels)
        return {"x": x[order][:n] if n is not None else x[order]}

    def example_cond(self, n: int, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Held-out phrasings: sample i shows category i mod C, phrased with held-out phrasing (i div C) mod T."""
        return self.class_prompts.example_cond(n)

    def shape_classifier(self):
        """The :mod:`.classifier` trained on the real training clouds and scored on the real test clouds, both
        at ``num_points`` points (fitted once per data module; a second or two on a CPU)."""
        if getattr(self, "_classifier", None) is None:
            from .classifier import fit_shape_classifier

            (xtr, ytr), (xte, yte) = self.labelled_split("train"), self.labelled_split("test")
            xtr = _subsample(xtr, self.num_points, self.seed, "TextShapes train")
            xte = _subsample(xte, self.num_points, self.seed + 2, "TextShapes test")
            self._classifier = fit_shape_classifier(xtr, ytr, xte, yte, seed=self.seed)
        return self._classifier
