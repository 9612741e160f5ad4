"""The official CSDI checkpoint (ermongroup/CSDI ``model.pth``) as a polydiff checkpoint.

The release is a bare ``CSDI_base.state_dict()`` saved on CUDA, without hyper-parameters or the statistics the
data were standardised with. :data:`CONVERTER` (declared through ``polydiff_checkpoint_converters``) turns it
into a normal polydiff checkpoint: ``polydiff convert --ckpt model.pth --out csdi_physionet.ckpt`` writes one,
and ``polydiff impute``/``evaluate``/``sample`` accept ``model.pth`` directly (converted in memory). The
architecture (K features, channels, layers, embedding sizes) is read from the tensor shapes; the process is
CSDI's quadratic VP with T = 50 (:func:`.csdi.csdi_process`, the release's ``config/base.yaml``).

Statistics: the official PhysioNet code (``dataset_physio.py``) standardises every variable with the mean and
population std of its observed values over *all* set-a patients (4000 records; the 3 with no observation of the
35 variables contribute nothing), before the train/test split. :data:`PHYSIONET_MEAN`/:data:`PHYSIONET_STD`
are those values, computed with polydiff's own parser (:func:`official_physionet_stats`; the test
``test_official_statistics_match_set_a`` recomputes them from set-a), so the converted model standardises new
records exactly as the released weights expect, without set-a at hand. ``--set data_root=DIR`` recomputes them
from ``DIR/set-a(.tar.gz)`` instead and records DIR for ``polydiff evaluate``'s data module.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from polydiff.errors import ConfigError, DataError
from polydiff.hookspecs import CheckpointConverter

#: per-variable mean of CSDI's 35 PhysioNet variables (order of ``physionet2012.ATTRIBUTES``), all of set-a
PHYSIONET_MEAN = (
    59.540976152469405, 86.72320413227442, 139.06972964987443, 2.8797765291789044, 58.13833409690321,
    147.48356788855648, 12.670222585415207, 7.490957887101592, 2.9228741496598643, 394.8899400819931,
    141.4867570064675, 96.66380228136883, 37.073628410543016, 505.5576196473552, 2.90646578782172,
    23.118951553526724, 27.413004968675743, 19.64795551193981, 2.0277491155660377, 30.69243216467609,
    119.60137167841977, 0.5404785381886817, 4.135790642787727, 11.407767149315339, 156.51746031746032,
    119.15012244292181, 1.2004983498349833, 80.20321011673151, 7.127188940092165, 40.39875518672199,
    191.05877024038804, 116.1171573535279, 77.08923183026533, 1.5052390166989178, 116.77122488658458,
)
#: per-variable population std (ddof 0), same order
PHYSIONET_STD = (
    13.014367814371969, 17.789923096505152, 5.185595006246409, 2.5287518090506724, 15.060742828969692,
    85.96290370390405, 7.649058756791319, 8.384743923129626, 0.6515057685658793, 1201.033856726963,
    67.62249645388557, 3.2941120020920454, 1.5604879744921247, 1515.3625179842986, 5.902070316876258,
    4.707600932877378, 23.403743427107166, 5.509144163183135, 0.42200512999924544, 5.002058959758509,
    23.730556355204914, 0.1863443250931373, 0.7063370336022915, 3.9675798233951176, 45.99491531484598,
    21.976107230629886, 2.7165322975864608, 16.23251556843813, 9.754483687298693, 9.062327978713657,
    106.50939503021539, 170.65318497613185, 14.856134327604455, 1.6369529387005421, 133.9677833472438,
)
PHYSIONET_STATISTICS = ("official CSDI: mean and population std of the observed values of each variable over all "
                        "set-a patients (dataset_physio.py, before the split)")


def official_physionet_stats(root: str | Path | None = None):
    """(mean, std) (35,) as the official code computes them: observed values of all set-a records (``root``:
    folder with ``set-a.tar.gz`` or ``set-a/``; default: the download cache)."""
    from polydiff.datasets import physionet2012 as physio

    rec = physio.load_set("a", root=root)
    keep = rec.observed_mask.any(axis=(1, 2))
    return physio.feature_stats(rec.values[keep], rec.observed_mask[keep])


def is_official(raw: Mapping[str, Any]) -> bool:
    """A bare official CSDI state dict (``embed_layer.weight`` and ``diffmodel.*`` tensors, no hyper-parameters)."""
    return ("hyper_parameters" not in raw and "embed_layer.weight" in raw
            and "diffmodel.input_projection.weight" in raw)


def convert(raw: Mapping[str, Any], source: str, options: Mapping[str, str]) -> dict:
    """A polydiff checkpoint (hyper-parameters, weights, sample shape, training statistics, the data module for
    ``polydiff evaluate``) from an official ``model.pth``. Options: ``data_root`` (see the module docstring)."""
    import torch

    from polydiff.datasets import physionet2012 as physio
    from polydiff.training import DiffusionModule

    from .csdi import convert_official_state_dict
    from .data import PHYSIONET_UNITS, series_metadata

    unknown = sorted(set(options) - {"data_root"})
    if unknown:
        raise ConfigError(f"{source}: unknown option(s) {unknown} for the CSDI converter; known: data_root")
    if not is_official(raw):
        raise DataError(f"{source}: not an official CSDI state dict (no 'embed_layer.weight' / "
                        "'diffmodel.input_projection.weight')")
    bad = [k for k, v in raw.items() if not (isinstance(k, str) and torch.is_tensor(v))]
    if bad:
        raise DataError(f"{source}: entry {bad[0]!r} is not a named tensor; expected a CSDI state dict")
    ours = convert_official_state_dict(raw)
    K, fdim = ours["feature_embedding.weight"].shape
    if K != len(physio.ATTRIBUTES):
        raise DataError(f"{source}: a CSDI model of {K} features; the converter knows the PhysioNet 2012 release "
                        f"({len(physio.ATTRIBUTES)} variables) only, whose statistics it stores")
    layers = len({k.split(".")[1] for k in ours if k.startswith("blocks.")})
    channels = int(ours["input_projection.weight"].shape[0])
    side = int(ours["blocks.0.cond_projection.weight"].shape[1])
    num_steps = int(ours["step_embedding.table"].shape[0]) if "step_embedding.table" in ours else 50
    backbone = {"class_path": "polydiff.plugins.timeseries.csdi.CSDIBackbone",
                "init_args": {"num_features": int(K), "num_steps": num_steps, "channels": channels, "layers": layers,
                              "heads": 8, "feature_embedding_dim": int(fdim), "time_embedding_dim": side - int(fdim) - 1}}
    process = {"class_path": "polydiff.processes.VP",
               "init_args": {"schedule": {"class_path": "polydiff.schedules.QuadraticSchedule",
                                          "init_args": {"beta_start": 1e-4, "beta_end": 0.5, "num_steps": num_steps}},
                             "num_steps": num_steps}}
    module = DiffusionModule(backbone=backbone, process=process, parameterization="eps", ema_decay=0.0,
                             sampler="ddpm", sample_steps=num_steps, val_num_samples=0, final_num_samples=0,
                             lr=1e-3, weight_decay=1e-6, seed=1)
    missing, unexpected = module.denoiser.backbone.load_state_dict(ours, strict=False)
    if missing or unexpected:
        raise DataError(f"{source}: the tensors do not fit CSDIBackbone (missing {missing}, unexpected {unexpected})")
    root = options.get("data_root") or None
    if root is None:
        mean, std = PHYSIONET_MEAN, PHYSIONET_STD
    else:
        mean, std = official_physionet_stats(root)
    names = list(physio.ATTRIBUTES)
    meta = series_metadata(names, mean, std, [PHYSIONET_UNITS[n] for n in names], 3600.0, "1 h",
                           PHYSIONET_STATISTICS + ("" if root is None else f" (recomputed from {root})"))
    meta["source"] = f"official CSDI checkpoint {Path(source).name} (ermongroup/CSDI), converted by polydiff"
    return {
        "hyper_parameters": dict(module.hparams),
        "state_dict": module.state_dict(),
        "polydiff": {"domain": "timeseries", "sample_shape": [int(K), physio.NUM_HOURS], "data": meta,
                     "module_class": "polydiff.training.DiffusionModule"},
        "datamodule_hyper_parameters": {
            "_class_path": "polydiff.plugins.timeseries.data.PhysioNetDataModule", "root": root, "missing_ratio": 0.1,
            "split_seed": 1, "nfold": 0, "stats": "all", "batch_size": 16, "seed": 1, "mask_strategy": "random"},
    }


CONVERTER = CheckpointConverter(
    name="csdi_official",
    description="official CSDI PhysioNet checkpoint (ermongroup/CSDI model.pth): weights + CSDI's set-a statistics",
    detect=is_official, convert=convert)
