"""polydiff: one diffusion engine for many scientific domains.

The public API is what this module and its documented submodules export; plugins use nothing else.
Heavy domain libraries are never imported here.
"""

from .errors import ConfigError, DataError, PluginError, PolydiffError, ShapeError
from .parameterization import Denoiser, Prediction
from .processes import EDM, VE, VP, GaussianProcess, RectifiedFlow, SubVP, get_process
from .schedules import get_schedule
from .spaces import Euclidean, GaussianNoise, NoiseField, Space, Torus, ZeroCenterOfMass

__version__ = "0.1.0"

__all__ = [
    "ConfigError", "DataError", "PluginError", "PolydiffError", "ShapeError",
    "Denoiser", "Prediction",
    "GaussianProcess", "VP", "VE", "SubVP", "EDM", "RectifiedFlow", "get_process", "get_schedule",
    "Space", "Euclidean", "Torus", "ZeroCenterOfMass", "NoiseField", "GaussianNoise",
]
