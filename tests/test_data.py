"""The data sources: the official format, image folders, Keras's download, and every bad input."""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import shutil
import struct
import subprocess
import tarfile
import warnings
import zlib
from codecs import encode as codecs_encode  # pickled as _codecs.encode
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnbook import data
from cnnbook.data import CLASS_NAMES, DataError, load_cifar10

from conftest import make_images, write_official_archive

np_frombuffer = np.zeros(1).__reduce_ex__(5)[0]  # NumPy's _frombuffer, in numpy.core or numpy._core


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


# --- crafted pickles: refused before anything in them runs ---------------------------------------

class _Call:
    """Pickles as a call of ``func(*args)``: what an attacker's batch would hold."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _touch(marker):
    return _Call(os.system, f"touch {marker}")


def _payloads(marker, tmp_path):
    """name -> (the batch's b"data", what the refusal names)."""
    evil_npy = tmp_path / "evil.npy"
    np.save(evil_npy, np.array([_touch(marker)], dtype=object), allow_pickle=True)
    return {
        "os.system": (_touch(marker), "asks to load posix.system"),
        "eval": (_Call(eval, f"open({str(marker)!r}, 'w').close()"), "asks to load builtins.eval"),
        "subprocess.Popen": (_Call(subprocess.Popen, ["touch", str(marker)]),
                             "asks to load subprocess.Popen"),
        "object array": (np.array([_touch(marker), 1], dtype=object),
                         r"asks for a NumPy array of Python objects \(dtype object\)"),
        "numpy.load": (_Call(np.load, str(evil_npy), None, True), "asks to load numpy.load"),
        "numpy.ndarray called": (_Call(np.ndarray, (4,), "u1"), "calls numpy.ndarray directly"),
    }


def _batch_blob(x, y):
    return pickle.dumps({b"data": x.transpose(0, 3, 1, 2).reshape(len(x), -1),
                         b"labels": [int(v) for v in y.ravel()]})


def _write_official(path: Path, replace: dict[str, bytes] | None = None, per_class=(2, 1),
                    folder=False):
    """The official layout (an archive, or its extracted folder) with some batches replaced."""
    (x, y), (xt, yt) = make_images(per_class[0], 1), make_images(per_class[1], 2)
    parts = np.array_split(np.arange(len(x)), 5)
    blobs = {f"data_batch_{i + 1}": _batch_blob(x[p], y[p]) for i, p in enumerate(parts)}
    blobs["test_batch"] = _batch_blob(xt, yt)
    blobs.update(replace or {})
    if folder:
        (path / "cifar-10-batches-py").mkdir(parents=True)
        for name, blob in blobs.items():
            (path / "cifar-10-batches-py" / name).write_bytes(blob)
        return path / "cifar-10-batches-py"
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in blobs.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return path


@pytest.mark.parametrize("container", ["archive", "folder"])
@pytest.mark.parametrize("payload", ["os.system", "eval", "subprocess.Popen", "object array",
                                     "numpy.load", "numpy.ndarray called"])
def test_a_crafted_batch_is_refused_and_its_payload_never_runs(payload, container, tmp_path,
                                                               cache_dir):
    marker = tmp_path / "payload-ran"
    evil, refusal = _payloads(marker, tmp_path)[payload]
    blob = pickle.dumps({b"data": evil, b"labels": [0]})
    if payload != "numpy.ndarray called":  # the payload is real: plain pickle.loads runs it
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ran = pickle.loads(blob)
        if isinstance(ran[b"data"], subprocess.Popen):
            ran[b"data"].wait()
        assert marker.exists()
        marker.unlink()
    source = _write_official(tmp_path / ("evil.tar.gz" if container == "archive" else "evil"),
                             {"data_batch_3": blob}, folder=container == "folder")
    with pytest.raises(DataError) as err:
        load_cifar10(source, train_per_class=1, test_per_class=1)
    message = str(err.value)
    where = ("evil.tar.gz: batch data_batch_3 " if container == "archive"
             else f"{source / 'data_batch_3'} ")
    assert message.startswith(where), message
    assert re.search(refusal, message), message
    assert "may be malicious; nothing from it was run" in message
    assert not marker.exists()
    assert not (cache_dir / "data").exists()


def test_a_crafted_batch_from_the_keras_download_is_refused(tmp_path, cache_dir, monkeypatch):
    marker = tmp_path / "payload-ran"
    crafted = _write_official(tmp_path / "cifar-10-python.tar.gz",
                              {"test_batch": pickle.dumps({b"data": _touch(marker)})})
    monkeypatch.setattr(data, "_download_official", lambda download_dir: crafted)
    with pytest.raises(DataError, match="batch test_batch asks to load posix.system"):
        load_cifar10("keras", train_per_class=1, test_per_class=1)
    assert not marker.exists()


def test_an_unwritable_keras_download_folder(tmp_path, cache_dir):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    folder = blocker / "keras" / "datasets"
    with pytest.raises(DataError, match=rf"Cannot create Keras's download folder "
                                        rf"{re.escape(str(folder))} \(.*\): make it a writable "
                                        r"folder, or set KERAS_HOME \(or pass download_dir=\)"):
        load_cifar10("keras", train_per_class=1, test_per_class=1, download_dir=blocker / "keras")
    assert blocker.read_text() == "x"


@pytest.mark.parametrize("batch,problem", [
    (b"\x80\x04K\x07.", "holds a int"),
    (pickle.dumps({b"labels": [0]}), "not a dict with b'data' and b'labels'"),
    (pickle.dumps({b"data": [[0] * 3072], b"labels": [0]}), "holds a list as b'data'"),
    (pickle.dumps({b"data": np.zeros((1, 3072), np.float32), b"labels": [0]}),
     "dtype float32 as b'data'"),
    (pickle.dumps({b"data": np.full((1, 3072), 300, np.int16), b"labels": [0]}),
     "pixel values from 300 to 300"),
    (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": ["cat"]}),
     "b'labels' that are not a list of whole numbers"),
    (pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]})[:-40],
     "is not a CIFAR-10 pickle"),
])
def test_a_batch_that_is_not_a_cifar10_dict(batch, problem, tmp_path, cache_dir):
    source = _write_official(tmp_path / "odd.tar.gz", {"data_batch_1": batch})
    with pytest.raises(DataError, match=re.escape(problem)):
        load_cifar10(source, train_per_class=1, test_per_class=1)


