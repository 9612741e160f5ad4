"""The evaluation hook: MMD/COV/1-NNA (PointFlow definitions) of generated shapes against the data module's
held-out split, both re-normalised with the data module's evaluation protocol, which every key names; for
samples that carry a category ``cond["label"]`` (text-conditioned shapes) also the accuracy of a shape
classifier (:mod:`.classifier`) on them."""

from __future__ import annotations

import numpy as np
import torch

from polydiff.errors import ConfigError, ShapeError

from . import metrics as M


def evaluate_samples(samples, datamodule, context=None) -> dict[str, float]:
    """``{"pointcloud/<metric>@<protocol>": value}`` with CD at the samples' point count and, if the data
    module sets ``eval_emd``, EMD at ``emd_points`` points (exact, seeded subsets)."""
    if datamodule is None or not hasattr(datamodule, "reference_data"):
        raise ConfigError("point-cloud evaluation needs the data module (its held-out split is the reference set)")
    ref = datamodule.reference_data()["x"]
    x = samples["x"]
    norm = datamodule.eval_normalizer
    s = norm(x, "samples").double()
    r = norm(ref, "reference").double()
    n = min(len(s), len(r))
    if len(s) != len(r):  # PointFlow compares equally sized sets (1-NNA's 50 % assumes it)
        s, r = s[:n], r[:n]
    tag = f"@{norm.mode}"
    out = {f"pointcloud/{k}{tag}": v for k, v in M.generation_metrics(s, r, metrics=("cd",)).items()}
    if getattr(datamodule, "eval_emd", False):
        k = min(datamodule.emd_points, s.shape[1], r.shape[1])
        rng = np.random.default_rng(0)
        si = np.stack([rng.permutation(s.shape[1])[:k] for _ in range(n)])
        ri = np.stack([rng.permutation(r.shape[1])[:k] for _ in range(n)])
        sub = lambda a, idx: torch.gather(a, 1, torch.as_tensor(idx)[..., None].expand(-1, -1, 3))
        emd, _ = M.emd_set_metrics(sub(s, si), sub(r, ri))
        out.update({f"pointcloud/{k_}{tag}": v for k_, v in emd.items()})
    out["pointcloud/num_shapes"] = float(n)
    out.update(category_accuracy(samples, datamodule))
    print(f"pointcloud evaluation: {n} generated vs {n} reference shapes; {datamodule.protocol()}; "
          "CD squared (PointFlow), EMD exact mean Euclidean matching distance", flush=True)
    return out


def category_accuracy(samples, datamodule) -> dict[str, float]:
    """``pointcloud/accuracy`` (fraction of samples the shape classifier assigns to the category their prompt
    names), per category, and ``pointcloud/classifier_test_accuracy`` (the classifier on real test clouds);
    empty unless the samples carry ``cond["label"]`` and the data module has a ``shape_classifier``."""
    labels = (samples.get("cond") or {}).get("label")
    if labels is None or not hasattr(datamodule, "shape_classifier"):
        return {}
    labels = torch.as_tensor(labels).reshape(-1).long().cpu().numpy()
    x = samples["x"].detach().cpu()
    if len(labels) != len(x):
        raise ShapeError(f"{len(labels)} category labels for {len(x)} samples")
    clf = datamodule.shape_classifier()
    pred = clf.predict(x)
    out = {"pointcloud/accuracy": float((pred == labels).mean()),
           "pointcloud/classifier_test_accuracy": clf.test_accuracy}
    for k, name in enumerate(getattr(datamodule, "class_names", ())):
        if (labels == k).any():
            out[f"pointcloud/accuracy_{name}"] = float((pred[labels == k] == k).mean())
    return out
