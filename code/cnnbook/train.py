"""Training runs under a named profile, cached on disk by everything that changes the result.

A run trains as the assignment does (Adam with its defaults, sparse categorical cross-entropy on
logits, batch 32, the test set as validation data) and is stored under
``<cache>/runs/<model>-<profile>-<key>/``, where the key hashes the architecture, the data source
and subset, the profile, the hyper-parameters, the seed and the library versions. Asking again
returns the stored run without training, after checking its files against the sizes and sha256
recorded when it was written (a damaged run is trained again, with a note saying so).

One process trains a run at a time: a lock per run (``filelock``) makes a second process, a second
book build or a CLI run beside a build, wait for the first and then load its finished run. A run
that is killed, crashes or fills the disk resumes from its last finished epoch: every epoch ends
with a checkpoint (weights, optimizer state and the history so far) written under a temporary
name and renamed into place, with its sha256 recorded, so an interruption leaves the previous
checkpoint intact; one that cannot be verified is discarded and the run starts over, with a note
saying why. Each epoch's shuffling order is drawn from the seed and the epoch number, so a resumed
run is the same run as one that was never interrupted. Only a finished run is renamed into place.

The images stay in memory as ``uint8`` (a quarter of float32's memory, an eighth of float64's) and
are scaled to [0, 1] one batch at a time in a ``tf.data`` pipeline that prefetches the next batch
while the model trains on this one (:func:`book_datasets`). What the model sees is the same as the
assignment's ``x / 255.0``; only the shuffling order differs (:func:`shuffle_order`), so the run
key records the pipeline.
``precision="mixed_bfloat16"`` computes the convolutions in bfloat16 with float32 weights (Keras
mixed precision) and the dense head in float32: an explicit option, never on by default, for CPUs
with AVX512_BF16 or AMX and for recent GPUs.

Keras callbacks that change what is trained (``EarlyStopping``, ``ReduceLROnPlateau``,
``TerminateOnNaN``) are part of the run key, through their settings; a run that one of them stops
early records the epochs it trained and says it stopped early. Other callbacks only watch (they
are not in the key); one that stops training, or one whose effect cannot be recorded (a learning
rate schedule), is refused with an error saying what to do (see :func:`train`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import errno
import hashlib
import io
import json
import math
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import pandas as pd
from filelock import FileLock, Timeout

from . import data as _data
from . import models as _models

PROFILE_ENV = "CNNBOOK_PROFILE"
DEFAULT_PROFILE = "full"
# How the images reach the model; part of the run key, since the shuffling order changes results.
PIPELINE = ("tf.data: uint8 in memory, epoch e in the order of shuffle_order(n, seed, e), scaled "
            "/255 per batch, prefetched")
# Keras dtype policies a run may use, and what each means for the book's models.
PRECISIONS = {
    "float32": "float32 throughout",
    "mixed_bfloat16": "convolutions compute in bfloat16 (weights kept in float32); the dense "
                      "head computes in float32",
}
DEFAULT_PRECISION = "float32"
# Keras callbacks that change a run's result, and the settings of each that the run key records.
KEYED_CALLBACKS = {
    "EarlyStopping": ("monitor", "min_delta", "patience", "mode", "baseline",
                      "restore_best_weights", "start_from_epoch"),
    "ReduceLROnPlateau": ("monitor", "min_delta", "patience", "mode", "factor", "cooldown",
                          "min_lr"),
    "TerminateOnNaN": (),
}
# Keras callbacks that change the result in a way a run key cannot record: refused.
REFUSED_CALLBACKS = {
    "LearningRateScheduler": "its schedule is a Python function, which a run key cannot record",
    "BackupAndRestore": "the book's runs already checkpoint every epoch and resume by themselves",
    "SwapEMAWeights": "it swaps the weights the run evaluates and stores",
}
# Training steps per call into the compiled function: fewer Python round trips, same arithmetic.
STEPS_PER_EXECUTION = 16


class ConfigError(ValueError):
    """A training setting that cannot work; the message names it."""


class ProfileError(ConfigError):
    """An unknown profile name."""


class CacheError(OSError):
    """The run cache cannot be written (no space, no permission, a file in the way)."""

    def __init__(self, code: int | None, message: str):
        super().__init__(message)  # str() is the message alone, with no "[Errno n]" before it
        self.errno = code


# Files a finished run holds; result.json records the size and sha256 of the other two.
RUN_FILES = ("history.csv", "model.weights.h5", "result.json")
# Bumped when result.json's layout changes: an older one is trained again, never misread.
RESULT_FORMAT = 2
# What a seed may be: NumPy's and Keras's seeds are unsigned 32-bit numbers.
MAX_SEED = 2**32 - 1


@dataclass(frozen=True)
class Profile:
    """How much data and how many epochs a run uses."""

    name: str
    epochs: int
    train_per_class: int | None  # None: all 5,000 per class
    test_per_class: int | None  # None: all 1,000 per class
    purpose: str

    @property
    def description(self) -> str:
        """``"50,000 training and 10,000 test images, 15 epochs: the assignment's setup"``."""
        n_train = 10 * (self.train_per_class or _data.TRAIN_PER_CLASS)
        n_test = 10 * (self.test_per_class or _data.TEST_PER_CLASS)
        return (f"{n_train:,} training and {n_test:,} test images, {self.epochs} epochs: "
                f"{self.purpose}")


PROFILES = {
    # The assignment's setup: 50,000 training and 10,000 test images, 15 epochs.
    "full": Profile("full", 15, None, None, "the assignment's setup"),
    # A preview for quick builds and CI: 1,500 training and 500 test images, 3 epochs (small
    # enough that the test suite's quick build of the whole book fits in CI's time).
    "quick": Profile("quick", 3, 150, 50, "a preview, not the assignment's setup"),
}


def get_profile(name: str | Profile | None = None) -> Profile:
    """The profile named by ``name``, else by ``$CNNBOOK_PROFILE``, else ``full``."""
    if isinstance(name, Profile):
        return name
    name = name or os.environ.get(PROFILE_ENV) or DEFAULT_PROFILE
    try:
        return PROFILES[name.strip().lower()]
    except KeyError:
        raise ProfileError(f"Unknown profile {name!r} (from the argument or ${PROFILE_ENV}): "
                         f"choose one of {', '.join(PROFILES)}.") from None


@dataclass
class RunResult:
    """One finished training run: its history, timings, test metrics and provenance."""

    model_name: str
    history: dict[str, list[float]]  # loss, accuracy, val_loss, val_accuracy per epoch
    epoch_seconds: list[float]  # wall time of each epoch, validation included
    test_loss: float
    test_accuracy: float
    provenance: dict
    run_dir: Path
    from_cache: bool = False
    config: dict = field(default_factory=dict)

    @property
    def epochs(self) -> int:
        return len(self.epoch_seconds)

    def load_model(self) -> keras.Model:
        """Rebuild the model (in the precision it trained in) and load the trained weights."""
        model = build_model(self.model_name, self.config.get("precision", DEFAULT_PRECISION))
        model.load_weights(self.run_dir / "model.weights.h5")
        return model

    def describe(self) -> str:
        """A few lines saying what this result is and where it came from."""
        p = self.provenance
        hw = p["hardware"]
        gpu = f", GPU {', '.join(hw['gpus'])}" if hw["gpus"] else ", no GPU"
        how = ("loaded from the run cache, not retrained" if self.from_cache
               else "trained now")
        precision = self.config.get("precision", DEFAULT_PRECISION)
        in_precision = "" if precision == DEFAULT_PRECISION else f" in {precision}"
        stop = p.get("stopped_early")
        kept = p.get("restored_epoch")
        epochs = (f"{self.epochs} epoch{'s' * (self.epochs != 1)}"
                  + (f", weights of epoch {kept} restored by EarlyStopping" if kept else "")
                  if not stop else
                  f"stopped early by {' and '.join(stop['by'])} after {self.epochs} of "
                  f"{self.config['epochs']} epochs"
                  + (f", weights of epoch {stop['restored_epoch']} restored"
                     if stop.get("restored_epoch") else ""))
        keyed = self.config.get("callbacks")
        return "\n".join([
            f"{_models.TITLES.get(self.model_name, self.model_name)}{in_precision}: {how}",
            f"  profile {p['profile']}: {p['train_images']:,} training / {p['test_images']:,} "
            f"test images, {epochs}, seed {p['seed']}",
        ] + ([f"  callbacks: {', '.join(callback_text(c) for c in keyed)}"] if keyed else []) + [
            f"  data: {p['data_source']}",
            f"  trained {p['date'][:10]} on {hw['cpu']} ({hw['cores']} cores{gpu}) in "
            f"{p['wall_seconds']:.0f} s",
            f"  test accuracy {self.test_accuracy:.4f}, test loss {self.test_loss:.4f}",
        ] + ([f"  resumed at epoch {p['resumed_from_epoch'] + 1} after an interruption (the "
              "epochs before it came from a checkpoint)"] if p.get("resumed_from_epoch") else []))


def run_config(model_name: str, profile: str | Profile | None = None, *, data_source=None,
               epochs: int | None = None, train_per_class: int | None = None,
               test_per_class: int | None = None, batch_size: int = 32,
               learning_rate: float = 0.001, seed: int = 0,
               precision: str = DEFAULT_PRECISION, callbacks: list | None = None) -> dict:
    """Everything that changes a run's result, as a plain dict (the cache key hashes it).

    Of ``callbacks``, those that change the result (:data:`KEYED_CALLBACKS`) are recorded under
    ``"callbacks"`` with their settings; without any, the key has no such entry.
    """
    prof = get_profile(profile)
    if precision not in PRECISIONS:
        raise ConfigError(f"Unknown precision {precision!r}: choose one of "
                          f"{', '.join(PRECISIONS)}.")
    _check_whole("seed", seed, 0, MAX_SEED)
    for name, n, most in (("train_per_class", train_per_class, _data.TRAIN_PER_CLASS),
                          ("test_per_class", test_per_class, _data.TEST_PER_CLASS)):
        if n is not None:
            _check_whole(name, n, 1, most)
    if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) \
            or not math.isfinite(learning_rate) or learning_rate <= 0:
        raise ConfigError(f"learning_rate must be a positive number, not {learning_rate!r}.")
    if model_name not in _models.MODELS:
        raise ConfigError(f"Unknown model {model_name!r}: choose one of "
                          f"{', '.join(_models.MODELS)}.")
    model = _models.build_model(model_name)
    source = _data.resolve_source(data_source)
    config = {
        "model": model_name,
        "architecture": [(type(layer).__name__, _without_name(layer.get_config()))
                         for layer in model.layers],
        "profile": prof.name,
        "data": source.fingerprint,
        "train_per_class": train_per_class if train_per_class is not None
        else prof.train_per_class,
        "test_per_class": test_per_class if test_per_class is not None else prof.test_per_class,
        "epochs": epochs if epochs is not None else prof.epochs,
        "batch_size": batch_size,
        "optimizer": {"name": "adam", "learning_rate": learning_rate},  # Keras defaults otherwise
        "loss": "sparse_categorical_crossentropy(from_logits=True)",
        "seed": seed,
        "pipeline": PIPELINE,
        "precision": precision,
        "precision_detail": PRECISIONS[precision],
        "versions": {"keras": keras.__version__, "tensorflow": _tf_version()},
    }
    keyed = keyed_callbacks(callbacks)
    if keyed:
        config["callbacks"] = keyed
    for key in ("epochs", "batch_size"):
        value = config[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{key} must be a positive whole number, not {value!r}.")
    return config


def _is_keras(callback, names) -> bool:
    """Whether ``callback`` is one of Keras's own callbacks named in ``names`` (not a subclass)."""
    return type(callback).__name__ in names and type(callback).__module__.startswith("keras")


