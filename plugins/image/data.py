"""Image data modules: scikit-learn digits (default), MNIST, CIFAR-10 and any folder of images.

Every module yields batch-contract items ``{"x": (C, H, W) float in [-1, 1], "cond": {"label": int64}}``.
Pixels are scaled linearly from ``[0, max_value]`` to ``[-1, 1]`` — the data scaling of DDPM (Ho et al.
2020, §3.3), which the Gaussian prior N(0, I) assumes. ``pad_to`` pads images symmetrically with the
background value −1 to a square size (e.g. MNIST 28 → 32), for U-Nets whose depth needs sizes divisible
by a power of two; padding is part of the model's representation and stays in samples and grids.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from polydiff.data import DiffusionDataModule, TensorItemDataset
from polydiff.errors import ConfigError, DataError
from polydiff.prompts import ClassPrompts, PromptedSet

Tensor = torch.Tensor


def normalise(images: np.ndarray, max_value: float, pad_to: int | None = None) -> Tensor:
    """uint8/float pixels (N, C, H, W) in [0, max_value] -> float32 in [-1, 1], padded with −1 to ``pad_to``."""
    x = torch.as_tensor(np.asarray(images, dtype=np.float32)) / float(max_value) * 2.0 - 1.0
    if pad_to is not None:
        h, w = x.shape[-2:]
        if pad_to < max(h, w):
            raise ConfigError(f"pad_to={pad_to} is smaller than the images ({h}x{w})")
        top, left = (pad_to - h) // 2, (pad_to - w) // 2
        x = torch.nn.functional.pad(x, (left, pad_to - w - left, top, pad_to - h - top), value=-1.0)
    return x.contiguous()


def to_uint8(x: Tensor) -> Tensor:
    """Model-space images in [-1, 1] -> uint8 (0..255) for display; values outside are clipped."""
    return ((x.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(train, val) indices from a permutation drawn with ``seed`` (sorted inside each part)."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    n_val = max(1, int(round(n * val_fraction)))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


class ImageDataModule(DiffusionDataModule):
    """Base class of the image data modules: normalisation, padding, class labels, balanced sampling
    conditions and the labelled splits the evaluation classifier trains and tests on.

    Subclasses implement :meth:`load_splits` returning ``(train_images, train_labels, val_images,
    val_labels)`` as uint8/float arrays (N, C, H, W) in ``[0, max_value]``.

    Args:
        batch_size, num_workers, seed: see :class:`polydiff.data.DiffusionDataModule`.
        pad_to: pad images with the background value to ``pad_to × pad_to`` (None: keep their size).
    """

    domain = "image"
    #: largest pixel value of the raw data (16 for sklearn digits, 255 for 8-bit images)
    max_value: float = 255.0
    num_classes: int = 10
    class_names: Sequence[str] = tuple(str(i) for i in range(10))

    def __init__(self, batch_size: int = 64, num_workers: int = 0, seed: int = 0, pad_to: int | None = None):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.pad_to = pad_to

    def load_splits(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        xtr, ytr, xva, yva = self.load_splits()
        for name, lab in (("train", ytr), ("val", yva)):
            if len(lab) and (lab.min() < 0 or lab.max() >= self.num_classes):
                raise DataError(f"{type(self).__name__}: {name} labels outside 0..{self.num_classes - 1}")
        self.train_set = TensorItemDataset(normalise(xtr, self.max_value, self.pad_to),
                                            torch.as_tensor(np.asarray(ytr), dtype=torch.long))
        self.val_set = TensorItemDataset(normalise(xva, self.max_value, self.pad_to),
                                          torch.as_tensor(np.asarray(yva), dtype=torch.long))

    # -- contract ----------------------------------------------------------------------------------
    def example_cond(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Balanced class labels 0, 1, …, K−1, 0, 1, … (deterministic: grids come out ordered by class)."""
        return {"label": torch.arange(n, dtype=torch.long) % self.num_classes}

    def decode(self, x: Tensor) -> Tensor:
        """Model space [-1, 1] -> pixel values in [0, max_value] (float; padding kept)."""
        return (x + 1.0) / 2.0 * self.max_value

    def to_uint8(self, x: Tensor) -> Tensor:
        return to_uint8(x)

    def labelled_splits(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(train x, train labels, held-out x, held-out labels) in model space, for the evaluation classifier."""
        self.require_set("train_set")
        return self.train_set.x, self.train_set.labels, self.val_set.x, self.val_set.labels


class DigitsDataModule(ImageDataModule):
    """scikit-learn's 8×8 digits (1797 images, values 0..16, 10 classes), the offline default.

    8×8 is divisible by 4, so a U-Net with up to three resolution levels needs no padding. The
    train/validation split is a random permutation drawn with ``split_seed`` (fixed across training
    seeds, so the held-out set — and the cached evaluation classifier — stay the same).

    Args:
        val_fraction: fraction of the 1797 images held out (default 0.1 → 180 images).
        split_seed: seed of the split.
    """

    max_value = 16.0

    def __init__(self, batch_size: int = 64, num_workers: int = 0, seed: int = 0, pad_to: int | None = None,
                 val_fraction: float = 0.1, split_seed: int = 0):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, pad_to=pad_to)
        self.val_fraction, self.split_seed = val_fraction, split_seed

    def load_splits(self):
        from polydiff.datasets.digits import load_digits

        images, labels = load_digits()
        tr, va = split_indices(len(labels), self.val_fraction, self.split_seed)
        images = images[:, None]
        return images[tr.numpy()], labels[tr.numpy()], images[va.numpy()], labels[va.numpy()]


class MNISTDataModule(ImageDataModule):
    """MNIST (28×28 grey): the official 60000 training images, validated on the official test set.

    Args:
        root: folder with the four ``.gz`` files (verified by sha256); None downloads them to the cache.
        pad_to: default 32 (DDPM-style U-Nets with 4 levels need sizes divisible by 8).
        max_val: use only the first ``max_val`` test images for validation (None: all 10000).
    """

    max_value = 255.0

    def __init__(self, batch_size: int = 128, num_workers: int = 0, seed: int = 0, pad_to: int | None = 32,
                 root: str | None = None, max_val: int | None = None):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, pad_to=pad_to)
        self.root, self.max_val = root, max_val

    def prepare_data(self) -> None:
        from polydiff.datasets import mnist

        for split in ("train", "test"):
            mnist.load_mnist(split, root=self.root)

    def load_splits(self):
        from polydiff.datasets import mnist

        xtr, ytr = mnist.load_mnist("train", root=self.root)
        xte, yte = mnist.load_mnist("test", root=self.root)
        xte, yte = xte[: self.max_val], yte[: self.max_val]
        return xtr[:, None], ytr, xte[:, None], yte


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10 (32×32 RGB): the 50000 training images, validated on the official 10000 test images.

    Args:
        root: folder holding ``cifar-10-binary.tar.gz`` (verified by sha256); None downloads to the cache.
        max_val: use only the first ``max_val`` test images for validation (None: all).
    """

    max_value = 255.0
    class_names = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

    def __init__(self, batch_size: int = 128, num_workers: int = 0, seed: int = 0, pad_to: int | None = None,
                 root: str | None = None, max_val: int | None = None):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, pad_to=pad_to)
        self.root, self.max_val = root, max_val

    def prepare_data(self) -> None:
        from polydiff.datasets import cifar10

        cifar10.load_cifar10("test", root=self.root)

    def load_splits(self):
        from polydiff.datasets import cifar10

        xtr, ytr = cifar10.load_cifar10("train", root=self.root)
        xte, yte = cifar10.load_cifar10("test", root=self.root)
        return xtr, ytr, xte[: self.max_val], yte[: self.max_val]