def _python2_batch(rows: np.ndarray, labels: list[int]) -> bytes:
    """A batch byte for byte as the official archive holds it: Python 2's cPickle at protocol 2,
    NumPy 1's names (numpy.core.multiarray), str (bytes) keys, the pixels as one binary str."""
    def s(b):
        return (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b

    def i(n):
        return b"J" + struct.pack("<i", n)

    dtype = (b"cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R"
             + b"(K\x03" + s(b"|") + b"NNN" + i(-1) + i(-1) + b"K\x00tb")
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + b"K\x00\x85"
             + s(b"b") + b"\x87R" + b"(K\x01" + i(rows.shape[0]) + i(rows.shape[1]) + b"\x86"
             + dtype + b"\x89" + s(rows.tobytes()) + b"tb")
    return (b"\x80\x02}(" + s(b"batch_label") + s(b"training batch 1 of 5")
            + s(b"data") + array
            + s(b"labels") + b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
            + s(b"filenames") + b"](" + b"".join(s(b"f%d.png" % k) for k in range(len(labels)))
            + b"eu.")


def test_the_official_files_pickle_layout_is_read(tmp_path, cache_dir):
    (x, y), (xt, yt) = make_images(2, 1), make_images(1, 2)
    rows = lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2).reshape(len(a), -1))  # noqa
    parts = np.array_split(np.arange(len(x)), 5)
    blobs = {f"data_batch_{k + 1}": _python2_batch(rows(x[p]), [int(v) for v in y[p].ravel()])
             for k, p in enumerate(parts)}
    blobs["test_batch"] = _python2_batch(rows(xt), [int(v) for v in yt.ravel()])
    with warnings.catch_warnings():  # numpy.core is deprecated in NumPy 2, still importable
        warnings.simplefilter("ignore")
        plain = pickle.loads(blobs["test_batch"], encoding="bytes")  # the crafted bytes are sound
    np.testing.assert_array_equal(plain[b"data"], rows(xt))
    path = _write_official(tmp_path / "py2.tar.gz", blobs)
    d = load_cifar10(path, train_per_class=2, test_per_class=1)
    np.testing.assert_array_equal(d.train[0], x)
    np.testing.assert_array_equal(d.test[0], xt)
    np.testing.assert_array_equal(d.test[1], yt)


