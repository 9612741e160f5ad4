"""Normalisation protocols: exact statistics of each named mode, round trip, stored state, bad input."""

import numpy as np
import pytest
import torch

from polydiff.errors import ConfigError, ShapeError
from polydiff.plugins.pointcloud.normalize import Normalizer, shape_transform


def test_shape_unit_and_bbox_statistics():
    x = torch.tensor([[[0.0, 0.0, 0.0], [2.0, 0.0, 0.0], [0.0, 4.0, 0.0], [0.0, 0.0, 6.0]]])
    y = Normalizer("shape_unit")(x)
    torch.testing.assert_close(y.mean(1), torch.zeros(1, 3))
    # Luo & Hu divide by the std of the *uncentred* flattened coordinates (utils/dataset.py)
    _, scale = shape_transform(x, "shape_unit")
    assert scale.item() == pytest.approx(x.flatten().std().item())
    torch.testing.assert_close(y, (x - x.mean(1, keepdim=True)) / x.flatten().std())
    b = Normalizer("shape_bbox")(x)
    torch.testing.assert_close(b.amax(1) - b.amin(1), torch.tensor([[2 / 6 * 2, 4 / 6 * 2, 2.0]]))
    torch.testing.assert_close(b.amax(1), -b.amin(1))  # bbox centred
    shift, scale = shape_transform(x, "shape_bbox")
    torch.testing.assert_close(shift, torch.tensor([[[1.0, 2.0, 3.0]]]))
    assert scale.item() == 3.0


def test_global_mode_fits_on_train_only_and_round_trips():
    rng = np.random.default_rng(0)
    train = rng.normal(loc=[1, 2, 3], scale=2.0, size=(5, 100, 3)).astype(np.float32)
    norm = Normalizer("global").fit(train)
    np.testing.assert_allclose(norm.mean, train.reshape(-1, 3).mean(0), atol=1e-5)
    assert norm.std == pytest.approx(float(train.astype(np.float64).reshape(-1).std(ddof=1)), rel=1e-6)
    test = torch.as_tensor(rng.normal(size=(2, 50, 3)).astype(np.float32))
    y, shift, scale = norm.normalize(test)
    torch.testing.assert_close(Normalizer.denormalize(y, shift, scale), test)
    restored = Normalizer.from_state(norm.state())
    torch.testing.assert_close(restored(test), y)
    assert "global" in restored.describe()
    with pytest.raises(ConfigError, match="fitted"):
        Normalizer("global")(test)


def test_bad_input():
    with pytest.raises(ConfigError, match="unknown"):
        Normalizer("unit_sphere")
    with pytest.raises(ShapeError, match="at least 2 points"):
        Normalizer("shape_unit")(torch.zeros(1, 1, 3))
    with pytest.raises(ShapeError, match="zero extent"):
        Normalizer("shape_bbox")(torch.ones(2, 5, 3))
    with pytest.raises(ShapeError, match="non-finite"):
        Normalizer("shape_bbox")(torch.tensor([[[0.0, float("nan"), 0.0], [1.0, 1.0, 1.0]]]))
    with pytest.raises(ShapeError, match="expected \\(points, 3\\)"):
        Normalizer("none")(torch.zeros(4, 2))