class ImageFolderDataModule(ImageDataModule):
    """Any folder of images with one subfolder per class (labels = sorted subfolder names).

    Args:
        root: the folder.
        size: images are resized (shorter side) and centre-cropped to ``size × size``.
        mode: ``"RGB"`` or ``"L"`` (grey).
        val_fraction, split_seed: random held-out split, as for :class:`DigitsDataModule`.
    """

    max_value = 255.0

    def __init__(self, root: str, size: int = 32, mode: str = "RGB", batch_size: int = 64, num_workers: int = 0,
                 seed: int = 0, pad_to: int | None = None, val_fraction: float = 0.1, split_seed: int = 0):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, pad_to=pad_to)
        self.root, self.size, self.mode = Path(root), size, mode
        self.val_fraction, self.split_seed = val_fraction, split_seed

    def load_splits(self):
        from polydiff.datasets.image_folder import load_image_folder

        images, labels, classes = load_image_folder(self.root, self.size, self.mode)
        self.class_names, self.num_classes = tuple(classes), len(classes)
        if len(labels) < 2:
            raise DataError(f"{self.root}: need at least 2 images for a train/validation split, found {len(labels)}")
        tr, va = split_indices(len(labels), self.val_fraction, self.split_seed)
        return images[tr.numpy()], labels[tr.numpy()], images[va.numpy()], labels[va.numpy()]