def test_a_big_endian_or_wider_integer_array_is_read_by_value(tmp_path, cache_dir):
    (x, y) = make_images(2, 1)
    rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    parts = np.array_split(np.arange(len(x)), 5)
    blobs = {f"data_batch_{k + 1}": pickle.dumps({b"data": rows[p].astype(">u2"),
                                                  b"labels": y[p].ravel().astype(np.int64)})
             for k, p in enumerate(parts)}
    d = load_cifar10(_write_official(tmp_path / "wide.tar.gz", blobs), train_per_class=2,
                     test_per_class=1)
    np.testing.assert_array_equal(d.train[0], x)


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_batches_pickled_at_other_protocols_are_read(protocol, tmp_path, cache_dir):
    """Python 3 writes bytes through _codecs.encode at protocols 0 to 2, and arrays through
    NumPy's _frombuffer at 5 (Python 3.14's default): both are answered, by stand-ins."""
    (x, y), (xt, yt) = make_images(2, 1), make_images(1, 2)
    rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)
    parts = np.array_split(np.arange(len(x)), 5)
    blobs = {f"data_batch_{k + 1}": pickle.dumps(
        {b"data": np.asfortranarray(rows[p]),  # memory order F: read back by value
         b"labels": [int(v) for v in y[p].ravel()], b"filenames": [b"f.png"] * len(p)},
        protocol=protocol) for k, p in enumerate(parts)}
    test_rows = xt.transpose(0, 3, 1, 2).reshape(len(xt), -1)
    blobs["test_batch"] = pickle.dumps(  # a transposed view: order "K" with an axis order
        {b"data": np.ascontiguousarray(test_rows.T).T, b"labels": yt.ravel().astype(np.int64)},
        protocol=protocol)
    if protocol == 5:
        assert b"_frombuffer" in blobs["test_batch"]
    else:
        assert b"_codecs" in blobs["data_batch_1"]
    d = load_cifar10(_write_official(tmp_path / "p.tar.gz", blobs), train_per_class=2,
                     test_per_class=1)
    np.testing.assert_array_equal(d.train[0], x)
    np.testing.assert_array_equal(d.test[0], xt)
    np.testing.assert_array_equal(d.test[1], yt)


@pytest.mark.parametrize("call,refusal", [
    (lambda: _Call(codecs_encode, "x", "zlib_codec"), "asks to encode a str as 'zlib_codec'"),
    (lambda: _Call(np_frombuffer, np.zeros(8, np.uint8), np.dtype("u1"), (8,), "A"),
     "whose data is not raw bytes"),
    (lambda: _Call(np_frombuffer, b"\0" * 8, np.dtype("u1"), (8,), "Z"),
     "unknown memory order 'Z'"),
    (lambda: _Call(np_frombuffer, b"\0" * 8, np.dtype("u1"), (4,), "C"),
     r"shape \(4,\) with 8 bytes"),
])
def test_the_stand_ins_refuse_what_numpy_would_accept(call, refusal, tmp_path, cache_dir):
    blob = pickle.dumps({b"data": call(), b"labels": [0]}, protocol=5)
    source = _write_official(tmp_path / "odd.tar.gz", {"data_batch_1": blob})
    with pytest.raises(DataError, match=rf"batch data_batch_1 .*{refusal}"):
        load_cifar10(source, train_per_class=1, test_per_class=1)


# --- size limits: refused before they are read -------------------------------------------------

