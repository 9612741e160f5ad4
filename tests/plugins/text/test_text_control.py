"""Classifier-guided control of Diffusion-LM (Li et al. 2022, §5.2, semantic content): MR and target parsing on
the real files, the noisy attribute classifier, the control step, and guided vs unguided success."""

from __future__ import annotations

import random

import pytest
import torch

from polydiff.errors import ConfigError, DataError
from polydiff.plugins.text.control import (AttributeClassifier, AttributeLabels, ControlCallback, classifier_for,
                                           contains_value, controlled_sample, load_targets, parse_mr,
                                           train_classifier, usable_targets)
from polydiff.plugins.text.data import TextDataModule, load_e2e
from polydiff.plugins.text.diffusion_lm import DiffusionLM, find_embedder
from tests.conftest import require_shared
from tests.plugins.text.dlm_train import train_steps


def test_parse_mr_on_real_lines_gives_exact_pairs():
    records = {r.line: r for r in load_e2e(require_shared("text", "e2e", "src1_valid.txt"))}
    assert parse_mr(records[1].source) == [("name", "Alimentum"), ("area", "city centre"), ("family friendly", "no")]
    assert parse_mr(records[729].source) == [("name", "Cocum"), ("Type", "coffee shop"), ("food", "Chinese"),
                                             ("price", "£ 20 - 25"), ("customer rating", "high"),
                                             ("family friendly", "no")]
    with pytest.raises(DataError, match=r"line 7: 'area city centre' is not 'field : value'"):
        parse_mr("name : X | area city centre", "line 7")


def test_targets_file_real_and_bad_lines_named(tmp_path):
    targets = load_targets(require_shared("text", "e2e", "control_target_attribute.json"))
    assert len(targets) == 79 and targets[0] == ("name", "The Vaults")
    assert ("customer rating", "5 out of 5") in targets and ("price", "less than £ 20") in targets
    bad = tmp_path / "targets.json"
    bad.write_text('["food", ":", "Italian"]\n{"food": 1}\n\n["food", "Italian"]\n["area", ":"\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"3 bad line\(s\): line 2: expected a JSON list.*line 4: expected.*"
                                        r"line 5: malformed JSON"):
        load_targets(bad)
    labels = AttributeLabels({"food": ["absent", "Chinese", "English"]})
    assert usable_targets([("food", "Italian"), ("food", "English"), ("area", "x")], labels) == (
        [("food", "English")], [("food", "Italian"), ("area", "x")])
    with pytest.raises(ConfigError, match="'Italian' of field 'food' never occurs"):
        labels.index("food", "Italian")


def test_contains_value_is_a_case_insensitive_token_match():
    assert contains_value("Near the Riverside , cheap .", "riverside")
    assert contains_value("rated 5 out of 5 by all", "5 out of 5")
    assert not contains_value("rated 5 out of 3", "5 out of 5")
    assert not contains_value("riversides", "riverside")


# -- a tiny synthetic corpus: each text states its food and area with filler words around ------------------
FOODS, AREAS = ["Chinese", "English", "French"], ["riverside", "city centre"]
FILLER = "the a place is nice good with near in and serves food located".split()


