"""Image plugin components: data modules, PNG grids/files, the evaluation classifier and Fréchet distance."""

import numpy as np
import pytest
import torch

from polydiff.errors import ConfigError, ShapeError
from polydiff.metrics import frechet_distance_features
from polydiff.plugins.image import artifacts, classifier, data, evaluation



@pytest.fixture(scope="module")
def digits():
    dm = data.DigitsDataModule(batch_size=32)
    dm.setup("fit")
    return dm


def test_digits_datamodule_split_scaling_and_cond(digits):
    assert len(digits.train_set) == 1617 and len(digits.val_set) == 180
    assert digits.sample_shape == (1, 8, 8)
    item = digits.train_set[0]
    assert item["x"].dtype == torch.float32 and item["cond"]["label"].dtype == torch.long
    xtr, ytr, xva, yva = digits.labelled_splits()
    assert float(xtr.min()) == -1.0 and float(xtr.max()) == 1.0
    # pixel values v in 0..16 map to v/8 - 1 exactly
    from polydiff.datasets.digits import load_digits

    images, labels = load_digits()
    tr, va = data.split_indices(1797, 0.1, 0)
    assert torch.equal(ytr, torch.as_tensor(labels[tr.numpy()]))
    np.testing.assert_array_equal(xva[0, 0].numpy(), images[va[0].item()] / 8.0 - 1.0)
    assert set(tr.tolist()).isdisjoint(va.tolist()) and len(tr) + len(va) == 1797
    assert digits.example_cond(12)["label"].tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 0, 1]
    assert torch.allclose(digits.decode(torch.tensor([-1.0, 0.0, 1.0])), torch.tensor([0.0, 8.0, 16.0]))
    batch = next(iter(digits.train_dataloader()))
    assert batch["x"].shape == (32, 1, 8, 8) and batch["cond"]["label"].shape == (32,)


def test_padding_and_bad_options():
    x = data.normalise(np.full((2, 1, 28, 28), 255, np.uint8), 255.0, pad_to=32)
    assert x.shape == (2, 1, 32, 32)
    assert float(x[0, 0, 1, 1]) == -1.0 and float(x[0, 0, 2, 2]) == 1.0 and float(x[0, 0, 29, 29]) == 1.0
    assert float(x[0, 0, 30, 30]) == -1.0
    with pytest.raises(ConfigError, match="pad_to=4"):
        data.normalise(np.zeros((1, 1, 8, 8)), 16.0, pad_to=4)
    with pytest.raises(ConfigError, match="val_fraction"):
        data.split_indices(10, 1.5, 0)


def test_class_grid_order_and_size(tmp_path):
    # 6 single-colour tiles; labels shuffled: the grid has rows per class in increasing class order
    imgs = torch.arange(6, dtype=torch.uint8).mul(40).reshape(6, 1, 1, 1).expand(6, 1, 2, 3).contiguous()
    labels = torch.tensor([2, 0, 2, 1, 0, 2])
    grid = artifacts.class_grid(imgs, labels, padding=1, scale=2, pad_value=255)
    # 3 classes -> 3 rows; most samples per class = 3 -> 3 columns; tiles 4x6 after scale 2
    assert grid.shape == (3 * (4 + 1) + 1, 3 * (6 + 1) + 1)
    assert grid[1, 1] == 40 and grid[1, 1 + 7] == 160  # class 0: samples 1, 4
    assert grid[6, 1] == 120 and grid[6, 8] == 255      # class 1: sample 3, then an empty tile
    assert [grid[11, 1 + 7 * c] for c in range(3)] == [0, 80, 200]  # class 2: samples 0, 2, 5
    out = artifacts.write_sample_grid({"x": torch.zeros(4, 3, 8, 8)}, tmp_path, name="g.png", scale=1)
    from PIL import Image

    with Image.open(out) as im:
        assert im.size == (2 * 9 + 1, 2 * 9 + 1) and im.mode == "RGB"
        assert im.getpixel((1, 1)) == (128, 128, 128)  # 0 in [-1, 1] -> 127.5 -> 128
    assert not list(tmp_path.glob("*.tmp"))


def test_png_roundtrip(tmp_path):
    x = torch.linspace(-1, 1, 16).reshape(1, 1, 4, 4)
    p = artifacts.write_png({"x": x}, tmp_path / "one.png")
    back = artifacts.read_png(p)["x"]
    assert back.shape == (1, 1, 4, 4)
    assert torch.allclose(back, x, atol=1 / 127.5)
    with pytest.raises(Exception, match="not a readable image"):
        (tmp_path / "bad.png").write_bytes(b"nope")
        artifacts.read_png(tmp_path / "bad.png")