#: how the digits are named in prompts
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: training phrasings ({w}: the digit's word, {d}: its numeral)
TRAIN_TEMPLATES = ("a handwritten {w}", "the digit {w}", "the number {w}", "a picture of a {w}",
                   "an image of the digit {d}", "a {w} written by hand", "the numeral {d}", "{w}")
#: phrasings never seen verbatim in training, used for validation and sampling
HELDOUT_TEMPLATES = ("a hand-drawn {w}", "digit {d}, handwritten", "a scan of a handwritten number {w}",
                     "a small drawing of the number {w}")


class TextDigitsDataModule(DigitsDataModule):
    """scikit-learn's digits described in words ("a handwritten seven"): ``cond["embedding"]`` is the sentence
    embedding of a prompt (the text plugin's registered ``SentenceEmbedder`` conditioner, looked up by name),
    for text-conditioned generation with classifier-free guidance (the null condition is the zero vector).

    Each training image gets one of the training phrasings of its class, drawn with ``split_seed``; validation
    images and sampling use the held-out phrasings, never seen verbatim in training. ``sample_inputs`` cycles
    through the classes and the held-out phrasings and adds ``cond["label"]`` — read only by the evaluation
    (classifier accuracy of the samples); the backbone is built without ``num_classes`` and never sees it.

    Args:
        embedder: the conditioner's registered name or ``{class_path, init_args}`` spec.
        words: one word per digit; train_templates / heldout_templates: phrasings with ``{w}`` (the word) and
            ``{d}`` (the numeral).
        (other arguments as :class:`DigitsDataModule`)
    """

    def __init__(self, batch_size: int = 64, num_workers: int = 0, seed: int = 0, pad_to: int | None = None,
                 val_fraction: float = 0.1, split_seed: int = 0, embedder: Any = "SentenceEmbedder",
                 words: Sequence[str] = DIGIT_WORDS, train_templates: Sequence[str] = TRAIN_TEMPLATES,
                 heldout_templates: Sequence[str] = HELDOUT_TEMPLATES):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed, pad_to=pad_to,
                         val_fraction=val_fraction, split_seed=split_seed)
        if len(words) != self.num_classes:
            raise ConfigError(f"words needs one word per digit ({self.num_classes}); got {len(words)}")
        for name, templates in (("train_templates", train_templates), ("heldout_templates", heldout_templates)):
            if not templates or not all(isinstance(t, str) and ("{w}" in t or "{d}" in t) for t in templates):
                raise ConfigError(f"{name} must be a non-empty list of phrasings containing {{w}} or {{d}}; got {templates!r}")
        self.words = list(words)
        self.train_templates, self.heldout_templates = list(train_templates), list(heldout_templates)
        fill = lambda templates: [[t.format(w=w, d=d) for t in templates] for d, w in enumerate(self.words)]
        self.class_prompts = ClassPrompts(fill(self.train_templates), fill(self.heldout_templates), embedder)

    def prompts(self, split: str) -> list[list[str]]:
        """Per class, the phrasings of ``split`` (``train`` or ``heldout``)."""
        return self.class_prompts.prompts(split)

    def embed(self, prompts: Sequence[str]) -> Tensor:
        """Sentence embeddings of ``prompts`` through the registered conditioner (built once)."""
        return self.class_prompts.embed(prompts)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        super().setup(stage)
        tr, va = self.train_set, self.val_set
        self.train_set = PromptedSet.build(tr.x, tr.labels, self.class_prompts, "train", self.split_seed)
        self.val_set = PromptedSet.build(va.x, va.labels, self.class_prompts, "heldout", self.split_seed + 1)

    def example_cond(self, n: int, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Held-out phrasings: sample i shows digit i mod 10, phrased with held-out template (i div 10) mod T."""
        return self.class_prompts.example_cond(n)
