"""Luo & Hu 2021 as a polydiff ``DiffusionModule``: encoder + latent flow prior + point-wise diffusion decoder.

The decoder is the module's ordinary denoiser (``PointwiseNet`` on the official discrete VP chain), so
EMA, checkpoints, ``polydiff sample/evaluate`` and every engine sampler work unchanged; this class
adds the encoder and the flow, the objective of their Eq. 14 (ε-MSE + ``kl_weight`` · (−H[q] − log p(z))),
and sampling of the shape latent from the flow prior (``gen``) or from the encoder (``ae``).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from polydiff.errors import ConfigError
from polydiff.training import DiffusionModule

from .luohu import LatentFlow, PointNetEncoder, latent_terms, luohu_lr, truncated_normal

Tensor = torch.Tensor


class LuoHuModule(DiffusionModule):
    """Args (defaults: Luo & Hu ``train_gen.py``):
        latent_dim: F = 256.  mode: ``gen`` (flow prior) or ``ae`` (auto-encoder, z = encoder mean).
        num_steps, beta_1, beta_T: T = 100, β 1e-4 … 0.02.  flow_depth, flow_hidden: 14, 256.
        kl_weight: 0.001.  hidden: PointwiseNet widths (128, 256, 512, 256, 128).
        embedding_dim: optional text/condition vector ``cond["embedding"]`` (0 = off).
        truncate_std: truncation of the prior draw w in σ (None: untruncated, as ``test_gen.py``).
        lr, end_lr, sched_start, sched_end: Adam at 2e-3 (no weight decay), held until step 200 000 and then
            decayed linearly to 1e-4 at step 400 000 (``train_gen.py``'s ``get_linear_scheduler``, stepped
            every iteration).
        train_points: if set, every training step hands the model a fresh random subset of this many points
            of each shape (drawn from the module's training generator, which checkpoints store, so resumed
            runs draw the same subsets), as PointFlow's ``random_subsample``. ``None`` = every point the data
            module hands over (Luo & Hu: all 2048). Give the data module the whole shapes
            (``num_points: 2048``) and set this to train on a CPU with small point counts.
        encoder_points: if set, the encoder sees only this many of the step's points (a random subset). On a
            CPU the PointNet encoder at 128 points costs about as much as the decoder at 256, so a smaller
            encoder view buys steps; ``None`` = the paper's (the encoder sees what the decoder sees).
        sampler, sample_steps: engine sampler for generation (ancestral ``ddpm`` over all T steps with
            the posterior variance β̃ = their ``flexibility = 0``).
        encoder_keep: if set (e.g. 0.75), the encoder sees only a random partial view of each training
            shape — the ``encoder_keep`` fraction of points with the largest projection on a random
            direction, a half-space crop like the partial scans of PCN/PVD — while the decoder is
            trained on the whole shape: the latent of a partial cloud then decodes to a complete shape,
            which is what completion (``polydiff complete``) needs. ``None`` = the paper's training.
        weight_decay, ema_*, warmup_steps, cond_drop_prob (drops ``cond["embedding"]`` for classifier-free
        guidance), guidance_scale, sampler_kwargs, val_sample_every_n_epochs, space, betas: as in
        :class:`polydiff.training.DiffusionModule` (EMA is off by default: the official code keeps none).
    """

    def __init__(self, latent_dim: int = 256, mode: str = "gen", num_steps: int = 100, beta_1: float = 1e-4,
                 beta_T: float = 0.02, flow_depth: int = 14, flow_hidden: int = 256, kl_weight: float = 0.001,
                 hidden: tuple[int, ...] = (128, 256, 512, 256, 128), embedding_dim: int = 0,
                 truncate_std: float | None = None, lr: float = 2e-3, end_lr: float = 1e-4,
                 sched_start: int = 200_000, sched_end: int = 400_000, train_points: int | None = None,
                 encoder_points: int | None = None, ema_decay: float = 0.0,
                 sampler: str = "ddpm", sample_steps: int | None = None, val_num_samples: int = 16,
                 final_num_samples: int = 16, seed: int = 0, encoder_keep: float | None = None,
                 weight_decay: float = 0.0, ema_warmup: bool = True, warmup_steps: int = 0,
                 cond_drop_prob: float = 0.0, guidance_scale: float = 1.0, sampler_kwargs: dict | None = None,
                 val_sample_every_n_epochs: int = 1, space: Any = None,
                 backbone: Any = None, process: Any = None, parameterization: str = "eps",
                 learned_variance: bool = False, conditioner: Any = None, loss: Any = None,
                 num_classes: int | None = None, betas: tuple[float, float] = (0.9, 0.999)):
        if mode not in ("gen", "ae"):
            raise ConfigError(f"mode must be 'gen' or 'ae'; got {mode!r}")
        if encoder_keep is not None and not 0.0 < encoder_keep <= 1.0:
            raise ConfigError(f"encoder_keep must be in (0, 1] or None, got {encoder_keep}")
        if not 0 <= sched_start <= sched_end:
            raise ConfigError(f"need 0 <= sched_start <= sched_end; got sched_start={sched_start}, "
                              f"sched_end={sched_end}")
        for name, k in (("train_points", train_points), ("encoder_points", encoder_points)):
            if k is not None and k < 2:
                raise ConfigError(f"{name} must be >= 2 or None, got {k}")
        # backbone, process, parameterization, learned_variance, conditioner, loss and num_classes are fixed
        # by the method; they are accepted (and ignored) because a checkpoint's hyper-parameters hold them.
        backbone = {"class_path": "polydiff.plugins.pointcloud.luohu.PointwiseNet",
                    "init_args": {"point_dim": 3, "context_dim": latent_dim, "residual": True,
                                  "embedding_dim": embedding_dim, "num_steps": num_steps, "beta_1": beta_1,
                                  "beta_T": beta_T, "hidden": list(hidden)}}
        process = {"class_path": "polydiff.processes.VP",
                   "init_args": {"schedule": "linear", "num_steps": num_steps, "beta_min": beta_1 * num_steps,
                                 "beta_max": beta_T * num_steps}}
        super().__init__(backbone=backbone, process=process, parameterization="eps", lr=lr, ema_decay=ema_decay,
                         sampler=sampler, sample_steps=sample_steps or num_steps, val_num_samples=val_num_samples,
                         final_num_samples=final_num_samples, seed=seed, weight_decay=weight_decay,
                         ema_warmup=ema_warmup, warmup_steps=warmup_steps, cond_drop_prob=cond_drop_prob,
                         guidance_scale=guidance_scale, sampler_kwargs=sampler_kwargs,
                         val_sample_every_n_epochs=val_sample_every_n_epochs, space=space, betas=betas)
        self.encoder = PointNetEncoder(latent_dim)
        self.flow = LatentFlow(latent_dim, flow_hidden, flow_depth) if mode == "gen" else None

    # -- objective ------------------------------------------------------------------------------------------
    def compute_loss(self, batch: Mapping[str, Any], generator: torch.Generator | None,
                     model: torch.nn.Module | None = None) -> dict[str, Tensor]:
        """Eq. 14 of Luo & Hu: ``recons`` (the decoder's ε-MSE) + ``kl_weight`` · (``entropy`` + ``prior``)
        in ``gen`` mode; the engine logs every term. ``model`` is the decoder (default the trained one)."""
        h = self.hparams
        model = self.denoiser if model is None else model
        x = batch["x"]
        if self.training and h.train_points:
            masks = {"presence", "known", "missing"} & set(batch)
            if masks:
                raise ConfigError(f"train_points subsamples whole clouds; this batch also carries per-point "
                                  f"masks {sorted(masks)}: set train_points: null")
            x = self.random_points(x, h.train_points, generator)
            batch = {**batch, "x": x}
        cond = dict(batch.get("cond") or {})
        x_enc = self.random_points(x, h.encoder_points, generator) if self.training and h.encoder_points else x
        x_enc = self.crop(x_enc, generator) if h.encoder_keep else x_enc
        terms: dict[str, Tensor] = {}
        if h.mode == "gen":
            z, terms = latent_terms(self.encoder, self.flow, x_enc, generator)
        else:
            z = self.encoder(x_enc)[0]
        cond["latent"] = z
        terms["recons"] = self.loss_fn(model, {**batch, "cond": cond}, generator=generator, space=self.space)
        loss = terms["recons"]
        if h.mode == "gen":
            loss = loss + h.kl_weight * (terms["entropy"] + terms["prior"])
        terms["loss"] = loss
        return terms

    @staticmethod
    def random_points(x: Tensor, k: int, generator: torch.Generator | None) -> Tensor:
        """A uniformly random subset of ``k`` distinct points of every cloud in ``x`` (B, N, 3)."""
        if k > x.shape[1]:
            raise ConfigError(f"asked for {k} random points per cloud, but the batch's clouds have {x.shape[1]}")
        order = torch.rand(x.shape[:2], generator=generator, device=x.device).argsort(dim=1)[:, :k]
        return torch.gather(x, 1, order[..., None].expand(-1, -1, x.shape[2]))

    def crop(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """Half-space partial views: per shape, the ``encoder_keep`` fraction of points furthest along a
        random unit direction (seeded by ``generator``)."""
        if not self.training:
            return x
        d = torch.randn(x.shape[0], 3, 1, generator=generator, device=x.device, dtype=x.dtype)
        proj = (x @ (d / d.norm(dim=1, keepdim=True))).squeeze(-1)
        k = max(1, int(round(self.hparams.encoder_keep * x.shape[1])))
        idx = proj.topk(k, dim=1).indices
        return torch.gather(x, 1, idx[..., None].expand(-1, -1, 3))

    def configure_optimizers(self):
        h = self.hparams
        opt = torch.optim.Adam(self.parameters(), lr=h.lr, weight_decay=h.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def lr_factor(self, step: int) -> float:
        """lr(step) / lr: 1 until ``sched_start``, linear to ``end_lr`` at ``sched_end``, then held (Luo & Hu's
        ``get_linear_scheduler``), times the optional linear warm-up of ``warmup_steps``."""
        h = self.hparams
        lr = luohu_lr(step, h.lr, h.end_lr, h.sched_start, h.sched_end)
        warm = min(1.0, (step + 1) / h.warmup_steps) if h.warmup_steps else 1.0
        return lr / h.lr * warm

    # -- sampling -------------------------------------------------------------------------------------------
    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        if self.flow is None:
            raise ConfigError("sampling new shapes needs mode='gen'; an auto-encoder decodes encoder latents "
                              "(pass cond={'latent': module.encoder(x)[0]})")
        p = next(self.flow.parameters())
        w = truncated_normal((n, self.hparams.latent_dim), generator, self.hparams.truncate_std, device=p.device,
                             dtype=p.dtype)
        return self.flow.inverse(w)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None, cond: Mapping[str, Tensor] | None = None,
               **kw) -> dict[str, Tensor]:
        """As :meth:`DiffusionModule.sample`; the shape latent ``cond["latent"]`` is drawn from the flow prior
        (truncated at ``truncate_std`` if set) unless given. The latent is returned in ``cond``."""
        if generator is None:
            generator = torch.Generator(device=self.device).manual_seed(self.hparams.seed)
        cond = dict(cond or {})
        if "latent" not in cond:
            was = self.training
            self.eval()
            cond["latent"] = self.sample_latent(n, generator)
            self.train(was)
        if kw.get("steps") is None:
            kw["steps"] = self.hparams.sample_steps or self.hparams.num_steps
        return super().sample(n, generator=generator, cond=cond, **kw)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        dm = self.datamodule
        if dm is not None and hasattr(dm, "normalizer"):
            checkpoint["polydiff"]["normalization"] = dm.normalizer.state()
            checkpoint["polydiff"]["eval_normalization"] = dm.eval_normalizer.state()
