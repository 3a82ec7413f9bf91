"""CIFAR-10 as uint8 arrays, from the official download, a local copy of it, or an image folder.

The source is chosen by the ``source`` argument or, when that is left out, by the environment
variable ``CNNBOOK_DATA``:

* ``keras`` (the default): the official ``cifar-10-python.tar.gz`` through Keras's own download
  and cache (``~/.keras/datasets``), verified against its sha256;
* a path to a local copy of the official archive, or to its extracted ``cifar-10-batches-py/``;
* a path to an image-folder tree, or a ``.tar.gz`` of one: ``train/<class>/*.jpg|png`` and
  ``test/<class>/*``.

Archives are read in memory, never extracted, so an interrupted read leaves nothing behind; only
the members a load needs are read, each within a size limit. The batches are pickles, and unpickled
by a restricted unpickler that rebuilds nothing but the plain arrays, lists and numbers a CIFAR-10
batch holds: a crafted file is refused before anything in it runs. The decoded arrays are kept in
the book's cache (``CNNBOOK_CACHE``) so the next load is instant; a damaged cache entry is decoded
again.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import pickle
import re
import stat
import sys
import tarfile
import tempfile
import time
import warnings
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
# Size limits, checked before anything is read: a real batch is about 31 MB (10,000 x 3,072 bytes
# and the labels and file names), a 32x32 image a few KB.
MAX_BATCH_BYTES = 64 << 20
MAX_IMAGE_BYTES = 1 << 20
# Fingerprints are memoized per file-system signature, except for files changed this recently: a
# second edit within a time stamp's granularity could leave the signature as it was.
_RACY_NS = 2_000_000_000

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
    """Work out which kind of source ``source`` (or ``$CNNBOOK_DATA``) names, without decoding it.

    A folder's fingerprint hashes its content (so it survives a copy and changes with any edit)
    and an archive's is its sha256; both are computed once per process for a given set of file
    sizes and time stamps, so calling this often is cheap.
    """
    if source is None:
        source = os.environ.get(DATA_ENV) or "keras"
    if str(source).strip().lower() in ("keras", "official", "download"):
        return Source("keras", None, f"sha256:{OFFICIAL_SHA256}",
                      "official CIFAR-10 archive, downloaded and sha256-verified by Keras")
    path = Path(source).expanduser()
    try:
        is_dir = stat.S_ISDIR(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        raise DataError(
            f"CIFAR-10 data source {str(path)!r} does not exist. {_FIX_SOURCE}") from None
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if is_dir:
        try:
            official = all((path / name).is_file()
                           for names in _OFFICIAL_BATCHES.values() for name in names)
            images = (path / "train").is_dir() and (path / "test").is_dir()
        except OSError as exc:
            raise _unreadable(path, exc) from exc
        if official:
            return Source("official-folder", path.resolve(), _folder_fingerprint(path),
                          f"official CIFAR-10 batches in the folder {path.name}/")
        if images:
            return Source("image-folder", path.resolve(), _folder_fingerprint(path),
                          f"CIFAR-10 image folder {path.name}/")
        raise DataError(
            f"The folder {str(path)!r} is neither cifar-10-batches-py/ (data_batch_1..5, "
            f"test_batch) nor an image folder (train/<class>/, test/<class>/). {_FIX_SOURCE}")
    digest, official, images = _archive_summary(path)
    short = f"{path.name} (sha256 {digest[:12]})"
    if official:
        if digest == OFFICIAL_SHA256:
            return Source("official-archive", path.resolve(), f"sha256:{digest}",
                          f"official CIFAR-10 archive, local copy {path.name} (sha256 verified)")
        return Source("official-archive", path.resolve(), f"sha256:{digest}",
                      f"CIFAR-10 archive in the official format, {short}, NOT the official "
                      "file's sha256")
    if images:
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
    per_class = {"train": train_per_class, "test": test_per_class}
    arrays = _read_cache(cached, per_class)
    if arrays is not None:
        return CIFAR10(arrays["train"], arrays["test"], CLASS_NAMES, src.description)
    _check_cache_folder(cached.parent)  # before decoding: a cache that cannot be written fails now

    if src.kind in ("keras", "official-archive", "official-folder"):
        path = _download_official(download_dir) if src.kind == "keras" else src.path
        splits = _read_official(path)
        splits = {split: _first_per_class(x, y, per_class[split], split)
                  for split, (x, y) in splits.items()}
    else:
        files = _list_image_folder(src, per_class)
        splits = {split: _decode_image_folder(files[split], n, split)
                  for split, n in per_class.items()}

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
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(
            f"Cannot create Keras's download folder {target.parent} ({exc.strerror or exc}): make "
            "it a writable folder, or set KERAS_HOME (or pass download_dir=) to one.") from exc
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
    where = {}  # batch name -> the file it came from, for the messages
    try:
        is_dir = path.is_dir()
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if is_dir:
        for name in sorted(wanted):
            where[name] = str(path / name)
            blobs[name] = _read_file(path / name, MAX_BATCH_BYTES, _batch_too_big(where[name]))
    else:
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:  # only the headers, until every batch has been read
                    base = member.name.rsplit("/", 1)[-1]
                    if member.isfile() and base in wanted and base not in blobs:
                        where[base] = f"{path.name}: batch {base}"
                        blobs[base] = _read_member(tar, member, MAX_BATCH_BYTES,
                                                   _batch_too_big(where[base]))
                        if len(blobs) == len(wanted):
                            break
        except PermissionError as exc:
            raise _unreadable(path, exc) from exc
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
            x, y = _unpickle_batch(blobs.pop(name), where[name])
            if x.ndim != 2 or x.shape[1] != 3 * 32 * 32 or len(y) != len(x):
                raise DataError(f"{where[name]} holds data of shape {x.shape} and {len(y)} labels; "
                                "CIFAR-10 batches are (N, 3072) with N labels.")
            if y.size and (y.min() < 0 or y.max() >= len(CLASS_NAMES)):
                bad = int(y.max()) if y.max() >= len(CLASS_NAMES) else int(y.min())
                raise DataError(f"{where[name]} has label {bad}; CIFAR-10 labels are 0 to 9. The "
                                "copy is not CIFAR-10: get the official archive.")
            xs.append(x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
            ys.append(y.astype(np.uint8).reshape(-1, 1))
        splits[split] = (np.ascontiguousarray(np.concatenate(xs)), np.concatenate(ys))
    return splits


def _batch_too_big(where: str):
    def message(size: int) -> str:
        return (f"{where} is {size:,} bytes, more than the {MAX_BATCH_BYTES:,} that any CIFAR-10 "
                "batch needs (the real ones are about 31 MB); it was not read. The file is not "
                "the official CIFAR-10: download the official archive again.")
    return message


def _unpickle_batch(blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch's ``(data, labels)``, unpickled by :class:`_BatchUnpickler`, checked."""
    try:
        batch = _BatchUnpickler(io.BytesIO(blob), encoding="bytes").load()
    except _Refused as exc:
        raise DataError(f"{where} {exc}: the file is not the official CIFAR-10 and may be "
                        "malicious; nothing from it was run. Download the official archive "
                        "again.") from None
    except Exception as exc:  # truncated, or not a pickle at all
        raise DataError(f"{where} is not a CIFAR-10 pickle ({type(exc).__name__}: {exc}). "
                        "Download or copy the archive again.") from exc
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        what = (f"a dict with the keys {list(batch)!r}"[:200] if isinstance(batch, dict)
                else f"a {type(batch).__name__}")
        raise DataError(f"{where} is not a CIFAR-10 pickle: it holds {what}, not a dict with "
                        "b'data' and b'labels'. Download or copy the archive again.")
    data, labels = batch[b"data"], batch[b"labels"]
    x = data.array if isinstance(data, _ArrayProxy) else None
    if x is None or x.ndim != 2 or x.dtype.kind not in "biu":
        what = (f"an array of shape {x.shape} and dtype {x.dtype}" if x is not None
                else f"a {type(data).__name__}")
        raise DataError(f"{where} holds {what} as b'data'; CIFAR-10 batches hold an (N, 3072) "
                        "array of uint8 pixels. Download or copy the archive again.")
    if x.dtype != np.uint8 and x.size and (x.min() < 0 or x.max() > 255):
        raise DataError(f"{where} holds pixel values from {x.min()} to {x.max()}; CIFAR-10 pixels "
                        "are 0 to 255. Download or copy the archive again.")
    if isinstance(labels, _ArrayProxy):
        labels = labels.array
    try:
        y = np.asarray(labels)
        ok = y.ndim == 1 and (y.dtype.kind in "iu" or y.size == 0)
    except Exception:
        ok = False
    if not ok:
        raise DataError(f"{where} holds b'labels' that are not a list of whole numbers. Download "
                        "or copy the archive again.")
    return x.astype(np.uint8, copy=False), y.astype(np.int64)


