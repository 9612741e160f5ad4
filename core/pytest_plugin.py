"""pytest fixture ``check_plugin`` for plugin authors (installed through polydiff's ``pytest11`` entry point).

In a plugin's tests::

    def test_conforms(check_plugin):
        check_plugin("myplugin", tasks=["myplugin/default"])

runs :func:`polydiff.testing.check_plugin` with ``out_dir`` in the test's temporary folder and returns its
report. Importing this module costs nothing: polydiff and torch load when the fixture is used.
"""

from __future__ import annotations

import pytest


@pytest.fixture
def check_plugin(tmp_path):
    """:func:`polydiff.testing.check_plugin` writing its artifacts under the test's ``tmp_path``."""
    from polydiff.testing import check_plugin as _check

    def run(plugin, **kwargs):
        kwargs.setdefault("out_dir", tmp_path / "polydiff_check")
        return _check(plugin, **kwargs)

    return run