def keyed_callbacks(callbacks: list | None) -> list[dict]:
    """The settings of those ``callbacks`` that change a run's result, for its run key.

    A ConfigError for something that is not a Keras callback, and for a callback whose effect a
    run key cannot record (:data:`REFUSED_CALLBACKS`).
    """
    if callbacks is None:
        return []
    if isinstance(callbacks, keras.callbacks.Callback) or not isinstance(callbacks,
                                                                         (list, tuple)):
        raise ConfigError(f"callbacks must be a list of Keras callbacks, not {callbacks!r}.")
    keyed = []
    for callback in callbacks:
        if not isinstance(callback, keras.callbacks.Callback):
            raise ConfigError(f"callbacks must hold Keras callbacks, not {callback!r}.")
        kind = type(callback).__name__
        if _is_keras(callback, REFUSED_CALLBACKS):
            raise ConfigError(
                f"{kind} cannot be used in a cached run: {REFUSED_CALLBACKS[kind]}. Train "
                "with Keras directly (cnnbook.train.compiled_model and book_datasets) for it.")
        if _is_keras(callback, KEYED_CALLBACKS):
            settings = {}
            for name in KEYED_CALLBACKS[kind]:
                value = getattr(callback, name)
                settings[name] = value.item() if isinstance(value, np.generic) else value
            keyed.append({"callback": kind, **settings})
    return keyed


