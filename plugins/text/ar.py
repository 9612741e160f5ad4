"""The autoregressive baseline: a causal transformer LM of the same size as the diffusion backbone, trained by
the plugin on the same rows, for generative perplexity and for the likelihood comparison with MDLM.

Generative perplexity (used for diffusion LMs by Lou et al. 2024, SEDD, §5.1, and Sahoo et al. 2024, MDLM,
§4.1, with GPT-2 as the judge) is exp of the mean NLL per token of generated text under a separately trained
autoregressive model; here the judge is trained on the same corpus with the same tokenizer, so it scores the
sampled ids directly. The model is GPT-style (Radford et al. 2019): token + learned position embeddings, pre-LN
causal ``nn.TransformerEncoder`` layers, a linear head; input ``[BOS] x_1 … x_{L−1}``, target ``x_1 … x_L``,
loss only on present, unknown ids (a source prefix is context, as in the diffusion model).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from polydiff.errors import ConfigError, DataError

Tensor = torch.Tensor


class CausalTransformer(nn.Module):
    """``net(inputs) -> logits``: inputs (batch, L) ids in [0, vocab_size), logits (batch, L, vocab_size)."""

    def __init__(self, vocab_size: int, seq_len: int, dim: int = 128, depth: int = 2, heads: int = 4,
                 mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        if vocab_size < 2 or seq_len < 1 or dim % heads:
            raise ConfigError(f"CausalTransformer needs vocab_size >= 2, seq_len >= 1, dim divisible by heads; "
                              f"got {vocab_size}, {seq_len}, {dim}/{heads}")
        self.vocab_size, self.seq_len = int(vocab_size), int(seq_len)
        self.token = nn.Embedding(vocab_size, dim)
        self.position = nn.Parameter(torch.randn(seq_len, dim) / math.sqrt(dim))
        layer = nn.TransformerEncoderLayer(dim, heads, int(mlp_ratio * dim), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, inputs: Tensor) -> Tensor:
        L = inputs.shape[1]
        h = self.token(inputs) + self.position[:L]
        causal = nn.Transformer.generate_square_subsequent_mask(L, device=inputs.device, dtype=h.dtype)
        return self.head(self.norm(self.encoder(h, mask=causal, is_causal=True)))


def row_nll(model: CausalTransformer, x: Tensor, presence: Tensor, bos_id: int,
            known: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """(NLL in nats, number of scored ids) per row, float64, of rows ``x`` (batch, L): scored are present ids
    that are not ``known``."""
    inputs = torch.cat([torch.full_like(x[:, :1], bos_id), x[:, :-1]], 1).clamp_min(0)
    logp = torch.log_softmax(model(inputs).double(), -1)
    nll = -torch.gather(logp, -1, x.clamp_min(0).unsqueeze(-1)).squeeze(-1)
    w = presence.bool() if known is None else presence.bool() & ~known.bool()
    return (nll * w).sum(1), w.sum(1).double()


@dataclass(frozen=True)
class ARConfig:
    """Size and training of the judge: by default the shape of the text tasks' TokenTransformer (dim 128,
    depth 4, 4 heads), AdamW lr 1e-3 with batch 64 (the diffusion tasks' settings)."""

    dim: int = 128
    depth: int = 4
    heads: int = 4
    steps: int = 2000
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0


def train_ar(x: Tensor, presence: Tensor, bos_id: int, vocab_size: int, known: Tensor | None = None,
             config: ARConfig = ARConfig()) -> CausalTransformer:
    """Train a :class:`CausalTransformer` on rows ``x`` (N, L) for ``config.steps`` AdamW steps (seeded)."""
    if x.ndim != 2 or x.shape[0] < 1:
        raise DataError(f"the AR model trains on rows (N, L) of ids; got shape {tuple(x.shape)}")
    g = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    model = CausalTransformer(vocab_size, x.shape[1], config.dim, config.depth, config.heads)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr)
    model.train()
    for _ in range(config.steps):
        idx = torch.randint(0, x.shape[0], (config.batch_size,), generator=g)
        nll, count = row_nll(model, x[idx], presence[idx], bos_id, None if known is None else known[idx])
        loss = nll.sum() / count.sum().clamp_min(1)
        opt.zero_grad()
        loss.float().backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def perplexity(model: CausalTransformer, x: Tensor, presence: Tensor, bos_id: int, known: Tensor | None = None,
               batch_size: int = 256) -> float:
    """exp(total NLL / total scored ids) of rows ``x`` under ``model``."""
    total, count = 0.0, 0.0
    for i in range(0, x.shape[0], batch_size):
        k = None if known is None else known[i:i + batch_size]
        nll, n = row_nll(model, x[i:i + batch_size], presence[i:i + batch_size], bos_id, k)
        total, count = total + float(nll.sum()), count + float(n.sum())
    if count == 0:
        raise DataError("perplexity of rows with no scored ids")
    return math.exp(total / count)


def ar_model_for(datamodule, config: ARConfig = ARConfig(), cache_dir: str | Path | None = None) -> CausalTransformer:
    """The judge for a :class:`~polydiff.plugins.text.data.TextDataModule`'s training rows, trained once and cached
    (keyed by the rows, the vocabulary and ``config``; loaded with ``weights_only=True``)."""
    from polydiff.checkpointing import atomic_torch_save

    fields = datamodule.require_set("train_set").fields
    x, presence, known = fields["x"], fields["presence"], fields.get("known")
    bos = datamodule.tokenizer.bos_id
    key = hashlib.sha256(x.numpy().tobytes() + presence.numpy().tobytes() + repr(
        (asdict(config), datamodule.vocab_size, bos, None if known is None else int(known.sum()))).encode()).hexdigest()[:16]
    if cache_dir is None:
        from polydiff.datasets import cache_dir as default_cache

        cache_dir = default_cache() / "text_ar"
    path = Path(cache_dir) / f"ar_{key}.pt"
    model = CausalTransformer(datamodule.vocab_size, x.shape[1], config.dim, config.depth, config.heads)
    if path.is_file():
        try:
            model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
            return model.eval()
        except (RuntimeError, OSError, ValueError):
            pass  # a damaged cache file is retrained and replaced
    model = train_ar(x, presence, bos, datamodule.vocab_size, known, config)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(model.state_dict(), path)
    return model


@torch.no_grad()
def sample_ar(model: CausalTransformer, n: int, bos_id: int, eos_id: int, generator: torch.Generator | None = None,
              prefix: Tensor | None = None, prefix_len: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Ancestral sampling of ``n`` rows up to ``[EOS]`` or the row width, drawn in float64
    (:func:`polydiff.discrete.sample_categorical`: float32 Gumbel draws lower the entropy of the samples).
    Returns (x (n, L) ids, presence (n, L)) in the data module's row format (text ids then ``[EOS]``)."""
    from polydiff.discrete import sample_categorical

    L = model.seq_len
    x = torch.zeros(n, L, dtype=torch.long)
    done = torch.zeros(n, dtype=torch.bool)
    presence = torch.zeros(n, L, dtype=torch.bool)
    for i in range(L):
        inputs = torch.cat([torch.full((n, 1), bos_id, dtype=torch.long), x[:, :i]], 1)
        probs = torch.softmax(model(inputs)[:, -1].double(), -1)
        tok = sample_categorical(probs, generator)
        x[:, i] = torch.where(done, torch.zeros_like(tok), tok)
        presence[:, i] = ~done
        done = done | (tok == eos_id)
        if bool(done.all()):
            break
    return x, presence
