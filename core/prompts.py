"""Class descriptions in words as the condition of a generator: :class:`ClassPrompts` and :class:`PromptedSet`.

Text-conditioned generation of a labelled data set (digits "a handwritten seven", shapes "a chair with four
legs") needs the same three things in every domain: several phrasings per class, of which some are kept out
of training so that evaluation measures generalisation to prompts never seen verbatim; their sentence
embeddings, computed once through a registered ``conditioner`` (e.g. the text plugin's ``SentenceEmbedder``,
looked up by name, so this module imports no text library); and sampling conditions that cycle through the
classes and the held-out phrasings and carry the class ``label`` for the evaluation (a classifier's accuracy
on the samples). The null condition of classifier-free guidance (Ho & Salimans 2022) is the zero vector
(:func:`polydiff.guidance.drop_conditions`), which no unit-norm sentence embedding equals.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch.utils.data import Dataset

from .errors import ConfigError, DataError

Tensor = torch.Tensor

SPLITS = ("train", "heldout")


def _check_phrasings(name: str, per_class: Sequence[Sequence[str]], num_classes: int | None) -> list[list[str]]:
    if isinstance(per_class, str) or not per_class:
        raise ConfigError(f"{name} must be a list (one entry per class) of lists of phrasings; got {per_class!r}")
    out = []
    for c, ps in enumerate(per_class):
        if isinstance(ps, str) or not ps or not all(isinstance(p, str) and p.strip() for p in ps):
            raise ConfigError(f"{name}[{c}] must be a non-empty list of non-empty phrasings; got {ps!r}")
        out.append([str(p) for p in ps])
    if num_classes is not None and len(out) != num_classes:
        raise ConfigError(f"{name} has phrasings for {len(out)} classes; expected {num_classes}")
    if len({len(ps) for ps in out}) != 1:  # balanced: every class is described as often
        raise ConfigError(f"{name} must give every class the same number of phrasings; got {[len(ps) for ps in out]}")
    return out


class ClassPrompts:
    """Training and held-out phrasings per class and their embeddings.

    Args:
        train: per class, the phrasings used for training items (the same number for every class).
        heldout: per class, phrasings used only for validation and sampling; none may equal a training phrasing.
        embedder: a registered ``conditioner`` name or ``{class_path, init_args}`` spec (built on first use).
    """

    def __init__(self, train: Sequence[Sequence[str]], heldout: Sequence[Sequence[str]],
                 embedder: Any = "SentenceEmbedder"):
        self.train = _check_phrasings("train phrasings", train, None)
        self.heldout = _check_phrasings("heldout phrasings", heldout, len(self.train))
        seen = {p for ps in self.train for p in ps} & {p for ps in self.heldout for p in ps}
        if seen:
            raise ConfigError(f"held-out phrasings must never appear in training; both have {sorted(seen)}")
        self.embedder_spec = embedder
        self._embedder = None

    @property
    def num_classes(self) -> int:
        return len(self.train)

    def prompts(self, split: str) -> list[list[str]]:
        """Per class, the phrasings of ``split`` (``train`` or ``heldout``)."""
        if split not in SPLITS:
            raise ConfigError(f"prompt split {split!r} is unknown; expected one of {SPLITS}")
        return self.train if split == "train" else self.heldout

    def embed(self, prompts: Sequence[str]) -> Tensor:
        """Embeddings (n, dim) of ``prompts`` through the registered conditioner."""
        if self._embedder is None:
            from .components import instantiate

            self._embedder = instantiate(self.embedder_spec, "conditioner")
        return self._embedder(list(prompts))

    def assign(self, labels: Tensor, split: str, seed: int) -> tuple[Tensor, Tensor]:
        """Draws (with ``seed``) one phrasing of ``split`` of its class for every item: returns the embedding
        table of all the split's phrasings (row = class · k + phrasing) and each item's row in it."""
        labels = torch.as_tensor(labels).long().reshape(-1)
        per_class = self.prompts(split)
        if labels.numel() and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise DataError(f"labels must be in [0, {self.num_classes}); got {labels.min()}..{labels.max()}")
        k = len(per_class[0])
        pick = torch.randint(0, k, (labels.shape[0],), generator=torch.Generator().manual_seed(int(seed)))
        return self.embed([p for ps in per_class for p in ps]), labels * k + pick  # row = label * k + phrasing

    def example(self, n: int) -> tuple[list[str], Tensor]:
        """Prompts and labels of ``n`` samples: sample i shows class i mod C, phrased with its held-out
        phrasing (i div C) mod T (T held-out phrasings per class)."""
        label = torch.arange(n, dtype=torch.long) % self.num_classes
        which = (torch.arange(n) // self.num_classes) % len(self.heldout[0])
        return [self.heldout[int(c)][int(j)] for c, j in zip(label, which)], label

    def example_cond(self, n: int) -> dict[str, Tensor]:
        """``{"embedding": (n, dim), "label": (n,)}`` for :meth:`example`'s prompts; ``label`` is for the
        evaluation only (a backbone built without class labels never reads it)."""
        prompts, label = self.example(n)
        return {"embedding": self.embed(prompts), "label": label}


class PromptedSet(Dataset):
    """Items ``{"x": x[i], "cond": {"embedding": table[row[i]]}}``, keeping the class ``labels``."""

    def __init__(self, x: Tensor, labels: Tensor, table: Tensor, row: Tensor):
        if not (len(x) == len(labels) == len(row)):
            raise DataError(f"{len(x)} items, {len(labels)} labels and {len(row)} prompt rows must agree")
        self.x, self.labels, self.table, self.row = x, torch.as_tensor(labels).long(), table, row

    @classmethod
    def build(cls, x: Tensor, labels: Tensor, prompts: ClassPrompts, split: str, seed: int) -> "PromptedSet":
        """Each item paired with one phrasing of ``split`` of its class, drawn with ``seed``."""
        table, row = prompts.assign(labels, split, seed)
        return cls(x, labels, table, row)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"x": self.x[i], "cond": {"embedding": self.table[self.row[i]]}}
