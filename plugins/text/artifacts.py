"""Text samples as files: one decoded sample per line (UTF-8), written atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from polydiff.io import atomic_write_text


def sample_texts(samples: Mapping[str, Any], datamodule) -> list[str]:
    """Decoded texts of a batch-contract mapping of id rows (newlines inside a text become spaces)."""
    texts = datamodule.decode_rows(samples["x"], samples.get("presence"), samples.get("known"))
    return [" ".join(t.split()) for t in texts]


def write_texts(samples: Mapping[str, Any], out_dir, prefix: str, datamodule) -> list[Path]:
    """``<prefix>.txt`` with one sample per line; ``[]`` without a text data module (the engine then saves the
    raw ids as ``.pt``)."""
    if datamodule is None or not hasattr(datamodule, "decode_rows"):
        return []
    path = Path(out_dir) / f"{prefix}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, "\n".join(sample_texts(samples, datamodule)) + "\n")
    return [path]
