"""``polydiff complete``: read a partial cloud, complete it with a trained point model, write the result.

The partial cloud is mapped into the model's representation with the training normalisation stored in
the checkpoint: ``global`` uses the stored training statistics; per-shape modes (``shape_unit``,
``shape_bbox``) can only use the statistics of the partial itself (the full shape is unknown), which is
the usual approximation for completion from a partial scan. The generated points are mapped back to
the input's units, and the written file holds the input points verbatim followed by the new ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from polydiff.errors import ConfigError, DataError

from . import io
from .completion import complete
from .normalize import Normalizer


def run_complete(args) -> int:
    from polydiff.training import DiffusionModule

    from polydiff.checkpointing import load_checkpoint

    ckpt = Path(args.ckpt)
    raw = load_checkpoint(ckpt)
    module = DiffusionModule.from_checkpoint(ckpt, checkpoint=raw)
    extra = raw.get("polydiff") if isinstance(raw.get("polydiff"), dict) else {}
    norm = Normalizer.from_state(extra.get("normalization") or {"mode": "none"})
    partial_raw = io.read_points(args.input)
    if partial_raw.ndim != 2:
        raise DataError(f"{args.input}: expected one partial cloud (N, 3), got {partial_raw.shape}")
    k = partial_raw.shape[0]
    if args.num_points <= k:
        raise ConfigError(f"--num-points {args.num_points} must exceed the {k} points of {args.input}")
    partial, shift, scale = norm.normalize(torch.from_numpy(partial_raw)[None], str(args.input))
    g = torch.Generator().manual_seed(args.seed)
    model = module.sampling_model()
    cond = {}
    if getattr(module, "encoder", None) is not None:  # Luo & Hu: the latent comes from the partial cloud
        module.eval()
        with torch.no_grad():
            cond["latent"] = module.encoder(partial)[0]
    out = complete(model, partial, args.num_points - k, cond=cond, generator=g, sampler=args.sampler,
                   steps=args.steps)
    new = Normalizer.denormalize(out[:, k:], shift, scale)[0].numpy()
    completed = np.concatenate([partial_raw, new.astype(np.float32)])
    path = io.write_points(completed, args.out)
    print(f"completed {args.input} ({k} known points) with {len(new)} generated points -> {path} "
          f"(normalisation: {norm.describe()})")
    return 0