def callback_text(entry: dict) -> str:
    """``EarlyStopping(monitor='val_loss', patience=2, ...)``: a keyed callback, as written."""
    args = ", ".join(f"{k}={v!r}" for k, v in entry.items() if k != "callback")
    return f"{entry['callback']}({args})"


def _check_whole(name: str, value, low: int, high: int) -> None:
    """A ConfigError unless ``value`` is a whole number from ``low`` to ``high``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) \
            or not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low:,} to {high:,}, not "
                          f"{value!r}.")


def run_key(config: dict) -> str:
    """The cache key of a run: a hash of its configuration."""
    blob = json.dumps(config, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def train(model_name: str, profile: str | Profile | None = None, *, data_source=None,
          epochs: int | None = None, train_per_class: int | None = None,
          test_per_class: int | None = None, batch_size: int = 32, learning_rate: float = 0.001,
          seed: int = 0, precision: str = DEFAULT_PRECISION, force: bool = False,
          cache_dir=None, verbose: int = 2, callbacks: list | None = None) -> RunResult:
    """Train ``model_name`` ("conv" or "pool") under a profile, or return the cached run.

    ``precision="mixed_bfloat16"`` trains in bfloat16 mixed precision (a separate cached run).
    ``force=True`` trains again and replaces the cached run (unless another process was training
    the same run: then its fresh result is returned). ``verbose=2`` prints one line per epoch.

    Extra Keras ``callbacks`` are added after the book's own. Those that change what is trained,
    ``EarlyStopping``, ``ReduceLROnPlateau`` and ``TerminateOnNaN``, are part of the run key with
    their settings: ``callbacks=[keras.callbacks.EarlyStopping(patience=2)]`` is a run of its own,
    trained once and cached like any other, never the run without it. A run that one of them
    stops early is stored with the epochs it trained (``result.epochs``, fewer than ``epochs``),
    and its ``provenance["stopped_early"]`` (and :meth:`RunResult.describe`) says which callback
    stopped it, after how many epochs, and which epoch's weights ``restore_best_weights``
    restored; the test metrics are those of the weights the run ends with. A killed run with
    ``EarlyStopping`` or ``ReduceLROnPlateau`` starts over rather than resuming, since their
    state (the best value so far, the epochs waited) is not checkpointed.

    Any other callback must only watch (progress, logging, counting): it is not in the key. One
    that stops training anyway is refused after the epoch it stopped (a RuntimeError; nothing is
    stored), and ``LearningRateScheduler``, ``BackupAndRestore`` and ``SwapEMAWeights`` are
    refused before training (a ConfigError), since the key cannot record what they change.
    """
    config = run_config(model_name, profile, data_source=data_source, epochs=epochs,
                        train_per_class=train_per_class, test_per_class=test_per_class,
                        batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                        precision=precision, callbacks=callbacks)
    runs = _data.cache_root(cache_dir) / "runs"
    final = runs / f"{model_name}-{config['profile']}-{run_key(config)}"
    if not force:  # the common case needs no lock, and works in a read-only cache
        cached = _cached_run(final, config)
        if cached is not None:
            return cached
    _writable_folder(runs)
    with _run_lock(runs, final.name) as waited:
        _tidy(runs, final, config)
        if not force or waited:
            cached = _cached_run(final, config, discard_damaged=True)
            if cached is not None:
                return cached
        work = runs / f".partial-{final.name}"
        if force and not waited and work.exists():
            shutil.rmtree(work)  # a forced retrain starts over, not from an old checkpoint
        try:
            return _train_now(config, final, work, data_source=data_source, cache_dir=cache_dir,
                              verbose=verbose, callbacks=callbacks)
        except OSError as exc:
            fix = f"set {_data.CACHE_ENV} (--cache-dir) to"
            if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
                raise CacheError(exc.errno, f"The run cache {runs} ran out of space "
                                 f"({os.strerror(exc.errno)}): free some space, or {fix} a "
                                 "folder with room, and run again; the run resumes from its "
                                 "last finished epoch.") from exc
            if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise CacheError(exc.errno, f"The run cache {runs} cannot be written "
                                 f"({os.strerror(exc.errno)}: {exc.filename}): fix its "
                                 f"permissions, or {fix} a writable folder.") from exc
            raise


def _train_now(config: dict, final: Path, work: Path, *, data_source, cache_dir, verbose,
               callbacks) -> RunResult:
    """Train (or resume) the run in ``work`` and publish it as ``final``; the lock is held."""
    dataset = _data.load_cifar10(data_source, train_per_class=config["train_per_class"],
                                 test_per_class=config["test_per_class"], cache_dir=cache_dir)
    (x_train, y_train), (x_test, y_test) = dataset.train, dataset.test
    epochs, batch_size, seed = config["epochs"], config["batch_size"], config["seed"]

    keras.utils.set_random_seed(seed)
    model = compiled_model(config["model"], learning_rate=config["optimizer"]["learning_rate"],
                           precision=config["precision"])
    checkpoint = _Checkpoint(work, config)
    stateful = [c["callback"] for c in config.get("callbacks", [])
                if c["callback"] in ("EarlyStopping", "ReduceLROnPlateau")]
    if stateful and checkpoint.state.is_file():
        print(f"note: starting {final.name} over: the state of its {' and '.join(stateful)} is "
              "not checkpointed, so it cannot resume.", flush=True)
        shutil.rmtree(work)
    first_epoch = checkpoint.restore(model)  # creates work/ only now: bad settings leave nothing
    shuffle = EpochShuffle()
    train_data, test_data = book_datasets(dataset.train, dataset.test, batch_size=batch_size,
                                          seed=seed, epochs=epochs, shuffle=shuffle)
    start = time.perf_counter()
    if first_epoch < epochs:
        model.fit(train_data, epochs=epochs, initial_epoch=first_epoch,
                  validation_data=test_data, shuffle=False, verbose=verbose,
                  callbacks=[shuffle, _EpochTimer(), checkpoint] + list(callbacks or []))
    wall = time.perf_counter() - start
    test_loss, test_accuracy = model.evaluate(test_data, verbose=0)

    rows = checkpoint.rows
    # Keras's EarlyStopping(restore_best_weights=True) puts the best epoch's weights back when
    # training ends, whether it stopped early or not: the run records which epoch it kept.
    restored = [c.best_epoch + 1 for c in callbacks or [] if _is_keras(c, ("EarlyStopping",))
                and c.restore_best_weights and c.best_weights is not None]
    stopped_early = None
    if len(rows) != epochs:
        stoppers = [type(c).__name__ for c in callbacks or []
                    if _is_keras(c, ("EarlyStopping", "TerminateOnNaN"))]
        if not stoppers or not 1 <= len(rows) < epochs:  # not the run asked for
            raise RuntimeError(
                f"Training stopped after {len(rows)} of {epochs} epochs, but no callback in the "
                "run key stops training (did a callback set model.stop_training?), so no run "
                f"was stored; its checkpoint stays in {work}, and the next call resumes from "
                "it. Pass only callbacks that watch, or stop with "
                "keras.callbacks.EarlyStopping, which the run key records.")
        stopped_early = {"by": stoppers, "epochs_trained": len(rows),
                         "restored_epoch": restored[0] if restored else None}
    seconds = [row["epoch_seconds"] for row in rows]
    history = {k: [row[k] for row in rows] for k in HISTORY_KEYS}
    provenance = {
        "profile": config["profile"],
        "data_source": dataset.source,
        "train_images": int(len(x_train)),
        "test_images": int(len(x_test)),
        "seed": seed,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": float(sum(seconds)) if first_epoch else wall,
        "resumed_from_epoch": first_epoch or None,  # epochs 0..first_epoch-1 came from a checkpoint
        **({"stopped_early": stopped_early} if stopped_early else {}),
        **({"restored_epoch": restored[0]}  # all epochs trained, an earlier one's weights kept
           if restored and not stopped_early and restored[0] != len(rows) else {}),
        "versions": {"python": platform.python_version(), "tensorflow": _tf_version(),
                     "keras": keras.__version__, "numpy": np.__version__},
        "hardware": hardware(),
    }
    _atomic_save_weights(model, work / "model.weights.h5")
    _atomic_write(work / "history.csv",
                  pd.DataFrame(rows, columns=["epoch", *HISTORY_KEYS, "epoch_seconds"])
                  .to_csv(index=False).encode())
    result = {"format": RESULT_FORMAT, "model_name": config["model"], "history": history,
              "epoch_seconds": seconds, "test_loss": float(test_loss),
              "test_accuracy": float(test_accuracy), "provenance": provenance, "config": config,
              "files": {name: _file_record(work / name) for name in RUN_FILES[:2]}}
    # result.json is written last: a folder with a valid one is a finished run
    _atomic_write(work / "result.json", json.dumps(result, indent=1, default=str).encode())
    checkpoint.remove()
    _publish(work, final)
    return _load_result(final, config, from_cache=False)


def build_model(model_name: str, precision: str = DEFAULT_PRECISION) -> keras.Model:
    """One of the book's models, its layers computing in ``precision`` (weights stay float32)."""
    if precision not in PRECISIONS:
        raise ConfigError(f"Unknown precision {precision!r}: choose one of "
                          f"{', '.join(PRECISIONS)}.")
    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(precision)
    try:
        model = _models.build_model(model_name)
    finally:
        keras.config.set_dtype_policy(before)  # the rest of the session keeps its own policy
    if precision != "float32":
        # The dense head holds most of the weights but under 1 % of the FLOPs; in float32 it
        # costs nothing measurable. With it in bfloat16 too, the full-profile run (seed 0) stalled
        # at chance: its ReLUs died in the first epoch.
        for layer in model.layers:
            if isinstance(layer, keras.layers.Dense):
                layer.dtype_policy = "float32"
    return model


