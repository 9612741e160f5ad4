"""Tools for testing samplers, processes and plugins against exact answers.

:class:`GaussianMixture` is a data distribution whose noised marginals are known in closed form under
every Gaussian process: if x_0 ~ Σ_k w_k N(μ_k, Σ_k) and x_t = α x_0 + σ ε, then
x_t ~ Σ_k w_k N(α μ_k, C_k) with C_k = α² Σ_k + σ² I. Its exact score, ε* = −σ ∇ log p_t and
x̂_0* = E[x_0 | x_t] make a perfect denoiser (:class:`ExactDenoiser`), so a sampler's error is its
discretisation error alone, and a likelihood estimate can be compared with the exact log-density.

Two oracles do the same on the non-Euclidean spaces: :class:`WrappedNormalMixture` on the torus T^d (under a
VE-type process its noised marginal is a mixture of wrapped normals with variances s_k² + σ²) and
:class:`ZeroCoMGaussianMixture` for point sets in the zero-centre-of-mass subspace (components isotropic in
the subspace; noising adds σ² in the subspace only). Both plug into :class:`ExactDenoiser`.
"""

from __future__ import annotations

import math

import torch

from .checks import expand_like
from .errors import ConfigError, ShapeError
from .parameterization import Prediction
from .processes import GaussianProcess
from .spaces import Torus

Tensor = torch.Tensor
F64 = torch.float64


