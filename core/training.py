"""One LightningModule for every domain: :class:`DiffusionModule`.

It is generic over the forward process, the state space, the parameterisation and loss, the backbone and
an optional conditioner; keeps an exponential moving average of the weights (:class:`polydiff.ema.EMA`, used
for validation, sampling and evaluation, saved in the checkpoint); drops conditions for classifier-free
guidance (:func:`polydiff.guidance.drop_conditions`); and, during validation and at the end of ``fit``, draws
samples and hands them to the plugins' artifact and metric hooks through
:func:`polydiff.evaluation.write_and_evaluate`. Multi-GPU/multi-node training comes from Lightning strategies.

Every random draw of training (diffusion times, noise, condition dropout) comes from a generator seeded
with ``seed + global_rank`` whose state is saved in the checkpoint, together with torch's global RNG (used
by dropout layers), so a resumed run reproduces an uninterrupted one bit for bit on the CPU.

Components may be given as objects, as registry short names (``"MLP"``), or as specs
``{"class_path": "MLP", "init_args": {...}}`` (built by :func:`polydiff.components.instantiate`); with
names/specs the module's hyper-parameters are plain types and :meth:`DiffusionModule.from_checkpoint` rebuilds it from the checkpoint alone with
``torch.load(weights_only=True)`` (the ``polydiff`` CLI always produces such checkpoints).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Mapping

import lightning as L
import torch
from torch import nn

from .batch import unpack
from .checkpointing import checked_extras, install as _install_atomic_io, schedule_key
from .components import instantiate, load_model_checkpoint, plain_value, rebuild_from_hparams
from .discrete import D3PMLoss, DiscreteDenoiser, DiscreteProcess, LogitGuidance, MDLMLoss, unpack_tokens
from .ema import EMA
from .errors import ConfigError, DataError, ShapeError
from .evaluation import write_and_evaluate
from .guidance import ClassifierFreeGuidance, drop_conditions, null_conditions
from .losses import DiffusionLoss
from .parameterization import PARAMETERIZATIONS, Denoiser
from .processes import GaussianProcess, get_process
from .spaces import Euclidean, Space
from .structured import CategoricalSession, ProductSpace, StructuredBackbone, find_structured

Tensor = torch.Tensor

# The EMA copy is deliberately kept in eval mode; Lightning would warn about it at every fit.
warnings.filterwarnings("ignore", message=r"Found \d+ module\(s\) in eval mode")
# Components are stored as class_path specs (see _plain_hparams), so this advice does not apply.
warnings.filterwarnings("ignore", message=r"Attribute '\w+' is an instance of `nn.Module` and is already saved")


class _Conditioned(nn.Module):
    """backbone(x, t, conditioner(cond)): the conditioner turns raw conditions into backbone inputs."""

    def __init__(self, backbone: nn.Module, conditioner: nn.Module):
        super().__init__()
        self.backbone, self.conditioner = backbone, conditioner

    def forward(self, x, t, cond=None):
        return self.backbone(x, t, self.conditioner(dict(cond or {})))


class DiffusionModule(L.LightningModule):
    """Diffusion training for any domain (Ho et al. 2020; Song et al. 2021; Karras et al. 2022 — the
    process, parameterisation and loss choose which).

    Args:
        backbone: network called ``backbone(x, t, cond)`` (object, short name or class_path spec).
        process: forward process (object, spec or :func:`polydiff.get_process` name such as ``"vp"``): a
            Gaussian process, or a :class:`polydiff.discrete.DiscreteProcess` for categorical data — then
            ``batch["x"]`` holds integer ids (batch, ...), the backbone returns x_0 logits (batch, ..., K)
            (e.g. :class:`~polydiff.backbones.TokenTransformer`) and sampling uses
            :func:`polydiff.discrete_samplers.sample_discrete`.
        space: state space (default Euclidean; Gaussian processes only).
        parameterization: what the backbone predicts: eps | x0 | v | score | flow | edm (a discrete model
            always predicts x_0 logits; leave the default or say ``x0``).
        loss: a :class:`polydiff.losses.DiffusionLoss`; default uniform weighting of the parameterisation.
            Discrete: :class:`~polydiff.discrete.D3PMLoss` (default for a chain with ``num_steps``) or
            :class:`~polydiff.discrete.MDLMLoss` (default in continuous time), given without a process: the
            module binds its own.
        learned_variance: the backbone also outputs the variance interpolation (Nichol & Dhariwal 2021).
        conditioner: optional module mapping raw ``cond`` to backbone conditions.
        num_classes: number of classes of ``cond["label"]``; index ``num_classes`` is the null label.
        cond_drop_prob: probability of the null condition in training (Ho & Salimans 2022: 0.1–0.2).
        ema_decay, ema_warmup: see :class:`polydiff.ema.EMA`.
        lr, weight_decay, betas: AdamW (Loshchilov & Hutter 2019); lr 2e-4 as Ho et al. 2020.
        warmup_steps: linear learning-rate warm-up (Ho et al. 2020 use 5000).
        lr_decay_at, lr_decay_gamma: step decay: the lr is multiplied by ``lr_decay_gamma`` at each of these
            fractions of the run's optimiser steps (``trainer.estimated_stepping_batches``); CSDI's
            official training uses ``[0.75, 0.9]`` and 0.1 (Tashiro et al. 2021, App. E.1).
        sampler, sample_steps, guidance_scale, sampler_kwargs: defaults of :meth:`sample` (sampler: ``ddim``
            for a Gaussian process; ``mdlm`` for an absorbing discrete one, ``ancestral`` for uniform).
        val_num_samples: samples drawn at validation for the artifact and metric hooks (0 = none).
        val_sample_every_n_epochs: how often validation draws them.
        final_num_samples: samples written through the artifact hook when ``fit`` ends (0 = none).
        seed: seed of the training generator (offset by the global rank) and of validation sampling.
        parts: a state of named parts instead of one tensor, ``{name: {features, space, scale, loss_weight,
            kind, num_classes}}`` (:class:`polydiff.structured.Part`): batches then hold ``x`` as a mapping of
            parts, the backbone is called ``backbone(parts, t, cond) -> parts`` (:class:`StructuredBackbone`) and
            the engine works on the packed tensor (:class:`ProductSpace`). ``space`` must then be None.
    """

    def __init__(
        self,
        backbone: nn.Module,
        process: GaussianProcess | DiscreteProcess | str = "vp",
        space: Space | None = None,
        parameterization: str = "eps",
        loss: DiffusionLoss | D3PMLoss | MDLMLoss | None = None,
        learned_variance: bool = False,
        conditioner: nn.Module | None = None,
        num_classes: int | None = None,
        cond_drop_prob: float = 0.0,
        ema_decay: float = 0.9999,
        ema_warmup: bool = True,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 0,
        sampler: str | None = None,
        sample_steps: int = 50,
        guidance_scale: float = 1.0,
        sampler_kwargs: dict | None = None,
        val_num_samples: int = 64,
        val_sample_every_n_epochs: int = 1,
        final_num_samples: int = 64,
        seed: int = 0,
        lr_decay_at: list[float] | None = None,
        lr_decay_gamma: float = 0.1,
        parts: dict[str, dict] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self._plain_hparams()
        if parameterization not in PARAMETERIZATIONS:
            raise ConfigError(f"unknown parameterization {parameterization!r}; expected one of {PARAMETERIZATIONS}")
        if not 0.0 <= cond_drop_prob < 1.0:
            raise ConfigError(f"cond_drop_prob must be in [0, 1), got {cond_drop_prob}")
        if lr_decay_at is not None and not all(0.0 < f < 1.0 for f in lr_decay_at):
            raise ConfigError(f"lr_decay_at holds fractions of the training run in (0, 1); got {lr_decay_at}")
        backbone = instantiate(backbone, "backbone")
        if not isinstance(backbone, nn.Module):
            raise ConfigError(f"backbone must be an nn.Module, a registered name or a class_path spec; got {backbone!r}")
        conditioner = instantiate(conditioner, "conditioner")
        if isinstance(process, str) and "." not in process and process[:1].islower():
            process = get_process(process)
        process = instantiate(process, "process")
        if not isinstance(process, (GaussianProcess, DiscreteProcess)):
            raise ConfigError(f"process must be a GaussianProcess, a DiscreteProcess, a process name or a "
                              f"{{class_path, init_args}} spec; got {process!r}")
        self.is_discrete = isinstance(process, DiscreteProcess)
        self.space = instantiate(space, "space") or Euclidean()
        if self.is_discrete:
            bad = [f"{k}={v!r}" for k, v, ok in (
                ("space", space, space is None or type(self.space) is Euclidean),
                ("parameterization", parameterization, parameterization in ("eps", "x0")),
                ("learned_variance", learned_variance, not learned_variance),
                ("parts", parts, parts is None)) if not ok]
            if bad:
                raise ConfigError(f"a DiscreteProcess model predicts x_0 logits in a categorical space; "
                                  f"{', '.join(bad)} do not apply (leave them at their defaults)")
        self.process = process
        if "_instantiator" not in self.hparams:  # store resolved full class paths, not short names
            for key, obj in (("backbone", backbone), ("conditioner", conditioner), ("process", process),
                             ("space", self.space if space is not None else None)):
                if getattr(obj, "_polydiff_spec", None) is not None and isinstance(self.hparams.get(key), Mapping):
                    self.hparams[key] = obj._polydiff_spec
        self.structure: ProductSpace | None = None
        if parts is not None:  # a state of named parts: the engine sees the packed tensor (polydiff.structured)
            if space is not None:
                raise ConfigError("pass either space (one tensor) or parts (each part has its own space), not both")
            self.structure = self.space = ProductSpace(parts)
            backbone = StructuredBackbone(backbone, self.structure)
        net = backbone if conditioner is None else _Conditioned(backbone, conditioner)
        if self.is_discrete:
            self.denoiser = DiscreteDenoiser(net, process)
            self.loss_fn = self._discrete_loss(loss, process)
        else:
            self.denoiser = Denoiser(net, process, parameterization, learned_variance=learned_variance)
            self.loss_fn = instantiate(loss, "loss") if loss is not None else DiffusionLoss(parameterization)
            if not isinstance(self.loss_fn, DiffusionLoss) and hasattr(self.loss_fn, "bind"):
                raise ConfigError(f"loss {type(self.loss_fn).__name__} is a discrete loss; the process is "
                                  f"{type(process).__name__}")
        self.ema = EMA(self.denoiser, ema_decay, ema_warmup) if ema_decay > 0 else None
        self._train_gen: torch.Generator | None = None
        self._gen_seed_offset = 0
        self._pending_rng: dict | None = None
        self._checked_shape = False
        self._sample_shape: tuple[int, ...] | None = None
        self._size_histogram: Tensor | None = None
        self._domain: str | None = None
        self._data_metadata: dict = {}
        self._datamodule = None
        #: time grids optimised for this model (:meth:`optimize_schedule`), by :func:`schedule_key`; saved with it
        self.schedules: dict[str, dict[str, Any]] = {}

    @staticmethod
    def _discrete_loss(loss, process: DiscreteProcess):
        """The discrete loss, bound to the module's process (D3PM on a chain, MDLM in continuous time)."""
        if loss is None:
            return D3PMLoss(process) if process.num_steps is not None else MDLMLoss(process)
        loss = instantiate(loss, "loss")
        if not isinstance(loss, (D3PMLoss, MDLMLoss)):
            raise ConfigError(f"a DiscreteProcess model trains with D3PMLoss or MDLMLoss; got {loss!r}")
        if loss.process is None:
            return loss.bind(process)
        if repr(loss.process) != repr(process):
            raise ConfigError(f"the loss has its own process {loss.process!r}, not the module's {process!r}; "
                              "give the loss without a process")
        return loss.bind(process)

    def _plain_hparams(self) -> None:
        """Hyper-parameters given as objects are replaced by their class_path specs (weights_only checkpoints)."""
        for k in list(self.hparams):
            if k != "_instantiator":
                self.hparams[k] = plain_value(self.hparams[k])

    # -- properties ------------------------------------------------------------------------------
    @property
    def datamodule(self):
        trainer = self._trainer
        dm = getattr(trainer, "datamodule", None) if trainer is not None else None
        return dm if dm is not None else self._datamodule

    def attach_datamodule(self, datamodule) -> None:
        """Use ``datamodule`` (its domain, sample shape and sampling inputs) outside a Trainer."""
        self._datamodule = datamodule

    @property
    def sample_shape(self) -> tuple[int, ...]:
        """Shape of one sample as the engine sees it (the packed tensor for a state of parts); for variable-size
        data the node axis is the largest training size."""
        dm = self.datamodule
        if dm is not None:
            shape = dm.sample_shape
            return self.structure.packed_shape(shape) if self.structure is not None else tuple(shape)
        if self._sample_shape is None:
            raise ConfigError("sample_shape is unknown: attach a datamodule or load a checkpoint written by fit")
        return self._sample_shape

    @property
    def size_histogram(self) -> Tensor | None:
        """Counts of the training items' node counts (index = size) for variable-size data, else None; from
        the data module, or from the checkpoint (``checkpoint["polydiff"]["size_histogram"]``)."""
        dm = self.datamodule
        if dm is not None and getattr(dm, "variable_size", False):
            return dm.size_histogram()
        return self._size_histogram

    def flat_batch(self, batch: Mapping[str, Any]) -> Mapping[str, Any]:
        """A batch as the Gaussian engine sees it: a state of parts is packed (:meth:`ProductSpace.flat_batch`);
        a single-tensor batch is returned unchanged."""
        if self.structure is None:
            return batch
        flat, _ = self.structure.flat_batch(batch)
        return flat

    @property
    def data_metadata(self) -> dict:
        """What the data module records about the training data (:meth:`DiffusionDataModule.checkpoint_metadata`,
        e.g. normalisation statistics and variable names), from the attached data module or the checkpoint;
        {} when neither records any."""
        dm = self.datamodule
        meta = dm.checkpoint_metadata() if dm is not None and hasattr(dm, "checkpoint_metadata") else None
        return dict(meta) if meta else dict(self._data_metadata)

    @property
    def domain(self) -> str:
        dm = self.datamodule
        return getattr(dm, "domain", None) or self._domain or "generic"

    def sampling_model(self, use_ema: bool = True) -> Denoiser:
        return self.ema.module if (use_ema and self.ema is not None) else self.denoiser

    # -- training ----------------------------------------------------------------------------------
    def training_generator(self) -> torch.Generator:
        """The generator of every training draw (times, noise, condition dropout), seeded with
        ``seed + global_rank`` on the module's device; its state is saved in checkpoints."""
        if self._train_gen is None or self._train_gen.device != self.device:
            rank = self.global_rank if self._trainer is not None else 0
            self._train_gen = torch.Generator(device=self.device).manual_seed(
                self.hparams.seed + rank + self._gen_seed_offset)
        return self._train_gen

    def check_batch(self, batch: Mapping[str, Any]) -> None:
        """Raise a :class:`~polydiff.errors.ShapeError` unless ``batch`` follows the batch contract of this
        module's process (:mod:`polydiff.batch`; integer token ids for a discrete process) and, with a data
        module, its items have ``sample_shape``. Training and evaluation call it on their first batch."""
        if self.structure is not None:  # a state of parts: checked once packed
            flat = self.flat_batch(batch)
            unpack(flat)
            if tuple(flat["x"].shape[2:]) != tuple(self.sample_shape[1:]):
                raise ShapeError(f"batch packs to shape {tuple(flat['x'].shape)}; the model was built for "
                                 f"(batch, nodes, {', '.join(map(str, self.sample_shape[1:]))})")
            return
        dm = self.datamodule
        if dm is not None and hasattr(dm, "check_batch"):
            dm.check_batch(batch, self.sample_shape)
        if self.is_discrete:
            unpack_tokens(batch, self.process)
        else:
            unpack(batch)

    def _check_first_batch(self, batch) -> None:
        if not self._checked_shape:
            self.check_batch(batch)
            self._checked_shape = True

    def prepare_batch(self, batch: Mapping[str, Any], generator: torch.Generator | None) -> dict:
        """Condition dropout for classifier-free guidance (only while training)."""
        batch = dict(batch)
        if batch.get("cond") and self.hparams.cond_drop_prob > 0:
            batch["cond"] = drop_conditions(batch["cond"], self.hparams.cond_drop_prob, self.hparams.num_classes,
                                            generator)
        return batch

    def compute_loss(self, batch: Mapping[str, Any], generator: torch.Generator | None,
                     model: nn.Module | None = None) -> dict[str, Tensor]:
        """The training objective on one (prepared) batch: ``{"loss": scalar to minimise, <term>: scalar, ...}``.

        The one place where the loss family is dispatched; training, validation and test all call it, and a
        subclass with its own objective (e.g. an extra encoder's terms) overrides only this method.
        ``model`` is the denoiser to evaluate (default the trained one; validation passes the EMA copy);
        every random draw comes from ``generator``. Every entry is logged as ``<stage>/<name>``: the loss
        function's components (``return_components=True``, :mod:`polydiff.losses`) all appear, and a state of
        parts adds ``<part>_loss`` for each categorical part."""
        model = self.denoiser if model is None else model
        loss, components = self._loss(model, batch, generator)
        if "loss" in components:
            raise ConfigError(f"{type(self.loss_fn).__name__} returned a component named 'loss'; that name is the "
                              "objective itself: give the component another name")
        return {"loss": loss, **components}

    def _log_terms(self, terms: Mapping[str, Tensor], stage: str, batch: Mapping[str, Any]) -> None:
        n = _batch_size(batch)
        for k, v in terms.items():
            self.log(f"{stage}/{k}", v, prog_bar=k == "loss", batch_size=n, sync_dist=stage != "train")

    def training_step(self, batch, batch_idx):
        self._check_first_batch(batch)
        gen = self.training_generator()
        batch = self.prepare_batch(batch, gen)
        terms = self.compute_loss(batch, gen)
        self._log_terms(terms, "train", batch)
        return terms["loss"]

    def _loss(self, model, batch, generator):
        """(loss, components) of a batch; a state of parts is packed, and its categorical parts add their terms
        at the same diffusion time (:class:`polydiff.structured.CategoricalSession`), times their loss weight."""
        if self.is_discrete:  # D3PM: hybrid loss with its vb/ce parts (bits); MDLM: the NELBO (nats/token)
            return self.loss_fn(model, batch, generator=generator, return_components=True)
        flat, tokens = (batch, None) if self.structure is None else self.structure.flat_batch(batch)
        if not tokens:
            return self.loss_fn(model, flat, generator=generator, space=self.space, return_components=True)
        with CategoricalSession(find_structured(model), flat.get("presence"), generator, clean=tokens,
                                known=flat.get("known")) as session:
            loss, parts = self.loss_fn(model, flat, generator=generator, space=self.space, return_components=True)
        for k, term in session.loss(t_min=self.process.t_min).items():
            loss = loss + self.structure.parts[k].loss_weight * term
            parts[f"{k}_loss"] = term.detach()
        return loss, parts

    def optimizer_step(self, *args, **kwargs) -> None:
        """The optimiser step, then the EMA update — before callbacks (checkpoints) see the step."""
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update(self.denoiser)

    def setup(self, stage: str) -> None:
        if self._trainer is not None:
            _install_atomic_io(self._trainer)

    def on_train_start(self) -> None:
        if self._pending_rng is not None:  # restored here so nothing between load and training consumes it
            torch.set_rng_state(self._pending_rng["cpu"])
            cuda_states = self._pending_rng.get("cuda") or []
            if cuda_states and torch.cuda.is_available() and len(cuda_states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(cuda_states)
            self._pending_rng = None

    def evaluation_generator(self, batch_idx: int) -> torch.Generator:
        """The seeded generator of validation/test batch ``batch_idx``: the same draws at every evaluation."""
        return torch.Generator(device=self.device).manual_seed(self.hparams.seed + 7919 * (batch_idx + 1))

    def _eval_loss(self, batch, batch_idx, stage: str):
        self._check_first_batch(batch)
        terms = self.compute_loss(batch, self.evaluation_generator(batch_idx), model=self.sampling_model())
        self._log_terms(terms, stage, batch)
        return terms["loss"]

    def validation_step(self, batch, batch_idx):
        return self._eval_loss(batch, batch_idx, "val")

    def test_step(self, batch, batch_idx):
        return self._eval_loss(batch, batch_idx, "test")

    def predict_step(self, batch, batch_idx, dataloader_idx: int = 0):
        """Samples conditioned on the batch's cond/presence/known (known entries taken from batch['x'])."""
        x, presence, known, cond = unpack(self.flat_batch(batch), integer=self.is_discrete)
        g = torch.Generator(device=self.device).manual_seed(self.hparams.seed + batch_idx)
        x_known = x if known is not None else None
        out = _to_cpu(self.sample(x.shape[0], generator=g, cond=cond or None, presence=presence, known=known,
                                  x_known=x_known, shape=tuple(x.shape[1:])))
        if self._trainer is not None:  # written through the plugin like every other sample
            write_and_evaluate(self, out, "predict", out_dir=self.artifact_dir() / "predict",
                               prefix=f"predict_rank{self.global_rank}_batch{batch_idx:05d}")
        return out

    def configure_optimizers(self):
        h = self.hparams
        opt = torch.optim.AdamW(self.denoiser.parameters(), lr=h.lr, weight_decay=h.weight_decay, betas=tuple(h.betas))
        warmup = int(h.warmup_steps or 0)
        decay_at = h.lr_decay_at or []
        if warmup <= 0 and not decay_at:
            return opt
        total = self.trainer.estimated_stepping_batches if decay_at else 0
        if decay_at and not math.isfinite(total):
            raise ConfigError("lr_decay_at needs a finite run: set trainer.max_steps or trainer.max_epochs")
        milestones = [int(f * total) for f in decay_at]
        gamma = float(h.lr_decay_gamma)

        def factor(step: int) -> float:
            warm = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
            return warm * gamma ** sum(step >= m for m in milestones)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- checkpoint --------------------------------------------------------------------------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        extra = {"domain": self.domain, "rng_cpu": torch.get_rng_state(),
                 "module_class": f"{type(self).__module__}.{type(self).__qualname__}"}
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # dropout on a GPU draws from CUDA's RNG
            extra["rng_cuda"] = torch.cuda.get_rng_state_all()
        try:
            extra["sample_shape"] = list(self.sample_shape)
        except ConfigError:
            pass
        hist = self.size_histogram
        if hist is not None:
            extra["size_histogram"] = hist.cpu()
        if self._train_gen is not None:
            extra["train_generator"] = self._train_gen.get_state()
            extra["train_generator_device"] = str(self._train_gen.device)
        meta = self.data_metadata
        if meta:
            extra["data"] = meta
        extra["plugins"] = self._plugins_used(checkpoint)
        if self.schedules:
            extra["schedules"] = {k: dict(v) for k, v in self.schedules.items()}
        checkpoint["polydiff"] = extra

    def _plugins_used(self, checkpoint: dict) -> dict[str, str]:
        """{plugin: version} of the plugins whose registered classes the checkpoint names (the module, the data
        module, every component spec), so loading it elsewhere can say which plugin is missing. The stored
        ``_class_path`` of the module and data module are rewritten to the classes' own ``module.qualname``
        (a config may have named them through an alias)."""
        from .plugins_manager import CORE, get_plugin_manager

        pm = get_plugin_manager()
        for key, obj in (("hyper_parameters", self), ("datamodule_hyper_parameters", self.datamodule)):
            hp = checkpoint.get(key)
            if isinstance(hp, dict) and "_class_path" in hp and obj is not None:
                hp["_class_path"] = f"{type(obj).__module__}.{type(obj).__qualname__}"
        paths: list[str] = []

        def walk(v):
            if isinstance(v, Mapping):
                for k, x in v.items():
                    if k in ("class_path", "_class_path") and isinstance(x, str):
                        paths.append(x)
                    else:
                        walk(x)
            elif isinstance(v, (list, tuple)):
                for x in v:
                    walk(x)

        walk(checkpoint.get("hyper_parameters"))
        walk(checkpoint.get("datamodule_hyper_parameters"))
        paths.append(f"{type(self).__module__}.{type(self).__qualname__}")
        used = {CORE}
        for p in paths:
            hit = pm.registry.resolve(p)
            if hit is not None:
                used.add(pm.registry.owner(hit[0], hit[1]))
        return {name: pm.infos[name].version if name in pm.infos else "" for name in sorted(used)}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        extra = checked_extras(checkpoint)
        self._domain = extra.get("domain")
        if extra.get("sample_shape") is not None:
            self._sample_shape = tuple(extra["sample_shape"])
        if extra.get("size_histogram") is not None:
            self._size_histogram = extra["size_histogram"].cpu()
        self.schedules = {k: dict(v) for k, v in extra.get("schedules", {}).items()}
        self._data_metadata = dict(extra.get("data") or {})
        rank = self.global_rank if self._trainer is not None else 0
        if rank > 0:
            # the checkpoint holds rank 0's states; other ranks re-seed from (seed, rank, step) so that their
            # draws stay decorrelated from rank 0's (deterministic, but not those of the uninterrupted run)
            self._gen_seed_offset = 1_000_003 * int(checkpoint.get("global_step", 0))
            self._train_gen = None
            extra = {k: v for k, v in extra.items() if k not in ("train_generator", "rng_cpu", "rng_cuda")}
            torch.manual_seed(self.hparams.seed + rank + self._gen_seed_offset)
        if "train_generator" in extra:
            try:  # generator states are CPU byte tensors even when map_location moved the checkpoint to a GPU
                g = torch.Generator(device=extra.get("train_generator_device", "cpu"))
                g.set_state(extra["train_generator"].cpu())
                self._train_gen = g
            except (RuntimeError, ValueError, TypeError):  # saved on a device this machine lacks (or damaged):
                self._train_gen = None                       # a fresh generator is seeded instead
        if "rng_cpu" in extra:
            self._pending_rng = {"cpu": extra["rng_cpu"].cpu(),
                                 "cuda": [s.cpu() for s in extra.get("rng_cuda", [])]}

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location="cpu",
                        checkpoint: Mapping | None = None) -> "DiffusionModule":
        """Rebuild a module (of the class that was trained) from a checkpoint alone; EMA weights, sample shape
        and domain come back too, and the data module's :attr:`data_metadata` (e.g. training statistics).

        The file is read as data (:func:`polydiff.components.load_model_checkpoint`: a foreign format, such as a
        paper's released weights, is converted by the plugin that declares it) and every class it names
        (the module, each component spec) is resolved through the plugin registry, never imported: a
        checkpoint naming anything else is refused with a :class:`ConfigError` naming the key and value.
        ``checkpoint``: the contents of ``path`` if the caller has already loaded them."""
        name = str(path)
        ckpt = dict(checkpoint) if checkpoint is not None else load_model_checkpoint(path, map_location=map_location)
        hp = ckpt.get("hyper_parameters")
        state = ckpt.get("state_dict")
        if not isinstance(hp, Mapping) or not hp:
            raise ConfigError(f"{name}: checkpoint has no hyper_parameters; it was not written by a DiffusionModule "
                              "and no installed plugin converts its format (see `polydiff convert --list`)")
        if not isinstance(state, Mapping) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
            raise DataError(f"{name}: checkpoint has no state_dict of named tensors; it was not written by polydiff fit")
        extra = checked_extras(ckpt, name)
        made_by = extra.get("plugins") if isinstance(extra.get("plugins"), Mapping) else None
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise DataError(f"{name}: {len(bad)} weight tensor(s) hold NaN or inf (first: {bad[0]}); the run that "
                            "wrote it had diverged or the file is damaged")
        default = extra.get("module_class") if "_class_path" not in hp else None
        module = rebuild_from_hparams(hp, cls, "module", f"{name}: hyper_parameters",
                                      default_class_path=default, made_by=made_by)
        if not isinstance(module, cls):
            raise ConfigError(f"{name}: holds a {type(module).__name__}, not a {cls.__name__}")
        module.hparams.clear()  # keep the stored config (rebuilding made objects out of it)
        module.hparams.update(hp)
        module.on_load_checkpoint(ckpt)
        module._pending_rng = None
        try:
            module.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).splitlines()
            detail = " ".join(line.strip() for line in first[1:3])[:300]
            raise DataError(f"{name}: the weights do not fit the model its hyper-parameters describe ({detail})") from None
        return module.eval()

    # -- sampling ----------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        n: int,
        generator: torch.Generator | None = None,
        cond: Mapping[str, Tensor] | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        presence: Tensor | None = None,
        known: Tensor | None = None,
        x_known: Tensor | None = None,
        use_ema: bool = True,
        shape: tuple[int, ...] | None = None,
        sizes: Any = None,
        **kw,
    ) -> dict[str, Tensor]:
        """Draw ``n`` samples with :func:`polydiff.samplers.sample` (or, for a discrete process,
        :func:`polydiff.discrete_samplers.sample_discrete`); returns a batch-contract dict (``x`` plus the
        ``cond``/``presence``/``known`` used) on the module's device. For a state of parts ``x`` is the mapping
        of parts in data units and ``presence`` is per node, (n, nodes); ``known`` is then per node too and
        ``x_known`` a mapping of parts (data units; integer ids for categorical parts, which stay fixed on the
        known nodes).

        Variable size: without ``presence``, each sample's node count is drawn from the training size histogram
        (:attr:`size_histogram`), or set by ``sizes`` (see :func:`polydiff.data.draw_sizes`: ``12``, ``"9:29"``
        = the histogram restricted to [9, 29], or a list); the batch is padded to its largest size and
        ``presence`` marks each sample's nodes.

        ``guidance_scale`` w ≠ 1 with a condition applies classifier-free guidance
        ε̃ = ε(x, ∅) + w (ε(x, c) − ε(x, ∅)) (Ho & Salimans 2022, Eq. 6); for a discrete process the same
        guidance on the x_0 logits (:class:`polydiff.discrete.LogitGuidance`). ``known``/``x_known`` fix
        entries (inpainting; for tokens, partial diffusion with a clean source as DiffuSeq), ``presence``
        marks per-sample lengths (padding is never generated). Extra keywords go to the sampler (for the
        discrete samplers e.g. ``times``, the grid of times from 1 to 0, and ``cache``).
        """
        from . import samplers

        h = self.hparams
        sampler = sampler or h.sampler or self.default_sampler
        steps = int(steps or h.sample_steps)
        guidance_scale = h.guidance_scale if guidance_scale is None else guidance_scale
        shape = (int(n), *(shape or self.sample_shape))
        model = self.sampling_model(use_ema)
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(h.seed)
        if presence is None and (sizes is not None or self.size_histogram is not None):
            from .data import draw_sizes

            drawn = draw_sizes(int(n), self.size_histogram, sizes, generator).to(self.device)
            shape = (int(n), int(drawn.max()), *shape[2:])
            nodes = torch.arange(shape[1], device=self.device)[None, :] < drawn[:, None]
            presence = nodes.reshape(*nodes.shape, *([1] * (len(shape) - 2)))
        cond = {k: v.to(self.device) for k, v in dict(cond or {}).items()}
        presence = presence.to(self.device) if presence is not None else None
        known = known.to(self.device) if known is not None else None
        if self.structure is not None:  # per-node masks of a state of parts → broadcastable to the packed x
            probe = torch.empty(shape, device="meta")
            presence = self.structure.node_presence(presence, probe) if presence is not None else None
            known = self.structure.node_presence(known, probe) if known is not None else None
        known_ids = None
        if self.structure is not None and isinstance(x_known, Mapping):  # known parts: pack, keep the ids apart
            x_known = {k: v.to(self.device) for k, v in x_known.items()}
            known_ids = {k: x_known[k] for k in self.structure.categorical}
            x_known = self.structure.pack({k: x_known[k] for k in self.structure.continuous})
        x_known = x_known.to(self.device) if x_known is not None else None
        kwargs = dict(h.sampler_kwargs or {})
        kwargs.update(kw)
        if kwargs.get("grid", "") is None:  # grid=None: the default (the configured grid or an optimised one)
            kwargs.pop("grid")
        if kw.get("grid") is None and "t_start" not in kwargs and "x_start" not in kwargs and isinstance(sampler, str):
            entry = self.schedules.get(schedule_key(sampler, steps))
            if entry is not None:  # a grid optimised for this model, sampler and step count wins over the default
                kwargs["grid"] = entry["grid"].to(torch.float64)
        if self.is_discrete:
            x0 = self._sample_discrete(model, shape, sampler, steps, guidance_scale, generator, cond, presence,
                                       known, x_known, kwargs)
            return _sample_batch(x0, cond, presence, known)
        if cond and guidance_scale != 1.0:
            num_classes = h.num_classes
            model = ClassifierFreeGuidance(model, guidance_scale,
                                           null_cond=lambda c: null_conditions(c, num_classes))
        x_T = self.process.prior_sample(shape, generator=generator, space=self.space, presence=presence,
                                        device=self.device, dtype=self.dtype)
        session = None
        if self.structure is not None and self.structure.categorical:  # stepped on the same grid, per step
            session = CategoricalSession(find_structured(model), presence, generator, shape=shape[:-1],
                                         device=self.device, known=known if known_ids else None, x_known=known_ids)
            user_callback = kwargs.get("callback")

            def callback(info):
                session.callback(info)
                return user_callback(info) if user_callback is not None else None

            kwargs["callback"] = callback
            session.__enter__()
        try:
            x0 = samplers.sample(model, x_T, steps=steps, sampler=sampler, generator=generator, space=self.space,
                                 cond=cond or None, presence=presence, known=known, x_known=x_known, **kwargs)
        finally:
            if session is not None:
                session.__exit__()
        out: dict[str, Any] = {"x": x0}
        if cond:
            out["cond"] = cond
        if presence is not None:
            out["presence"] = presence
        if self.structure is not None:
            out["x"] = {**self.structure.unpack(x0), **(session.result() if session is not None else {})}
            out["x"] = {k: out["x"][k] for k in self.structure.parts}
            if presence is not None and presence.ndim == x0.ndim:
                out["presence"] = presence.squeeze(-1)
        if known is not None:
            out["known"] = known
        return out

    @property
    def default_sampler(self) -> str:
        """The sampler used when none is configured: ``ddim``; discrete: ``mdlm`` (absorbing) or ``ancestral``."""
        if not self.is_discrete:
            return "ddim"
        return "mdlm" if self.process.transition == "absorbing" else "ancestral"

    def _sample_discrete(self, model, shape, sampler, steps, guidance_scale, generator, cond, presence, known,
                         x_known, kwargs) -> Tensor:
        from .discrete_samplers import DISCRETE_SAMPLERS, sample_discrete

        if sampler not in DISCRETE_SAMPLERS:
            raise ConfigError(f"a DiscreteProcess model samples with one of {DISCRETE_SAMPLERS}; got sampler {sampler!r}")
        if cond and guidance_scale != 1.0:
            num_classes = self.hparams.num_classes
            model = LogitGuidance(model, guidance_scale, null_cond=lambda c: null_conditions(c, num_classes))
        if kwargs.get("times") is not None:
            steps = None  # the grid gives the number of steps
        return sample_discrete(model, self.process, shape, steps=steps, sampler=sampler, generator=generator,
                               cond=cond or None, presence=presence, known=known, x_known=x_known,
                               device=self.device, **kwargs)

    def generate(self, n: int, seed: int | None = None, **kw) -> dict[str, Tensor]:
        """``n`` samples (CPU) conditioned on the datamodule's ``sample_inputs`` — what validation, the end of
        ``fit``, ``polydiff sample`` and ``polydiff evaluate`` draw."""
        seed = self.hparams.seed if seed is None else seed
        inputs = {}
        dm = self.datamodule
        if dm is not None and hasattr(dm, "sample_inputs"):
            inputs = dm.sample_inputs(n, torch.Generator().manual_seed(seed)) or {}
        elif self.hparams.num_classes:  # no data module: labels cycling through the classes
            inputs = {"cond": {"label": torch.arange(n) % self.hparams.num_classes}}
        g = torch.Generator(device=self.device).manual_seed(seed)
        out = self.sample(n, generator=g, **inputs, **kw)
        return _to_cpu(out)

    @torch.no_grad()
    def optimize_schedule(self, sampler: str | None = None, steps: int | None = None, references: int = 256,
                          seed: int | None = None, guidance_scale: float | None = None, store: bool = True,
                          info: dict | None = None, **options) -> Tensor:
        """Optimise the time grid of ``sampler`` with ``steps`` steps for this model
        (:func:`polydiff.samplers.optimize_grid`: GITS dynamic programming on the model's own teacher
        trajectories, then a coordinate-search refinement) and, with ``store``, keep it in :attr:`schedules`, so
        that :meth:`sample` with that sampler and step count uses it (and the next checkpoint holds it).

        The references are ``references`` prior draws (seed ``seed``) with the conditions :meth:`generate` would
        draw, sampled with the EMA weights, the configured ``sampler_kwargs`` and classifier-free guidance as
        :meth:`sample` applies it. ``options`` go to :func:`~polydiff.samplers.optimize_grid` (``fine_steps``,
        ``teacher``, ``refine_sweeps``, ...). Returns the (steps + 1,) float64 grid; ``info`` receives
        ``optimize_grid``'s report."""
        from .samplers import optimize_grid

        if self.is_discrete or (self.structure is not None and self.structure.categorical):
            raise ConfigError("optimised schedules are for continuous (Gaussian) states; this model has "
                              "discrete or categorical parts")
        h = self.hparams
        sampler = sampler or h.sampler or self.default_sampler
        steps = int(steps or h.sample_steps)
        seed = h.seed if seed is None else int(seed)
        guidance_scale = h.guidance_scale if guidance_scale is None else guidance_scale
        n = int(references)
        if n < 1:
            raise ConfigError(f"references must be a positive integer, got {references!r}")
        inputs: dict = {}
        dm = self.datamodule
        if dm is not None and hasattr(dm, "sample_inputs"):
            inputs = dm.sample_inputs(n, torch.Generator().manual_seed(seed)) or {}
        elif h.num_classes:
            inputs = {"cond": {"label": torch.arange(n) % h.num_classes}}
        if inputs.get("known") is not None:
            raise ConfigError("optimised schedules are fitted on free generation; this data module's samples fix "
                              "known entries (imputation), whose replacement noise makes the run stochastic")
        cond = {k: v.to(self.device) for k, v in dict(inputs.get("cond") or {}).items()}
        generator = torch.Generator(device=self.device).manual_seed(seed)
        shape = (n, *self.sample_shape)
        presence = inputs.get("presence")
        if presence is None and self.size_histogram is not None:
            from .data import draw_sizes

            drawn = draw_sizes(n, self.size_histogram, None, generator).to(self.device)
            shape = (n, int(drawn.max()), *shape[2:])
            nodes = torch.arange(shape[1], device=self.device)[None, :] < drawn[:, None]
            presence = nodes.reshape(*nodes.shape, *([1] * (len(shape) - 2)))
        presence = presence.to(self.device) if presence is not None else None
        if self.structure is not None and presence is not None:
            presence = self.structure.node_presence(presence, torch.empty(shape, device="meta"))
        model = self.sampling_model(True)
        if cond and guidance_scale != 1.0:
            num_classes = h.num_classes
            model = ClassifierFreeGuidance(model, guidance_scale, null_cond=lambda c: null_conditions(c, num_classes))
        x_T = self.process.prior_sample(shape, generator=generator, space=self.space, presence=presence,
                                        device=self.device, dtype=self.dtype)
        kwargs = {k: v for k, v in dict(h.sampler_kwargs or {}).items() if k != "grid"}
        kwargs.update(options)
        report: dict = {}
        grid = optimize_grid(model, sampler, steps, x_T=x_T, space=self.space, cond=cond or None, presence=presence,
                             info=report, **kwargs)
        if info is not None:
            info.update(report)
        if store:
            self.schedules[schedule_key(sampler, steps)] = {
                "sampler": sampler, "steps": steps, "grid": grid.cpu(), "references": n, "seed": seed,
                "guidance_scale": float(guidance_scale), "errors": {k: float(v) for k, v in report["errors"].items()},
            }
        return grid

    # -- validation samples, artifacts and metrics --------------------------------------------------
    def artifact_dir(self) -> Path:
        trainer = self._trainer
        base = None
        if trainer is not None:
            base = trainer.log_dir or trainer.default_root_dir
        return (Path(base or ".") / "samples").resolve()

    def on_validation_epoch_end(self) -> None:
        h = self.hparams
        trainer = self._trainer
        if trainer is None or trainer.sanity_checking or not h.val_num_samples or not h.val_sample_every_n_epochs:
            return
        if (trainer.current_epoch + 1) % h.val_sample_every_n_epochs != 0 or not trainer.is_global_zero:
            return
        samples = self.generate(h.val_num_samples, seed=h.seed + 1)
        _, metrics = write_and_evaluate(self, samples, "val", out_dir=self.artifact_dir(),
                                        prefix=f"val_step{self.global_step:07d}", evaluate=True,
                                        generator=torch.Generator().manual_seed(h.seed), save_unhandled=False)
        for k, v in metrics.items():
            self.log(f"val/{k}", v, rank_zero_only=True)

    def on_train_end(self) -> None:
        """Final samples when training ends (still on the training device; ``on_fit_end`` runs after Lightning
        has moved the model back to the CPU)."""
        h = self.hparams
        trainer = self._trainer
        if not h.final_num_samples or trainer is None or not trainer.is_global_zero or trainer.interrupted:
            return
        paths = self.write_samples(h.final_num_samples, self.artifact_dir(), seed=h.seed, stage="fit")
        print(f"polydiff: final samples written to {paths[0] if len(paths) == 1 else paths[0].parent}", flush=True)
        self.final_sample_paths = paths

    def write_samples(self, n: int, out_dir: str | Path, seed: int | None = None, stage: str = "sample",
                      prefix: str = "samples", **sample_kw) -> list[Path]:
        """Draw ``n`` samples and write them (:func:`polydiff.evaluation.write_and_evaluate`: the domain's
        artifact hook, else the raw tensors as ``<prefix>.pt``). Returns the paths."""
        samples = self.generate(n, seed=seed, **sample_kw)
        paths, _ = write_and_evaluate(self, samples, stage, out_dir=out_dir, prefix=prefix)
        return paths


def _sample_batch(x0: Tensor, cond: Mapping, presence: Tensor | None, known: Tensor | None) -> dict[str, Any]:
    out: dict[str, Any] = {"x": x0}
    if cond:
        out["cond"] = cond
    if presence is not None:
        out["presence"] = presence
    if known is not None:
        out["known"] = known
    return out


def _batch_size(batch: Mapping[str, Any]) -> int:
    x = batch["x"]
    if isinstance(x, Mapping):  # a state of named parts
        x = next(iter(x.values()))
    return int(x.shape[0])


def _to_cpu(obj):
    if torch.is_tensor(obj):
        return obj.detach().cpu()
    if isinstance(obj, Mapping):
        return {k: _to_cpu(v) for k, v in obj.items()}
    return obj