def compiled_model(model_name: str, *, learning_rate: float = 0.001,
                   precision: str = DEFAULT_PRECISION,
                   steps_per_execution: int = STEPS_PER_EXECUTION,
                   jit_compile: bool = False) -> keras.Model:
    """A new model compiled as the book trains it: Adam, cross-entropy on logits, accuracy.

    The loss is computed in float32 even in mixed precision (Keras casts the logits), so no
    float32 output layer is added and the architecture stays the assignment's. XLA
    (``jit_compile=True``) is off: on the book's 2-core CPU it was measured slower (``bench``).
    """
    model = build_model(model_name, precision)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], steps_per_execution=steps_per_execution,
                  jit_compile=jit_compile)
    return model


def shuffle_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order in which epoch ``epoch`` visits ``n`` training images: a permutation drawn from
    ``(seed, epoch)`` alone, so an epoch trained after a resume sees what it would have seen."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Batches in one epoch of ``n`` images (the last one may be smaller)."""
    return -(-n // batch_size)


class EpochShuffle(keras.callbacks.Callback):
    """Tells the training dataset of :func:`book_datasets` which epoch begins, so that it visits
    the images in that epoch's :func:`shuffle_order`. Pass it to ``fit`` with the dataset."""

    def __init__(self):
        super().__init__()
        import tensorflow as tf

        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch.assign(epoch)


def book_datasets(train, test, *, batch_size: int = 32, seed: int = 0, epochs: int = 1,
                  shuffle: EpochShuffle | None = None):
    """The book's input pipeline: ``(train, test)`` ``tf.data`` datasets of scaled batches.

    ``train`` and ``test`` are ``(x, y)`` pairs with ``x`` as uint8 images. The images stay uint8
    in memory; each batch is gathered by index, converted to float32 and divided by 255 (the
    assignment's normalisation), while the next batch is prepared in the background. Each pass
    over the training dataset follows :func:`shuffle_order` for the epoch ``shuffle`` holds
    (``fit`` with ``callbacks=[shuffle]`` sets it as each epoch begins; without one, every pass is
    epoch 0's order); ``epochs`` is how many epochs' orders to prepare. The test set keeps its
    order.
    """
    import tensorflow as tf

    for x, _ in (train, test):
        if np.asarray(x).dtype != np.uint8:
            raise ConfigError(f"book_datasets expects uint8 images (0..255), not "
                              f"{np.asarray(x).dtype}: pass the arrays load_cifar10() returns.")
    n = len(train[0])
    orders = tf.constant(np.stack([shuffle_order(n, seed, e) for e in range(epochs)]))
    epoch = (shuffle or EpochShuffle()).epoch

    def this_epoch(_):  # runs when a pass begins, so it reads the epoch fit has just set
        return tf.data.Dataset.from_tensor_slices(tf.gather(orders, epoch))

    def batches(x, y, order, count):
        images, labels = tf.constant(x), tf.constant(y)

        def scale(index):
            return (tf.cast(tf.gather(images, index), tf.float32) / 255.0,
                    tf.gather(labels, index))

        return (order.batch(batch_size)
                .apply(tf.data.experimental.assert_cardinality(steps_per_epoch(count, batch_size)))
                .map(scale, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))

    train_order = tf.data.Dataset.range(1).flat_map(this_epoch)
    test_order = tf.data.Dataset.range(len(test[0]))
    return (batches(*train, train_order, n), batches(*test, test_order, len(test[0])))


def hardware() -> dict:
    """The CPU model, its core count and any GPUs TensorFlow sees."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import tensorflow as tf

        gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    except ImportError:
        gpus = []
    return {"cpu": cpu, "cores": os.cpu_count(), "gpus": gpus, "system": platform.system()}


class _EpochTimer(keras.callbacks.Callback):
    """Times each epoch, validation included, and puts the seconds into the epoch's logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["epoch_seconds"] = time.perf_counter() - self._start


HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


class _Checkpoint(keras.callbacks.Callback):
    """The state of an unfinished run, saved at the end of every epoch so a kill loses one epoch.

    ``<work>/checkpoint.json`` names the state file of the last finished epoch (the model's
    weights and the optimizer's variables, as Keras's ``get_weights`` and ``variables`` give them,
    in an ``.npz``) with its size and sha256, and holds the history of every finished epoch. Both
    are written under temporary names and renamed into place, the state first, so an interruption
    at any point leaves the previous checkpoint whole. (Keras's ``BackupAndRestore`` rewrites its
    files in place and records the epoch after the weights, so a kill or a full disk between the
    two leaves a backup that fails to load or restarts at the wrong epoch; and an HDF5 write that
    fails on a full disk can crash the process when it exits, which a plain file write does not.)
    """

    def __init__(self, work: Path, config: dict):
        super().__init__()
        self.work, self.config, self.rows = work, config, []
        self.state = work / "checkpoint.json"

    def restore(self, model: keras.Model) -> int:
        """Load the last checkpoint into ``model``; the epoch to start from (0: from scratch)."""
        if self.work.exists():
            for stray in self.work.glob(".tmp-*"):  # a write that was interrupted
                stray.unlink()
        if not self.state.is_file():
            if self.work.exists() and any(self.work.iterdir()):
                print(f"note: starting {self.work.name[len('.partial-'):]} over: the interrupted "
                      "run saved no finished epoch.", flush=True)
                shutil.rmtree(self.work)
            self.work.mkdir(parents=True, exist_ok=True)
            return 0
        try:
            state = json.loads(self.state.read_text())
            epoch, rows, weights = state["epoch"], state["rows"], state["weights"]
            if state["config"] != _jsonable(self.config):
                raise ValueError("it belongs to another configuration")
            if not 1 <= epoch <= self.config["epochs"] or [r["epoch"] for r in rows] != list(
                    range(epoch)) or any(set(r) != {"epoch", *HISTORY_KEYS, "epoch_seconds"}
                                         for r in rows):
                raise ValueError(f"its history does not match its epoch {epoch!r}")
            _check_file(self.work / weights["name"], weights)
            _load_state(model, self.work / weights["name"])
        except Exception as exc:  # noqa: BLE001 - whatever is wrong, the fix is to start over
            print(f"note: starting {self.work.name[len('.partial-'):]} over: its checkpoint "
                  f"cannot be used ({_reason(exc)}).", flush=True)
            shutil.rmtree(self.work)
            self.work.mkdir(parents=True)
            return 0
        self.rows = rows
        saved = "epoch 1 was" if epoch == 1 else f"epochs 1 to {epoch} were"
        print(f"note: resuming an interrupted run at epoch {epoch + 1} of "
              f"{self.config['epochs']} ({saved} checkpointed).", flush=True)
        return epoch

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [
            {"epoch": epoch, **{k: float(logs[k]) for k in HISTORY_KEYS},
             "epoch_seconds": float(logs["epoch_seconds"])}]
        name = f"epoch-{epoch + 1}.npz"
        _atomic_write(self.work / name, _state_blob(self.model))
        state = {"epoch": epoch + 1, "weights": _file_record(self.work / name),
                 "rows": self.rows, "config": _jsonable(self.config)}
        _atomic_write(self.state, json.dumps(state, indent=1).encode())
        for old in self.work.glob("epoch-*.npz"):
            if old.name != name:
                old.unlink()

    def remove(self) -> None:
        """Delete the checkpoint once the finished run's own files are written."""
        self.state.unlink(missing_ok=True)
        for old in self.work.glob("epoch-*.npz"):
            old.unlink()


def _state_blob(model: keras.Model) -> bytes:
    """The model's weights and the optimizer's variables (Adam's moments and step), as ``.npz``."""
    buffer = io.BytesIO()
    np.savez(buffer, **{f"model_{i}": w for i, w in enumerate(model.get_weights())},
             **{f"optimizer_{i}": np.asarray(v) for i, v in enumerate(model.optimizer.variables)})
    return buffer.getvalue()


def _load_state(model: keras.Model, path: Path) -> None:
    """Put the state :func:`_state_blob` saved back into ``model`` and its optimizer."""
    model.optimizer.build(model.trainable_variables)
    variables = model.optimizer.variables
    with np.load(path, allow_pickle=False) as stored:
        n_model = len(model.get_weights())
        if set(stored.files) != {f"model_{i}" for i in range(n_model)} | {
                f"optimizer_{i}" for i in range(len(variables))}:
            raise ValueError(f"{path.name} does not hold this model's and optimizer's variables")
        model.set_weights([stored[f"model_{i}"] for i in range(n_model)])
        for i, variable in enumerate(variables):
            value = stored[f"optimizer_{i}"]
            if value.shape != tuple(variable.shape):
                raise ValueError(f"{path.name}: optimizer variable {variable.path} has shape "
                                 f"{value.shape}, expected {tuple(variable.shape)}")
            variable.assign(value)


def _room_for(folder: Path, nbytes: int) -> None:
    """A CacheError unless ``folder``'s disk, and the file-size limit, leave room for ``nbytes``.

    Checked before an HDF5 write: HDF5 does not recover from a write that fails half-way (the
    process can crash when it exits), so that write must not start without room.
    """
    margin = nbytes + (16 << 20)
    free = shutil.disk_usage(folder).free
    if free < margin:
        raise CacheError(errno.ENOSPC, f"The run cache {folder.parent} ran out of space "
                         f"({free / 2**20:,.0f} MiB free, {margin / 2**20:,.0f} MiB needed): free "
                         f"some space, or set {_data.CACHE_ENV} (--cache-dir) to a folder with "
                         "room, and run again; the run resumes from its last finished epoch.")
    try:
        import resource
    except ImportError:  # not on Windows
        return
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    if limit != resource.RLIM_INFINITY and limit < margin:
        raise CacheError(errno.EFBIG, f"This process may not write files over {limit:,} bytes "
                         f"(ulimit -f), and the run's weights need {margin:,}: raise the limit, "
                         "and run again; the run resumes from its last finished epoch.")


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def _jsonable(config: dict) -> dict:
    """The configuration as JSON gives it back (tuples become lists), for comparisons."""
    return json.loads(json.dumps(config, default=str))


def _file_record(path: Path) -> dict:
    """A file's name, size and sha256, to check it before it is trusted."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": digest.hexdigest()}


def _check_file(path: Path, record: dict) -> None:
    """A ValueError unless ``path`` has the size and sha256 recorded when it was written."""
    if not path.is_file():
        raise ValueError(f"{path.name} is missing")
    if path.stat().st_size != record["bytes"]:
        raise ValueError(f"{path.name} has {path.stat().st_size:,} bytes, "
                         f"{record['bytes']:,} were written")
    if _file_record(path)["sha256"] != record["sha256"]:
        raise ValueError(f"{path.name} does not have the sha256 recorded when it was written")


def _atomic_write(path: Path, blob: bytes) -> None:
    """Write ``blob`` under a temporary name, flush it to disk, then rename it into place."""
    tmp = path.with_name(f".tmp-{path.name}")
    try:
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _atomic_save_weights(model: keras.Model, path: Path) -> None:
    """``model.save_weights`` under a temporary name, flushed to disk, then renamed into place."""
    tmp = path.with_name(f".tmp-{path.name}")  # still ends in .weights.h5, as Keras requires
    _room_for(path.parent, sum(w.nbytes for w in model.get_weights()))
    try:
        model.save_weights(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _writable_folder(runs: Path) -> None:
    """Create the runs folder, or a CacheError saying why it cannot be and what to do."""
    fix = f"set {_data.CACHE_ENV} (or pass cache_dir= / --cache-dir) to a writable folder"
    for parent in [runs, *runs.parents]:
        if parent.exists() and not parent.is_dir():
            raise CacheError(errno.ENOTDIR, f"The cache folder {runs.parent} cannot be created: "
                             f"{parent} is a file, not a folder. Move that file, or {fix}.")
    try:
        runs.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else exc
        raise CacheError(exc.errno, f"The cache folder {runs.parent} cannot be created ({why}). "
                         f"Fix its permissions, or {fix}.") from exc
    if not os.access(runs, os.W_OK | os.X_OK):
        raise CacheError(errno.EACCES, f"The cache folder {runs} is read-only here, and this run "
                         f"is not in it yet. Fix its permissions, or {fix}.")


@contextlib.contextmanager
def _run_lock(runs: Path, name: str):
    """Hold the run's lock; yields True if another process held it first (and was waited for).

    The operating system releases the lock when its process ends, killed or not, so a crash never
    leaves a run locked.
    """
    locks = runs.parent / "locks"  # beside runs/, which holds runs only
    locks.mkdir(exist_ok=True)
    lock = FileLock(locks / f"{name}.lock")
    waited = False
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"Another process is training this run ({name}); waiting for it to finish, then "
              "its result is used.", flush=True)
        lock.acquire()
        waited = True
    try:
        yield waited
    finally:
        lock.release()


def _tidy(runs: Path, final: Path, config: dict) -> None:
    """Finish what an interrupted publication left (the lock is held, so nobody else is at it)."""
    work = runs / f".partial-{final.name}"
    if (work / "result.json").is_file():
        try:
            _load_result(work, config, from_cache=False)
        except ValueError:
            pass  # not finished after all: its checkpoint, if any, is used to resume
        else:
            print(f"note: publishing {final.name}, which finished training but was interrupted "
                  "before it was moved into place.", flush=True)
            _publish(work, final)
    for old in runs.glob(f".old-{final.name}-*"):
        shutil.rmtree(old, ignore_errors=True)


def _cached_run(final: Path, config: dict, *, discard_damaged: bool = False) -> RunResult | None:
    """The stored run if it is whole; else None (a damaged one is removed, with a note)."""
    if not (final / "result.json").is_file():
        return None
    try:
        return _load_result(final, config, from_cache=True)
    except ValueError as exc:
        if discard_damaged:
            print(f"note: the cached run {final} is damaged ({exc}); training it again.",
                  flush=True)
            trash = final.with_name(f".old-{final.name}-{os.getpid()}")
            os.replace(final, trash)
            shutil.rmtree(trash, ignore_errors=True)
        return None


def _publish(work: Path, final: Path) -> None:
    """Rename the finished run into place; a forced retrain swaps out the old one.

    A kill between the two renames leaves the finished run in ``work`` and the old one in an
    ``.old-`` folder; the next start publishes the first and deletes the second (:func:`_tidy`).
    """
    if final.exists():
        trash = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, trash)
        os.replace(work, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(work, final)


def _load_result(run_dir: Path, config: dict, from_cache: bool) -> RunResult:
    """The run stored in ``run_dir``, or a ValueError saying what is wrong with it."""
    try:
        stored = json.loads((run_dir / "result.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"result.json cannot be read: {_reason(exc)}") from exc
    try:
        if stored.get("format") != RESULT_FORMAT:
            raise ValueError(f"result.json has format {stored.get('format')!r}, this version "
                             f"writes {RESULT_FORMAT}")
        if stored["config"] != _jsonable(config):
            raise ValueError("result.json belongs to another configuration")
        epochs = config["epochs"]
        stop = stored["provenance"].get("stopped_early")
        if stop:  # a callback in the run key stopped it: the epochs it trained, fewer than asked
            if not config.get("callbacks") or not 1 <= stop["epochs_trained"] < epochs:
                raise ValueError(f"result.json says it stopped early after "
                                 f"{stop['epochs_trained']!r} of {epochs} epochs")
            epochs = stop["epochs_trained"]
        if len(stored["epoch_seconds"]) != epochs or set(stored["history"]) != set(
                HISTORY_KEYS) or any(len(v) != epochs for v in stored["history"].values()):
            raise ValueError(f"result.json does not hold {epochs} epochs of history")
        for name in RUN_FILES[:2]:
            _check_file(run_dir / name, stored["files"][name])
        names = {f.name for f in dataclasses.fields(RunResult)}
        return RunResult(**{k: v for k, v in stored.items() if k in names}, run_dir=run_dir,
                         from_cache=from_cache)
    except (KeyError, TypeError, AttributeError) as exc:
        raise ValueError(f"result.json lacks what a run records ({_reason(exc)})") from exc


def _without_name(config: dict) -> dict:
    """A layer's config without its auto-generated name (conv2d_7 and conv2d are the same layer)."""
    return {k: v for k, v in config.items() if k != "name"}


def _tf_version() -> str:
    tf = sys.modules.get("tensorflow")
    return getattr(tf, "__version__", "unknown")
