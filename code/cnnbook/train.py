"""Training runs under a named profile, cached on disk by everything that changes the result.

A run trains as the assignment does (Adam with its defaults, sparse categorical cross-entropy on
logits, batch 32, the test set as validation data) and is stored under
``<cache>/runs/<model>-<profile>-<key>/``, where the key hashes the architecture, the data source
and subset, the profile, the hyper-parameters, the seed and the library versions. Asking again
returns the stored run without training. A run that is killed resumes from its last finished
epoch (Keras's ``BackupAndRestore``); only a finished run is ever renamed into place.

The images stay in memory as ``uint8`` (a quarter of float32's memory, an eighth of float64's) and
are scaled to [0, 1] one batch at a time in a ``tf.data`` pipeline that prefetches the next batch
while the model trains on this one (:func:`book_datasets`). What the model sees is the same as the
assignment's ``x / 255.0``; only the shuffling order differs, so the run key records the pipeline.
``precision="mixed_bfloat16"`` computes the convolutions in bfloat16 with float32 weights (Keras
mixed precision) and the dense head in float32: an explicit option, never on by default, for CPUs
with AVX512_BF16 or AMX and for recent GPUs.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np

from . import data as _data
from . import models as _models

PROFILE_ENV = "CNNBOOK_PROFILE"
DEFAULT_PROFILE = "full"
# How the images reach the model; part of the run key, since the shuffling order changes results.
PIPELINE = "tf.data: uint8 in memory, shuffled indices, scaled /255 per batch, prefetched"
# Keras dtype policies a run may use, and what each means for the book's models.
PRECISIONS = {
    "float32": "float32 throughout",
    "mixed_bfloat16": "convolutions compute in bfloat16 (weights kept in float32); the dense "
                      "head computes in float32",
}
DEFAULT_PRECISION = "float32"
# Training steps per call into the compiled function: fewer Python round trips, same arithmetic.
STEPS_PER_EXECUTION = 16


class ConfigError(ValueError):
    """A training setting that cannot work; the message names it."""


class ProfileError(ConfigError):
    """An unknown profile name."""


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
        return "\n".join([
            f"{_models.TITLES.get(self.model_name, self.model_name)}{in_precision}: {how}",
            f"  profile {p['profile']}: {p['train_images']:,} training / {p['test_images']:,} "
            f"test images, {self.epochs} epoch{'s' * (self.epochs != 1)}",
            f"  data: {p['data_source']}",
            f"  trained {p['date'][:10]} on {hw['cpu']} ({hw['cores']} cores{gpu}) in "
            f"{p['wall_seconds']:.0f} s",
            f"  test accuracy {self.test_accuracy:.4f}, test loss {self.test_loss:.4f}",
        ])


def run_config(model_name: str, profile: str | Profile | None = None, *, data_source=None,
               epochs: int | None = None, train_per_class: int | None = None,
               test_per_class: int | None = None, batch_size: int = 32,
               learning_rate: float = 0.001, seed: int = 0,
               precision: str = DEFAULT_PRECISION) -> dict:
    """Everything that changes a run's result, as a plain dict (the cache key hashes it)."""
    prof = get_profile(profile)
    if precision not in PRECISIONS:
        raise ConfigError(f"Unknown precision {precision!r}: choose one of "
                          f"{', '.join(PRECISIONS)}.")
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
    for key in ("epochs", "batch_size"):
        if not isinstance(config[key], int) or config[key] < 1:
            raise ConfigError(f"{key} must be a positive whole number, not {config[key]!r}.")
    return config


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
    ``force=True`` trains again and replaces the cached run. ``verbose=2`` prints one line per
    epoch. Extra Keras ``callbacks`` are added after the book's own.
    """
    config = run_config(model_name, profile, data_source=data_source, epochs=epochs,
                        train_per_class=train_per_class, test_per_class=test_per_class,
                        batch_size=batch_size, learning_rate=learning_rate, seed=seed,
                        precision=precision)
    runs = _data.cache_root(cache_dir) / "runs"
    final = runs / f"{model_name}-{config['profile']}-{run_key(config)}"
    if not force and (final / "result.json").is_file():
        return _load_result(final, from_cache=True)

    work = runs / f".partial-{final.name}"
    if force and work.exists():
        shutil.rmtree(work)  # a forced retrain starts over, not from an old backup
    work.mkdir(parents=True, exist_ok=True)
    resumed_from = _finished_epochs(work / "history.csv")

    dataset = _data.load_cifar10(data_source, train_per_class=config["train_per_class"],
                                 test_per_class=config["test_per_class"], cache_dir=cache_dir)
    (x_train, y_train), (x_test, y_test) = dataset.train, dataset.test

    keras.utils.set_random_seed(seed)
    model = compiled_model(model_name, learning_rate=learning_rate, precision=precision)
    train_data, test_data = book_datasets(dataset.train, dataset.test, batch_size=batch_size,
                                          seed=seed)
    book_callbacks = [
        _EpochTimer(),  # adds epoch_seconds to the logs, so CSVLogger records it
        keras.callbacks.CSVLogger(str(work / "history.csv"), append=True),
        # two alternating copies, so a kill while one is written leaves the other; kept until the
        # run is published, so a kill after the last epoch does not retrain anything
        keras.callbacks.BackupAndRestore(str(work / "backup"), save_freq="epoch",
                                         double_checkpoint=True, delete_checkpoint=False),
    ]
    start = time.perf_counter()
    model.fit(train_data, epochs=config["epochs"], validation_data=test_data, shuffle=False,
              verbose=verbose,
              callbacks=book_callbacks + list(callbacks or []))
    wall = time.perf_counter() - start
    test_loss, test_accuracy = model.evaluate(test_data, verbose=0)

    history, seconds = _read_history(work / "history.csv")
    if len(seconds) != config["epochs"]:
        raise RuntimeError(f"{work / 'history.csv'} has {len(seconds)} epochs, expected "
                           f"{config['epochs']}; delete {work} and train again.")
    provenance = {
        "profile": config["profile"],
        "data_source": dataset.source,
        "train_images": int(len(x_train)),
        "test_images": int(len(x_test)),
        "seed": seed,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "wall_seconds": float(sum(seconds)) if resumed_from else wall,
        "resumed_from_epoch": resumed_from or None,
        "versions": {"python": platform.python_version(), "tensorflow": _tf_version(),
                     "keras": keras.__version__, "numpy": np.__version__},
        "hardware": hardware(),
    }
    model.save_weights(work / "model.weights.h5")
    result = {"model_name": model_name, "history": history, "epoch_seconds": seconds,
              "test_loss": float(test_loss), "test_accuracy": float(test_accuracy),
              "provenance": provenance, "config": config}
    (work / "result.json").write_text(json.dumps(result, indent=1, default=str))
    _publish(work, final)
    shutil.rmtree(final / "backup", ignore_errors=True)
    return _load_result(final, from_cache=False)


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


def book_datasets(train, test, *, batch_size: int = 32, seed: int = 0):
    """The book's input pipeline: ``(train, test)`` ``tf.data`` datasets of scaled batches.

    ``train`` and ``test`` are ``(x, y)`` pairs with ``x`` as uint8 images. The images stay uint8
    in memory; each batch is gathered by index, converted to float32 and divided by 255 (the
    assignment's normalisation), while the next batch is prepared in the background. The
    training set is reshuffled every epoch from ``seed``; the test set keeps its order.
    """
    import tensorflow as tf

    def pipeline(x, y, shuffle: bool):
        if np.asarray(x).dtype != np.uint8:
            raise ConfigError(f"book_datasets expects uint8 images (0..255), not "
                              f"{np.asarray(x).dtype}: pass the arrays load_cifar10() returns.")
        images, labels = tf.constant(x), tf.constant(y)
        ds = tf.data.Dataset.range(len(x))
        if shuffle:
            ds = ds.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)

        def scale(index):
            return (tf.cast(tf.gather(images, index), tf.float32) / 255.0,
                    tf.gather(labels, index))

        return ds.batch(batch_size).map(scale, num_parallel_calls=tf.data.AUTOTUNE).prefetch(
            tf.data.AUTOTUNE)

    return pipeline(*train, shuffle=True), pipeline(*test, shuffle=False)


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


def _read_history(path: Path) -> tuple[dict[str, list[float]], list[float]]:
    """Per-epoch history from the CSV log; an epoch logged twice (resumed run) keeps its last row."""
    rows: dict[int, dict] = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            rows[int(row["epoch"])] = row
    ordered = [rows[e] for e in sorted(rows)]
    keys = ("loss", "accuracy", "val_loss", "val_accuracy")
    history = {k: [float(r[k]) for r in ordered] for k in keys}
    return history, [float(r["epoch_seconds"]) for r in ordered]


def _finished_epochs(path: Path) -> int:
    """Epochs already logged by an interrupted run (0 for a new one)."""
    return len(_read_history(path)[1]) if path.is_file() else 0


def _publish(work: Path, final: Path) -> None:
    """Rename the finished run into place; a forced retrain swaps out the old one."""
    if final.exists():
        trash = final.with_name(f".old-{final.name}-{os.getpid()}")
        os.replace(final, trash)
        os.replace(work, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(work, final)


def _load_result(run_dir: Path, from_cache: bool) -> RunResult:
    stored = json.loads((run_dir / "result.json").read_text())
    names = {f.name for f in dataclasses.fields(RunResult)}
    return RunResult(**{k: v for k, v in stored.items() if k in names}, run_dir=run_dir,
                     from_cache=from_cache)


def _without_name(config: dict) -> dict:
    """A layer's config without its auto-generated name (conv2d_7 and conv2d are the same layer)."""
    return {k: v for k, v in config.items() if k != "name"}


def _tf_version() -> str:
    tf = sys.modules.get("tensorflow")
    return getattr(tf, "__version__", "unknown")