# --------------------------------------------------------------------------- evaluation classifier
@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    cache = tmp_path_factory.mktemp("clf")
    xtr, ytr, xva, yva = digits.labelled_splits()
    return classifier.get_classifier(xtr, ytr, xva, yva, 10, cache), cache


def test_classifier_accuracy_and_cache(digits, trained):
    clf, cache = trained
    assert clf.test_accuracy >= 0.9  # measured 1.00 on the 180 held-out digits
    assert clf.path.is_file() and clf.path.parent == cache and not list(cache.glob("*.tmp"))
    mtime = clf.path.stat().st_mtime_ns
    xtr, ytr, xva, yva = digits.labelled_splits()
    again = classifier.get_classifier(xtr, ytr, xva, yva, 10, cache)
    assert clf.path.stat().st_mtime_ns == mtime and again.test_accuracy == clf.test_accuracy
    for p, q in zip(clf.model.parameters(), again.model.parameters()):
        assert torch.equal(p, q)


def test_frechet_real_vs_real_much_smaller_than_noise(digits, trained):
    clf, _ = trained
    xtr, _, xva, _ = digits.labelled_splits()
    _, real = classifier.predict(clf.model, xva)
    _, other_real = classifier.predict(clf.model, xtr[:180])
    noise = torch.rand(180, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    _, fake = classifier.predict(clf.model, noise)
    d_real = frechet_distance_features(real, other_real)
    d_noise = frechet_distance_features(real, fake)
    assert d_real < 0.1 * d_noise


def test_evaluate_samples_on_real_and_shuffled_labels(digits, trained):
    _, cache = trained
    xtr, ytr, _, _ = digits.labelled_splits()
    samples = {"x": xtr[:100], "cond": {"label": ytr[:100]}}
    m = evaluation.evaluate_samples(samples, digits, {"cache_dir": cache})
    assert m["image/accuracy"] >= 0.95 and m["image/classifier_test_accuracy"] >= 0.9
    assert m["image/num_samples"] == 100 and m["image/frechet"] > 0
    wrong = {"x": xtr[:100], "cond": {"label": (ytr[:100] + 1) % 10}}
    assert evaluation.evaluate_samples(wrong, digits, {"cache_dir": cache})["image/accuracy"] <= 0.05
    with pytest.raises(ShapeError, match="shape"):
        evaluation.evaluate_samples({"x": torch.zeros(4, 1, 6, 6)}, digits, {"cache_dir": cache})


def test_classifier_trains_inside_inference_mode():
    # the framework evaluates inside Lightning's validation loop (torch.inference_mode)
    x = torch.rand(40, 1, 8, 8) * 2 - 1
    y = torch.arange(40) % 2
    with torch.inference_mode():
        model = classifier.train_classifier(x, y, 2, classifier.TrainConfig(epochs=1, batch_size=20))
    assert all(p.requires_grad for p in model.parameters())


def test_image_folder_datamodule(tmp_path):
    from PIL import Image

    for k, name in enumerate(("circle", "square")):
        (tmp_path / name).mkdir()
        for i in range(5):
            Image.fromarray(np.full((6, 6, 3), 40 * k + i, np.uint8), "RGB").save(tmp_path / name / f"{i}.png")
    dm = data.ImageFolderDataModule(root=str(tmp_path), size=4, mode="RGB", batch_size=4, val_fraction=0.2)
    dm.setup("fit")
    assert dm.num_classes == 2 and tuple(dm.class_names) == ("circle", "square")
    assert len(dm.train_set) == 8 and len(dm.val_set) == 2 and dm.sample_shape == (3, 4, 4)
    seen = set()
    for ds in (dm.train_set, dm.val_set):
        for i in range(len(ds)):
            x, label = ds[i]["x"], int(ds[i]["cond"]["label"])
            assert torch.all(x == x[0, 0, 0])  # uniform images stay uniform through resize + crop
            seen.add((label, round((float(x[0, 0, 0]) + 1) * 127.5)))
    assert seen == {(k, 40 * k + i) for k in range(2) for i in range(5)}


def test_mnist_and_cifar_modules_verify_local_files(tmp_path):
    from polydiff.errors import DataError

    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not mnist")
    with pytest.raises(DataError, match="sha256"):
        data.MNISTDataModule(root=str(tmp_path)).setup("fit")
    (tmp_path / "cifar-10-binary.tar.gz").write_bytes(b"not cifar")
    with pytest.raises(DataError, match="sha256"):
        data.CIFAR10DataModule(root=str(tmp_path)).setup("fit")