class _Zeros(io.RawIOBase):
    def __init__(self, n):
        self.left = n

    def readable(self):
        return True

    def readinto(self, b):
        n = min(len(b), self.left)
        b[:n] = bytes(n)
        self.left -= n
        return n


def _spy_extractfile(monkeypatch):
    """The names (and offsets) of the archive members that are read."""
    read = []
    real = tarfile.TarFile.extractfile

    def extractfile(self, member):
        read.append((member.name, member.offset))
        return real(self, member)

    monkeypatch.setattr(tarfile.TarFile, "extractfile", extractfile)
    return read


def test_an_oversized_batch_is_refused_unread(tmp_path, cache_dir, monkeypatch):
    assert data.MAX_BATCH_BYTES == 64 << 20  # the real batches are about 31 MB
    path = tmp_path / "bomb.tar.gz"
    size = data.MAX_BATCH_BYTES + 1
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = size
        tar.addfile(info, io.BufferedReader(_Zeros(size), 1 << 20))
    assert path.stat().st_size < 1 << 20  # a tiny file that would unpack to 64 MiB
    read = _spy_extractfile(monkeypatch)
    with pytest.raises(DataError, match=rf"bomb.tar.gz: batch data_batch_1 is {size:,} bytes, "
                                        r"more than the 67,108,864 .* it was not read"):
        load_cifar10(path, train_per_class=1, test_per_class=1)
    assert read == []  # refused on the declared size: not one byte of it was extracted


def test_an_oversized_batch_file_in_a_folder_is_refused_unread(tmp_path, cache_dir, monkeypatch):
    folder = _write_official(tmp_path / "x", folder=True)
    with open(folder / "data_batch_2", "r+b") as f:  # sparse: no 64 MiB written to disk
        f.truncate(data.MAX_BATCH_BYTES + 5)
    data.resolve_source(folder)  # the fingerprint hashes the file: memoized below
    reads = []
    real_open = open

    class Spy:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def fileno(self):
            return self.f.fileno()

        def read(self, n=-1):
            reads.append(n)
            return self.f.read(n)

    monkeypatch.setattr(data, "open", lambda p, mode="r": Spy(real_open(p, mode)), raising=False)
    monkeypatch.setattr(data, "_folder_fingerprint", lambda path: "folder-content:fixed")
    with pytest.raises(DataError, match=r"data_batch_2 is 67,108,869 bytes, more than the"):
        load_cifar10(folder, train_per_class=1, test_per_class=1)
    assert all(0 < n <= data.MAX_BATCH_BYTES + 1 for n in reads)  # never an unbounded read()
    assert len(reads) == 1  # data_batch_1 read; data_batch_2 refused before its read


@pytest.mark.parametrize("kind", ["folder", "archive"])
def test_an_oversized_image_is_refused_unread(kind, image_folder, tmp_path, cache_dir,
                                              monkeypatch):
    root, _ = image_folder
    big = root / "train" / "cat" / "0001.png"
    big.write_bytes(bytes(data.MAX_IMAGE_BYTES + 1))
    path = root
    if kind == "archive":
        path = tmp_path / "big.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            tar.add(root, arcname="cifar10")
    read = _spy_extractfile(monkeypatch)
    with pytest.raises(DataError, match=r"train/cat/0001.png is 1,048,577 bytes, more than the "
                                        r"1,048,576 .* it was not read"):
        load_cifar10(path, train_per_class=2, test_per_class=1)
    assert all(not name.endswith("cat/0001.png") for name, _ in read)


def test_an_image_archive_reads_only_the_images_a_subset_needs(image_archive, tmp_path,
                                                               cache_dir, monkeypatch):
    path, arrays = image_archive
    read = _spy_extractfile(monkeypatch)
    d = load_cifar10(path, train_per_class=2, test_per_class=1)
    np.testing.assert_array_equal(d.train[0], _first(*arrays["train"], 2)[0])
    names = sorted(name.split("/", 1)[1] for name, _ in read)
    assert names == sorted([f"train/{c}/{i:04d}.png" for c in CLASS_NAMES for i in range(2)]
                           + [f"test/{c}/0000.png" for c in CLASS_NAMES])
    offsets = [offset for _, offset in read]
    assert offsets == sorted(offsets)  # in archive order: the gzip stream is read forward


