"""Image dataset loaders on tiny files written here in the exact official formats."""

import gzip
import io
import struct
import tarfile

import numpy as np
import pytest

from polydiff.datasets import cifar10, digits, get_info, image_folder, mnist
from polydiff.errors import DataError


# ----------------------------------------------------------------------------- digits
def test_digits_first_image_and_counts():
    images, labels = digits.load_digits()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    # sklearn's first digit (a zero), as printed in scikit-learn's documentation
    first = [[0, 0, 5, 13, 9, 1, 0, 0], [0, 0, 13, 15, 10, 15, 5, 0], [0, 3, 15, 2, 0, 11, 8, 0],
             [0, 4, 12, 0, 0, 8, 8, 0], [0, 5, 8, 0, 0, 9, 8, 0], [0, 4, 11, 0, 1, 12, 7, 0],
             [0, 2, 14, 5, 10, 12, 0, 0], [0, 0, 6, 13, 10, 0, 0, 0]]
    np.testing.assert_array_equal(images[0], np.array(first, dtype=np.uint8))
    assert labels[:10].tolist() == list(range(10))
    assert int(images.max()) == 16 and int(images.min()) == 0
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert get_info("digits").files == ()


# ----------------------------------------------------------------------------- MNIST (IDX)
def _idx(magic: int, dims: tuple[int, ...], data: bytes) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims) + data


def _write_gz(path, payload: bytes):
    with gzip.open(path, "wb") as f:
        f.write(payload)


@pytest.fixture
def mnist_files(tmp_path):
    pixels = np.arange(3 * 28 * 28, dtype=np.int64) % 256
    img = tmp_path / "train-images-idx3-ubyte.gz"
    lab = tmp_path / "train-labels-idx1-ubyte.gz"
    _write_gz(img, _idx(2051, (3, 28, 28), pixels.astype(np.uint8).tobytes()))
    _write_gz(lab, _idx(2049, (3,), bytes([7, 0, 9])))
    return img, lab


def test_mnist_idx_parsed_exactly(mnist_files):
    images, labels = mnist.parse_mnist(*mnist_files)
    assert images.shape == (3, 28, 28) and images.dtype == np.uint8
    assert labels.tolist() == [7, 0, 9] and labels.dtype == np.int64
    assert images[0, 0, :3].tolist() == [0, 1, 2]
    assert int(images[0, 9, 4]) == (9 * 28 + 4) % 256  # row-major: 256 -> 0
    assert int(images[2, 27, 27]) == (3 * 784 - 1) % 256


def test_read_idx_plain_and_other_dtype(tmp_path):
    p = tmp_path / "x.idx"
    p.write_bytes(_idx(0x00000C02, (2, 2), np.array([[1, -2], [3, 70000]], dtype=">i4").tobytes()))
    arr = mnist.read_idx(p)
    assert arr.tolist() == [[1, -2], [3, 70000]] and arr.dtype == np.int32


def test_mnist_corrupt_files_name_the_file(tmp_path, mnist_files):
    img, lab = mnist_files
    bad_magic = tmp_path / "bad-magic.gz"
    _write_gz(bad_magic, _idx(0x12340803, (3, 28, 28), bytes(3 * 784)))
    with pytest.raises(DataError, match="bad-magic.gz.*magic"):
        mnist.parse_mnist(bad_magic, lab)
    truncated = tmp_path / "truncated.gz"
    _write_gz(truncated, _idx(2051, (3, 28, 28), bytes(3 * 784 - 5)))
    with pytest.raises(DataError, match="truncated.gz.*2352"):
        mnist.parse_mnist(truncated, lab)
    wrong_count = tmp_path / "labels4.gz"
    _write_gz(wrong_count, _idx(2049, (4,), bytes(4)))
    with pytest.raises(DataError, match="labels4.gz: 4 labels for 3 images"):
        mnist.parse_mnist(img, wrong_count)
    notgz = tmp_path / "broken.gz"
    notgz.write_bytes(b"\x1f\x8b" + b"garbage")
    with pytest.raises(DataError, match="broken.gz"):
        mnist.read_idx(notgz)


def test_mnist_registered_and_checksum_enforced(tmp_path, mnist_files):
    info = get_info("mnist")
    assert {f.name for f in info.files} == set(mnist.FILES.values())
    assert all(len(f.sha256) == 64 and f.url.startswith("https://") for f in info.files)
    # a manual download with the right names but the wrong content is rejected by its sha256
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: sha256"):
        mnist.load_mnist("train", root=tmp_path)


