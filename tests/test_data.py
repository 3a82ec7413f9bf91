"""The data sources: the official format, image folders, Keras's download, and every bad input."""

from __future__ import annotations

import hashlib
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

from cnnbook import data
from cnnbook.data import CLASS_NAMES, DataError, load_cifar10

from conftest import write_official_archive


def _first(x, y, n):
    keep = np.sort(np.concatenate([np.flatnonzero(y.ravel() == c)[:n] for c in range(10)]))
    return x[keep], y[keep]


def test_official_archive_is_read_in_the_real_format(official_archive, cache_dir):
    path, arrays = official_archive
    d = load_cifar10(path, train_per_class=6, test_per_class=3)
    (x_train, y_train), (x_test, y_test), names, source = d
    assert x_train.dtype == np.uint8 and x_train.shape == (60, 32, 32, 3)
    assert y_train.shape == (60, 1) and x_test.shape == (30, 32, 32, 3)
    np.testing.assert_array_equal(x_train, arrays["train"][0])  # pixels land in HWC order
    np.testing.assert_array_equal(y_test, arrays["test"][1])
    assert names == CLASS_NAMES
    assert "official format" in source and "NOT the official" in source


def test_subset_keeps_the_first_n_per_class_in_archive_order(official_archive, cache_dir):
    path, arrays = official_archive
    (x, y), (xt, yt), _, _ = load_cifar10(path, train_per_class=2, test_per_class=1)
    ex, ey = _first(*arrays["train"], 2)
    np.testing.assert_array_equal(x, ex)
    np.testing.assert_array_equal(y, ey)
    assert np.bincount(yt.ravel()).tolist() == [1] * 10


def test_extracted_official_folder(official_archive, tmp_path, cache_dir):
    path, arrays = official_archive
    with tarfile.open(path) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    d = load_cifar10(tmp_path / "x" / "cifar-10-batches-py", train_per_class=6, test_per_class=3)
    np.testing.assert_array_equal(d.train[0], arrays["train"][0])
    assert d.source.startswith("official CIFAR-10 batches in the folder")


@pytest.mark.parametrize("kind", ["folder", "archive"])
def test_image_folder_and_its_archive(kind, image_folder, image_archive, cache_dir):
    path = image_folder[0] if kind == "folder" else image_archive[0]
    arrays = image_folder[1]
    d = load_cifar10(path, train_per_class=4, test_per_class=2)
    # PNG is lossless and the fixture wrote the images class by class in interleaved order
    np.testing.assert_array_equal(d.train[0], arrays["train"][0])
    np.testing.assert_array_equal(d.train[1], arrays["train"][1])
    np.testing.assert_array_equal(d.test[0], arrays["test"][0])
    assert d.train[1][:10].ravel().tolist() == list(range(10))
    assert "image folder" in d.source or "image-folder" in d.source