def test_an_image_archive_decodes_each_image_as_it_is_read(image_archive, cache_dir,
                                                           monkeypatch):
    """No more than one image's bytes are held at a time: a crafted archive of many images near
    the size limit cannot fill the memory."""
    path, arrays = image_archive
    events = []
    real_read, real_decode = data._read_member, data._decode_image
    monkeypatch.setattr(data, "_read_member",
                        lambda tar, member, *a: events.append("read") or real_read(tar, member, *a))
    monkeypatch.setattr(data, "_decode_image",
                        lambda blob, where: events.append("decode") or real_decode(blob, where))
    d = load_cifar10(path, train_per_class=3, test_per_class=2)
    assert events == ["read", "decode"] * (10 * 3 + 10 * 2)
    np.testing.assert_array_equal(d.train[0], _first(*arrays["train"], 3)[0])
    np.testing.assert_array_equal(d.test[0], _first(*arrays["test"], 2)[0])


@pytest.mark.parametrize("kind", ["folder", "archive"])
def test_a_broken_image_beyond_the_subset_is_never_decoded(kind, image_folder, tmp_path,
                                                           cache_dir):
    root, arrays = image_folder
    (root / "train" / "dog" / "0003.png").write_bytes(b"not a png at all")
    path = root
    if kind == "archive":
        path = tmp_path / "partly-broken.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            tar.add(root, arcname="cifar10")
    d = load_cifar10(path, train_per_class=3, test_per_class=2)
    np.testing.assert_array_equal(d.train[0], _first(*arrays["train"], 3)[0])
    with pytest.raises(DataError, match="train/dog/0003.png is not a readable image"):
        load_cifar10(path, train_per_class=4, test_per_class=2)


# --- images that must not be decoded -----------------------------------------------------------