class _Refused(Exception):
    """What a batch asks the unpickler for that a CIFAR-10 batch never contains."""


class _StandIn:
    """What the unpickler hands a batch for one of the few names it may import: a callable that
    the pickle cannot change (a ``BUILD`` on it is refused, and it has no ``__dict__``)."""

    __slots__ = ("_name", "_call")

    def __init__(self, name: str, call):
        self._name, self._call = name, call

    def __call__(self, *args):
        return self._call(*args)

    def __setstate__(self, state):
        raise _Refused(f"tries to change {self._name}, which a CIFAR-10 batch never does")


def _call_ndarray(*args):
    raise _Refused("calls numpy.ndarray directly, which a CIFAR-10 batch never does")


_NDARRAY = _StandIn("numpy.ndarray", _call_ndarray)  # only ever an argument to _reconstruct


class _DtypeProxy:
    """A batch's ``numpy.dtype(...)``: a plain numeric dtype, its byte order set by its state."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype

    def __setstate__(self, state):
        if (not isinstance(state, tuple) or len(state) not in (8, 9) or state[0] not in (3, 4)
                or any(part is not None for part in state[2:5])):
            raise _Refused("asks for a structured or unknown NumPy dtype, which a CIFAR-10 batch "
                           "never contains")
        order = state[1].decode("latin-1") if isinstance(state[1], bytes) else state[1]
        if order in ("<", ">") and self.dtype.itemsize > 1:
            self.dtype = self.dtype.newbyteorder(order)
        elif order not in ("<", ">", "|", "="):
            raise _Refused(f"asks for a NumPy dtype with byte order {order!r}")


def _make_dtype(spec, align=False, copy=True, *rest) -> _DtypeProxy:
    if isinstance(spec, bytes):
        spec = spec.decode("latin-1")
    if not isinstance(spec, str):
        raise _Refused(f"asks for a NumPy dtype described by a {type(spec).__name__}, which a "
                       "CIFAR-10 batch never contains")
    try:
        dtype = np.dtype(spec)
    except Exception:
        raise _Refused(f"asks for the unknown NumPy dtype {spec!r}") from None
    if dtype.hasobject:
        raise _Refused("asks for a NumPy array of Python objects (dtype object), which a CIFAR-10 "
                       "batch never contains")
    if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
        raise _Refused(f"asks for a NumPy array of dtype {dtype}, which a CIFAR-10 batch never "
                       "contains")
    return _DtypeProxy(dtype)


class _ArrayProxy:
    """A batch's array: built from raw bytes by :meth:`__setstate__` (pickle protocols 0 to 4)
    or by :func:`_frombuffer` (protocol 5), never by NumPy's pickling code."""

    __slots__ = ("array",)

    def __init__(self):
        self.array: np.ndarray | None = None

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]  # (version, shape, dtype, is_fortran, data)
        if not isinstance(state, tuple) or len(state) != 4:
            raise _Refused("holds a NumPy array in an unknown layout")
        shape, dtype, fortran, raw = state
        self.fill(raw, dtype, shape, "F" if fortran else "C")

    def fill(self, raw, dtype, shape, order, axis_order=None):
        if not isinstance(dtype, _DtypeProxy):
            raise _Refused("holds a NumPy array without a plain dtype")
        if not isinstance(raw, (bytes, bytearray)):  # a list would be an array of objects
            raise _Refused("holds a NumPy array whose data is not raw bytes (an array of Python "
                           "objects)")
        if (not isinstance(shape, tuple) or len(shape) > 8
                or not all(isinstance(n, int) and n >= 0 for n in shape)):
            raise _Refused(f"holds a NumPy array of shape {shape!r}")
        count = 1
        for n in shape:
            count *= n
        if count * dtype.dtype.itemsize != len(raw):
            raise _Refused(f"holds a NumPy array of shape {shape} with {len(raw):,} bytes of data")
        array = np.frombuffer(raw, dtype.dtype)
        if order in ("C", "F") and axis_order is None:
            self.array = array.reshape(shape, order=order)
        elif (order == "K" and isinstance(axis_order, tuple)
              and sorted(axis_order) == list(range(len(shape)))
              and all(type(a) is int for a in axis_order)):
            self.array = array.reshape(shape, order="C").transpose(axis_order)
        else:
            raise _Refused(f"holds a NumPy array in the unknown memory order {order!r}")


