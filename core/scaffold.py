"""``polydiff new-plugin NAME``: write a ready third-party plugin package.

The package installs as it is (``pip install ./polydiff-NAME``) and passes its own tests unchanged: a
``pyproject.toml`` with the ``polydiff`` entry point and an extra named after the plugin, a data module
(a 2-D ring of points, so that it runs offline), a backbone, a task YAML shipped as package data and
registered with :func:`polydiff.plugins_manager.register_task_configs`, artifact and evaluation hooks, a
README, and a test that runs the conformance suite :func:`polydiff.testing.check_plugin` (through the
``check_plugin`` pytest fixture polydiff installs). Replace the ring with your domain and keep the test.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path

from .errors import ConfigError
from .io import atomic_write_text

__all__ = ["new_plugin", "plugin_names"]


def plugin_names(name: str) -> dict[str, str]:
    """The names derived from a plugin name: ``{"name", "package", "dist", "cls"}``.

    ``name`` is the entry-point name and the domain (lower case letters, digits and ``_``, starting with a
    letter); the import package is ``polydiff_<name>``, the distribution ``polydiff-<name>`` and the class
    prefix CamelCase.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name or "") or keyword.iskeyword(name):
        raise ConfigError(f"plugin name {name!r}: expected lower-case letters, digits and '_', starting with a letter "
                          "(it becomes the entry-point name, the domain and part of the package name)")
    cls = "".join(part.capitalize() for part in name.split("_"))
    return {"name": name, "package": f"polydiff_{name}", "dist": f"polydiff-{name.replace('_', '-')}", "cls": cls}


def new_plugin(name: str, dest: str | Path = ".", force: bool = False) -> Path:
    """Write the package ``dest/polydiff-<name>/`` and return its folder.

    Refuses to overwrite an existing folder unless ``force`` (files of the same name are then replaced,
    others are left alone).
    """
    n = plugin_names(name)
    root = Path(dest) / n["dist"]
    if root.exists() and not force:
        raise ConfigError(f"{root} exists; choose another name or folder (or pass --force to overwrite)")
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README,
        f"{n['package']}/__init__.py": _INIT,
        f"{n['package']}/components.py": _COMPONENTS,
        f"{n['package']}/configs/{name}.yaml": _TASK,
        "tests/test_plugin.py": _TEST,
    }
    for rel, template in files.items():
        atomic_write_text(root / rel, _fill(template, n))
    return root


def _fill(template: str, names: dict[str, str]) -> str:
    out = template
    for key, value in names.items():
        out = out.replace("{{" + key + "}}", value)
    return out.lstrip("\n")


_PYPROJECT = '''
[build-system]
requires = ["setuptools>=77"]
build-backend = "setuptools.build_meta"

[project]
name = "{{dist}}"
version = "0.1.0"
description = "polydiff plugin for the {{name}} domain"
readme = "README.md"
requires-python = ">=3.10"
license = "MIT"
dependencies = ["polydiff"]

[project.optional-dependencies]
# The heavy libraries of your domain go into the extra named like the plugin: `polydiff plugins` reads it
# and shows `missing extra` with `pip install "{{dist}}[{{name}}]"` when one of them is absent.
{{name}} = []
test = ["pytest>=8"]

# The one line that makes this package a polydiff plugin: the entry-point group "polydiff".
[project.entry-points.polydiff]
{{name}} = "{{package}}"

[tool.setuptools]
packages = ["{{package}}", "{{package}}.configs"]

[tool.setuptools.package-data]
"{{package}}.configs" = ["*.yaml"]
'''

_README = '''
# {{dist}}

A [polydiff](https://github.com/) plugin for the `{{name}}` domain, made by `polydiff new-plugin {{name}}`.

```bash
pip install -e ".[{{name}},test]"   # the plugin, its extra and pytest
polydiff plugins                   # lists `{{name}}` with its components and task
polydiff fit --config {{name}}/{{name}}   # trains the task YAML shipped in {{package}}/configs/
pytest                             # runs polydiff's conformance suite on the plugin
```

What is where:

* `{{package}}/__init__.py` — the hook implementations (cheap to import: heavy libraries go inside functions);
* `{{package}}/components.py` — the data module `{{cls}}DataModule` (a 2-D ring of points to start from:
  replace it by your data) and the backbone `{{cls}}Backbone`;
* `{{package}}/configs/{{name}}.yaml` — the task, registered as `{{name}}/{{name}}`;
* `tests/test_plugin.py` — `check_plugin` (polydiff's conformance suite, a pytest fixture) on the plugin
  and its task: keep it green while you change the domain.
'''

