"""Forward + backward wall time of the generic backbones on this CPU (not a test).

Prints a markdown table for docs/benchmarks.md and the command that made it. Each row times
``net(x, t, cond).square().mean().backward()`` (median of ``--repeats`` runs after two warm-ups) at the
batch size and input shape of a typical small task, as wall time and as CPU time of this process (with one
thread the CPU time is the compute time even when other processes compete for the cores).

    python benchmarks/backbones.py [--threads 1] [--repeats 10]
"""

from __future__ import annotations

import argparse
import os
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
    """Median wall time and median CPU time of this process (the latter is robust to a loaded machine)."""
    x = torch.randn(shape, generator=generator)
    t = torch.rand(shape[0], generator=generator)
    wall, cpu = [], []
    for i in range(repeats + 2):
        model.zero_grad(set_to_none=True)
        w0, c0 = time.perf_counter(), time.process_time()
        model(x, t, cond).square().mean().backward()
        if i >= 2:
            wall.append(time.perf_counter() - w0)
            cpu.append(time.process_time() - c0)
    return statistics.median(wall), statistics.median(cpu)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    command = " ".join(["python", "benchmarks/backbones.py", *sys.argv[1:]])
    print(f"Command: `{command}`\n")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPU(s) "
          f"{platform.processor() or platform.machine()}, load average {load} at start\n")
    print("| backbone | input (batch, ...) | parameters | forward+backward wall ms | CPU ms |")
    print("|---|---|---:|---:|---:|")
    for name, model, shape, cond in cases():
        params = sum(p.numel() for p in model.parameters())
        wall, cpu = time_case(model, shape, cond, args.repeats, g)
        print(f"| {name} | {tuple(shape)} | {params:,} | {1000 * wall:.1f} | {1000 * cpu:.1f} |")


if __name__ == "__main__":
    main()