def _reconstruct(subtype, shape, code, *rest) -> _ArrayProxy:
    if subtype is not _NDARRAY:
        raise _Refused("asks to rebuild an array of a type other than numpy.ndarray")
    return _ArrayProxy()


def _latin1(text, encoding="utf-8", *rest) -> bytes:
    """``_codecs.encode(text, "latin1")``: how Python 3 writes bytes at pickle protocols 0 to 2."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or rest:
        raise _Refused(f"asks to encode a {type(text).__name__} as {encoding!r}, which a CIFAR-10 "
                       "batch never does")
    return text.encode("latin-1")


def _frombuffer(buf, dtype, shape, order, axis_order=None) -> _ArrayProxy:
    """NumPy's ``_frombuffer``: how protocol 5 (Python 3.14's default) pickles an array."""
    proxy = _ArrayProxy()
    proxy.fill(buf, dtype, shape, order, axis_order)
    return proxy


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles what the official batches hold, and nothing else.

    Dicts, lists, bytes and numbers need no import. The only imports a batch makes are NumPy's
    ``_reconstruct``, ``ndarray`` and ``dtype`` (``numpy.core`` in the official file, written by
    NumPy 1; ``numpy._core`` when NumPy 2 wrote it; ``_frombuffer`` instead of the first two at
    pickle protocol 5; ``_codecs.encode`` for bytes written by Python 3 at protocols 0 to 2), and
    they are answered by stand-ins that build a plain numeric array from raw bytes: no NumPy
    pickling code sees the file, no array of objects can be made, and any other import is refused
    before it happens.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"): _StandIn("_reconstruct", _reconstruct),
        ("numpy._core.multiarray", "_reconstruct"): _StandIn("_reconstruct", _reconstruct),
        ("numpy.core.numeric", "_frombuffer"): _StandIn("_frombuffer", _frombuffer),
        ("numpy._core.numeric", "_frombuffer"): _StandIn("_frombuffer", _frombuffer),
        ("_codecs", "encode"): _StandIn("_codecs.encode", _latin1),
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _StandIn("numpy.dtype", _make_dtype),
    }

    def find_class(self, module, name):
        try:
            return self._ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise _Refused(f"asks to load {module}.{name}, which a CIFAR-10 batch never "
                           "contains") from None

    def persistent_load(self, pid):
        raise _Refused("asks for a persistent object, which a CIFAR-10 batch never contains")


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


def _list_image_folder(src: Source, per_class: dict[str, int | None]) -> dict[str, dict[str, list]]:
    """``{split: {class: [(file name, load), ...]}}`` sorted by file name, ``load()`` giving an
    image's pixels; checks the classes and the counts. Only the first ``per_class[split]`` images
    of each class can be loaded: from an archive they are the only members read (in archive
    order, within :data:`MAX_IMAGE_BYTES` each) and each is decoded as it is read, so no more
    than one image's bytes are held at a time; from a folder they are read when loaded."""
    if src.kind == "image-folder":
        refs = _folder_refs(src.path)
        _check_image_listing(src.path, refs, per_class)
        return {split: {name: [(filename, functools.partial(_load_image_file, path,
                                                            f"{split}/{name}/{filename}"))
                               for filename, path in entries]
                        for name, entries in classes.items()}
                for split, classes in refs.items()}
    with _open_tar(src.path) as tar:
        try:
            refs = _archive_refs(tar)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise _corrupt_archive(src.path, exc) from exc
        _check_image_listing(src.path, refs, per_class)
        files = {split: {name: [(filename, None) for filename, _ in entries]
                         for name, entries in classes.items()} for split, classes in refs.items()}
        needed = [(member.offset, split, name, i, filename, member)
                  for split, classes in refs.items()
                  for name, entries in classes.items()
                  for i, (filename, member) in enumerate(entries[:_expected(per_class[split],
                                                                            split)])]
        try:
            for _, split, name, i, filename, member in sorted(needed, key=lambda n: n[0]):
                where = f"{split}/{name}/{filename}"
                pixels = _decode_image(
                    _read_member(tar, member, MAX_IMAGE_BYTES, _image_too_big(where)), where)
                files[split][name][i] = (filename, lambda p=pixels: p)
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise _corrupt_archive(src.path, exc) from exc
    return files