_INIT = '''
"""polydiff plugin for the {{name}} domain (hook implementations only; components in :mod:`.components`)."""

from __future__ import annotations

from pathlib import Path

from polydiff.hookspecs import hookimpl
from polydiff.plugins_manager import register_task_configs

DOMAIN = "{{name}}"


@hookimpl
def polydiff_register(registry):
    from .components import {{cls}}Backbone, {{cls}}DataModule

    registry.add("datamodule", {{cls}}DataModule)
    registry.add("backbone", {{cls}}Backbone)
    register_task_configs(registry, __name__, "configs", prefix=DOMAIN)  # configs/*.yaml as "{{name}}/<stem>"


@hookimpl
def polydiff_write_artifacts(domain, samples, out_dir, context):
    if domain != DOMAIN:
        return None
    from .components import write_points_csv

    prefix = context.get("prefix") or "samples"
    return [write_points_csv(samples["x"], Path(out_dir) / f"{prefix}.csv")]


@hookimpl
def polydiff_evaluate(domain, samples, datamodule, context):
    if domain != DOMAIN:
        return None
    from polydiff.testing import sliced_wasserstein

    ref = datamodule.reference_data(samples["x"].shape[0])["x"]
    return {f"{DOMAIN}/sliced_w2": float(sliced_wasserstein(samples["x"], ref, generator=context.get("generator")))}
'''

_COMPONENTS = '''
"""Components of the {{name}} plugin: a data module and a backbone. Replace the ring by your data."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from polydiff.backbones import SinusoidalTimeEmbedding
from polydiff.data import DiffusionDataModule, TensorItemDataset
from polydiff.io import atomic_write


class {{cls}}DataModule(DiffusionDataModule):
    """Points on a noisy unit ring, items of shape (2,).

    Args:
        n_train, n_val: number of training / validation points.
        noise: standard deviation of the radial noise.
        batch_size, num_workers, seed: see :class:`polydiff.data.DiffusionDataModule`.
    """

    domain = "{{name}}"

    def __init__(self, n_train: int = 512, n_val: int = 128, noise: float = 0.05, batch_size: int = 64,
                 num_workers: int = 0, seed: int = 0):
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        self.n_train, self.n_val, self.noise = n_train, n_val, noise

    def _ring(self, n: int, seed: int) -> TensorItemDataset:
        g = torch.Generator().manual_seed(seed)
        angle = 2 * math.pi * torch.rand(n, generator=g)
        radius = 1 + self.noise * torch.randn(n, generator=g)
        return TensorItemDataset(torch.stack([radius * angle.cos(), radius * angle.sin()], dim=1))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self.train_set = self._ring(self.n_train, self.seed)
            self.val_set = self._ring(self.n_val, self.seed + 1)


class {{cls}}Backbone(nn.Module):
    """MLP on (x, sinusoidal embedding of t), called ``backbone(x, t, cond)`` as every polydiff backbone."""

    def __init__(self, dim: int = 2, hidden: int = 64, depth: int = 2):
        super().__init__()
        self.embed = SinusoidalTimeEmbedding(hidden)
        layers, width = [], dim + hidden
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.SiLU()]
            width = hidden
        self.net = nn.Sequential(*layers, nn.Linear(hidden, dim))

    def forward(self, x, t, cond=None):
        return self.net(torch.cat([x, self.embed(t)], dim=1))


def write_points_csv(x: torch.Tensor, path: Path) -> Path:
    """Samples (n, 2) as a CSV file with a header, written atomically."""
    with atomic_write(path, "w") as f:
        f.write("x,y\\n")
        for a, b in x.tolist():
            f.write(f"{a:.7g},{b:.7g}\\n")
    return path
'''

_TASK = '''
# {{name}}: the plugin's task, registered as "{{name}}/{{name}}":  polydiff fit --config {{name}}/{{name}}
seed_everything: 0
trainer:
  accelerator: auto
  devices: 1
  max_steps: 2000
  check_val_every_n_epoch: 10
model:
  class_path: DiffusionModule
  init_args:
    backbone:
      class_path: {{cls}}Backbone
      init_args: {hidden: 64, depth: 2}
    process: {class_path: VP, init_args: {schedule: cosine}}
    parameterization: eps
    lr: 1.0e-3
    sampler: ddim
    sample_steps: 50
    val_num_samples: 256
    final_num_samples: 256
data:
  class_path: {{cls}}DataModule
  init_args: {n_train: 2048, n_val: 256, batch_size: 128}
'''

_TEST = '''
"""polydiff's conformance suite on this plugin (the `check_plugin` fixture comes with polydiff)."""


def test_plugin_conforms(check_plugin):
    report = check_plugin("{{name}}", tasks=["{{name}}/{{name}}"],
                          datamodule_kwargs={"{{cls}}DataModule": {"n_train": 64, "n_val": 32, "batch_size": 16}})
    assert report["datamodules"] == {"{{cls}}DataModule": (2,)}
    assert "{{name}}/sliced_w2" in report["metrics"]
    assert report["tasks"]["{{name}}/{{name}}"]["sample_shape"] == (2,)
'''
