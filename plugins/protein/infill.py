"""``polydiff infill``: keep residue ranges of a structure, generate the rest with a trained FoldingDiff model.

The input chain is read strictly (a break, a missing backbone atom or a non-standard residue is an error
naming the residue), turned into its angle table, and sampled with the engine's known-mask (replacement)
inpainting (Song et al. 2021, App. I.2; FoldingDiff, Wu et al. 2024, §4.4 "infilling"): the six angles of
every kept residue are known entries, fixed at their input values in every reverse step and exactly at the
end. The written angles of kept residues are the input's own float64 angles, so they are bit-for-bit
unchanged, and each kept segment, rebuilt by NeRF, superimposes on the input motif (the RMSD is printed).
The B-factor column is 1 for kept residues and 0 for generated ones.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from polydiff import ConfigError, DataError

from .geometry import backbone_angles, kabsch_rmsd, nerf


def parse_ranges(spec: str, labels: list[str], source: str) -> list[tuple[int, int]]:
    """``"A:10-25,A:40-52"`` or ``"10-25,40"`` (residue numbers as in the file, insertion codes allowed)
    -> sorted, merged (start, stop) index ranges into the chain. Unknown residues are a ConfigError."""
    chain = labels[0].split(":")[0] if labels else "A"
    index = {lab: i for i, lab in enumerate(labels)}
    ranges = []
    for part in filter(None, (p.strip() for p in spec.split(","))):
        m = re.fullmatch(r"(?:([A-Za-z0-9]+):)?(-?\d+[A-Za-z]?)(?:-(-?\d+[A-Za-z]?))?", part)
        if not m:
            raise ConfigError(f"--keep {part!r}: expected CHAIN:START-END or START-END (e.g. A:10-25)")
        ch = m.group(1) or chain
        lo, hi = f"{ch}:{m.group(2)}", f"{ch}:{m.group(3) or m.group(2)}"
        for lab in (lo, hi):
            if lab not in index:
                raise ConfigError(f"--keep {part!r}: residue {lab} is not in {source} "
                                  f"(residues {labels[0]}..{labels[-1]})")
        i, j = index[lo], index[hi]
        if j < i:
            raise ConfigError(f"--keep {part!r}: the range ends before it starts")
        ranges.append((i, j + 1))
    if not ranges:
        raise ConfigError("--keep names no residues")
    ranges.sort()
    merged = [ranges[0]]
    for a, b in ranges[1:]:
        if a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
        else:
            merged.append((a, b))
    return merged


def infill(module, datamodule, coords: np.ndarray, keep: list[tuple[int, int]], num: int, seed: int = 0,
           source: str = "input", **sample_kw) -> dict:
    """Sample ``num`` chains keeping the residues in ``keep``; returns raw angles (num, L, 6) float64, the
    model-space samples and masks (``x``, ``known``, ``x_known``, ``presence``) and the kept-row mask."""
    L = coords.shape[0]
    lo, hi = datamodule.min_length, datamodule.max_length
    if not lo <= L <= hi:
        raise DataError(f"{source}: chain of {L} residues is outside the trained length range {lo}..{hi}")
    raw = backbone_angles(coords)
    item = datamodule.encode(raw)  # (L, 6)
    kept = np.zeros(L, dtype=bool)
    for a, b in keep:
        kept[a:b] = True
    known = torch.from_numpy(kept)[:, None] & ~item["missing"]
    x_known = torch.nan_to_num(item["x"])
    presence = torch.ones(L, 1, dtype=torch.bool)
    rep = lambda t: t[None].expand(num, *t.shape).clone()  # noqa: E731
    g = torch.Generator(device=module.device).manual_seed(seed)
    out = module.sample(num, generator=g, presence=rep(presence), known=rep(known), x_known=rep(x_known),
                        shape=(L, 6), **sample_kw)
    x = out["x"].detach().cpu()
    decoded = datamodule.decode(x).numpy()
    angles = np.where(kept[None, :, None] & np.isfinite(raw)[None], raw[None], decoded)
    return {"angles": angles, "x": x, "known": rep(known), "x_known": rep(x_known), "kept": kept, "raw": raw}


def add_arguments(parser) -> None:
    parser.add_argument("--ckpt", required=True, help="checkpoint of a model trained with the protein/foldingdiff task")
    parser.add_argument("--config", default=None, help="config whose data: section rebuilds the data module "
                        "(default: the one stored in the checkpoint)")
    parser.add_argument("--pdb", required=True, help="input structure (.pdb, .cif, optionally .gz)")
    parser.add_argument("--chain", default=None, help="chain id (default: the first protein chain)")
    parser.add_argument("--keep", required=True, help="residue ranges to keep, e.g. A:10-25,A:40-52")
    parser.add_argument("--num", type=int, default=4, help="number of infilled structures")
    parser.add_argument("--out", default="infill", help="output folder")
    parser.add_argument("--format", choices=("pdb", "cif"), default="pdb", help="output format")
    parser.add_argument("--sampler", default=None, help="engine sampler (default: the model's, ancestral DDPM)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's)")
    parser.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from polydiff.cli import load_for_sampling

    from .io import write_structure
    from .structure import read_backbone

    bb = read_backbone(args.pdb, chain=args.chain)
    for note in bb.notes:
        print(f"note: {note}")
    keep = parse_ranges(args.keep, bb.labels, args.pdb)
    module, dm = load_for_sampling(args.ckpt, args.config)
    if dm is None:
        raise ConfigError(f"{args.ckpt}: the training data module could not be rebuilt; infilling needs its "
                          "angle means: pass --config with the data: section used for training")
    kw = {k: v for k, v in (("sampler", args.sampler), ("steps", args.steps)) if v is not None}
    res = infill(module, dm, bb.coords, keep, args.num, seed=args.seed, source=args.pdb, **kw)
    out = Path(args.out)
    names = [r if k else "GLY" for r, k in zip(bb.resnames, res["kept"])]
    stem = Path(args.pdb).name.split(".")[0]
    for b in range(args.num):
        xyz = nerf(torch.from_numpy(res["angles"][b])).numpy()
        rmsd = [kabsch_rmsd(xyz[a:c].reshape(-1, 3), bb.coords[a:c].reshape(-1, 3)) for a, c in keep]
        path = write_structure(xyz, out / f"{stem}_infill_{b:03d}.{args.format}",
                               bfactors=res["kept"].astype(float), resnames=names, chain=bb.chain)
        print(f"{path}  motif RMSD per kept range (Å): " + ", ".join(f"{r:.3f}" for r in rmsd))
    kept_n = int(res["kept"].sum())
    print(f"kept {kept_n} of {len(bb)} residues of {args.pdb} ({len(keep)} range(s)); generated {len(bb) - kept_n}")
    return 0


__all__ = ["parse_ranges", "infill", "add_arguments", "run"]