def _png_header_only(width, height, bit_depth=1, color_type=0) -> bytes:
    """A valid PNG that declares ``width`` x ``height`` with a tiny IDAT: a decompression bomb's
    header (the real thing would inflate to gigabytes; this one is never inflated)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I",
                                                                        zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(bytes(1 + (width * bit_depth + 7) // 8) * 4, 9))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("kind", ["folder", "archive"])
@pytest.mark.parametrize("width,height,bits,colour", [
    (40000, 40000, 1, 0),  # 1.6 gigapixels: Pillow's DecompressionBombError
    (10000, 10000, 1, 0),  # 100 megapixels: Pillow's DecompressionBombWarning
    (4000, 4000, 8, 2),  # 16 megapixels of RGB: under Pillow's limits, refused by size
])
def test_a_decompression_bomb_is_refused_undecoded(kind, width, height, bits, colour, image_folder,
                                                   tmp_path, cache_dir, monkeypatch):
    from PIL import ImageFile

    root, _ = image_folder
    (root / "train" / "airplane" / "0000.png").write_bytes(
        _png_header_only(width, height, bits, colour))
    path = root
    if kind == "archive":
        path = tmp_path / "bomb.tar.gz"
        with tarfile.open(path, "w:gz") as tar:
            tar.add(root, arcname="cifar10")
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load",
                        lambda self: decoded.append(self.size) or real_load(self))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning escapes either
        with pytest.raises(DataError, match=r"train/airplane/0000.png (declares a huge image|"
                                            rf"is a {width}x{height} )") as err:
            load_cifar10(path, train_per_class=1, test_per_class=1)
    assert "Replace or remove that file" in str(err.value)
    assert (width, height) not in decoded  # the bomb itself was never decoded
    if kind == "folder":
        assert decoded == []  # it is the first image decoded: nothing was decoded at all
    else:  # decoded as read, in archive order: only 32x32 images before the bomb
        assert all(size == (32, 32) for size in decoded)


def test_an_image_in_another_format_is_not_handed_to_pillow(image_folder, cache_dir):
    root, _ = image_folder
    img = Image.open(root / "train" / "bird" / "0000.png").convert("RGB")
    img.save(root / "train" / "bird" / "0000.png", format="BMP")  # a BMP called .png
    with pytest.raises(DataError, match="train/bird/0000.png is not a readable image"):
        load_cifar10(root, train_per_class=1, test_per_class=1)


# --- unreadable sources: PermissionError -> DataError ------------------------------------------
# The tests run as root, where chmod 000 stops nothing: the read itself raises instead.

def _deny(monkeypatch, denied: Path):
    """``open()`` in the data module raises PermissionError for ``denied``, as chmod 000 would."""
    real_open = open

    def guarded_open(file, *args, **kwargs):
        if Path(file) == denied:
            raise PermissionError(13, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(data, "open", guarded_open, raising=False)


def _permission_message(path) -> str:
    return rf"Cannot read {re.escape(str(path))} \(Permission denied\): fix its permissions"


def test_an_unreadable_archive(official_archive, cache_dir, monkeypatch):
    path, _ = official_archive
    _deny(monkeypatch, path)
    with pytest.raises(DataError, match=_permission_message(path)):
        load_cifar10(path, train_per_class=1, test_per_class=1)


@pytest.mark.parametrize("memoized", [False, True])
@pytest.mark.parametrize("kind", ["image", "batch"])
def test_an_unreadable_file_in_a_folder(kind, memoized, image_folder, tmp_path, cache_dir,
                                        monkeypatch):
    if kind == "image":
        root, denied = image_folder[0], image_folder[0] / "test" / "horse" / "0000.png"
    else:
        root = _write_official(tmp_path / "x", folder=True)
        denied = root / "data_batch_4"
    if memoized:  # fingerprinted earlier: the first read is the decoder's
        monkeypatch.setattr(data, "_RACY_NS", 0)
        data.resolve_source(root)
    _deny(monkeypatch, denied)
    with pytest.raises(DataError, match=_permission_message(denied)):
        load_cifar10(root, train_per_class=1, test_per_class=1)


def test_an_unreadable_folder(image_folder, cache_dir, monkeypatch):
    root, _ = image_folder
    denied = root / "train" / "deer"
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path) == denied:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(data.os, "scandir", scandir)
    with pytest.raises(DataError, match=_permission_message(denied)):
        load_cifar10(root, train_per_class=1, test_per_class=1)


def test_an_unreachable_source(tmp_path, cache_dir, monkeypatch):
    behind = tmp_path / "locked" / "cifar-10-python.tar.gz"
    real_stat = Path.stat

    def stat(self, **kwargs):
        if self == behind:
            raise PermissionError(13, "Permission denied", str(self))
        return real_stat(self, **kwargs)

    monkeypatch.setattr(Path, "stat", stat)
    with pytest.raises(DataError, match=_permission_message(behind)):
        data.resolve_source(behind)


# --- the decoded-array cache: damaged entries, unwritable folders --------------------------------

def _damage(path: Path, how: str):
    blob = path.read_bytes()
    if how == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    elif how == "a flipped byte":
        path.write_bytes(blob[: len(blob) // 2] + bytes([blob[len(blob) // 2] ^ 0xFF])
                         + blob[len(blob) // 2 + 1:])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "wrong shapes":  # a sound npz, but not this subset's
        x, y = make_images(1, 0)
        np.savez(path, x_train=x, y_train=y, x_test=x, y_test=y)
    elif how == "wrong dtype":
        with np.load(path) as npz:
            arrays = dict(npz)
        arrays["x_test"] = arrays["x_test"].astype(np.int16)
        np.savez(path, **arrays)
    elif how == "a pickle inside":
        with np.load(path) as npz:
            arrays = dict(npz)
        arrays["y_train"] = np.array([_touch(path.parent / "payload-ran")], dtype=object)
        np.savez(path, **arrays)


@pytest.mark.parametrize("how", ["truncated", "a flipped byte", "empty", "wrong shapes",
                                 "wrong dtype", "a pickle inside"])
def test_a_damaged_cache_entry_is_decoded_again(how, image_folder, cache_dir, capsys):
    root, arrays = image_folder
    first = load_cifar10(root, train_per_class=2, test_per_class=1)
    [entry] = (cache_dir / "data").iterdir()
    _damage(entry, how)
    capsys.readouterr()
    again = load_cifar10(root, train_per_class=2, test_per_class=1)
    err = capsys.readouterr().err
    assert err.startswith(f"note: the cached CIFAR-10 arrays {entry} are damaged (")
    assert err.rstrip().endswith("); decoding the source again") and err.count("\n") == 1
    for got, want in zip((*again.train, *again.test), (*first.train, *first.test)):
        np.testing.assert_array_equal(got, want)
    assert sorted((cache_dir / "data").iterdir()) == [entry]  # rewritten, nothing beside it
    with np.load(entry, allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["x_train"], first.train[0])
        np.testing.assert_array_equal(npz["y_test"], first.test[1])
    assert not (entry.parent / "payload-ran").exists()
    load_cifar10(root, train_per_class=2, test_per_class=1)
    assert capsys.readouterr().err == ""  # and the rewritten entry is sound


@pytest.mark.parametrize("where", ["cache folder is a file", "data folder is a file"])
def test_a_cache_folder_that_is_a_file(where, image_folder, cache_dir, monkeypatch):
    blocker = cache_dir if where == "cache folder is a file" else cache_dir / "data"
    blocker.parent.mkdir(parents=True, exist_ok=True)
    blocker.write_text("not a folder")
    monkeypatch.setattr(data, "_decode_image_folder",
                        lambda *a: pytest.fail("decoded although the cache cannot be written"))
    with pytest.raises(DataError, match=rf"cache folder {re.escape(str(cache_dir / 'data'))} .*"
                                        rf"{re.escape(str(blocker))} is a file, not a folder.*"
                                        r"set CNNBOOK_CACHE \(or pass cache_dir=\)"):
        load_cifar10(image_folder[0], train_per_class=1, test_per_class=1)
    assert blocker.read_text() == "not a folder"


@pytest.mark.parametrize("failure", ["read-only", "not writable (access)", "disk full"])
def test_a_cache_folder_that_cannot_be_written(failure, image_folder, cache_dir, monkeypatch):
    import errno
    import tempfile

    if failure == "read-only":  # what mkstemp meets in a read-only folder (root ignores modes)
        def mkstemp(*args, **kwargs):
            raise PermissionError(errno.EACCES, "Permission denied")
        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
        reason = "Permission denied"
    elif failure == "not writable (access)":
        monkeypatch.setattr(data.os, "access", lambda path, mode: False)
        reason = "is not writable"
    else:
        def savez(file, **arrays):
            file.write(b"half an npz")
            raise OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(np, "savez", savez)
        reason = "No space left on device"
    with pytest.raises(DataError, match=rf"cache folder {re.escape(str(cache_dir))}.*{reason}.*"
                                        r"writable folder .* set CNNBOOK_CACHE"):
        load_cifar10(image_folder[0], train_per_class=1, test_per_class=1)
    leftovers = list((cache_dir / "data").iterdir()) if (cache_dir / "data").exists() else []
    assert leftovers == []  # nothing half-written


# --- fingerprints: by content, memoized per file-system signature -------------------------------

def _same_size_edit(path: Path, pixel=(0, 0), value=(255, 0, 255)) -> None:
    """Rewrite a PNG with one pixel changed, at exactly the same byte size (stored, no deflate)."""
    img = Image.open(path).convert("RGB")
    img.save(path, compress_level=0)
    before = path.stat().st_size
    img.putpixel(pixel, value)
    img.save(path, compress_level=0)
    assert path.stat().st_size == before


def test_a_same_size_edit_in_place_is_seen(image_folder, cache_dir):
    root, arrays = image_folder
    target = root / "train" / "airplane" / "0000.png"
    Image.open(target).save(target, compress_level=0)  # same pixels, stored: same-size edits
    first = load_cifar10(root, train_per_class=2, test_per_class=1)
    fingerprint = data.resolve_source(root).fingerprint
    stamp = target.stat().st_mtime_ns
    _same_size_edit(target)
    os.utime(target, ns=(stamp, stamp))  # even with the time stamp put back
    assert data.resolve_source(root).fingerprint != fingerprint
    again = load_cifar10(root, train_per_class=2, test_per_class=1)
    assert tuple(again.train[0][0, 0, 0]) == (255, 0, 255)  # airplane 0000 is the first image
    assert tuple(first.train[0][0, 0, 0]) != (255, 0, 255)
    np.testing.assert_array_equal(again.train[0][1:], first.train[0][1:])
    assert len(list((cache_dir / "data").iterdir())) == 2


def test_a_copied_folder_keeps_its_fingerprint_and_its_cache(image_folder, tmp_path, cache_dir,
                                                             monkeypatch):
    root, _ = image_folder
    first = load_cifar10(root, train_per_class=2, test_per_class=1)
    copy = tmp_path / "elsewhere" / "copy-of-images"
    shutil.copytree(root, copy, copy_function=shutil.copyfile)  # new inodes and time stamps
    assert data.resolve_source(copy).fingerprint == data.resolve_source(root).fingerprint
    monkeypatch.setattr(data, "_decode_image_folder",
                        lambda *a: pytest.fail("decoded again instead of reading the cache"))
    again = load_cifar10(copy, train_per_class=2, test_per_class=1)
    np.testing.assert_array_equal(again.train[0], first.train[0])
    (copy / "test" / "extra-notes.txt").write_text("x")  # any added file is another folder
    assert data.resolve_source(copy).fingerprint != data.resolve_source(root).fingerprint


def _count_opens(monkeypatch) -> list:
    opened = []
    real_open = open

    def counting_open(file, *args, **kwargs):
        opened.append(Path(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(data, "open", counting_open, raising=False)
    return opened


def test_a_folder_is_hashed_once_per_signature(image_folder, monkeypatch):
    root, _ = image_folder
    monkeypatch.setattr(data, "_RACY_NS", 0)  # files this fresh are otherwise hashed every time
    opened = _count_opens(monkeypatch)
    first = data.resolve_source(root).fingerprint
    n_files = sum(1 for p in root.rglob("*") if p.is_file())
    assert len(opened) == n_files
    assert data.resolve_source(root).fingerprint == first
    assert len(opened) == n_files  # the second call read nothing
    target = root / "test" / "cat" / "0001.png"
    stamp = target.stat().st_mtime_ns
    _same_size_edit(target)
    os.utime(target, ns=(stamp + 10**9, stamp + 10**9))
    assert data.resolve_source(root).fingerprint != first  # a new signature: hashed again
    assert len(opened) == 2 * n_files


def test_fresh_files_are_not_memoized(image_folder, monkeypatch):
    root, _ = image_folder
    opened = _count_opens(monkeypatch)
    data.resolve_source(root)
    data.resolve_source(root)
    n_files = sum(1 for p in root.rglob("*") if p.is_file())
    assert len(opened) == 2 * n_files  # written just now: a same-tick edit could hide


def test_an_archive_is_hashed_and_listed_once_per_signature(official_archive, monkeypatch):
    path, _ = official_archive
    monkeypatch.setattr(data, "_RACY_NS", 0)
    opened = _count_opens(monkeypatch)
    listed = []
    real_open = tarfile.open
    monkeypatch.setattr(tarfile, "open", lambda name, *a, **k: listed.append(name)
                        or real_open(name, *a, **k))
    first = data.resolve_source(path)
    assert first.fingerprint == f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
    assert data.resolve_source(path) == first
    assert opened == [path] and listed == [path]  # the second call read nothing
    write_official_archive(path, 6, 2)  # replaced by another archive
    opened.clear(), listed.clear()
    assert data.resolve_source(path).fingerprint != first.fingerprint
    assert opened == [path] and listed == [path]
