"""Accuracy and cost of polydiff.likelihood and polydiff.discrete_samplers against exact answers (not a test).

Part 1: probability-flow ODE NLL of the issue's 2-D benchmark mixture (9 Gaussians, widths 0.03–0.3,
``GaussianMixture.grid()``) under the linear-β VP process with the exact denoiser, against the exact
log-density log p_{t_min}(x): error per solver setting and divergence estimator, denoiser calls (NFE) and
CPU time. Part 2: D3PM / MDLM samplers with the exact oracle of a correlated 2-token, 3-class
distribution: total variation to the target by number of steps, and denoiser evaluations per sample with
MDLM caching.

    python benchmarks/likelihood.py [--samples 64] [--tokens 20000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import torch

from polydiff.discrete import DiscreteProcess
from polydiff.discrete_samplers import sample_discrete
from polydiff.likelihood import ode_nll
from polydiff.processes import VP
from polydiff.testing import ExactDenoiser, GaussianMixture

F64 = torch.float64
K, L = 3, 2
TABLE = torch.tensor([0.30, 0.02, 0.08, 0.05, 0.25, 0.05, 0.01, 0.04, 0.20], dtype=F64)
SEQS = torch.cartesian_prod(torch.arange(K), torch.arange(K))


def ode_rows(n):
    mix = GaussianMixture.grid()
    proc = VP("linear")
    x = mix.sample(n, torch.Generator().manual_seed(0))
    a, s = proc.alpha_sigma(torch.tensor(proc.t_min, dtype=F64))
    truth = mix.log_prob(x, a, s)
    settings = [("rk45", dict(rtol=r, atol=r), "exact", f"RK45 rtol=atol={r:g}") for r in (1e-3, 1e-5, 1e-7)]
    settings += [("rk4", dict(steps=k), "exact", f"RK4 {k} steps") for k in (50, 200, 800)]
    settings += [("rk45", dict(rtol=1e-5, atol=1e-5), "hutchinson", "RK45 1e-5, Hutchinson (Rademacher, 1 probe)")]
    for method, kw, div, name in settings:
        den = ExactDenoiser(mix, proc)
        c0 = time.process_time()
        res = ode_nll(den, x, method=method, divergence=div, generator=torch.Generator().manual_seed(1), **kw)
        cpu = time.process_time() - c0
        err = -res.nll - truth
        yield name, err.abs().mean().item(), err.abs().max().item(), err.mean().item(), den.nfe, cpu


class Oracle:
    def __init__(self, process):
        self.process = process

    def __call__(self, x_t, t, cond):
        lik = self.process.likelihood(x_t, t[0], torch.zeros((), dtype=F64))
        per_seq = lik[:, torch.arange(L)[None, :], SEQS]
        post = torch.softmax(TABLE.log() + torch.log(per_seq).sum(-1), dim=-1)
        marg = torch.einsum("bs,slk->blk", post, torch.nn.functional.one_hot(SEQS, K).to(F64))
        return torch.log(marg.clamp_min(1e-300))


def tv(x):
    counts = torch.bincount(x[:, 0] * K + x[:, 1], minlength=K * K).to(F64)
    return 0.5 * (counts / len(x) - TABLE).abs().sum().item()


def discrete_rows(n):
    g = torch.Generator().manual_seed(5)
    floor = sorted(tv(SEQS[torch.multinomial(TABLE, n, True, generator=g)]) for _ in range(40))
    yield "exact draws (noise floor, median of 40)", "-", floor[20], "-", "-"
    for transition, schedule, sampler in [("absorbing", "mutual_info", "ancestral"), ("absorbing", "mutual_info", "mdlm"),
                                          ("uniform", "cosine", "ancestral")]:
        for steps in (5, 20, 100, 400):
            proc = DiscreteProcess(K, transition, schedule, num_steps=None)
            c0 = time.process_time()
            x, info = sample_discrete(Oracle(proc), proc, (n, L), steps=steps, sampler=sampler,
                                      generator=torch.Generator().manual_seed(steps), return_info=True)
            cpu = time.process_time() - c0
            yield f"{transition} {schedule}, {sampler}", steps, tv(x), info["nfe_per_sample"], cpu


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=64)
    ap.add_argument("--tokens", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"Command: `python benchmarks/likelihood.py --samples {args.samples} --tokens {args.tokens}`\n")
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"torch {torch.__version__}, {args.threads} thread(s), {os.cpu_count()} CPU(s) {platform.machine()}, "
          f"load average {load} at start\n")
    print(f"Probability-flow NLL of the 9-Gaussian grid mixture, VP linear, {args.samples} samples, float64:\n")
    print("| solver / divergence | mean abs error (nats) | max abs error | mean error | NFE | CPU s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, mae, mx, bias, nfe, cpu in ode_rows(args.samples):
        print(f"| {name} | {mae:.2e} | {mx:.2e} | {bias:+.2e} | {nfe} | {cpu:.1f} |")
    print(f"\nDiscrete samplers, exact oracle, 2 tokens × 3 classes, {args.tokens} samples (TV to the target):\n")
    print("| process, sampler | steps | TV | denoiser evaluations per sample | CPU s |")
    print("|---|---:|---:|---:|---:|")
    for name, steps, d, nfe, cpu in discrete_rows(args.tokens):
        nfe_s = nfe if isinstance(nfe, str) else f"{nfe:.2f}"
        cpu_s = cpu if isinstance(cpu, str) else f"{cpu:.1f}"
        print(f"| {name} | {steps} | {d:.4f} | {nfe_s} | {cpu_s} |")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
