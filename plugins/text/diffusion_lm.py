"""Continuous diffusion of word embeddings: Diffusion-LM (Li et al. 2022) and DiffuSeq (Gong et al. 2023).

Both diffuse learned word vectors with a Gaussian process of the engine and round the result back to words:

* an embedding EMB(w) ∈ R^d per vocabulary entry, trained jointly with the denoiser (Li et al. §4.1);
* the sqrt schedule ᾱ(t) = 1 − √(t/T + s), s = 1e-4, T = 2000 (§4.2, App. A), the engine's ``VP("sqrt")``;
* x₀-prediction (§4.2: predicting x₀ keeps the network committed to word vectors);
* the objective L_e2e-simple (§4.1, Eq. 2 and App. E): the engine's x₀ regression on EMB(w) plus the rounding
  term −log p(w | x₀) with x₀ = EMB(w) + σ₀ ε and p(w | x) = softmax(x · EMBᵀ) (the tied head of their code). The
  prior term ‖√ᾱ_T EMB(w)‖² is left out: the sqrt schedule reaches ᾱ_T ≈ 0, so it is zero here;
* the clamping trick at sampling (§4.2): at every step x̂₀ is replaced by its nearest word embedding, through the
  engine's ``x0_fn`` hook, so every sampler of the engine can use it;
* DiffuSeq's partial noising (Gong et al. §3): source positions are ``known``; the denoiser reads their clean
  embeddings (``cond["observed"]``) instead of the noisy ones, in training and sampling, and only the target is
  generated. Several samples per source are decoded with MBR (:func:`polydiff.plugins.text.metrics.mbr_select`).

:class:`DiffusionLM` is a :class:`polydiff.training.DiffusionModule` whose batches hold token ids (as the MDLM
tasks' :class:`~polydiff.plugins.text.data.TextDataModule` gives them); it embeds them itself and its
:meth:`~DiffusionLM.sample` returns ids again, so the text artefacts and metrics serve both families unchanged.
"""

from __future__ import annotations

import math
from typing import Any, Mapping

import torch
from torch import nn

from polydiff.backbones import ConditionEmbedding
from polydiff.errors import ConfigError, ShapeError
from polydiff.training import DiffusionModule

Tensor = torch.Tensor