def _folder_refs(root: Path) -> dict[str, dict[str, list]]:
    """``{split: {class: [(file name, Path), ...]}}`` of an image folder, unsorted."""
    refs: dict[str, dict[str, list]] = {"train": {}, "test": {}}
    for split, classes in refs.items():
        for rel, entry in _walk(root / split):
            parsed = _split_image_path(f"{split}/{rel}")
            try:
                if parsed and entry.is_file():
                    classes.setdefault(parsed[1], []).append((parsed[2], Path(entry.path)))
            except OSError as exc:
                raise _unreadable(entry.path, exc) from exc
        try:
            class_dirs = [e.name for e in os.scandir(root / split) if e.is_dir()]
        except OSError as exc:
            raise _unreadable(root / split, exc) from exc
        for name in class_dirs:
            classes.setdefault(name, [])
    return refs


def _archive_refs(tar: tarfile.TarFile) -> dict[str, dict[str, list]]:
    """``{split: {class: [(file name, TarInfo), ...]}}`` of an image-folder archive, from its
    headers alone (no member is read), unsorted."""
    refs: dict[str, dict[str, list]] = {"train": {}, "test": {}}
    for member in tar:
        parsed = _split_image_path(member.name)
        if member.isdir():
            parts = member.name.rstrip("/").split("/")
            if len(parts) >= 2 and parts[-2] in refs:
                refs[parts[-2]].setdefault(parts[-1], [])
        elif parsed and member.isfile():
            refs[parsed[0]].setdefault(parsed[1], []).append((parsed[2], member))
    return refs