class GaussianMixture:
    """Mixture of K full-covariance Gaussians in d dimensions (float64 throughout).

    Args:
        means: (K, d) component means.
        covs: (K, d, d) covariances, or (K, d) diagonal variances, or (K,) isotropic variances.
        weights: (K,) mixture weights (normalised here); uniform if omitted.
    """

    def __init__(self, means, covs, weights=None):
        self.means = torch.as_tensor(means, dtype=F64)
        if self.means.ndim != 2:
            raise ShapeError(f"means has shape {tuple(self.means.shape)}; expected (K, d)")
        k, d = self.means.shape
        covs = torch.as_tensor(covs, dtype=F64)
        if covs.ndim == 1:
            covs = covs[:, None, None] * torch.eye(d, dtype=F64)
        elif covs.ndim == 2:
            covs = torch.diag_embed(covs)
        if covs.shape != (k, d, d):
            raise ShapeError(f"covs has shape {tuple(covs.shape)}; expected (K, d, d), (K, d) or (K,) with K={k}, d={d}")
        self.covs = covs
        w = torch.ones(k, dtype=F64) if weights is None else torch.as_tensor(weights, dtype=F64)
        self.weights = w / w.sum()
        self.dim = d

    @classmethod
    def grid(cls, n: int = 3, spacing: float = 1.0, widths=(0.03, 0.3), seed: int = 0) -> "GaussianMixture":
        """n×n isotropic components on a centred grid with standard deviations spread over ``widths``
        (the 2-D benchmark target: 9 Gaussians with widths 0.03–0.3)."""
        g = torch.Generator().manual_seed(seed)
        coords = (torch.arange(n, dtype=F64) - (n - 1) / 2) * spacing
        means = torch.cartesian_prod(coords, coords)
        stds = torch.exp(torch.linspace(math.log(widths[0]), math.log(widths[1]), n * n, dtype=F64))
        stds = stds[torch.randperm(n * n, generator=g)]
        return cls(means, stds**2)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact draws from the data distribution, shape (n, d)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        z = torch.randn(n, self.dim, generator=generator, dtype=F64)
        return self.means[comp] + torch.einsum("nij,nj->ni", chol[comp], z)

    def _marginal(self, alpha: Tensor, sigma: Tensor):
        """Per-sample component means (n, K, d) and covariances (n, K, d, d) of p_t."""
        mu = alpha[:, None, None] * self.means[None]
        eye = torch.eye(self.dim, dtype=F64)
        cov = alpha[:, None, None, None] ** 2 * self.covs[None] + sigma[:, None, None, None] ** 2 * eye
        return mu, cov

    def _components(self, x: Tensor, alpha: Tensor, sigma: Tensor):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"x has shape {tuple(x.shape)}; expected (batch, {self.dim})")
        x = x.to(F64)
        alpha, sigma = alpha.to(F64), sigma.to(F64)
        if alpha.numel() > 1 and bool((alpha == alpha[0]).all() and (sigma == sigma[0]).all()):
            alpha, sigma = alpha[:1], sigma[:1]  # shared time: factorise the K covariances once, broadcast
        mu, cov = self._marginal(alpha, sigma)
        chol = torch.linalg.cholesky(cov)
        diff = (x[:, None, :] - mu).unsqueeze(-1)
        sol = torch.cholesky_solve(diff, chol).squeeze(-1)  # C_k^{-1}(x − αμ_k)
        maha = (diff.squeeze(-1) * sol).sum(-1)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        logp_k = torch.log(self.weights)[None] - 0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))
        return logp_k, sol

    def log_prob(self, x: Tensor, alpha=None, sigma=None) -> Tensor:
        """log p_t(x) under x_t = α x_0 + σ ε (α = 1, σ = 0 gives the data density), shape (batch,)."""
        n = x.shape[0]
        alpha = torch.ones(n, dtype=F64) if alpha is None else torch.as_tensor(alpha, dtype=F64).expand(n)
        sigma = torch.zeros(n, dtype=F64) if sigma is None else torch.as_tensor(sigma, dtype=F64).expand(n)
        logp_k, _ = self._components(x, alpha, sigma)
        return torch.logsumexp(logp_k, dim=1)

    def score(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """∇_x log p_t(x) = −Σ_k r_k(x) C_k^{-1}(x − α μ_k), with r_k the posterior responsibilities."""
        logp_k, sol = self._components(x, alpha, sigma)
        resp = torch.softmax(logp_k, dim=1)
        return -(resp[..., None] * sol).sum(1)

    def data_mean(self) -> Tensor:
        """E[x_0], shape (d,)."""
        return (self.weights[:, None] * self.means).sum(0)


def _time_args(n: int, alpha, sigma) -> tuple[Tensor, Tensor]:
    alpha = torch.ones(n, dtype=F64) if alpha is None else torch.as_tensor(alpha, dtype=F64).expand(n)
    sigma = torch.zeros(n, dtype=F64) if sigma is None else torch.as_tensor(sigma, dtype=F64).expand(n)
    return alpha, sigma


class WrappedNormalMixture:
    """Mixture of K products of wrapped normals on the torus [−π, π)^d (float64 throughout).

    Component k is x_j = wrap(μ_kj + s_kj z_j), z ~ N(0, I). Under a VE-type process (α = 1: ``VE``, ``EDM``)
    on :class:`~polydiff.spaces.Torus`, x_t = wrap(x_0 + σ ε), and wrapped normals add their variances, so
    p_t = Σ_k w_k Π_j WN(x_j; μ_kj, s_kj² + σ²) exactly; its density and score use the truncated image sums
    of :meth:`Torus.wrapped_normal_score` (Jing et al. 2022, torsional diffusion, App. B). A VP process
    (α < 1) has no closed-form marginal on the torus (α x_0 depends on the chart), so α ≠ 1 raises.

    Args:
        means: (K, d) component centres (angles; wrapped here).
        variances: (K, d) per-coordinate variances s_kj², or (K,) isotropic ones.
        weights: (K,) mixture weights (normalised here); uniform if omitted.
        n_images: K of the image sums.
    """

    def __init__(self, means, variances, weights=None, n_images: int = 10):
        self.means = Torus.wrap(torch.as_tensor(means, dtype=F64))
        if self.means.ndim != 2:
            raise ShapeError(f"means has shape {tuple(self.means.shape)}; expected (K, d)")
        k, d = self.means.shape
        var = torch.as_tensor(variances, dtype=F64)
        if var.ndim == 1 and var.shape[0] == k:
            var = var[:, None].expand(k, d)
        if var.shape != (k, d) or not bool((var > 0).all()):
            raise ShapeError(f"variances has shape {tuple(var.shape)}; expected positive (K, d) or (K,) with K={k}, d={d}")
        self.variances = var.contiguous()
        w = torch.ones(k, dtype=F64) if weights is None else torch.as_tensor(weights, dtype=F64)
        self.weights = w / w.sum()
        self.dim, self.n_images = d, int(n_images)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact draws, shape (n, d), wrapped to [−π, π)."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=F64)
        return Torus.wrap(self.means[comp] + self.variances[comp].sqrt() * z)

    def _components(self, x: Tensor, alpha: Tensor, sigma: Tensor):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"x has shape {tuple(x.shape)}; expected (batch, {self.dim})")
        if not bool((alpha.to(F64) == 1).all()):
            raise ConfigError("WrappedNormalMixture has closed-form noised marginals only for α = 1 (VE-type "
                              "processes such as VE or EDM); got a process with α < 1")
        x = x.to(F64)
        var = self.variances[None] + sigma.to(F64)[:, None, None] ** 2  # (n, K, d)
        diff = x[:, None, :] - self.means[None]
        std = var.sqrt()
        logp = Torus.wrapped_normal_log_prob(diff, torch.zeros_like(diff), std, self.n_images)
        score = Torus.wrapped_normal_score(diff, torch.zeros_like(diff), std, self.n_images)
        return torch.log(self.weights)[None] + logp.sum(-1), score

    def log_prob(self, x: Tensor, alpha=None, sigma=None) -> Tensor:
        """log p_t(x) on [−π, π)^d (w.r.t. Lebesgue measure), shape (batch,); σ = 0 gives the data density."""
        alpha, sigma = _time_args(x.shape[0], alpha, sigma)
        logp_k, _ = self._components(x, alpha, sigma)
        return torch.logsumexp(logp_k, dim=1)

    def score(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """∇_x log p_t(x) = Σ_k r_k(x) ∇ log Π_j WN(x_j; μ_kj, s_kj² + σ²), float64 (batch, d)."""
        logp_k, score_k = self._components(x, torch.as_tensor(alpha), torch.as_tensor(sigma, dtype=F64))
        resp = torch.softmax(logp_k, dim=1)
        return (resp[..., None] * score_k).sum(1)


class ZeroCoMGaussianMixture:
    """Mixture of K isotropic Gaussians in the zero-centre-of-mass subspace of point sets (n nodes × d dims).

    P is the projection x ↦ x − mean over nodes (:class:`~polydiff.spaces.ZeroCenterOfMass`); component k is
    x_0 = P μ_k + s_k P z, z ~ N(0, I), i.e. N(P μ_k, s_k² I) on the (n − 1)·d-dimensional subspace (Hoogeboom
    et al. 2022, EDM for molecules, §3.2: Gaussians on the subspace). With noise P ε the marginal is
    p_t = Σ_k w_k N(α P μ_k, (α² s_k² + σ²) I) on the subspace, whose score at x is −Σ_k r_k P(x − α μ_k)/v_k;
    densities are w.r.t. Lebesgue measure on the subspace in orthonormal coordinates. Every item has all n
    nodes present.

    Args:
        means: (K, n, d) component centres (centred here).
        variances: (K,) isotropic variances s_k² in the subspace.
        weights: (K,) mixture weights; uniform if omitted.
    """

    def __init__(self, means, variances, weights=None):
        means = torch.as_tensor(means, dtype=F64)
        if means.ndim != 3 or means.shape[1] < 2:
            raise ShapeError(f"means has shape {tuple(means.shape)}; expected (K, nodes ≥ 2, dims)")
        self.means = self._project(means)
        k, self.nodes, self.dims = means.shape
        var = torch.as_tensor(variances, dtype=F64).reshape(-1)
        if var.shape != (k,) or not bool((var > 0).all()):
            raise ShapeError(f"variances has shape {tuple(var.shape)}; expected positive ({k},)")
        self.variances = var
        w = torch.ones(k, dtype=F64) if weights is None else torch.as_tensor(weights, dtype=F64)
        self.weights = w / w.sum()
        self.dof = (self.nodes - 1) * self.dims

    @staticmethod
    def _project(x: Tensor) -> Tensor:
        return x - x.mean(-2, keepdim=True)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """n exact draws, shape (n, nodes, dims), centred."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = self._project(torch.randn(n, self.nodes, self.dims, generator=generator, dtype=F64))
        return self.means[comp] + self.variances[comp].sqrt()[:, None, None] * z

    def _components(self, x: Tensor, alpha: Tensor, sigma: Tensor):
        if x.ndim != 3 or tuple(x.shape[1:]) != (self.nodes, self.dims):
            raise ShapeError(f"x has shape {tuple(x.shape)}; expected (batch, {self.nodes}, {self.dims})")
        alpha, sigma = alpha.to(F64), sigma.to(F64)
        diff = self._project(x.to(F64))[:, None] - alpha[:, None, None, None] * self.means[None]  # (n, K, nodes, d)
        var = alpha[:, None] ** 2 * self.variances[None] + sigma[:, None] ** 2  # (n, K)
        maha = diff.pow(2).flatten(2).sum(-1) / var
        logp_k = torch.log(self.weights)[None] - 0.5 * (maha + self.dof * torch.log(2 * math.pi * var))
        return logp_k, diff / var[..., None, None]

    def log_prob(self, x: Tensor, alpha=None, sigma=None) -> Tensor:
        """log p_t(P x) on the subspace, shape (batch,); σ = 0 gives the data density."""
        alpha, sigma = _time_args(x.shape[0], alpha, sigma)
        logp_k, _ = self._components(x, alpha, sigma)
        return torch.logsumexp(logp_k, dim=1)

    def score(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """∇ log p_t within the subspace (its component normal to it is 0), float64 (batch, nodes, dims)."""
        logp_k, sol = self._components(x, torch.as_tensor(alpha, dtype=F64), torch.as_tensor(sigma, dtype=F64))
        resp = torch.softmax(logp_k, dim=1)
        return -(resp[..., None, None] * sol).sum(1)

    def data_mean(self) -> Tensor:
        """E[x_0], shape (nodes, dims)."""
        return (self.weights[:, None, None] * self.means).sum(0)


class ExactDenoiser(torch.nn.Module):
    """A perfect denoiser for an oracle (:class:`GaussianMixture` under any Gaussian process,
    :class:`ZeroCoMGaussianMixture` likewise with :class:`~polydiff.spaces.ZeroCenterOfMass`,
    :class:`WrappedNormalMixture` under a VE-type process with :class:`~polydiff.spaces.Torus`).

    Returns ε* = −σ ∇log p_t(x) and x̂_0* = (x − σ ε*)/α (Tweedie's formula), computed in float64 and
    cast back to x's dtype. It has the same call signature as :class:`polydiff.Denoiser`. On the torus x̂_0*
    is Tweedie's formula in the chart of x (what the samplers' steps need), not a circular mean.
    """

    def __init__(self, mixture, process: GaussianProcess):
        super().__init__()
        self.mixture, self.process = mixture, process
        self.nfe = 0

    def forward(self, x: Tensor, t: Tensor, cond=None) -> Prediction:
        self.nfe += 1
        t = torch.as_tensor(t, dtype=F64).expand(x.shape[0])
        alpha, sigma = self.process.alpha_sigma(t)
        score = self.mixture.score(x, alpha, sigma)
        eps = (-expand_like(sigma, score) * score).to(x.dtype)
        x0 = ((x.to(F64) - expand_like(sigma, score) * eps.to(F64)) / expand_like(alpha, score)).to(x.dtype)
        if (alpha == 0).any():  # Tweedie's division by α fails at zero SNR; there E[x_0 | x_t] = E[x_0]
            mean = self.mixture.data_mean().to(x.dtype)
            x0 = torch.where(expand_like(alpha == 0, x0).bool(), mean.expand_as(x0), x0)
        return Prediction(x0=x0, eps=eps)

    predict = forward


def sliced_wasserstein(a: Tensor, b: Tensor, n_projections: int = 256, generator: torch.Generator | None = None) -> Tensor:
    """Sliced 2-Wasserstein distance between two equal-size samples (Rabin et al. 2011), by sorting
    1-D projections on random unit directions."""
    if a.shape != b.shape or a.ndim != 2:
        raise ShapeError(f"samples have shapes {tuple(a.shape)} and {tuple(b.shape)}; expected equal (n, d)")
    a, b = a.to(F64), b.to(F64)
    dirs = torch.randn(a.shape[1], n_projections, generator=generator, dtype=F64)
    dirs = dirs / dirs.norm(dim=0, keepdim=True)
    pa, _ = torch.sort(a @ dirs, dim=0)
    pb, _ = torch.sort(b @ dirs, dim=0)
    return torch.sqrt(((pa - pb) ** 2).mean())


def torus_embedding(x: Tensor) -> Tensor:
    """Angles (n, d) -> (cos x, sin x) as (n, 2d): a wrap-aware embedding in which Euclidean distances (e.g.
    :func:`sliced_wasserstein`) compare distributions on the torus."""
    return torch.cat([torch.cos(x), torch.sin(x)], dim=1)


# --------------------------------------------------------------------------------------------------------
# Plugin-author tools (framework): a conformance check for plugins. The toy data modules live in
# polydiff.testing_data (they need Lightning, which the samplers' and losses' tests do not).
# --------------------------------------------------------------------------------------------------------
class PluginCheckError(AssertionError):
    """A plugin does not conform to the polydiff plugin contract. The message lists every problem, each
    prefixed with the rule it breaks (``[entry-point]``, ``[backbone-output-shape]``, ``[finite-samples]``, ...;
    see :data:`PLUGIN_RULES`)."""


#: The rules :func:`check_plugin` enforces, by the name its messages cite.
PLUGIN_RULES = {
    "entry-point": "the plugin is declared in the 'polydiff' entry-point group of an installed distribution",
    "import": "the plugin module imports and its hooks validate against polydiff.hookspecs",
    "hook-name": "every polydiff_* function is a known hook",
    "hook-raises": "no hook raises for valid input",
    "component-kind": "registered components have the type of their kind",
    "task-config": "every task is a YAML file whose component names resolve",
    "datamodule": "data modules set up and yield batch-contract batches of sample_shape",
    "artifacts": "polydiff_write_artifacts returns existing files for its domain and None for others",
    "evaluate": "polydiff_evaluate returns {str: finite float} for its domain and None for others",
    "file-format": "polydiff_file_formats returns FileFormat objects with dotted suffixes",
    "command": "polydiff_commands returns {name: (help, add_arguments, run)} not shadowing built-ins",
    "backbone-output-shape": "a task's backbone returns a tensor of the shape of x",
    "training-step": "a task trains for two steps with a finite loss",
    "sample-shape": "a task's model samples (n, *sample_shape)",
    "finite-samples": "a task's model samples finite values",
}


def check_plugin(plugin, name: str | None = None, datamodule_kwargs: dict | None = None,
                 datamodules: list[str] | None = None, out_dir=None, tasks: list[str] | None = None,
                 require_entry_point: bool | None = None) -> dict:
    """Conformance check for plugin authors: run it in your plugin's tests (or use the ``check_plugin`` pytest
    fixture that polydiff installs, which puts ``out_dir`` in the test's temporary folder).

    ``plugin`` is the name of its ``polydiff`` entry point, its import path, or the module. The check loads it
    into a fresh plugin manager and verifies the rules of :data:`PLUGIN_RULES`:

    * it is declared in the ``polydiff`` entry-point group (``require_entry_point``: default on when
      ``plugin`` is given by name or import path, off for a module object built in a test), imports and
      registers without error, every ``polydiff_*`` function is a known hook with valid argument names, and
      registered components are of the right kind (data modules subclass
      :class:`~polydiff.data.DiffusionDataModule` and set ``domain``, backbones are ``nn.Module``\\ s, modules
      subclass :class:`~polydiff.training.DiffusionModule`, processes subclass ``GaussianProcess`` or
      ``DiscreteProcess``, spaces/noise fields subclass the engine's base classes, tasks are YAML files whose component names resolve);
    * each data module (all of them, or those named in ``datamodules``; constructor arguments from
      ``datamodule_kwargs[name]``) yields batches that follow :mod:`polydiff.batch` (float data, or integer
      ids for a discrete model) with items of ``sample_shape``, and its ``example_cond``/``sample_inputs``/``reference_data`` have the right types;
    * the artifact hook returns existing files for the data module's domain and ``None`` for another domain;
      the evaluation hook returns ``{str: finite float}`` for its domain and ``None`` for another; no hook
      raises;
    * file formats are :class:`~polydiff.hookspecs.FileFormat` objects; commands are
      ``{name: (help, add_arguments, run)}`` not shadowing built-in commands;
    * for each task named in ``tasks``: the model and data of its YAML build (data arguments overridden by
      ``datamodule_kwargs`` of its data class), the backbone returns the shape of ``x``, two training steps
      on the CPU give a finite loss, and sampling (4 items, at most 4 steps) gives finite values of shape
      ``(4, *sample_shape)``.

    Returns a report ``{"components": [...], "datamodules": {name: sample_shape}, "artifacts": [...],
    "metrics": {...}, "tasks": {name: {"loss": float, "sample_shape": tuple}}}``; raises
    :class:`PluginCheckError` listing every problem, each with the rule it breaks.
    """
    import importlib
    import importlib.metadata as md
    import tempfile
    from pathlib import Path

    from . import hookspecs
    from .plugins_manager import PolydiffPluginManager, _register_core

    problems: list[str] = []

    def fail(rule: str, msg: str) -> None:
        problems.append(f"[{rule}] {msg}")

    by_name = isinstance(plugin, str)
    if require_entry_point is None:
        require_entry_point = by_name
    eps = list(md.entry_points(group="polydiff"))
    if by_name:
        hit = [ep for ep in eps if ep.name == plugin] or [ep for ep in eps if ep.value == plugin]
        try:
            plugin = hit[0].load() if hit else importlib.import_module(plugin)
        except Exception as exc:  # noqa: BLE001
            raise PluginCheckError(f"[import] plugin {plugin!r} does not import: {type(exc).__name__}: {exc}") from exc
    module_name = getattr(plugin, "__name__", "")
    declared = [ep for ep in eps if ep.value.split(":")[0] == module_name]
    if require_entry_point and not declared:
        fail("entry-point", f"module {module_name!r} is not declared in the 'polydiff' entry-point group; add "
                            f"`[project.entry-points.polydiff] <name> = \"{module_name}\"` to its pyproject.toml "
                            "and reinstall")
    name = name or (declared[0].name if declared else module_name.rsplit(".", 1)[-1] or "plugin")
    specs = {n for n in dir(hookspecs) if n.startswith("polydiff_")}
    for attr in dir(plugin):
        if attr.startswith("polydiff_") and callable(getattr(plugin, attr)) and attr not in specs:
            fail("hook-name", f"{attr} is not a polydiff hook (known: {sorted(specs)})")

    pm = PolydiffPluginManager()
    _register_core(pm.registry)
    info = pm.add_plugin(plugin, name)
    if not info.ok:
        problems.append(f"[{'hook-raises' if 'polydiff_register' in info.error else 'import'}] {info.summary()}")
        raise PluginCheckError(f"plugin {name!r} does not conform:\n  - " + "\n  - ".join(problems))
    report: dict = {"components": info.components, "datamodules": {}, "artifacts": [], "metrics": {}, "tasks": {}}
    tmp = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="polydiff_check_"))

    _check_components(pm.registry, info.components, fail)
    _check_formats_and_commands(pm, fail)
    names = datamodules if datamodules is not None else [e.split(":", 1)[1] for e in info.components
                                                         if e.startswith("datamodule:")]
    for dm_name in names:
        _check_datamodule(pm, dm_name, (datamodule_kwargs or {}).get(dm_name, {}), tmp, report, fail)
    other = "__not_a_domain__"
    for hook, kwargs, rule in (("polydiff_write_artifacts", {"out_dir": tmp, "context": {}}, "artifacts"),
                               ("polydiff_evaluate", {"datamodule": None, "context": {}}, "evaluate")):
        result = _call_hook(pm, hook, fail, domain=other, samples={"x": torch.zeros(1, 1)}, **kwargs)
        if result:
            fail(rule, f"{hook} must return None for a domain that is not the plugin's")
    for task in tasks or []:
        _check_task(pm.registry, task, datamodule_kwargs or {}, tmp, report, fail)
    if problems:
        raise PluginCheckError(f"plugin {name!r} does not conform:\n  - " + "\n  - ".join(problems))
    return report


def _call_hook(pm, hook: str, fail, **kwargs) -> list:
    """The results of every implementation of ``hook``; an exception is a ``[hook-raises]`` problem."""
    caller = getattr(pm.hook, hook)
    try:
        result = caller(**kwargs)
        if caller.spec is not None and caller.spec.opts.get("firstresult"):
            result = [result]
        return [r for r in result if r is not None]
    except Exception as exc:  # noqa: BLE001
        fail("hook-raises", f"{hook}({', '.join(f'{k}=...' for k in kwargs)}) raised {type(exc).__name__}: {exc}")
        return []


def _check_components(reg, components, fail) -> None:
    from pathlib import Path

    import yaml
    from torch import nn

    from .data import DiffusionDataModule
    from .plugins_manager import resolve_config_names
    from .discrete import DiscreteProcess as _DP
    from .processes import GaussianProcess as _GP
    from .spaces import NoiseField, Space
    from .training import DiffusionModule

    bases = {"datamodule": DiffusionDataModule, "backbone": nn.Module, "conditioner": nn.Module,
             "module": DiffusionModule, "process": (_GP, _DP), "space": Space, "noise": NoiseField}
    for entry in components:
        kind, cname = entry.split(":", 1)
        obj = reg.get(kind, cname)
        if kind in bases and not (isinstance(obj, type) and issubclass(obj, bases[kind])):
            want = " or ".join(b.__name__ for b in (bases[kind] if isinstance(bases[kind], tuple) else (bases[kind],)))
            fail("component-kind", f"{kind} {cname!r} is {obj!r}; expected a subclass of {want}")
        if kind == "datamodule" and isinstance(obj, type) and getattr(obj, "domain", "generic") == "generic":
            fail("component-kind", f"datamodule {cname!r} does not set the class attribute 'domain'")
        if kind == "task":
            path = Path(obj)
            if not path.is_file():
                fail("task-config", f"task {cname!r}: config {path} does not exist")
                continue
            try:
                resolve_config_names(yaml.safe_load(path.read_text()) or {}, reg)
            except Exception as exc:  # noqa: BLE001
                fail("task-config", f"task {cname!r}: {exc}")


def _check_formats_and_commands(pm, fail) -> None:
    from . import hookspecs

    for result in _call_hook(pm, "polydiff_file_formats", fail):
        for fmt in result or []:
            if not isinstance(fmt, hookspecs.FileFormat):
                fail("file-format", f"polydiff_file_formats returned {fmt!r}; expected FileFormat objects")
            elif not fmt.suffixes or not all(s.startswith(".") for s in fmt.suffixes):
                fail("file-format", f"file format {fmt.name!r}: suffixes {fmt.suffixes} must start with '.'")
    commands: dict = {}
    for result in _call_hook(pm, "polydiff_commands", fail):
        commands.update(result or {})
    for cname, value in commands.items():
        if cname in ("fit", "validate", "test", "predict", "sample", "evaluate", "optimize-schedule", "plugins", "datasets", "new-plugin"):
            fail("command", f"command {cname!r} shadows a built-in command")
        if not (isinstance(value, tuple) and len(value) == 3 and isinstance(value[0], str)
                and callable(value[1]) and callable(value[2])):
            fail("command", f"command {cname!r}: expected (help, add_arguments, run), got {value!r}")


def _check_datamodule(pm, dm_name: str, kwargs: dict, tmp, report: dict, fail) -> None:
    import math as _math
    from pathlib import Path

    from .batch import unpack

    try:
        dm = pm.registry.get("datamodule", dm_name)(**kwargs)
        dm.prepare_data()
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        if isinstance(batch.get("x"), dict):  # a state of named parts (polydiff.structured)
            shape = dict(dm.sample_shape)
            n = min(4, _check_parts(f"{dm_name}: batch", batch["x"], shape, fail, batch.get("presence")))
        else:
            x, presence, known, cond = unpack(batch, integer=None)  # float data or integer ids (discrete)
            shape = tuple(dm.sample_shape)
            if tuple(x.shape[1:]) != shape:
                fail("datamodule", f"{dm_name}: batch x has shape {tuple(x.shape)}, sample_shape is {shape}")
            n = min(4, x.shape[0])
        report["datamodules"][dm_name] = shape
        ec = dm.example_cond(n, torch.Generator().manual_seed(0))
        if ec is not None and not (isinstance(ec, dict) and all(torch.is_tensor(v) and v.shape[0] == n
                                                                 for v in ec.values())):
            fail("datamodule", f"{dm_name}.example_cond({n}) must return None or a dict of ({n}, ...) tensors")
        si = dm.sample_inputs(n, torch.Generator().manual_seed(0))
        if not isinstance(si, dict) or not set(si) <= {"cond", "presence", "known", "x_known"}:
            fail("datamodule", f"{dm_name}.sample_inputs must return a dict with keys among cond/presence/known/x_known")
        ref = dm.reference_data(n)
        if isinstance(shape, dict):
            if not isinstance(ref, dict) or not isinstance(ref.get("x"), dict):
                fail("datamodule", f"{dm_name}.reference_data must return a collated mapping with x = parts {sorted(shape)}")
            else:
                _check_parts(f"{dm_name}.reference_data", ref["x"], shape, fail, ref.get("presence"))
        elif not isinstance(ref, dict) or not torch.is_tensor(ref.get("x")) or tuple(ref["x"].shape[1:]) != shape:
            fail("datamodule", f"{dm_name}.reference_data must return a collated mapping with x of shape (n, *{shape})")
    except Exception as exc:  # noqa: BLE001
        fail("datamodule", f"datamodule {dm_name!r}: {type(exc).__name__}: {exc}")
        return
    samples = {k: v[:n] if torch.is_tensor(v) else {ck: cv[:n] for ck, cv in v.items()} for k, v in batch.items()}
    ctx = {"datamodule": dm, "stage": "check", "step": 0, "prefix": f"check_{dm_name}",
           "generator": torch.Generator().manual_seed(0)}
    out = Path(tmp) / dm_name
    out.mkdir(parents=True, exist_ok=True)
    for result in _call_hook(pm, "polydiff_write_artifacts", fail, domain=dm.domain, samples=samples, out_dir=out,
                             context=ctx):
        if not isinstance(result, (list, tuple)) or not all(Path(p).is_file() for p in result):
            fail("artifacts", f"polydiff_write_artifacts({dm.domain!r}) returned {result!r}; expected existing paths")
        else:
            report["artifacts"] += [Path(p) for p in result]
    for result in _call_hook(pm, "polydiff_evaluate", fail, domain=dm.domain, samples=samples, datamodule=dm,
                             context=ctx):
        if not isinstance(result, dict) or not all(isinstance(k, str) and isinstance(v, (int, float))
                                                   and _math.isfinite(v) for k, v in result.items()):
            fail("evaluate", f"polydiff_evaluate({dm.domain!r}) returned {result!r}; expected {{str: finite float}}")
        else:
            report["metrics"].update(result)


def _check_parts(what: str, parts: dict, shape: dict, fail, presence=None) -> int:
    """A collated state of parts against the data module's ``sample_shape`` (part → per-item shape): the same parts,
    each (batch, nodes, …) with nodes at most the item shape's (variable-size items are padded to the batch's
    largest) and the same trailing shape, and a (batch, nodes) presence mask. Returns the batch size."""
    if set(parts) != set(shape):
        fail("datamodule", f"{what} has parts {sorted(parts)}; sample_shape has {sorted(shape)}")
        return 0
    b = None
    for k, v in parts.items():
        want = tuple(shape[k])
        if not torch.is_tensor(v) or v.ndim != len(want) + 1 or tuple(v.shape[2:]) != want[1:] or v.shape[1] > want[0]:
            fail("datamodule", f"{what}: part {k!r} has shape {tuple(getattr(v, 'shape', ()))}; expected (batch, "
                               f"<= {want[0]}, {', '.join(map(str, want[1:]))})")
            continue
        if b is not None and v.shape[0] != b:
            fail("datamodule", f"{what}: part {k!r} has batch {v.shape[0]}, the others {b}")
        b = v.shape[0]
    ref = next(iter(parts.values()))
    if presence is not None and (not torch.is_tensor(presence) or tuple(presence.shape) != tuple(ref.shape[:2])):
        fail("datamodule", f"{what}: presence has shape {tuple(getattr(presence, 'shape', ()))}; expected "
                           f"{tuple(ref.shape[:2])} (batch, nodes) for a state of parts")
    return int(b or 0)


def _check_task(reg, task: str, datamodule_kwargs: dict, tmp, report: dict, fail) -> None:
    """Build a task's model and data, call the backbone, train two steps, sample four items."""
    from .components import instantiate, registry_scope

    try:
        with registry_scope(reg):  # the plugin under test is registered here, not in the global manager
            dm, module = _build_task(reg, task, datamodule_kwargs, instantiate, fail)
        if dm is None:
            return
        dm.prepare_data()
        dm.setup("fit")
        module.attach_datamodule(dm)
    except Exception as exc:  # noqa: BLE001
        fail("task-config", f"task {task!r} does not build: {type(exc).__name__}: {exc}")
        return
    _run_task(task, dm, module, tmp, report, fail)


def _build_task(reg, task: str, datamodule_kwargs: dict, instantiate, fail):
    """(data module, module) of a task's config, or (None, None) after reporting a config without them."""
    from pathlib import Path

    import yaml

    from .plugins_manager import resolve_config_names

    path = Path(reg.get("task", task))
    cfg = resolve_config_names(yaml.safe_load(path.read_text()) or {}, reg)
    model_spec, data_spec = dict(cfg.get("model") or {}), dict(cfg.get("data") or {})
    if not model_spec or not data_spec:
        fail("task-config", f"task {task!r}: {path} needs model: and data: sections")
        return None, None
    data_args = dict(data_spec.get("init_args") or {})
    short = data_spec["class_path"].rsplit(".", 1)[-1]
    data_args.update(datamodule_kwargs.get(short, {}))
    dm = instantiate({"class_path": data_spec["class_path"], "init_args": data_args}, "datamodule")
    model_args = dict(model_spec.get("init_args") or {})
    model_args.update(val_num_samples=0, final_num_samples=0)
    module = instantiate({"class_path": model_spec["class_path"], "init_args": model_args}, "module")
    return dm, module


def _run_task(task: str, dm, module, tmp, report: dict, fail) -> None:
    from pathlib import Path

    from .errors import ShapeError

    batch = next(iter(dm.train_dataloader()))
    flat = module.flat_batch(batch) if isinstance(batch.get("x"), dict) else batch  # parts: the packed tensor
    x = flat["x"]
    cond = dict(flat.get("cond") or {})
    if flat is not batch and flat.get("presence") is not None:
        cond["presence"] = flat["presence"]
    try:
        t = torch.rand(x.shape[0], generator=torch.Generator().manual_seed(0))
        module.denoiser(x, t, cond or None)
    except ShapeError as exc:
        fail("backbone-output-shape", f"task {task!r}: {exc}")
        return
    except Exception as exc:  # noqa: BLE001
        fail("backbone-output-shape", f"task {task!r}: the backbone fails on a batch: {type(exc).__name__}: {exc}")
        return
    import lightning as L

    trainer = L.Trainer(max_steps=2, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, default_root_dir=str(Path(tmp) / "task_runs"))
    try:
        trainer.fit(module, datamodule=dm)
        loss = float(trainer.callback_metrics.get("train/loss", float("nan")))
    except Exception as exc:  # noqa: BLE001
        fail("training-step", f"task {task!r}: training raised {type(exc).__name__}: {exc}")
        return
    if not math.isfinite(loss):
        fail("training-step", f"task {task!r}: training loss is {loss}")
    shape = dm.sample_shape
    shape = dict(shape) if isinstance(shape, dict) else tuple(shape)
    steps = min(4, int(module.hparams.get("sample_steps") or 4))
    try:
        samples = module.generate(4, steps=steps)["x"]
    except Exception as exc:  # noqa: BLE001
        fail("sample-shape", f"task {task!r}: sampling raised {type(exc).__name__}: {exc}")
        return
    if isinstance(samples, dict):  # a state of parts: each part's shape, the packed shape in the report
        problems = []
        _check_parts(f"task {task!r}: samples", samples, shape, lambda _r, m: problems.append(m))
        for m in problems:
            fail("sample-shape", m)
        shape = tuple(module.sample_shape)
        samples = torch.cat([v.float().flatten(1) for v in samples.values()], dim=1)
        if problems:
            return
    elif tuple(samples.shape) != (4, *shape):
        fail("sample-shape", f"task {task!r}: samples have shape {tuple(samples.shape)}; expected {(4, *shape)}")
    if not torch.isfinite(samples).all():
        bad = int((~torch.isfinite(samples)).sum())
        fail("finite-samples", f"task {task!r}: {bad} of {samples.numel()} sampled values are NaN or infinite")
    report["tasks"][task] = {"loss": loss, "sample_shape": shape}
