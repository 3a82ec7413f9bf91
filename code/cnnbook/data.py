"""CIFAR-10 as uint8 arrays, from the official download, a local copy of it, or an image folder.

The source is chosen by the ``source`` argument or, when that is left out, by the environment
variable ``CNNBOOK_DATA``:

* ``keras`` (the default): the official ``cifar-10-python.tar.gz`` through Keras's own download
  and cache (``~/.keras/datasets``), verified against its sha256;
* a path to a local copy of the official archive, or to its extracted ``cifar-10-batches-py/``;
* a path to an image-folder tree, or a ``.tar.gz`` of one: ``train/<class>/*.jpg|png`` and
  ``test/<class>/*``.

Archives are read in memory, never extracted, so an interrupted read leaves nothing behind. The
decoded arrays are kept in the book's cache (``CNNBOOK_CACHE``) so the next load is instant.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import tarfile
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

DATA_ENV = "CNNBOOK_DATA"
CACHE_ENV = "CNNBOOK_CACHE"

CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
TRAIN_PER_CLASS = 5000  # 50,000 training images in all
TEST_PER_CLASS = 1000  # 10,000 test images in all

OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_FILENAME = "cifar-10-python.tar.gz"
OFFICIAL_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
_OFFICIAL_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_FIX_SOURCE = (
    f"Set {DATA_ENV} (or pass source=) to a local copy of the official {OFFICIAL_FILENAME}, "
    "its extracted cifar-10-batches-py/ folder, or an image-folder tree (or .tar.gz) with "
    "train/<class>/ and test/<class>/."
)


class DataError(ValueError):
    """A data source that cannot be read as CIFAR-10; the message says what to do."""


class CIFAR10(NamedTuple):
    """``(x_train, y_train), (x_test, y_test), class_names, source = load_cifar10()``."""

    train: tuple[np.ndarray, np.ndarray]
    test: tuple[np.ndarray, np.ndarray]
    class_names: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Source:
    """A resolved data source: what kind it is, where it is, and a fingerprint of its content."""

    kind: str  # "keras", "official-archive", "official-folder", "image-archive", "image-folder"
    path: Path | None
    fingerprint: str
    description: str


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The book's cache folder: ``cache_dir``, else ``$CNNBOOK_CACHE``, else ``~/.cache/cnnbook``."""
    if cache_dir is None:
        cache_dir = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cnnbook"
    return Path(cache_dir).expanduser()


def resolve_source(source: str | os.PathLike | None = None) -> Source:
    """Work out which kind of source ``source`` (or ``$CNNBOOK_DATA``) names, without decoding it."""
    if source is None:
        source = os.environ.get(DATA_ENV) or "keras"
    if str(source).strip().lower() in ("keras", "official", "download"):
        return Source("keras", None, f"sha256:{OFFICIAL_SHA256}",
                      "official CIFAR-10 archive, downloaded and sha256-verified by Keras")
    path = Path(source).expanduser()
    if not path.exists():
        raise DataError(f"CIFAR-10 data source {str(path)!r} does not exist. {_FIX_SOURCE}")
    if path.is_dir():
        if all((path / name).is_file() for names in _OFFICIAL_BATCHES.values() for name in names):
            return Source("official-folder", path.resolve(), _folder_fingerprint(path),
                          f"official CIFAR-10 batches in the folder {path.name}/")
        if (path / "train").is_dir() and (path / "test").is_dir():
            return Source("image-folder", path.resolve(), _folder_fingerprint(path),
                          f"CIFAR-10 image folder {path.name}/")
        raise DataError(
            f"The folder {str(path)!r} is neither cifar-10-batches-py/ (data_batch_1..5, "
            f"test_batch) nor an image folder (train/<class>/, test/<class>/). {_FIX_SOURCE}")
    digest = _sha256(path)
    try:
        with tarfile.open(path, "r:*") as tar:
            names = [m.name for m in tar.getmembers()]
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise DataError(f"{path.name} is not a readable tar archive ({exc}): it may be truncated "
                        f"or corrupt. Download or copy it again. {_FIX_SOURCE}") from exc
    short = f"{path.name} (sha256 {digest[:12]})"
    if any(n.rsplit("/", 1)[-1] == "data_batch_1" for n in names):
        if digest == OFFICIAL_SHA256:
            return Source("official-archive", path.resolve(), f"sha256:{digest}",
                          f"official CIFAR-10 archive, local copy {path.name} (sha256 verified)")
        return Source("official-archive", path.resolve(), f"sha256:{digest}",
                      f"CIFAR-10 archive in the official format, {short}, NOT the official "
                      "file's sha256")
    if any(_split_image_path(n) for n in names):
        return Source("image-archive", path.resolve(), f"sha256:{digest}",
                      f"CIFAR-10 image-folder archive {short}")
    raise DataError(f"{path.name} holds neither the official batches (data_batch_1..5, test_batch) "
                    f"nor an image folder (train/<class>/*.jpg, test/<class>/*). {_FIX_SOURCE}")


