"""polydiff: one diffusion engine for many scientific domains.

The public API is what this module exports plus its documented submodules: ``polydiff.samplers``,
``polydiff.guidance``, ``polydiff.losses``, ``polydiff.likelihood``, ``polydiff.discrete``,
``polydiff.discrete_samplers``, ``polydiff.backbones``, ``polydiff.batch``, ``polydiff.structured`` (states of
named parts), ``polydiff.graphs`` (torch-geometric; imported on use), ``polydiff.testing``,
``polydiff.io`` (atomic file writes), ``polydiff.metrics`` (Fréchet distance, Inception Scores),
``polydiff.hardware`` (CPU model and bf16 flags),
``polydiff.training`` and ``polydiff.data`` (Lightning; imported on use),
``polydiff.components`` (components from registry names and specs; configs read as data), ``polydiff.ema``,
``polydiff.evaluation`` (samples to the artifact and metric hooks), ``polydiff.checkpointing``
(``load_checkpoint``: the one safe checkpoint reader), ``polydiff.checks`` (argument checks),
``polydiff.hookspecs`` and ``polydiff.plugins_manager``. Plugins use nothing else. Heavy domain libraries
are never imported here.
"""

from .discrete import D3PMLoss, DiscreteProcess, MDLMLoss, d3pm_vlb
from .discrete_samplers import sample_discrete
from .errors import ConfigError, DataError, PluginError, PolydiffError, ShapeError
from .guidance import ClassifierFreeGuidance, ClassifierGuidance
from .likelihood import NLLResult, ddpm_vlb, dequantized_ode_nll, ode_nll
from .losses import DiffusionLoss
from .parameterization import Denoiser, Prediction
from .processes import EDM, VE, VP, GaussianProcess, RectifiedFlow, SubVP, get_process
from .samplers import SAMPLERS, get_sampler, make_grid, sample
from .schedules import get_schedule
from .spaces import Euclidean, GaussianNoise, NoiseField, Space, Torus, ZeroCenterOfMass

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "DataError", "PluginError", "PolydiffError", "ShapeError",
    "Denoiser", "Prediction",
    "GaussianProcess", "VP", "VE", "SubVP", "EDM", "RectifiedFlow", "get_process", "get_schedule",
    "Space", "Euclidean", "Torus", "ZeroCenterOfMass", "NoiseField", "GaussianNoise",
    "DiffusionLoss", "sample", "SAMPLERS", "get_sampler", "make_grid",
    "ClassifierFreeGuidance", "ClassifierGuidance",
    "ode_nll", "dequantized_ode_nll", "ddpm_vlb", "NLLResult",
    "DiscreteProcess", "D3PMLoss", "MDLMLoss", "d3pm_vlb", "sample_discrete",
]
