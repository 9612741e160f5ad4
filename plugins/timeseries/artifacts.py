"""Human-readable outputs of imputations: a CSV with quantile bands and a PNG of one series.

Both are written atomically (:func:`polydiff.io.atomic_write`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from polydiff.errors import ConfigError
from polydiff.io import atomic_write


def parse_quantiles(text: str | list[float]) -> list[float]:
    """``"0.05,0.5,0.95"`` → [0.05, 0.5, 0.95], each in (0, 1)."""
    try:
        qs = [float(q) for q in (text.split(",") if isinstance(text, str) else text)]
    except ValueError as exc:
        raise ConfigError(f"--quantiles must be comma-separated numbers in (0, 1), got {text!r}") from exc
    if not qs or any(not 0 < q < 1 for q in qs):
        raise ConfigError(f"--quantiles must be numbers in (0, 1), got {text!r}")
    return qs


def write_imputed_csv(path, time_column: str, times, columns: list[str], values: np.ndarray,
                      samples: np.ndarray, quantiles: list[float]) -> Path:
    """``values`` (T, K) with NaN where missing; ``samples`` (n, T, K) imputations in data units.
    Columns: time, each feature (observed value, else the point estimate: the lower median of the samples,
    CSDI's ``samples.median(dim=1)``), then ``<feature>_q<100q>`` bands (the observed value where observed). Bands
    are order statistics (``np.quantile(method="lower")``), so ``_q50`` equals the point estimate."""
    import pandas as pd

    observed = ~np.isnan(values)
    median = np.quantile(samples, 0.5, axis=0, method="lower")
    out = {time_column: times}
    for k, c in enumerate(columns):
        out[c] = np.where(observed[:, k], values[:, k], median[:, k])
    for q in quantiles:
        band = np.quantile(samples, q, axis=0, method="lower")
        for k, c in enumerate(columns):
            out[f"{c}_q{round(100 * q):02d}" if 100 * q == round(100 * q) else f"{c}_q{q}"] = \
                np.where(observed[:, k], values[:, k], band[:, k])
    df = pd.DataFrame(out)
    with atomic_write(path, "w") as f:
        df.to_csv(f, index=False)
    return Path(path)


def write_summary(path, rows: list[dict]) -> Path:
    """``summary.csv`` of a batch imputation: one row per record (status, counts, variables never observed)."""
    import pandas as pd

    with atomic_write(path, "w") as f:
        pd.DataFrame(rows).to_csv(f, index=False)
    return Path(path)


def plot_series(path, times, values: np.ndarray, samples: np.ndarray, feature: int, name: str,
                band: tuple[float, float] = (0.05, 0.95)) -> Path:
    """PNG of one feature: observed points, imputation median and the 5–95 % band of the samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(values)) if times is None else np.asarray(times)
    lo, hi = np.quantile(samples[:, :, feature], band, axis=0)
    med = np.median(samples[:, :, feature], axis=0)
    obs = ~np.isnan(values[:, feature])
    fig, ax = plt.subplots(figsize=(10, 3.5))
    ax.fill_between(x, lo, hi, color="tab:blue", alpha=0.25, label=f"{int(band[0]*100)}–{int(band[1]*100)} % band")
    ax.plot(x, med, color="tab:blue", lw=1.2, label="imputation median")
    ax.plot(x[obs], values[obs, feature], "o", color="black", ms=3, label="observed")
    ax.set_title(name)
    ax.legend(loc="best", fontsize=8)
    fig.autofmt_xdate()
    fig.tight_layout()
    with atomic_write(path) as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)
    return Path(path)