def load_cifar10(
    source: str | os.PathLike | None = None,
    *,
    train_per_class: int | None = None,
    test_per_class: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    download_dir: str | os.PathLike | None = None,
) -> CIFAR10:
    """Load CIFAR-10 as ``uint8`` images ``(N, 32, 32, 3)`` and labels ``(N, 1)``.

    ``train_per_class`` / ``test_per_class`` keep only the first n images of each class (in the
    source's order: the official archive's, or file-name order in an image folder), which is
    deterministic. ``None`` means all of them (5,000 and 1,000 per class).
    """
    for name, n in (("train_per_class", train_per_class), ("test_per_class", test_per_class)):
        if n is not None and (not isinstance(n, (int, np.integer)) or n < 1):
            raise DataError(f"{name} must be a positive whole number or None, not {n!r}.")
    src = resolve_source(source)
    key = hashlib.sha256(  # v1: the layout of the decoded arrays; bump it when decoding changes
        f"v1|{src.fingerprint}|{train_per_class}|{test_per_class}".encode())
    cached = cache_root(cache_dir) / "data" / f"cifar10-{key.hexdigest()[:20]}.npz"
    if cached.is_file():
        with np.load(cached) as arrays:
            return CIFAR10((arrays["x_train"], arrays["y_train"]),
                           (arrays["x_test"], arrays["y_test"]), CLASS_NAMES, src.description)

    if src.kind in ("keras", "official-archive", "official-folder"):
        path = _download_official(download_dir) if src.kind == "keras" else src.path
        splits = _read_official(path)
        splits = {split: _first_per_class(x, y, n, split) for (split, (x, y)), n in
                  zip(splits.items(), (train_per_class, test_per_class))}
    else:
        files = _list_image_folder(src)
        splits = {split: _decode_image_folder(files[split], n, split) for split, n in
                  (("train", train_per_class), ("test", test_per_class))}

    _atomic_savez(cached, x_train=splits["train"][0], y_train=splits["train"][1],
                  x_test=splits["test"][0], y_test=splits["test"][1])
    return CIFAR10(splits["train"], splits["test"], CLASS_NAMES, src.description)


# --- the official archive ---------------------------------------------------------------------

def _download_official(download_dir) -> Path:
    """Keras's download and cache, checked against the official sha256."""
    import keras

    if download_dir is None:  # Keras's own default: $KERAS_HOME, else ~/.keras
        download_dir = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    cache_dir = Path(download_dir).expanduser()
    target = cache_dir / "datasets" / OFFICIAL_FILENAME
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        return Path(keras.utils.get_file(fname=OFFICIAL_FILENAME, origin=OFFICIAL_URL,
                                         file_hash=OFFICIAL_SHA256, cache_dir=str(cache_dir)))
    except ValueError as exc:  # downloaded, but the checksum does not match: do not keep it
        target.unlink(missing_ok=True)
        raise DataError(
            f"The download from {OFFICIAL_URL} does not match the official sha256 "
            f"{OFFICIAL_SHA256} ({exc}); the partial or altered file was deleted. Try again, or "
            f"{_FIX_SOURCE[0].lower()}{_FIX_SOURCE[1:]}") from exc
    except Exception as exc:  # Keras wraps URL errors in a bare Exception
        target.unlink(missing_ok=True)
        raise DataError(
            f"Could not download CIFAR-10 from {OFFICIAL_URL} ({exc}). No internet here? "
            f"Download {OFFICIAL_FILENAME} (sha256 {OFFICIAL_SHA256}) on a connected machine, "
            f"then: {_FIX_SOURCE}") from exc