# ----------------------------------------------------------------------------- CIFAR-10 (binary)
def _record(label: int, seed: int) -> tuple[bytes, np.ndarray]:
    img = (np.arange(3072, dtype=np.int64) * (seed + 1) + seed) % 256
    return bytes([label]) + img.astype(np.uint8).tobytes(), img.astype(np.uint8).reshape(3, 32, 32)


def _tar_gz(path, members: dict[str, bytes]):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_cifar_binary_records_in_tar_gz(tmp_path):
    (r0, im0), (r1, im1) = _record(3, 0), _record(9, 1)
    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": _record(i, 10 + i)[0] for i in range(1, 6)}
    members["cifar-10-batches-bin/test_batch.bin"] = r0 + r1
    archive = tmp_path / "cifar-10-binary.tar.gz"
    _tar_gz(archive, members)
    images, labels = cifar10.extract_and_read(archive, tmp_path / "out", "test")
    assert images.shape == (2, 3, 32, 32) and images.dtype == np.uint8
    assert labels.tolist() == [3, 9]
    np.testing.assert_array_equal(images[0], im0)
    np.testing.assert_array_equal(images[1], im1)
    # channel-major layout: byte 1024 of the pixels is red's end -> green (0, 0)
    assert int(images[1, 1, 0, 0]) == (1024 * 2 + 1) % 256
    train_images, train_labels = cifar10.extract_and_read(archive, tmp_path / "out", "train")
    assert train_labels.tolist() == [1, 2, 3, 4, 5] and train_images.shape == (5, 3, 32, 32)


def test_cifar_corrupt_and_unsafe(tmp_path):
    bad = tmp_path / "data_batch_1.bin"
    bad.write_bytes(_record(2, 0)[0][:-1])
    with pytest.raises(DataError, match="data_batch_1.bin: 3072 bytes"):
        cifar10.read_batch(bad)
    badlab = tmp_path / "test_batch.bin"
    badlab.write_bytes(_record(1, 0)[0] + _record(12, 0)[0])
    with pytest.raises(DataError, match="test_batch.bin: record 1 has label 12"):
        cifar10.read_batch(badlab)
    evil = tmp_path / "evil.tar.gz"
    _tar_gz(evil, {"../escape.bin": b"x"})
    with pytest.raises(DataError, match="outside"):
        cifar10.extract_and_read(evil, tmp_path / "dest", "test")
    assert not (tmp_path / "escape.bin").exists()


def test_cifar_registered_with_published_checksums():
    info = get_info("cifar10")
    (rf,) = info.files
    assert rf.name == "cifar-10-binary.tar.gz" and rf.sha256 == cifar10.ARCHIVE_SHA256
    assert cifar10.ARCHIVE_MD5 == "c32a1d4ab5d03f1284b67883e8d87530"


# ----------------------------------------------------------------------------- image folder
def test_image_folder_resize_crop_and_labels(tmp_path):
    from PIL import Image

    (tmp_path / "cat").mkdir()
    (tmp_path / "ant").mkdir()
    grey = (np.arange(4 * 6).reshape(4, 6) * 10).astype(np.uint8)  # 4 rows, 6 columns
    Image.fromarray(grey, "L").save(tmp_path / "cat" / "a.png")
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[0, 1] = (255, 0, 0)
    rgb[1, 0] = (0, 0, 200)
    Image.fromarray(rgb, "RGB").save(tmp_path / "ant" / "b.png")
    (tmp_path / "ant" / "notes.txt").write_text("ignored")

    images, labels, classes = image_folder.load_image_folder(tmp_path, size=4, mode="L")
    assert classes == ["ant", "cat"] and labels.tolist() == [0, 1]
    assert images.shape == (2, 1, 4, 4)
    # 4x6 image: shorter side already 4 -> no resize, centre crop keeps columns 1..4
    np.testing.assert_array_equal(images[1, 0], grey[:, 1:5])

    rgb_images, _, _ = image_folder.load_image_folder(tmp_path, size=2, mode="RGB")
    np.testing.assert_array_equal(rgb_images[0], rgb.transpose(2, 0, 1))
    assert rgb_images[1].shape == (3, 2, 2)


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="found none"):
        image_folder.load_image_folder(tmp_path, size=4)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "broken.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        image_folder.load_image_folder(tmp_path, size=4)


def test_cifar_verify_md5(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"abc")
    assert cifar10.verify_md5(p, "900150983cd24fb0d6963f7d28e17f72") == p  # RFC 1321 test vector md5("abc")
    with pytest.raises(DataError, match="a.bin: md5 is 9001"):
        cifar10.verify_md5(p)