def _check_image_listing(root: Path, refs: dict, per_class: dict[str, int | None]) -> None:
    """The ten class folders in each split, each with enough images; sorts every class's list
    by file name (numbers in names compared as numbers)."""
    for split, classes in refs.items():
        missing = [c for c in CLASS_NAMES if c not in classes]
        extra = sorted(set(classes) - set(CLASS_NAMES))
        if missing or extra:
            problems = []
            if missing:
                problems.append(f"missing class folder(s) {', '.join(missing)}")
            if extra:
                problems.append(f"extra folder(s) {', '.join(extra)} that are not CIFAR-10 "
                                "classes")
            raise DataError(f"{root.name}: {split}/ has {' and '.join(problems)}. An image "
                            f"folder needs exactly the ten folders {', '.join(CLASS_NAMES)} "
                            "under train/ and test/: rename, add or remove folders to match.")
        for entries in classes.values():
            entries.sort(key=lambda entry: _natural_key(entry[0]))
        _check_counts(classes, per_class[split], split)


def _open_tar(path: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(path, "r:*")
    except PermissionError as exc:
        raise _unreadable(path, exc) from exc
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise _corrupt_archive(path, exc) from exc


def _corrupt_archive(path: Path, exc: BaseException) -> DataError:
    if isinstance(exc, PermissionError):
        return _unreadable(path, exc)
    return DataError(f"{path.name} is truncated or corrupt ({exc}). Copy or download it again.")


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def _expected(n: int | None, split: str) -> int:
    return n or (TRAIN_PER_CLASS if split == "train" else TEST_PER_CLASS)


def _check_counts(classes: dict[str, list], n: int | None, split: str) -> int:
    expected = _expected(n, split)
    wrong = [f"{c} {len(classes[c]):,}" for c in CLASS_NAMES
             if len(classes[c]) < expected or (n is None and len(classes[c]) != expected)]
    if wrong:
        raise DataError(f"{split}/ has the wrong number of images per class ({', '.join(wrong)}); "
                        f"expected {expected:,} each. Restore the missing files, or ask for a "
                        "smaller subset (train_per_class= / test_per_class=).")
    return expected


def _image_too_big(where: str):
    def message(size: int) -> str:
        return (f"{where} is {size:,} bytes, more than the {MAX_IMAGE_BYTES:,} that any 32x32 "
                "image needs; it was not read. Replace or remove that file.")
    return message


def _read_image(path: Path, where: str) -> bytes:
    return _read_file(path, MAX_IMAGE_BYTES, _image_too_big(where))


def _decode_image(blob: bytes, where: str) -> np.ndarray:
    """One image's ``(32, 32, 3)`` pixels.

    Only PNG and JPEG are decoded (whatever the file is called: Pillow would otherwise hand an
    EPS file to Ghostscript), and an image's size and mode are checked before its pixels are
    decoded, so an oversized image (a decompression bomb among them) is refused undecoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(blob), formats=("PNG", "JPEG")) as img:
                if img.size != (32, 32) or img.mode != "RGB":
                    raise DataError(
                        f"{where} is a {img.size[0]}x{img.size[1]} {img.mode} image; CIFAR-10 "
                        "images are 32x32 RGB. Replace or remove that file.")
                img.load()
                pixels = np.asarray(img)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{where} declares a huge image ({exc}): it is not a CIFAR-10 image, and "
                        "may be a decompression bomb; it was not decoded. Replace or remove that "
                        "file.") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{where} is not a readable image ({exc}). Replace or remove that "
                        "file.") from exc
    if pixels.shape != (32, 32, 3) or pixels.dtype != np.uint8:
        raise DataError(f"{where} decodes to pixels of shape {pixels.shape} and dtype "
                        f"{pixels.dtype}; CIFAR-10 images are 32x32 RGB. Replace or remove that "
                        "file.")
    return pixels


def _load_image_file(path: Path, where: str) -> np.ndarray:
    return _decode_image(_read_image(path, where), where)


def _decode_image_folder(classes: dict[str, list], n: int | None, split: str):
    """The first ``n`` images per class, interleaved class by class (0, 1, ..., 9, 0, ...):
    ``classes`` maps each class to its ``(file name, load)`` entries, ``load()`` giving the
    image's pixels (read and decoded then, from a folder; decoded already, from an archive)."""
    expected = _check_counts(classes, n, split)
    images = np.empty((len(CLASS_NAMES), expected, 32, 32, 3), dtype=np.uint8)
    for c, name in enumerate(CLASS_NAMES):
        for i, (_, load) in enumerate(classes[name][:expected]):
            images[c, i] = load()
    labels = np.broadcast_to(np.arange(len(CLASS_NAMES), dtype=np.uint8)[:, None],
                             (len(CLASS_NAMES), expected))
    x = np.ascontiguousarray(images.transpose(1, 0, 2, 3, 4).reshape(-1, 32, 32, 3))
    y = np.ascontiguousarray(labels.T.reshape(-1, 1))
    return x, y


# --- reading files within limits --------------------------------------------------------------

def _unreadable(path, exc: OSError) -> DataError:
    """The message for a source file or folder that cannot be read (permissions, mostly)."""
    where = exc.filename if getattr(exc, "filename", None) else path
    return DataError(f"Cannot read {where} ({exc.strerror or exc}): fix its permissions so this "
                     f"user can read it (e.g. chmod -R u+rX {str(where)!r}), or point {DATA_ENV} "
                     "(source=) at a readable copy.")


def _read_file(path: Path, limit: int, too_big) -> bytes:
    """A file's bytes, refused by size before it is read; at most ``limit + 1`` bytes are read."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                raise DataError(too_big(size))
            blob = f.read(limit + 1)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    if len(blob) > limit:  # it grew since
        raise DataError(too_big(len(blob)))
    return blob


def _read_member(tar: tarfile.TarFile, member: tarfile.TarInfo, limit: int, too_big) -> bytes:
    """An archive member's bytes, refused by its declared size before it is read."""
    if member.size > limit:
        raise DataError(too_big(member.size))
    blob = tar.extractfile(member).read(limit + 1)
    if len(blob) > limit:
        raise DataError(too_big(len(blob)))
    return blob


def _walk(root: Path):
    """``(relative posix path, DirEntry)`` of everything under ``root``, files and folders, in
    sorted order; symbolic links to folders are listed, not followed. Unreadable -> DataError."""
    stack = [(root, "")]
    while stack:
        folder, prefix = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            raise _unreadable(folder, exc) from exc
        subdirs = []
        for entry in entries:
            rel = f"{prefix}{entry.name}"
            yield rel, entry
            try:
                if entry.is_dir(follow_symlinks=False):
                    subdirs.append((Path(entry.path), f"{rel}/"))
            except OSError as exc:
                raise _unreadable(entry.path, exc) from exc
        stack.extend(reversed(subdirs))


# --- fingerprints, memoized per file-system signature -----------------------------------------

_memo: dict[tuple[str, str], tuple[object, object]] = {}  # (kind, path) -> (signature, result)


def _memoized(kind: str, path: Path, signature, newest_ns: int, compute):
    """``compute()``, or its earlier result for the same ``path`` and ``signature``. A result is
    kept only when nothing changed within :data:`_RACY_NS` of the start: an edit in the same time
    stamp tick would otherwise leave the signature as it was."""
    key = (kind, os.path.realpath(path))
    hit = _memo.get(key)
    if hit is not None and hit[0] == signature:
        return hit[1]
    started = time.time_ns()
    result = compute()
    if newest_ns < started - _RACY_NS:
        _memo[key] = (signature, result)
    else:
        _memo.pop(key, None)
    return result


def _archive_summary(path: Path) -> tuple[str, bool, bool]:
    """``(sha256, holds the official batches, holds an image folder)`` of an archive, read once
    per (path, size, time stamps, inode). The kind is the first telling member's (a
    ``data_batch_1``, or an image under ``train/`` or ``test/``): listing every member of a big
    archive takes seconds, and the load that follows lists them anyway."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _unreadable(path, exc) from exc
    signature = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)

    def compute():
        digest = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    digest.update(chunk)
        except OSError as exc:
            raise _unreadable(path, exc) from exc
        official = images = False
        try:
            with tarfile.open(path, "r:*") as tar:
                for member in tar:  # the first telling member decides: no need to list 60,000
                    official = member.name.rsplit("/", 1)[-1] == "data_batch_1"
                    images = _split_image_path(member.name) is not None
                    if official or images:
                        break
        except PermissionError as exc:
            raise _unreadable(path, exc) from exc
        except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
            raise DataError(f"{path.name} is not a readable tar archive ({exc}): it may be "
                            f"truncated or corrupt. Download or copy it again. {_FIX_SOURCE}"
                            ) from exc
        return digest.hexdigest(), official, images

    return _memoized("archive", path, signature, max(st.st_mtime_ns, st.st_ctime_ns), compute)


def _folder_fingerprint(path: Path) -> str:
    """A fingerprint of a folder's content: every file's relative path and bytes, every folder's
    relative path. A copy elsewhere has the same fingerprint; an edit of any file changes it.
    It is computed once per signature: every file's (relative path, size, time stamps)."""
    files, signature, newest = [], [], 0
    for rel, entry in _walk(path):
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            st = entry.stat()  # a symbolic link: what it points at
        except OSError as exc:
            raise _unreadable(entry.path, exc) from exc
        if is_dir:
            files.append((rel, None))
        elif stat.S_ISREG(st.st_mode):
            files.append((rel, entry.path))
        else:
            continue  # sockets, pipes, devices: never read
        signature.append((rel, is_dir, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino))
        if st.st_mtime_ns > newest or st.st_ctime_ns > newest:
            newest = max(st.st_mtime_ns, st.st_ctime_ns)

    def compute():
        digest = hashlib.sha256()
        for rel, file in files:
            if file is None:
                digest.update(f"dir {rel}/\n".encode())
                continue
            content = hashlib.sha256()
            try:
                with open(file, "rb", buffering=0) as f:  # unbuffered: 3x faster on small files
                    while chunk := f.read(1 << 20):
                        content.update(chunk)
            except OSError as exc:
                raise _unreadable(file, exc) from exc
            digest.update(f"file {rel} {content.hexdigest()}\n".encode())
        return f"folder-content:{digest.hexdigest()}"

    return _memoized("folder", path, signature, newest, compute)


# --- the decoded-array cache ------------------------------------------------------------------

_CACHE_KEYS = ("x_train", "y_train", "x_test", "y_test")


def _read_cache(path: Path, per_class: dict[str, int | None]):
    """``{"train": (x, y), "test": (x, y)}`` from the cache, checked; None on a miss. A damaged
    entry is a miss with a note on stderr (and is rewritten once the source is decoded)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if sorted(npz.files) != sorted(_CACHE_KEYS):
                raise ValueError(f"it holds {', '.join(sorted(npz.files)) or 'nothing'}")
            arrays = {name: npz[name] for name in _CACHE_KEYS}
        for split, n in per_class.items():
            x, y, count = arrays[f"x_{split}"], arrays[f"y_{split}"], 10 * _expected(n, split)
            if x.dtype != np.uint8 or y.dtype != np.uint8:
                raise ValueError(f"{split} arrays of dtype {x.dtype} and {y.dtype}, not uint8")
            if x.shape != (count, 32, 32, 3) or y.shape != (count, 1):
                raise ValueError(f"{split} arrays of shape {x.shape} and {y.shape}, not "
                                 f"({count}, 32, 32, 3) and ({count}, 1)")
            if y.size and y.max() >= len(CLASS_NAMES):
                raise ValueError(f"a {split} label {y.max()}")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except Exception as exc:  # truncated, corrupt, or not what this load asks for
        reason = " ".join(str(exc).split()) or type(exc).__name__
        print(f"note: the cached CIFAR-10 arrays {path} are damaged ({reason[:200]}); decoding the "
              "source again", file=sys.stderr)
        return None
    return {split: (arrays[f"x_{split}"], arrays[f"y_{split}"]) for split in per_class}


def _cache_unwritable(folder: Path, reason) -> DataError:
    return DataError(f"Cannot write the decoded CIFAR-10 arrays into the cache folder {folder} "
                     f"({reason}): make it a writable folder with some free space, or set "
                     f"{CACHE_ENV} (or pass cache_dir=) to one.")


def _check_cache_folder(folder: Path) -> None:
    """Fail before decoding when the cache folder cannot be made or written."""
    for candidate in (folder, *folder.parents):
        try:
            st = os.stat(candidate)
        except (FileNotFoundError, NotADirectoryError):  # a file above it is found next
            continue
        except OSError as exc:
            raise _cache_unwritable(folder, f"{candidate}: {exc.strerror or exc}") from exc
        if not stat.S_ISDIR(st.st_mode):
            raise _cache_unwritable(folder, f"{candidate} is a file, not a folder")
        if not os.access(candidate, os.W_OK | os.X_OK):
            raise _cache_unwritable(folder, f"{candidate} is not writable")
        return


def _atomic_savez(path: Path, **arrays) -> None:
    """Write an ``.npz`` under a temporary name, then rename: never a half-written cache file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".npz.partial")
    except OSError as exc:
        raise _cache_unwritable(path.parent, exc.strerror or exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            Path(tmp).unlink(missing_ok=True)
        except OSError:
            pass
        if isinstance(exc, OSError):
            raise _cache_unwritable(path.parent, exc.strerror or exc) from exc
        raise
