"""Forward + backward wall time of the generic backbones on this CPU (not a test).

Prints a markdown table for docs/benchmarks.md and the command that made it. Each row times
``net(x, t, cond).square().mean().backward()`` (median of ``--repeats`` runs after two warm-ups) at the
batch size and input shape of a typical small task.

    python benchmarks/backbones.py [--threads 1] [--repeats 10]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch

from polydiff.backbones import DiT, MLP, UNet


def cases():
    """(name, model, input shape, cond) of each row."""
    yield ("UNet 2D digits 8×8 (base 32, mults (1,2), 1 res block, attn 4×4)",
           UNet(dims=2, in_channels=1, base_channels=32, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,)),
           (64, 1, 8, 8), None)
    yield ("UNet 2D digits 8×8, 10 classes (CFG)",
           UNet(dims=2, in_channels=1, base_channels=32, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(1,),
                num_classes=10),
           (64, 1, 8, 8), {"label": torch.arange(64) % 11})
    yield ("UNet 1D series 36×48 (base 32, mults (1,2,2), 1 res block)",
           UNet(dims=1, in_channels=36, base_channels=32, channel_mults=(1, 2, 2), num_res_blocks=1, attention_levels=(2,)),
           (64, 36, 48), None)
    yield ("UNet 3D volume 16³ (base 16, mults (1,2,2), 1 res block)",
           UNet(dims=3, in_channels=1, base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1, attention_levels=(2,)),
           (8, 1, 16, 16, 16), None)
    yield ("DiT 2D 8×8, patch 2, hidden 128, depth 4",
           DiT(in_channels=1, dims=2, patch_size=2, hidden_size=128, depth=4, num_heads=4),
           (64, 1, 8, 8), None)
    yield ("DiT tokens 64×3 (set), hidden 128, depth 4, no positions",
           DiT(in_channels=3, dims=0, hidden_size=128, depth=4, num_heads=4, pos_embedding="none"),
           (64, 64, 3), None)
    yield ("MLP 2-D points (hidden 256, depth 4)", MLP(2), (1024, 2), None)


def time_case(model, shape, cond, repeats, generator):
    x = torch.randn(shape, generator=generator)
    t = torch.rand(shape[0], generator=generator)
    times = []
    for i in range(repeats + 2):
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        model(x, t, cond).square().mean().backward()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    command = " ".join(["python", "benchmarks/backbones.py", *sys.argv[1:]])
    print(f"Command: `{command}`")
    print(f"torch {torch.__version__}, {args.threads} thread(s), {platform.processor() or platform.machine()}\n")
    print("| backbone | input (batch, ...) | parameters | forward+backward (ms, median) |")
    print("|---|---|---:|---:|")
    for name, model, shape, cond in cases():
        params = sum(p.numel() for p in model.parameters())
        ms = 1000 * time_case(model, shape, cond, args.repeats, g)
        print(f"| {name} | {tuple(shape)} | {params:,} | {ms:.1f} |")


if __name__ == "__main__":
    main()