class EmbeddingTransformer(nn.Module):
    """The Diffusion-LM denoiser: ``net(x_t, t, cond) -> x̂₀`` on word vectors (batch, L, embed_dim).

    As Li et al.'s ``TransformerNetModel2``: an up-projection Linear–Tanh–Linear to the transformer width, learned
    positions and the time (+ optional label/vector condition) embedding added to every position, a bidirectional
    pre-LN transformer encoder (BERT-base there: width 768, 12 layers; CPU-sized defaults here) and the
    down-projection Linear–Tanh–Linear. The module also holds the word embedding (``word_embedding``, N(0, 1)
    initialised as ``nn.Embedding``) and the tied rounding head :meth:`logits`, so that the EMA copy of the
    denoiser carries its own consistent embedding.

    ``cond["presence"]`` masks padding out of attention; ``cond["known"]``/``cond["observed"]`` (DiffuSeq's source)
    replace the noisy input at known positions by the clean embeddings.
    """

    def __init__(self, vocab_size: int, seq_len: int, embed_dim: int = 16, dim: int = 128, depth: int = 4,
                 heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.1, num_labels: int | None = None,
                 cond_dim: int | None = None):
        super().__init__()
        if vocab_size < 2 or seq_len < 1 or embed_dim < 1 or dim % heads:
            raise ConfigError(f"EmbeddingTransformer needs vocab_size >= 2, seq_len >= 1, embed_dim >= 1 and dim "
                              f"divisible by heads; got {vocab_size}, {seq_len}, {embed_dim}, {dim}/{heads}")
        self.vocab_size, self.seq_len, self.embed_dim = int(vocab_size), int(seq_len), int(embed_dim)
        self.word_embedding = nn.Embedding(self.vocab_size, self.embed_dim)
        self.up = nn.Sequential(nn.Linear(embed_dim, dim), nn.Tanh(), nn.Linear(dim, dim))
        self.position = nn.Parameter(torch.randn(self.seq_len, dim) / math.sqrt(dim))
        self.cond_embed = ConditionEmbedding(dim, dim, "sinusoidal", num_labels, cond_dim)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(dim, heads, int(mlp_ratio * dim), dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, embed_dim))

    def forward(self, x: Tensor, t: Tensor, cond: Mapping[str, Tensor] | None = None) -> Tensor:
        cond = dict(cond or {})
        if x.ndim != 3 or x.shape[1] != self.seq_len or x.shape[2] != self.embed_dim:
            raise ShapeError(f"EmbeddingTransformer input has shape {tuple(x.shape)}; expected (batch, "
                             f"{self.seq_len}, {self.embed_dim})")
        if cond.get("known") is not None and cond.get("observed") is not None:
            x = torch.where(cond["known"].expand(x.shape), cond["observed"], x)
        h = self.up(x) + self.position + self.cond_embed(t.to(x.dtype), cond, x.shape[0])[:, None, :]
        pad = None
        if cond.get("presence") is not None:
            pad = ~cond["presence"].expand(x.shape)[..., 0]
            pad = pad & ~pad.all(1, keepdim=True)  # an all-padding row attends to itself (no NaN)
        h = self.encoder(self.dropout(h), src_key_padding_mask=pad)
        return self.down(self.norm(h))

    def embed(self, ids: Tensor) -> Tensor:
        """EMB(w): (batch, L) ids -> (batch, L, embed_dim)."""
        return self.word_embedding(ids.clamp(0, self.vocab_size - 1))

    def logits(self, x: Tensor) -> Tensor:
        """The rounding model p(w | x) = softmax(x · EMBᵀ) (Li et al. §4.1, tied to the embedding)."""
        return x @ self.word_embedding.weight.T

    def nearest(self, x: Tensor) -> Tensor:
        """Ids of the nearest word embeddings (Euclidean), (batch, L, d) -> (batch, L): the clamping trick."""
        w = self.word_embedding.weight.to(x.dtype)
        w2 = (w * w).sum(-1)
        return self.chunked(x, lambda v: (w2 - 2 * v @ w.T).argmin(-1))  # ‖v‖² is the same for every word

    def decode(self, x: Tensor) -> Tensor:
        """Ids argmax softmax(x · EMBᵀ), (batch, L, d) -> (batch, L): Li et al.'s final rounding."""
        return self.chunked(x, lambda v: self.logits(v).argmax(-1))

    @staticmethod
    def chunked(x: Tensor, fn, rows: int = 4096) -> Tensor:
        """``fn`` over the vectors of x in chunks, so that (vectors, vocabulary) tables stay small (30k words)."""
        flat = x.reshape(-1, x.shape[-1])
        return torch.cat([fn(flat[i:i + rows]) for i in range(0, flat.shape[0], rows)]).reshape(x.shape[:-1])

    def clamp(self, x: Tensor) -> Tensor:
        """x̂₀ → EMB(nearest word) (Li et al. §4.2), the map given to the sampler as ``x0_fn``."""
        return self.word_embedding.weight.to(x.dtype)[self.nearest(x)]


def find_embedder(model: nn.Module) -> EmbeddingTransformer:
    """The :class:`EmbeddingTransformer` inside a denoiser (or its EMA copy, or a conditioner wrapper)."""
    for m in model.modules():
        if isinstance(m, EmbeddingTransformer):
            return m
    raise ConfigError(f"{type(model).__name__} holds no EmbeddingTransformer; DiffusionLM needs that backbone")