def _synthetic(tmp_path, n: int = 480) -> TextDataModule:
    rng = random.Random(0)
    lines = []
    for i in range(n):
        food, area = FOODS[i % 3], AREAS[(i // 3) % 2]
        words = [rng.choice(FILLER) for _ in range(rng.randint(3, 6))] + [food] + \
                [rng.choice(FILLER) for _ in range(2)] + (area.split() if i % 5 else [])
        mr = f"name : N{i % 4} | food : {food}" + (f" | area : {area}" if i % 5 else "")
        lines.append(f"{mr}||{' '.join(words)}")
    path = tmp_path / "synthetic.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    dm = TextDataModule(str(path), format="e2e", vocab_size=64, seq_len=16, batch_size=32, judge_steps=2)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    torch.manual_seed(0)
    dm = _synthetic(tmp_path_factory.mktemp("control"))
    module = DiffusionLM(vocab_size=dm.vocab_size, seq_len=dm.seq_len, embed_dim=8, dim=32, depth=1, heads=2,
                         ema_decay=0)
    module.attach_datamodule(dm)
    clf = train_classifier(module, dm, steps=1200, batch_size=32, dim=32, depth=1, heads=2)
    return dm, module, clf


def test_classifier_trained_on_noisy_embeddings_classifies_clean_ones(synthetic, tmp_path):
    """Trained on x_t = α EMB(w) + σ ε with t uniform, the classifier reads food and area (and their absence)
    from clean validation embeddings, far above the majority class; it survives a save/load round trip."""
    dm, module, clf = synthetic
    assert clf.labels.fields["food"] == ["absent", "Chinese", "English", "French"]
    assert clf.labels.fields["area"] == ["absent", "city centre", "riverside"]
    y = clf.labels.encode(dm.val_records)
    rows = dm.val_set.fields
    x0 = find_embedder(module.sampling_model()).embed(rows["x"])
    t = torch.full((x0.shape[0],), module.process.t_min)
    with torch.no_grad():
        logits = clf(x0, t, rows["presence"])
    for j, field in enumerate(clf.labels.fields):
        if field in ("food", "area"):
            acc = float((logits[field].argmax(-1) == y[:, j]).float().mean())
            majority = float(torch.bincount(y[:, j]).max()) / y.shape[0]
            assert acc >= 0.85 and acc > majority + 0.25, (field, acc, majority)
    path = clf.save(tmp_path / "clf.pt", key="k")
    again, key = AttributeClassifier.load(path)
    assert key == "k"
    with torch.no_grad():
        torch.testing.assert_close(again(x0, t, rows["presence"])["food"], logits["food"])
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="clf.pt: not a readable attribute classifier"):
        AttributeClassifier.load(path)


def test_classifier_cache_is_reused_and_keyed_by_the_model(synthetic, tmp_path, monkeypatch):
    dm, module, clf = synthetic
    import polydiff.plugins.text.control as control

    calls = []
    monkeypatch.setattr(control, "train_classifier", lambda *a, **k: calls.append(k) or clf)
    path = tmp_path / "c.pt"
    classifier_for(module, dm, path, steps=3)
    classifier_for(module, dm, path, steps=3)
    assert len(calls) == 1  # the second call loads the cached file
    classifier_for(module, dm, path, steps=4)
    assert len(calls) == 2  # other settings: retrained


def test_control_step_raises_log_p_and_keeps_padding(synthetic):
    """One callback call = Li et al.'s Adagrad steps on x_{t−1}: log p(c | x) goes up, padding stays, and a
    larger λ keeps x nearer the drawn state."""
    dm, module, clf = synthetic
    n = 8
    presence = dm.sample_inputs(n, torch.Generator().manual_seed(0))["presence"]
    target = {"food": torch.full((n,), clf.labels.index("food", "French"))}
    t = torch.full((n,), 0.3, dtype=torch.float64)
    a, s = module.process.alpha_sigma(t)
    x0 = torch.randn(n, dm.seq_len, 8, generator=torch.Generator().manual_seed(1))
    moved = {}
    for lam in (0.0, 1.0):
        trace = []
        cb = ControlCallback(clf, module.process, target, presence, grad_steps=3, step_size=0.1, lam=lam)
        cb({"x": x0, "i": 0, "t": torch.full((n,), 0.35, dtype=torch.float64),
            "alpha": a + 0.0, "sigma": s + 0.0})  # the previous column
        cb.trace = trace
        out = cb({"x": x0, "i": 1, "t": t, "alpha": a * 1.01, "sigma": s * 0.99})
        assert trace[1] > trace[0] + (0.1 if lam == 0 else 0.0), trace
        assert torch.equal(out[~presence], x0[~presence])
        moved[lam] = float((out - x0).norm())
    assert moved[1.0] < moved[0.0]
    with pytest.raises(ConfigError, match=r"field\(s\) \['cuisine'\]"):
        ControlCallback(clf, module.process, {"cuisine": target["food"]}, presence)


def test_guided_sampling_raises_success_over_unguided_on_e2e(tmp_path):
    """End to end on 600 real E2E lines (a seeded random subset, so that both areas occur): a briefly trained
    Diffusion-LM, its noisy attribute classifier, and 50-step ancestral sampling with 3 Adagrad steps per step:
    "riverside" appears in clearly more guided than unguided texts (same noise, same lengths; 96 samples each;
    measured while writing this test: 0.72 vs 0.41)."""
    lines = [s for s in require_shared("text", "e2e", "src1_valid.txt").read_text(encoding="utf-8").splitlines()
             if s.strip()]
    random.Random(0).shuffle(lines)
    (tmp_path / "e2e.txt").write_text("\n".join(lines[:600]) + "\n", encoding="utf-8")
    dm = TextDataModule(str(tmp_path / "e2e.txt"), format="e2e", vocab_size=600, seq_len=32, batch_size=32,
                        judge_steps=2)
    with pytest.warns(UserWarning):
        dm.setup()
    torch.manual_seed(0)
    module = DiffusionLM(vocab_size=dm.vocab_size, seq_len=dm.seq_len, embed_dim=8, dim=32, depth=1, heads=2,
                         dropout=0.0, ema_decay=0)
    module.attach_datamodule(dm)
    train_steps(module, dm, 400)
    clf = train_classifier(module, dm, steps=1000, batch_size=32, dim=32, depth=1, heads=2)
    n, value = 48, "riverside"
    presence = dm.sample_inputs(n, torch.Generator().manual_seed(0))["presence"]
    target = {"area": torch.full((n,), clf.labels.index("area", value))}
    hits = {"guided": 0, "unguided": 0}
    for seed in (1, 2):
        for name, c in (("guided", clf), ("unguided", None)):
            x = controlled_sample(module, c, presence, target, torch.Generator().manual_seed(seed), steps=50,
                                  step_size=0.2)
            hits[name] += sum(contains_value(s, value) for s in dm.decode_rows(x, presence))
    assert hits["guided"] >= hits["unguided"] + 0.15 * 2 * n, hits
