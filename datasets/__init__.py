"""Real public datasets: description, verified download (pooch + sha256) and parsing to tensors.

Importing this package downloads nothing. Each dataset lives in its own module and registers a
:class:`DatasetInfo`; :func:`load_all` imports them so the CLI can list every dataset.
"""

from ._core import DatasetInfo, RemoteFile, cache_dir, fetch, get_info, register, registered, safe_extract, verify_file

__all__ = [
    "DatasetInfo", "RemoteFile", "cache_dir", "fetch", "get_info", "register", "registered", "safe_extract",
    "verify_file", "load_all",
]


def load_all() -> dict[str, DatasetInfo]:
    """Import every dataset module of this package (so each registers) and return the registry."""
    import importlib
    import pkgutil

    for mod in pkgutil.iter_modules(__path__):
        if not mod.name.startswith("_"):
            importlib.import_module(f"{__name__}.{mod.name}")
    return registered()
