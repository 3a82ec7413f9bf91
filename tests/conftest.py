"""Small CIFAR-10 look-alikes that the tests make themselves: no real images in the repository."""

from __future__ import annotations

import io
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cnnbook.data import CLASS_NAMES


def make_images(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images, ``n_per_class`` of each class, classes interleaved 0..9, 0..9, ..."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n_per_class * 10, 32, 32, 3), dtype=np.uint8)
    y = np.tile(np.arange(10, dtype=np.uint8), n_per_class).reshape(-1, 1)
    return x, y


def write_official_archive(path: Path, train_per_class=6, test_per_class=3) -> dict:
    """A fake ``cifar-10-python.tar.gz`` in the real format: pickled dicts, rows of CHW bytes."""
    (x_train, y_train), (x_test, y_test) = make_images(train_per_class, 1), make_images(test_per_class, 2)

    def batch(x, y):
        rows = x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # HWC -> CHW, flattened: 3072 bytes
        return pickle.dumps({b"data": rows, b"labels": [int(v) for v in y.ravel()]})

    with tarfile.open(path, "w:gz") as tar:
        parts = np.array_split(np.arange(len(x_train)), 5)
        blobs = {f"data_batch_{i + 1}": batch(x_train[idx], y_train[idx]) for i, idx in enumerate(parts)}
        blobs["test_batch"] = batch(x_test, y_test)
        blobs["batches.meta"] = pickle.dumps({b"label_names": [c.encode() for c in CLASS_NAMES]})
        for name, blob in blobs.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return {"train": (x_train, y_train), "test": (x_test, y_test)}


def write_image_folder(root: Path, train_per_class=4, test_per_class=2) -> dict:
    """An image-folder tree of lossless PNGs: ``train/<class>/NNNN.png``, ``test/<class>/...``."""
    arrays = {"train": make_images(train_per_class, 3), "test": make_images(test_per_class, 4)}
    for split, (x, y) in arrays.items():
        for i, (img, label) in enumerate(zip(x, y.ravel())):
            folder = root / split / CLASS_NAMES[label]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"{i // 10:04d}.png")
    return arrays


@pytest.fixture
def official_archive(tmp_path):
    path = tmp_path / "cifar-10-python.tar.gz"
    return path, write_official_archive(path)


@pytest.fixture
def image_folder(tmp_path):
    root = tmp_path / "cifar10-images"
    return root, write_image_folder(root)