def test_decoded_arrays_are_cached_atomically(image_archive, cache_dir, monkeypatch):
    path, _ = image_archive
    first = load_cifar10(path, train_per_class=2, test_per_class=1)
    files = list((cache_dir / "data").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"  # no temporary file left beside it

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")

    monkeypatch.setattr(data, "_decode_image_folder", no_decoding)
    again = load_cifar10(path, train_per_class=2, test_per_class=1)
    np.testing.assert_array_equal(again.train[0], first.train[0])
    with pytest.raises(AssertionError, match="decoded again"):  # another subset is another entry
        load_cifar10(path, train_per_class=1, test_per_class=1)


def test_interrupted_cache_write_leaves_nothing(image_archive, cache_dir, monkeypatch):
    def crash(file, **arrays):
        file.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        load_cifar10(image_archive[0], train_per_class=1, test_per_class=1)
    assert list((cache_dir / "data").iterdir()) == []


def test_data_source_comes_from_the_environment(image_folder, cache_dir, monkeypatch):
    monkeypatch.setenv("CNNBOOK_DATA", str(image_folder[0]))
    assert data.resolve_source().kind == "image-folder"
    monkeypatch.delenv("CNNBOOK_DATA")
    assert data.resolve_source().kind == "keras"


# --- Keras's download: served from a local file:// URL so the tests run offline ------------------

def test_keras_download_verifies_and_loads(official_archive, tmp_path, cache_dir, monkeypatch):
    path, arrays = official_archive
    monkeypatch.setattr(data, "OFFICIAL_URL", path.as_uri())
    monkeypatch.setattr(data, "OFFICIAL_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    d = load_cifar10("keras", train_per_class=6, test_per_class=3, download_dir=tmp_path / "dl")
    np.testing.assert_array_equal(d.test[0], arrays["test"][0])
    assert (tmp_path / "dl" / "datasets" / "cifar-10-python.tar.gz").is_file()
    assert "downloaded and sha256-verified by Keras" in d.source


def test_checksum_mismatch_is_an_error_and_the_file_is_deleted(official_archive, tmp_path,
                                                               cache_dir, monkeypatch):
    path, _ = official_archive
    monkeypatch.setattr(data, "OFFICIAL_URL", path.as_uri())  # real sha256 != the fake's
    with pytest.raises(DataError, match="does not match the official sha256"):
        load_cifar10("keras", train_per_class=1, test_per_class=1, download_dir=tmp_path / "dl")
    assert list((tmp_path / "dl" / "datasets").iterdir()) == []
    assert not (cache_dir / "data").exists()


def test_no_internet_and_no_local_copy_says_how_to_fix(tmp_path, cache_dir, monkeypatch):
    monkeypatch.delenv("CNNBOOK_DATA", raising=False)  # the default source: Keras's download
    monkeypatch.setattr(data, "OFFICIAL_URL", "http://127.0.0.1:9/cifar-10-python.tar.gz")
    with pytest.raises(DataError, match="Could not download") as err:
        load_cifar10(download_dir=tmp_path / "dl", train_per_class=1, test_per_class=1)
    assert "CNNBOOK_DATA" in str(err.value) and "No internet" in str(err.value)
    leftovers = list((tmp_path / "dl").rglob("*.tar.gz"))
    assert leftovers == []


# --- bad input ----------------------------------------------------------------------------------

def test_missing_source_path(tmp_path, cache_dir):
    with pytest.raises(DataError, match="does not exist.*CNNBOOK_DATA"):
        load_cifar10(tmp_path / "nowhere.tar.gz")


@pytest.mark.parametrize("cut", [0.5, 0.95])
def test_truncated_archive(cut, official_archive, image_archive, tmp_path, cache_dir):
    for path, _ in (official_archive, image_archive):
        blob = path.read_bytes()
        bad = tmp_path / f"truncated-{path.name}"
        bad.write_bytes(blob[: int(len(blob) * cut)])
        with pytest.raises(DataError, match="truncated or corrupt"):
            load_cifar10(bad, train_per_class=1, test_per_class=1)
    assert not (cache_dir / "data").exists()  # nothing half-written in the cache


def test_corrupt_archive(tmp_path, cache_dir):
    bad = tmp_path / "cifar.tar.gz"
    bad.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(DataError, match="not a readable tar archive"):
        load_cifar10(bad)


def test_archive_that_is_not_cifar(tmp_path, cache_dir):
    other = tmp_path / "other.tar.gz"
    with tarfile.open(other, "w:gz") as tar:
        tar.add(__file__, arcname="notes/readme.py")
    with pytest.raises(DataError, match="neither the official batches"):
        load_cifar10(other)


def test_official_archive_missing_a_batch(tmp_path, official_archive, cache_dir):
    path, _ = official_archive
    partial = tmp_path / "partial.tar.gz"
    with tarfile.open(path) as src, tarfile.open(partial, "w:gz") as dst:
        for m in src:
            if not m.name.endswith("test_batch"):
                dst.addfile(m, src.extractfile(m))
    with pytest.raises(DataError, match="lacks the batch file.*test_batch"):
        load_cifar10(partial, train_per_class=1, test_per_class=1)


def test_missing_class_folder(image_folder, cache_dir):
    root, _ = image_folder
    shutil.rmtree(root / "train" / "cat")
    with pytest.raises(DataError, match="train/ has missing class folder.*cat"):
        load_cifar10(root, train_per_class=1, test_per_class=1)


def test_extra_class_folder(image_folder, cache_dir):
    root, _ = image_folder
    shutil.copytree(root / "test" / "dog", root / "test" / "dragon")
    with pytest.raises(DataError, match="test/ has extra folder.*dragon.*not CIFAR-10 classes"):
        load_cifar10(root, train_per_class=1, test_per_class=1)


@pytest.mark.parametrize("size,mode,problem", [((64, 64), "RGB", "64x64 RGB"),
                                               ((32, 32), "L", "32x32 L")])
def test_image_that_is_not_32x32_rgb(size, mode, problem, image_folder, cache_dir):
    root, _ = image_folder
    Image.new(mode, size).save(root / "train" / "frog" / "0000.png")
    with pytest.raises(DataError, match=f"train/frog/0000.png is a {problem} image"):
        load_cifar10(root, train_per_class=2, test_per_class=1)
    assert not (cache_dir / "data").exists()


def test_unreadable_image(image_folder, cache_dir):
    root, _ = image_folder
    (root / "test" / "ship" / "0000.png").write_bytes(b"not a png")
    with pytest.raises(DataError, match="test/ship/0000.png is not a readable image"):
        load_cifar10(root, train_per_class=1, test_per_class=1)


def test_wrong_counts(image_folder, official_archive, cache_dir):
    root, _ = image_folder
    with pytest.raises(DataError, match="wrong number of images per class.*expected 5,000"):
        load_cifar10(root)  # a full load needs all 5,000 / 1,000 per class
    with pytest.raises(DataError, match=r"wrong number of images per class \(airplane 4,"):
        load_cifar10(root, train_per_class=5, test_per_class=1)  # fewer than asked for
    with pytest.raises(DataError, match="wrong number of images per class"):
        load_cifar10(official_archive[0], train_per_class=7, test_per_class=1)


@pytest.mark.parametrize("n", [0, -3, 2.5, "10"])
def test_bad_subset_size(n, image_folder, cache_dir):
    with pytest.raises(DataError, match="train_per_class must be a positive whole number"):
        load_cifar10(image_folder[0], train_per_class=n)


def test_folder_that_is_not_cifar(tmp_path, cache_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither cifar-10-batches-py"):
        load_cifar10(tmp_path / "empty")


def test_official_archive_with_the_real_checksum_is_called_official(tmp_path, monkeypatch):
    path = tmp_path / "cifar-10-python.tar.gz"
    write_official_archive(path, 1, 1)
    monkeypatch.setattr(data, "OFFICIAL_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    src = data.resolve_source(path)
    assert src.kind == "official-archive" and "(sha256 verified)" in src.description


@pytest.mark.parametrize("label", [10, 256, -1])
def test_label_out_of_range(label, tmp_path, cache_dir):
    import io
    import pickle

    path = tmp_path / "bad-labels.tar.gz"
    blob = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, label]})
    with tarfile.open(path, "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    with pytest.raises(DataError, match=f"has label {label}; CIFAR-10 labels are 0 to 9"):
        load_cifar10(path, train_per_class=1, test_per_class=1)
