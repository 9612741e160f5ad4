"""What the machine is: CPU model and the instruction-set flags that decide whether bf16 pays, for benchmark
tables and for choosing a precision.

bf16 autocast on a CPU is only faster where the CPU multiplies bf16 natively (Intel AMX-BF16 or AVX512-BF16);
elsewhere PyTorch converts to and from fp32 around every product and a step gets slower (2.0–3.3× slower for
the point-cloud benchmark on an AVX-512 CPU without either unit, ``docs/benchmarks.md``). On a GPU the choice is Lightning's
``trainer.precision``, so :func:`default_precision` answers ``None`` there.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from .errors import ConfigError

#: /proc/cpuinfo flags that decide bf16 speed, and the vector width that decides fp32 speed.
BF16_FLAGS = ("amx_bf16", "avx512_bf16")
REPORTED_FLAGS = ("amx_bf16", "amx_tile", "avx512_bf16", "avx512f", "avx2")
PRECISIONS = ("auto", "fp32", "bf16")


def _cpuinfo_field(text: str, key: str) -> str | None:
    for line in text.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            return value.strip()
    return None


def cpu_flags(cpuinfo: str | Path = "/proc/cpuinfo") -> frozenset[str]:
    """The flags of the first CPU in ``cpuinfo`` (Linux); empty where the file does not exist (macOS, Windows),
    which counts as "no native bf16"."""
    try:
        text = Path(cpuinfo).read_text(errors="replace")
    except OSError:
        return frozenset()
    return frozenset((_cpuinfo_field(text, "flags") or "").split())


def native_bf16(flags: frozenset[str] | set[str] | None = None) -> bool:
    """True if the CPU has bf16 arithmetic units (AMX-BF16 or AVX512-BF16); ``flags`` default: this CPU's."""
    flags = cpu_flags() if flags is None else flags
    return any(f in flags for f in BF16_FLAGS)


def default_precision(device: str = "cpu", flags: frozenset[str] | set[str] | None = None) -> str | None:
    """Lightning precision string for ``device``: on a CPU ``"bf16-mixed"`` where it has native bf16, else
    ``"32-true"``; on any other device ``None`` (leave ``trainer.precision`` to Lightning and the user)."""
    if str(device).split(":")[0] != "cpu":
        return None
    return "bf16-mixed" if native_bf16(flags) else "32-true"


def use_bf16(precision: str, device: str = "cpu", flags: frozenset[str] | set[str] | None = None) -> bool:
    """Whether to train under bf16 autocast: ``"bf16"`` yes, ``"fp32"`` no, ``"auto"``
    :func:`default_precision` (CPU with native bf16 only; ``False`` elsewhere, where Lightning decides)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision == "bf16"
    return default_precision(device, flags) == "bf16-mixed"


def cpu_summary(cpuinfo: str | Path = "/proc/cpuinfo") -> dict:
    """Model name, the :data:`REPORTED_FLAGS` present, logical CPUs, torch's intra-op threads and the 1-minute
    load average: the line a benchmark prints beside its table."""
    import torch

    try:
        model = _cpuinfo_field(Path(cpuinfo).read_text(errors="replace"), "model name")
    except OSError:
        model = None
    flags = cpu_flags(cpuinfo)
    return {"cpu": model or platform.processor() or platform.machine(),
            "flags": [f for f in REPORTED_FLAGS if f in flags],
            "native_bf16": native_bf16(flags),
            "logical_cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "load_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "torch": str(torch.__version__)}


__all__ = ["BF16_FLAGS", "REPORTED_FLAGS", "PRECISIONS", "cpu_flags", "native_bf16", "default_precision",
           "use_bf16", "cpu_summary"]