class DiffusionLM(DiffusionModule):
    """Diffusion-LM / DiffuSeq: a Gaussian diffusion of learned word embeddings, trained and sampled by the engine.

    Args:
        vocab_size, seq_len: vocabulary (the data module's ``vocab_size``) and ids per row.
        embed_dim: d of the word vectors (Li et al.: 16 on E2E, 128 on ROCStories; DiffuSeq: 128).
        dim, depth, heads, dropout: the transformer (Li et al.: BERT-base, 768/12/12, dropout 0.1).
        num_steps: T of the sqrt schedule (2000 in both papers).
        rounding_weight: weight of −log p(w | x₀) (1 in L_e2e-simple).
        clamp: use the clamping trick when sampling (Li et al. §4.2; DiffuSeq ``clamp_step`` 0 = every step).
        lr, warmup_steps, ema_decay, sampler, sample_steps, …: as :class:`~polydiff.training.DiffusionModule`
            (Li et al.: AdamW lr 1e-4, EMA 0.9999, 200k steps of batch 64; ancestral sampling, 200 steps here —
            a respaced chain — against their 2000, for CPU time).
    """

    def __init__(self, vocab_size: int, seq_len: int, embed_dim: int = 16, dim: int = 128, depth: int = 4,
                 heads: int = 4, dropout: float = 0.1, num_steps: int = 2000, rounding_weight: float = 1.0,
                 clamp: bool = True, num_labels: int | None = None, cond_dim: int | None = None,
                 lr: float = 1e-4, weight_decay: float = 0.0, warmup_steps: int = 0, ema_decay: float = 0.9999,
                 ema_warmup: bool = True, sampler: str = "ddpm", sample_steps: int = 200,
                 sampler_kwargs: dict | None = None, guidance_scale: float = 1.0, cond_drop_prob: float = 0.0,
                 val_num_samples: int = 0, val_sample_every_n_epochs: int = 1, final_num_samples: int = 64,
                 seed: int = 0, betas: tuple[float, float] = (0.9, 0.999), lr_decay_at: list[float] | None = None,
                 lr_decay_gamma: float = 0.1, backbone: Any = None, process: Any = None, space: Any = None,
                 parameterization: str = "x0", loss: Any = None, learned_variance: bool = False,
                 conditioner: Any = None, num_classes: int | None = None, parts: Any = None):
        if rounding_weight < 0:
            raise ConfigError(f"rounding_weight must be >= 0, got {rounding_weight}")
        # backbone, process and parameterization are the method's; they are accepted (and replaced) because a
        # checkpoint's hyper-parameters hold them.
        backbone = {"class_path": "polydiff.plugins.text.diffusion_lm.EmbeddingTransformer",
                    "init_args": {"vocab_size": vocab_size, "seq_len": seq_len, "embed_dim": embed_dim, "dim": dim,
                                  "depth": depth, "heads": heads, "dropout": dropout, "num_labels": num_labels,
                                  "cond_dim": cond_dim}}
        process = {"class_path": "polydiff.processes.VP", "init_args": {"schedule": "sqrt", "num_steps": num_steps}}
        super().__init__(backbone=backbone, process=process, parameterization="x0", lr=lr, weight_decay=weight_decay,
                         warmup_steps=warmup_steps, ema_decay=ema_decay, ema_warmup=ema_warmup, sampler=sampler,
                         sample_steps=sample_steps, sampler_kwargs=sampler_kwargs, guidance_scale=guidance_scale,
                         cond_drop_prob=cond_drop_prob, num_classes=num_labels, val_num_samples=val_num_samples,
                         val_sample_every_n_epochs=val_sample_every_n_epochs, final_num_samples=final_num_samples,
                         seed=seed, betas=betas, lr_decay_at=lr_decay_at, lr_decay_gamma=lr_decay_gamma,
                         conditioner=conditioner)

    @property
    def embedder(self) -> EmbeddingTransformer:
        return find_embedder(self.denoiser)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """(seq_len, embed_dim): what the engine diffuses."""
        return (self.embedder.seq_len, self.embedder.embed_dim)

    # -- batches of ids --------------------------------------------------------------------------------
    def check_batch(self, batch: Mapping[str, Any]) -> None:
        x = batch.get("x") if isinstance(batch, Mapping) else None
        e = self.embedder
        if not torch.is_tensor(x) or x.is_floating_point() or x.ndim != 2 or x.shape[1] != e.seq_len:
            raise ShapeError(f"DiffusionLM batches hold token ids (batch, {e.seq_len}); got "
                             f"{getattr(x, 'dtype', type(x))} of shape {tuple(getattr(x, 'shape', ()))}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= e.vocab_size):
            raise ShapeError(f"token ids must lie in [0, {e.vocab_size}); got [{int(x.min())}, {int(x.max())}]")

    def embedded_batch(self, batch: Mapping[str, Any], model: nn.Module) -> dict[str, Any]:
        """The batch with ``x`` = EMB(ids) of ``model``'s embedding and the masks as (batch, L, 1)."""
        out = {"x": find_embedder(model).embed(batch["x"])}
        for key in ("presence", "known"):
            if batch.get(key) is not None:
                out[key] = batch[key].bool().unsqueeze(-1)
        if batch.get("cond"):
            out["cond"] = batch["cond"]
        return out

    # -- objective -------------------------------------------------------------------------------------
    def compute_loss(self, batch: Mapping[str, Any], generator: torch.Generator | None,
                     model: nn.Module | None = None) -> dict[str, Tensor]:
        """L_e2e-simple (Li et al. 2022, §4.1): ``mse`` (the engine's x₀ regression on EMB(w) over present,
        unknown positions) + ``rounding_weight`` · ``rounding`` (−log p(w | EMB(w) + σ₀ ε) per such token, nats;
        σ₀ = σ at the chain's first step)."""
        model = self.denoiser if model is None else model
        embedded = self.embedded_batch(batch, model)
        loss, terms = self.loss_fn(model, embedded, generator=generator, space=self.space, return_components=True)
        ids = batch["x"]
        scored = torch.ones_like(ids, dtype=torch.bool)
        if batch.get("presence") is not None:
            scored = scored & batch["presence"].bool()
        if batch.get("known") is not None:
            scored = scored & ~batch["known"].bool()
        x0 = embedded["x"]
        _, sigma0 = self.process.alpha_sigma(torch.tensor([self.process.t_min], dtype=torch.float64))
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        logits = find_embedder(model).logits((x0 + float(sigma0) * noise)[scored])  # (scored tokens, vocabulary)
        nll = nn.functional.cross_entropy(logits, ids[scored]) if scored.any() else x0.sum() * 0
        terms["rounding"] = nll.detach()
        return {"loss": loss + self.hparams.rounding_weight * nll, **terms}

    # -- sampling --------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, cond: Mapping[str, Tensor] | None = None,
               presence: Tensor | None = None, known: Tensor | None = None, x_known: Tensor | None = None,
               use_ema: bool = True, shape: tuple[int, ...] | None = None, **kw) -> dict[str, Tensor]:
        """Ids (n, L) drawn by the engine's :meth:`~polydiff.training.DiffusionModule.sample` on word vectors and
        rounded by the tied head (Li et al.'s decoding); ``presence``/``known`` are (n, L) and ``x_known`` holds
        the known ids (DiffuSeq's source), which come back unchanged. ``clamp`` (default: the module's) turns
        the clamping trick on or off."""
        e = find_embedder(self.sampling_model(use_ema))
        clamp = kw.pop("clamp", self.hparams.clamp)
        if clamp:
            kw["x0_fn"] = e.clamp
        masks = {k: None if m is None else m.to(self.device).bool().reshape(int(n), e.seq_len, 1)
                 for k, m in (("presence", presence), ("known", known))}
        vectors = None if x_known is None else e.embed(x_known.to(self.device).long())
        out = super().sample(n, generator=generator, cond=cond, presence=masks["presence"], known=masks["known"],
                             x_known=vectors, use_ema=use_ema, shape=(e.seq_len, e.embed_dim), **kw)
        ids = e.decode(out["x"])
        if x_known is not None:
            ids = torch.where(masks["known"][..., 0], x_known.to(ids), ids)
        out["x"] = ids
        for k in ("presence", "known"):
            if k in out:
                out[k] = out[k][..., 0]
        return out
