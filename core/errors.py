"""Typed errors: every message names the argument, file or field and what was expected."""


class PolydiffError(Exception):
    """Base class of all errors raised by polydiff."""


class ConfigError(PolydiffError, ValueError):
    """A configuration value, component name or option is unknown or out of range."""


class ShapeError(PolydiffError, ValueError):
    """A tensor has the wrong shape, dtype or contains non-finite values."""


class DataError(PolydiffError, ValueError):
    """A data file is missing, corrupt or does not match its expected format."""


class PluginError(PolydiffError, RuntimeError):
    """A plugin could not be loaded or does not provide what was requested."""
