"""polydiff.prompts: per-class phrasings, held-out prompts and their embeddings (with a stub conditioner)."""

import pytest
import torch

from polydiff.errors import ConfigError, DataError
from polydiff.prompts import ClassPrompts, PromptedSet


class LengthEmbedder:
    """A stand-in conditioner: the embedding of a prompt is (its length, its number of words)."""

    def __call__(self, prompts):
        return torch.tensor([[float(len(p)), float(len(p.split()))] for p in prompts])


TRAIN = [["a cat", "one small cat"], ["a dog", "a big dog here"]]
HELD = [["kitten"], ["puppy dog"]]


def test_assign_and_example():
    cp = ClassPrompts(TRAIN, HELD, embedder=LengthEmbedder())
    labels = torch.tensor([0, 1, 1, 0, 1])
    ds = PromptedSet.build(torch.zeros(5, 3), labels, cp, "train", seed=0)
    assert len(ds) == 5 and ds[0]["cond"]["embedding"].shape == (2,)
    assert torch.equal(ds.row // 2, labels)  # row = label * k + phrasing: always a phrasing of the item's class
    assert torch.equal(ds.row, PromptedSet.build(torch.zeros(5, 3), labels, cp, "train", seed=0).row)  # seeded
    for i in range(5):
        assert torch.equal(ds[i]["cond"]["embedding"], cp.embed([TRAIN[int(labels[i])][int(ds.row[i]) % 2]])[0])
    prompts, lab = cp.example(3)
    assert prompts == ["kitten", "puppy dog", "kitten"] and lab.tolist() == [0, 1, 0]
    assert cp.example_cond(2)["embedding"].tolist() == [[6.0, 1.0], [9.0, 2.0]]


def test_bad_phrasings():
    with pytest.raises(ConfigError, match="never appear in training"):
        ClassPrompts(TRAIN, [["a cat"], ["puppy"]])
    with pytest.raises(ConfigError, match="expected 2"):
        ClassPrompts(TRAIN, [["kitten"]])
    with pytest.raises(ConfigError, match="same number"):
        ClassPrompts([["a"], ["b", "c"]], HELD)
    with pytest.raises(ConfigError, match=r"train phrasings\[1\]"):
        ClassPrompts([["a"], [""]], HELD)
    with pytest.raises(DataError, match="labels must be in"):
        ClassPrompts(TRAIN, HELD, LengthEmbedder()).assign(torch.tensor([2]), "train", 0)