@pytest.fixture
def image_archive(tmp_path, image_folder):
    root, arrays = image_folder
    path = tmp_path / "cifar10-images.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root, arcname="cifar10")
    return path, arrays


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A private cache for each test, also through the environment variable."""
    path = tmp_path / "cache"
    monkeypatch.setenv("CNNBOOK_CACHE", str(path))
    return path


# --- the book, built once per test session (book, browser, publish and benchmark tests) -------
#
# The build starts in the background as soon as the tests are collected, and the tests that need
# it run last: the unit tests run while the book builds. `pytest -m "not book"` starts no build.

BOOK = Path(__file__).resolve().parents[1] / "book"
JUPYTER_BOOK = str(Path(sys.executable).with_name("jupyter-book"))
# The browser tests' Chromium: the system's (Debian's, which .ci/run installs) or Chrome (GitHub's
# Ubuntu runners); $CHROMIUM wins.
CHROMIUM = os.environ.get("CHROMIUM") or next(
    filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def build(book: Path, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([JUPYTER_BOOK, "build", str(book)], env=env, capture_output=True,
                          text=True, timeout=1800)


class _SessionBuild:
    """The real book, copied and built with the quick profile and a fresh run cache, in the
    background; :meth:`wait` returns what the ``built_book`` fixture gives."""

    def __init__(self, tmp: Path):
        self.book = tmp / "book"
        shutil.copytree(BOOK, self.book, ignore=shutil.ignore_patterns("_build", "*.ipynb"))
        data = os.environ.get("CNNBOOK_DATA")
        if not data or not Path(data).exists():  # no real CIFAR-10 here: a generated look-alike
            data = str(tmp / "images")
            write_image_folder(Path(data), train_per_class=150, test_per_class=50)
        self.env = dict(os.environ, CNNBOOK_PROFILE="quick", CNNBOOK_DATA=data,
                        CNNBOOK_CACHE=str(tmp / "cache"))
        self.log = tmp / "build.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen([JUPYTER_BOOK, "build", str(self.book)], env=self.env,
                                         stdout=log, stderr=subprocess.STDOUT, text=True)

    def wait(self):
        returncode = self.proc.wait(timeout=1800)
        output = self.log.read_text()
        result = subprocess.CompletedProcess(self.proc.args, returncode, output, "")
        assert returncode == 0, output[-10000:]
        return self.book, self.env, result


_session_build: _SessionBuild | None = None
_bench_wanted = False  # some collected test reads the reduced benchmark
_bench_run: "_BenchRun | None" = None


class _BenchRun:
    """``python -m cnnbook bench --reduced --built`` on the session's built book and run cache, in
    its own process, started as soon as the book is built: it runs while the other book tests
    do, and the tests that read it run last. :meth:`wait` returns what ``reduced_bench`` gives."""

    def __init__(self, book: Path, env: dict, work: Path):
        self.out, self.work, self.log = work / "results.json", work / "work", work / "bench.log"
        # pytest and the book build keep this machine busy: the run is allowed, and labelled busy
        # Two rounds of 10 images per class: a check of the command from end to end, not a
        # measurement (the committed benchmark is a plain --reduced run on an idle machine).
        argv = [sys.executable, "-m", "cnnbook", "bench", "--reduced", "--rounds", "2",
                "--train-per-class", "10", "--out", str(self.out),
                "--data", env["CNNBOOK_DATA"], "--book", str(book), "--built",
                "--cache-dir", env["CNNBOOK_CACHE"], "--allow-busy", "--workdir", str(self.work)]
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         text=True)

    def wait(self):
        import json

        returncode = self.proc.wait(timeout=1800)
        printed = self.log.read_text()
        assert returncode == 0, printed[-10000:]
        assert f"Wrote {self.out}" in printed
        return json.loads(self.out.read_text()), printed, self.work / "book"


def _needs_book(item) -> bool:
    return "built_book" in getattr(item, "fixturenames", ())


def _needs_bench(item) -> bool:
    return "reduced_bench" in getattr(item, "fixturenames", ())


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected what will not run
def pytest_collection_modifyitems(session, config, items):
    global _session_build, _bench_wanted
    book = [i for i in items if _needs_book(i) and not _needs_bench(i)]
    bench = [i for i in items if _needs_bench(i)]
    items[:] = [i for i in items if not _needs_book(i) and not _needs_bench(i)] + book + bench
    _bench_wanted = bool(bench)
    if (book or bench) and not config.option.collectonly:
        _session_build = _SessionBuild(config._tmp_path_factory.mktemp("book"))


def pytest_sessionfinish(session):
    for run in (_session_build, _bench_run):
        if run is not None and run.proc.poll() is None:
            run.proc.kill()  # the session ended early (-x, Ctrl-C)


@pytest.fixture(scope="session")
def built_book(tmp_path_factory):
    """The session's quick build of the real book: (book folder, its environment, the build)."""
    global _bench_run
    assert _session_build is not None, "the book build was not started at collection"
    book, env, result = _session_build.wait()
    if _bench_wanted and _bench_run is None:
        _bench_run = _BenchRun(book, env, tmp_path_factory.mktemp("bench"))
    return book, env, result


@pytest.fixture(scope="session")
def reduced_bench(built_book):
    """The reduced benchmark on the session's built book and run cache (started in the background
    by ``built_book``): (its results, its printed summary, its copy of the book after the
    rebuilds)."""
    assert _bench_run is not None, "the benchmark was not started with the book"
    return _bench_run.wait()