def _read_official(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Read the pickled batches from the official archive or its extracted folder."""
    blobs: dict[str, bytes] = {}
    wanted = {name for names in _OFFICIAL_BATCHES.values() for name in names}
    if path.is_dir():
        blobs = {name: (path / name).read_bytes() for name in wanted}
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:
                    base = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and base in wanted:
                        blobs[base] = tar.extractfile(member).read()
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{path.name} is truncated or corrupt ({exc}). Download or copy it "
                            f"again (official sha256 {OFFICIAL_SHA256}).") from exc
    missing = sorted(wanted - blobs.keys())
    if missing:
        raise DataError(f"{path.name} lacks the batch file(s) {', '.join(missing)}: the copy is "
                        f"incomplete. Download or copy it again.")
    splits = {}
    for split, names in _OFFICIAL_BATCHES.items():
        xs, ys = [], []
        for name in names:
            try:
                batch = pickle.loads(blobs[name], encoding="bytes")
                x = np.asarray(batch[b"data"], dtype=np.uint8)
                y = np.asarray(batch[b"labels"], dtype=np.int64)
            except Exception as exc:
                raise DataError(f"{path.name}: batch {name} is not a CIFAR-10 pickle ({exc}). "
                                "Download or copy the archive again.") from exc
            if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(y) != len(x):
                raise DataError(f"{path.name}: batch {name} holds data of shape {x.shape} and "
                                f"{len(y)} labels; CIFAR-10 batches are (N, 3072) with N labels.")
            if y.size and (y.min() < 0 or y.max() >= len(CLASS_NAMES)):
                bad = int(y.max()) if y.max() >= len(CLASS_NAMES) else int(y.min())
                raise DataError(f"{path.name}: batch {name} has label {bad}; CIFAR-10 labels are "
                                "0 to 9. The copy is not CIFAR-10: get the official archive.")
            xs.append(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(y.astype(np.uint8).reshape(-1, 1))
        splits[split] = (np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys))
    return splits


def _first_per_class(x, y, n, split):
    """Keep the first ``n`` images of every class, in the archive's order; check the counts."""
    expected = n or (TRAIN_PER_CLASS if split == "train" else TEST_PER_CLASS)
    counts = np.bincount(y.ravel(), minlength=len(CLASS_NAMES))
    short = [f"{CLASS_NAMES[c]} {counts[c]:,}" for c in range(len(CLASS_NAMES))
             if counts[c] < expected or (n is None and counts[c] != expected)]
    if short:
        raise DataError(f"The {split} split has the wrong number of images per class "
                        f"({', '.join(short)}); expected {expected:,} each. The copy is incomplete "
                        "or not CIFAR-10: get a complete copy, or ask for a smaller subset.")
    if n is None:
        return x, y
    keep = np.sort(np.concatenate([np.flatnonzero(y.ravel() == c)[:n]
                                   for c in range(len(CLASS_NAMES))]))
    return x[keep], y[keep]


# --- image folders ----------------------------------------------------------------------------

def _split_image_path(name: str) -> tuple[str, str, str] | None:
    """``.../train/cat/0001.jpg`` -> ``("train", "cat", "0001.jpg")``; None for anything else."""
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if len(parts) < 3 or parts[-3] not in ("train", "test"):
        return None
    if parts[-1].startswith(".") or not parts[-1].lower().endswith(_IMAGE_SUFFIXES):
        return None
    return parts[-3], parts[-2], parts[-1]


def _list_image_folder(src: Source) -> dict[str, dict[str, list]]:
    """``{split: {class: [(file name, loader), ...]}}`` sorted by file name; checks the classes."""
    files: dict[str, dict[str, list]] = {"train": {}, "test": {}}
    if src.kind == "image-folder":
        for split in files:
            for path in (src.path / split).rglob("*"):
                parsed = _split_image_path(path.relative_to(src.path).as_posix())
                if parsed and path.is_file():
                    files[split].setdefault(parsed[1], []).append((parsed[2], path.read_bytes))
            for entry in (src.path / split).iterdir():
                if entry.is_dir():
                    files[split].setdefault(entry.name, [])
    else:
        try:
            with tarfile.open(src.path, "r:*") as tar:
                for member in tar:
                    parsed = _split_image_path(member.name)
                    if member.isdir():
                        parts = member.name.rstrip("/").split("/")
                        if len(parts) >= 2 and parts[-2] in files:
                            files[parts[-2]].setdefault(parts[-1], [])
                    elif parsed and member.isfile():
                        blob = tar.extractfile(member).read()
                        files[parsed[0]].setdefault(parsed[1], []).append(
                            (parsed[2], lambda b=blob: b))
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{src.path.name} is truncated or corrupt ({exc}). Copy or download "
                            "it again.") from exc
    for split, classes in files.items():
        missing = [c for c in CLASS_NAMES if c not in classes]
        extra = sorted(set(classes) - set(CLASS_NAMES))
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"missing class folder(s) {', '.join(missing)}")
            if extra:
                problems.append(f"extra folder(s) {', '.join(extra)} that are not CIFAR-10 classes")
            raise DataError(f"{src.path.name}: {split}/ has {' and '.join(problems)}. An image "
                            f"folder needs exactly the ten folders {', '.join(CLASS_NAMES)} under "
                            "train/ and test/: rename, add or remove folders to match.")
        for entries in classes.values():
            entries.sort(key=lambda entry: _natural_key(entry[0]))
    return files


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _decode_image_folder(classes: dict[str, list], n: int | None, split: str):
    """Decode the first ``n`` images per class, interleaved class by class (0, 1, ..., 9, 0, ...)."""
    from PIL import Image, UnidentifiedImageError

    expected = n or (TRAIN_PER_CLASS if split == "train" else TEST_PER_CLASS)
    wrong = [f"{c} {len(classes[c]):,}" for c in CLASS_NAMES
             if len(classes[c]) < expected or (n is None and len(classes[c]) != expected)]
    if wrong:
        raise DataError(f"{split}/ has the wrong number of images per class ({', '.join(wrong)}); "
                        f"expected {expected:,} each. Restore the missing files, or ask for a "
                        "smaller subset (train_per_class= / test_per_class=).")
    images = np.empty((len(CLASS_NAMES), expected, 32, 32, 3), dtype=np.uint8)
    for c, name in enumerate(CLASS_NAMES):
        for i, (filename, read) in enumerate(classes[name][:expected]):
            where = f"{split}/{name}/{filename}"
            try:
                with Image.open(io.BytesIO(read())) as img:
                    img.load()
                    if img.size != (32, 32) or img.mode != "RGB":
                        raise DataError(
                            f"{where} is a {img.size[0]}x{img.size[1]} {img.mode} image; CIFAR-10 "
                            "images are 32x32 RGB. Replace or remove that file.")
                    images[c, i] = np.asarray(img)
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                raise DataError(f"{where} is not a readable image ({exc}). Replace or remove "
                                "that file.") from exc
    labels = np.broadcast_to(np.arange(len(CLASS_NAMES), dtype=np.uint8)[:, None],
                             (len(CLASS_NAMES), expected))
    x = np.ascontiguousarray(images.transpose(1, 0, 2, 3, 4).reshape(-1, 32, 32, 3))
    y = np.ascontiguousarray(labels.T.reshape(-1, 1))
    return x, y


# --- small helpers ----------------------------------------------------------------------------

def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _folder_fingerprint(path: Path) -> str:
    """A cheap fingerprint of a folder: every file's relative path and size."""
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{f.relative_to(path).as_posix()}:{f.stat().st_size}\n".encode())
    return f"folder:{digest.hexdigest()}"


def _atomic_savez(path: Path, **arrays) -> None:
    """Write an ``.npz`` under a temporary name, then rename: never a half-written cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz.partial")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
