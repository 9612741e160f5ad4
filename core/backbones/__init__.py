"""Generic, domain-agnostic backbones, all called ``backbone(x, t, cond)`` (see :mod:`polydiff.parameterization`).

* :class:`UNet`  — ADM-style U-Net for (batch, C, L), (batch, C, H, W) and (batch, C, D, H, W) data.
* :class:`DiT`   — Diffusion Transformer with adaLN-Zero for images, signals and token sets.
* :class:`MLP`   — residual MLP for vectors (batch, d).
* :class:`TokenTransformer` — bidirectional transformer from categorical states to x_0 logits (discrete family).
* :class:`SinusoidalTimeEmbedding`, :class:`GaussianFourierEmbedding` — time embeddings;
  :class:`ConditionEmbedding` — time + class label + vector condition, shared by all three;
  :class:`Conv1x1` — ``nn.Conv1d(cin, cout, 1)`` as a matrix product (fast on CPU).

Conditioning contract: ``cond["label"]`` LongTensor (batch,) with ``num_classes`` meaning the null label for
classifier-free guidance; ``cond["embedding"]`` float (batch, cond_dim), zeros as the null condition; other
keys are ignored, except ``cond["presence"]`` which the DiT uses as an attention key padding mask.
``concat_cond={key: channels}`` concatenates same-shaped conditions (e.g. ``observed``/``known`` of the batch contract) to the input. Each
backbone exposes ``num_classes`` and ``cond_dim`` (None when unconditional).
"""

from .dit import DiT
from .embeddings import (
    ConditionEmbedding,
    GaussianFourierEmbedding,
    SinusoidalTimeEmbedding,
    concat_conditions,
    make_time_embedding,
)
from .mlp import MLP
from .pointwise import Conv1x1
from .tokens import TokenTransformer
from .unet import UNet, norm_groups

BACKBONES = (UNet, DiT, MLP, TokenTransformer)  # the networks, as opposed to the embedding modules also exported here

__all__ = [
    "BACKBONES",
    "UNet", "DiT", "MLP", "TokenTransformer",
    "SinusoidalTimeEmbedding", "GaussianFourierEmbedding", "ConditionEmbedding", "make_time_embedding",
    "concat_conditions",
    "norm_groups", "Conv1x1",
]
