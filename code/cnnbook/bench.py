"""Benchmarks: how fast the book trains, how fast it builds, how heavy the site is; one JSON file.

``python -m cnnbook bench [--reduced] [--out FILE]`` measures, on this machine:

* training throughput (images per second, one epoch with its validation pass) of both CIFAR-10
  models along the book's path (:func:`cnnbook.train.compiled_model` and
  :func:`cnnbook.train.book_datasets`) against the assignment's plain ``model.fit`` on float64
  arrays (``x / 255.0``), batch 32, and the ratios; in bfloat16 too where the hardware multiplies
  it natively (AVX512_BF16 or AMX, or a GPU): elsewhere TensorFlow emulates it, many times slower
  than float32, and the bfloat16 paths are skipped and the results file says why;
* the peak of each precision measured: the best of several large matrix products, taken before
  and after the training runs (the spread is recorded), and the FLOP/s that training achieves
  (the calculator's FLOP counts, :mod:`cnnbook.calc`) as a share of the peak of its own precision;
  a float32 path above 100 % of the float32 peak is a measurement error and stops the command;
* seconds per full-profile epoch, predicted by :func:`cnnbook.calc.estimate_epoch_seconds` at
  the measured peak (no epoch can be faster), against measured;
* book build times on a temporary copy of the book: cold (quick profile), no change, a prose
  edit in a training chapter, a code edit in one chapter; with ``--built`` the copy is of a book
  already built (its ``_build`` folder and run cache reused), and the cold build is not measured;
* the built site's weight: total, heaviest page, largest image.

The load average is recorded at the start and at the end. A machine already busy at the start
(a 1-minute load above :data:`BUSY_LOAD` per 4 cores) measures other work's speed as much as its
own, so the command stops unless ``--allow-busy`` is given, and a busy run says so wherever it is
shown. Every timing is a median after warm-up. Each training path runs in its own worker process
(so that settings read at start-up, such as oneDNN or thread counts, can differ), and the parent
alternates them epoch by epoch, so a machine that speeds up or slows down affects every path
alike. ``--reduced`` measures fewer images and rounds and skips the extra variants.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path

FULL_TRAIN_IMAGES, FULL_TEST_IMAGES = 50_000, 10_000  # what the full profile trains on


class BenchError(RuntimeError):
    """A benchmark step that failed; the message says which and how to look into it."""


@dataclass(frozen=True)
class Settings:
    """How much a benchmark run measures."""

    name: str
    train_per_class: int  # training images per class for a throughput epoch
    test_per_class: int  # validation images per class (the full profile's 5:1 ratio)
    rounds: int  # measured epochs per path, alternating, after one warm-up epoch
    matmul_size: int  # n of the n x n x n matrix product that measures the peak
    peak_products: int  # products timed before the training runs, and again after them
    peak_between: int  # products timed between two rounds of training epochs
    variants: bool  # also measure what the book tried and did not keep
    rebuilds: int  # repeats of the no-change rebuild


FULL = Settings("full", 50, 10, 7, 4096, 5, 2, True, 3)
REDUCED = Settings("reduced", 25, 5, 3, 2048, 3, 1, False, 1)


def with_overrides(settings: Settings, *, rounds: int | None = None,
                   train_per_class: int | None = None) -> Settings:
    """``settings`` with fewer or more measured rounds, or another epoch size (validation keeps the
    full profile's 5:1 ratio); the name says so, so results are never taken for the plain mode."""
    from dataclasses import replace

    changes = {}
    if rounds is not None:
        if isinstance(rounds, bool) or not isinstance(rounds, int) or not 1 <= rounds <= 100:
            raise BenchError(f"rounds must be a whole number from 1 to 100, not {rounds!r}.")
        changes["rounds"] = rounds
    if train_per_class is not None:
        if isinstance(train_per_class, bool) or not isinstance(train_per_class, int) \
                or not 5 <= train_per_class <= 5000:
            raise BenchError("train_per_class must be a whole number from 5 to 5,000, not "
                             f"{train_per_class!r}.")
        changes.update(train_per_class=train_per_class, test_per_class=train_per_class // 5)
    if not changes:
        return settings
    new = replace(settings, **changes)
    return replace(new, name=f"{settings.name}, {new.rounds} rounds of "
                             f"{new.train_per_class} images per class")

# A run is busy when the 1-minute load average at its start is above this, per 4 cores (at least
# 1.0): on 2 cores, one other busy process already takes half the machine.
BUSY_LOAD = 1.0
BF16_FLAGS = {"avx512_bf16": "AVX512_BF16", "amx_bf16": "AMX"}  # native bfloat16 on x86 CPUs


@dataclass(frozen=True)
class Path_:
    """One way of training a model for an epoch, run in its own worker process."""

    key: str
    label: str
    kind: str  # "book" (tf.data, uint8) or "arrays" (model.fit on NumPy arrays)
    precision: str = "float32"  # book: float32 or mixed_bfloat16; arrays: float32 or float64
    steps_per_execution: int | None = None  # None: the book's
    jit_compile: bool = False
    env: dict = field(default_factory=dict)


PATHS = [
    Path_("book_f32", "book path, float32", "book"),
    Path_("assignment_f64", "assignment: model.fit on float64 arrays", "arrays", "float64"),
    Path_("book_bf16", "book path, bfloat16 (--bf16)", "book", "mixed_bfloat16"),
]
VARIANTS = [  # tried for the book's path; kept only where measured to win
    Path_("arrays_f32", "model.fit on float32 arrays (the book's path before)", "arrays",
          "float32"),
    Path_("book_f32_spe1", "book path, one step per execution", "book", steps_per_execution=1),
    Path_("book_f32_xla", "book path + XLA (jit_compile=True)", "book", jit_compile=True),
    Path_("book_f32_nodnn", "book path, oneDNN off (TF_ENABLE_ONEDNN_OPTS=0)", "book",
          env={"TF_ENABLE_ONEDNN_OPTS": "0"}),
    Path_("book_f32_inter1", "book path, 1 inter-op thread (TF_NUM_INTEROP_THREADS=1)", "book",
          env={"TF_NUM_INTEROP_THREADS": "1"}),
]


# ------------------------------------------------------------------------------------ workers
def _worker(spec: dict) -> None:
    """Run in a child process: build one path, warm it up, then time one epoch per request."""
    import numpy as np

    from . import data, models, train

    def reply(**message):
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    kind = spec["kind"]
    if kind == "matmul":
        import tensorflow as tf

        n, dtypes = spec["size"], spec["dtypes"]
        mats = {d: tuple(tf.cast(tf.random.normal((n, n), dtype=tf.float32), d) for _ in "ab")
                for d in dtypes}

        def once(dtype):
            a, b = mats[dtype]
            start = time.perf_counter()
            c = tf.linalg.matmul(a, b)
            float(c[0, 0])  # the product is finished before the clock stops
            return 2 * n ** 3 / (time.perf_counter() - start)

        for dtype in dtypes:
            once(dtype), once(dtype)  # warm-up
        reply(ready=True)
        while line := sys.stdin.readline():  # one FLOP/s figure per product, each dtype in turn
            count = int(line) if line.strip().isdigit() else spec["products"]
            reply(**{d: [once(d) for _ in range(count)] for d in dtypes})
        return

    ds = data.load_cifar10(spec["data"], train_per_class=spec["train_per_class"],
                           test_per_class=spec["test_per_class"], cache_dir=spec["cache_dir"])
    import keras

    keras.utils.set_random_seed(0)
    if kind == "book":
        model = train.compiled_model(
            spec["model"], precision=spec["precision"], jit_compile=spec["jit_compile"],
            steps_per_execution=spec["steps_per_execution"] or train.STEPS_PER_EXECUTION)
        train_data, test_data = train.book_datasets(ds.train, ds.test)

        def epoch():
            model.fit(train_data, validation_data=test_data, epochs=1, shuffle=False, verbose=0)
    else:  # the assignment's way: normalised NumPy arrays straight into model.fit
        model = models.build_model(spec["model"])
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=0.001),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        dtype = np.dtype(spec["precision"])
        (x_train, y_train), (x_test, y_test) = ds.train, ds.test
        x_train, x_test = x_train.astype(dtype) / 255.0, x_test.astype(dtype) / 255.0
        assert x_train.dtype == dtype  # float64 stays float64, as x_train / 255.0 gives

        def epoch():
            model.fit(x_train, y_train, batch_size=32, epochs=1,
                      validation_data=(x_test, y_test), verbose=0)

    epoch()  # warm-up: tracing, oneDNN primitive creation, first-touch memory
    reply(ready=True)
    while sys.stdin.readline():
        start = time.perf_counter()
        epoch()
        reply(seconds=time.perf_counter() - start)


class _Worker:
    def __init__(self, spec: dict, env: dict, log: Path):
        self.spec, self.log = spec, log
        self._log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cnnbook.bench", "--worker", json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            env=env)

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise BenchError(f"benchmark worker {self.spec.get('key')} stopped (exit status "
                             f"{self.proc.returncode}); its log: "
                             f"{self.log.read_text()[-3000:]}")
        return json.loads(line)

    def ask(self, count: int | None = None) -> dict:
        self.proc.stdin.write(f"{count or 'go'}\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._log.close()


def _worker_env(extra: dict) -> dict:
    code = str(Path(__file__).resolve().parents[1])  # this package's folder, first on the path
    path = os.pathsep.join(p for p in (code, os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": path, **extra}


# ---------------------------------------------------------------------------------- training
def bfloat16_support(machine_info: dict) -> dict:
    """Whether this machine multiplies bfloat16 natively: AVX512_BF16 or AMX, or a GPU."""
    units = [name for flag, name in BF16_FLAGS.items() if flag in machine_info["cpu_flags"]]
    if machine_info.get("gpus"):
        return {"native": True, "why": "a GPU: " + ", ".join(machine_info["gpus"])}
    if units:
        return {"native": True, "why": "the processor has " + " and ".join(units)}
    return {"native": False,
            "why": "the processor has neither AVX512_BF16 nor AMX and TensorFlow sees no GPU: "
                   "bfloat16 would be emulated, many times slower than float32, and would "
                   "measure the emulation, not the format"}


def _spread(values: list[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


PEAK_RETRIES = 3  # extra rounds of peak products when a path beat the peak measured so far


def epoch_flops(layers: list[dict], n_train: int, n_test: int) -> dict:
    """FLOPs of one epoch: training steps on ``n_train`` images, a forward pass on ``n_test``."""
    from . import calc

    forward = calc.analyze(layers).totals["flops"]
    per_image = calc.training_flops_per_image(layers)
    return {"forward_per_image": forward, "training_per_image": per_image,
            "epoch": n_train * per_image + n_test * forward}  # validation: forward only


def _fastest_paths(seconds: dict, paths, n_train: int, n_test: int) -> dict[str, float]:
    """The highest median FLOP/s of any path, by the precision it computes in."""
    from . import calc

    fastest: dict[str, float] = {}
    for (model, key), s in seconds.items():
        flops = epoch_flops(calc.presets()[model], n_train, n_test)["epoch"]
        path = next(p for p in paths if p.key == key)
        dtype = "bfloat16" if path.precision == "mixed_bfloat16" else "float32"
        fastest[dtype] = max(fastest.get(dtype, 0.0), flops / statistics.median(s))
    return fastest


def measure_training(settings: Settings, *, data_source=None, cache_dir=None,
                     models=("conv", "pool"), bfloat16: bool = False, log=print,
                     workdir: Path) -> dict:
    """Images per second of every path, alternating epoch by epoch; the peak before, between
    the rounds and after."""
    paths = [p for p in PATHS + (VARIANTS if settings.variants else [])
             if bfloat16 or p.precision != "mixed_bfloat16"]
    dtypes = ["float32"] + (["bfloat16"] if bfloat16 else [])
    seconds: dict[tuple, list[float]] = {}
    peak = _Worker({"kind": "matmul", "size": settings.matmul_size, "dtypes": dtypes,
                    "products": settings.peak_products, "key": "matmul"},
                   _worker_env({}), workdir / "worker-matmul.log")
    try:
        peak.read()
        before = peak.ask()  # the peak worker sits idle while the models train
        between = {d: [] for d in dtypes}
        log("  peak before: " + ", ".join(f"{d} best {max(v) / 1e9:.0f} GFLOP/s"
                                          for d, v in before.items()))
        for model in models:  # one model's workers at a time: less memory
            workers: dict[str, _Worker] = {}
            try:
                for p in paths:
                    spec = {**asdict(p), "model": model, "data": data_source,
                            "train_per_class": settings.train_per_class,
                            "test_per_class": settings.test_per_class,
                            "cache_dir": str(cache_dir) if cache_dir else None}
                    workers[p.key] = _Worker(spec, _worker_env(p.env),
                                             workdir / f"worker-{model}-{p.key}.log")
                for w in workers.values():
                    w.read()
                log(f"  {model}: {len(workers)} paths warmed up")
                for r in range(settings.rounds):
                    for d, values in peak.ask(settings.peak_between).items():
                        between[d] += values  # the machine's speed moves: look for the peak
                    for key, w in workers.items():
                        seconds.setdefault((model, key), []).append(w.ask()["seconds"])
                    log(f"  {model} round {r + 1}/{settings.rounds}: " + ", ".join(
                        f"{k} {seconds[model, k][-1]:.1f} s" for k in workers))
            finally:
                for w in workers.values():
                    w.close()
        after = peak.ask()
        log("  peak after: " + ", ".join(f"{d} best {max(v) / 1e9:.0f} GFLOP/s"
                                         for d, v in after.items()))
        # A machine whose speed jumps (shared or throttled) can run an epoch in a fast minute
        # and every product so far in slow ones: then the samples missed the peak. Take more,
        # a few times at most; add_flops_and_estimates still refuses a path above the peak.
        n_train, n_test = 10 * settings.train_per_class, 10 * settings.test_per_class
        extra = 0
        for _ in range(PEAK_RETRIES):
            fastest = _fastest_paths(seconds, paths, n_train, n_test)
            short = [d for d in dtypes
                     if fastest.get(d, 0) > max(before[d] + between[d] + after[d])]
            if not short:
                break
            log(f"  a path beat the {', '.join(short)} peak so far: measuring it again")
            for d, values in peak.ask().items():
                after[d] += values
            extra += settings.peak_products
    finally:
        peak.close()
    result = {"train_images": n_train, "validation_images": n_test, "batch_size": 32,
              "rounds": settings.rounds,
              "peak_flops": {d: max(before[d] + between[d] + after[d]) for d in dtypes},
              "peak_flops_runs": {d: {"before": before[d], "between": between[d],
                                      "after": after[d]} for d in dtypes},
              "peak_extra_products_after": extra,  # taken because a path beat the peak so far
              "peak_spread": {d: {"before": _spread(before[d]), "between": _spread(between[d]),
                                  "after": _spread(after[d]),
                                  "all": _spread(before[d] + between[d] + after[d])}
                              for d in dtypes},
              "peak_means": f"the best of the products of two {settings.matmul_size} x "
                            f"{settings.matmul_size} matrices: {settings.peak_products} before "
                            f"the training runs, {settings.peak_between} between every two "
                            f"rounds of epochs and {settings.peak_products} after them",
              "models": {}}
    for model in models:
        rows = {}
        for p in paths:
            s = seconds[model, p.key]
            rows[p.key] = {"label": p.label,
                           "precision": "bfloat16" if p.precision == "mixed_bfloat16"
                           else "float32",  # what the convolutions compute in
                           "seconds": s, "median_seconds": statistics.median(s),
                           "spread_seconds": _spread(s),
                           "images_per_second": n_train / statistics.median(s)}
        result["models"][model] = {"paths": rows}
    return result


def add_flops_and_estimates(training: dict, cached_runs: dict) -> None:
    """Achieved FLOP/s, % of the peak of each path's precision, predicted vs measured epochs.

    Raises :class:`BenchError` when a path beats the measured peak of its precision: the peak
    is then no peak (measured while something else ran, or too small a product), and a results
    file that says so would contradict itself.
    """
    from . import calc

    presets = calc.presets()
    n_train, n_test = training["train_images"], training["validation_images"]
    peaks = training["peak_flops"]
    for model, entry in training["models"].items():
        layers = presets[model]
        entry["flops"] = epoch_flops(layers, n_train, n_test)
        paths = entry["paths"]
        for key, row in paths.items():
            row["achieved_flops"] = entry["flops"]["epoch"] / row["median_seconds"]
            row["percent_of_peak"] = 100 * row["achieved_flops"] / peaks[row["precision"]]
            row["speedup_vs_assignment"] = (paths["assignment_f64"]["median_seconds"]
                                            / row["median_seconds"])
            row["speedup_vs_book_f32"] = paths["book_f32"]["median_seconds"] / row["median_seconds"]
            if row["percent_of_peak"] > 100:
                raise BenchError(
                    f"{model}, {row['label']}: {row['achieved_flops'] / 1e9:.1f} GFLOP/s, "
                    f"{row['percent_of_peak']:.0f} % of the measured {row['precision']} peak "
                    f"({peaks[row['precision']] / 1e9:.1f} GFLOP/s). Training cannot beat the "
                    "peak: the peak was measured while the machine ran slower (other work on "
                    "it, or its speed changed). "
                    "Run the benchmark again on an idle machine.")
        scale = FULL_TRAIN_IMAGES / n_train  # the subset keeps the full profile's 5:1 ratio
        e = entry["epoch_seconds"] = {
            f"predicted_at_{d}_peak": calc.estimate_epoch_seconds(
                layers, FULL_TRAIN_IMAGES, peak, validation_images=FULL_TEST_IMAGES)
            for d, peak in peaks.items()}
        for key, row in paths.items():
            if key in ("book_f32", "assignment_f64", "book_bf16"):
                e[f"measured_{key}"] = row["median_seconds"] * scale
        e["measured_from"] = (f"{n_train:,}-image epochs with {n_test:,} validation images, "
                              f"scaled to {FULL_TRAIN_IMAGES:,} + {FULL_TEST_IMAGES:,}")
        e["full_profile_runs"] = cached_runs.get(model, [])
        entry["ratios"] = {
            "book_f32_vs_assignment_f64": paths["book_f32"]["speedup_vs_assignment"]}
        if "book_bf16" in paths:
            entry["ratios"]["book_bf16_vs_book_f32"] = paths["book_bf16"]["speedup_vs_book_f32"]


def cached_full_runs(cache_dir=None) -> dict[str, list[dict]]:
    """Full-profile runs in the run cache: precision, pipeline, median epoch seconds, accuracy."""
    from . import data

    runs: dict[str, list[dict]] = {}
    root = data.cache_root(cache_dir) / "runs"
    for result in sorted(root.glob("*-full-*/result.json")) if root.is_dir() else []:
        stored = json.loads(result.read_text())
        config, prov = stored.get("config", {}), stored.get("provenance", {})
        runs.setdefault(stored["model_name"], []).append({
            "run": result.parent.name,
            "precision": config.get("precision", "float32"),
            "pipeline": config.get("pipeline", "model.fit on float32 arrays"),
            "epochs": len(stored["epoch_seconds"]),
            "median_epoch_seconds": statistics.median(stored["epoch_seconds"]),
            "test_accuracy": stored["test_accuracy"],
            "date": prov.get("date"),
            "hardware": prov.get("hardware", {}).get("cpu"),
            "cores": prov.get("hardware", {}).get("cores"),
            "gpus": prov.get("hardware", {}).get("gpus", []),
        })
    return runs


# ------------------------------------------------------------------------------------ builds
TRAINING_CHAPTER = "conv_only.md"  # prose and code edits go here
_CODE_CELL = re.compile(r"```\{code-cell\}[^\n]*\n(.*?)\n```", re.DOTALL)


def _jupyter_book() -> str:
    found = Path(sys.executable).with_name("jupyter-book")
    return str(found) if found.exists() else (shutil.which("jupyter-book") or "jupyter-book")


_EXECUTED = re.compile(r"^(.+)\.(?:md|ipynb): Executing notebook using", re.MULTILINE)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _build(book: Path, env: dict, what: str) -> tuple[float, list[str]]:
    """Build ``book``; the seconds it took and the pages it executed (the rest came cached)."""
    start = time.perf_counter()
    done = subprocess.run([_jupyter_book(), "build", str(book)], env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchError(f"the book build ({what}) failed with exit status {done.returncode}; "
                         f"its log ends:\n{(done.stdout + done.stderr)[-4000:]}")
    log = _ANSI.sub("", done.stdout + done.stderr)
    return seconds, sorted(Path(m).relative_to(book).as_posix() for m in _EXECUTED.findall(log))


def prose_edit(text: str) -> str:
    """The chapter with one sentence added to its overview."""
    marker = "## Overview\n\n"
    if marker not in text:
        raise BenchError(f"{TRAINING_CHAPTER} has no '## Overview' section to edit.")
    return text.replace(marker, marker + "This sentence was added by the benchmark. ", 1)


def code_edit(text: str) -> str:
    """The chapter with a comment line added to its last code cell (the page executes again)."""
    cells = list(_CODE_CELL.finditer(text))
    if not cells:
        raise BenchError(f"{TRAINING_CHAPTER} has no code cell to edit.")
    end = cells[-1].end(1)
    return text[:end] + "\n# edited by the benchmark" + text[end:]


def measure_builds(book: Path, settings: Settings, workdir: Path, *, data_source=None,
                   cache_dir=None, built: bool = False, log=print) -> dict:
    """Build times on a copy of ``book``: cold, no change, prose edit, code edit; site weight.

    ``built``: ``book`` was already built with this data source and run cache (its ``_build``
    folder is copied too); the cold build is not measured, and the first build of the copy,
    which re-reads every page from the execution cache in its new place, is not timed.
    """
    if not (book / "_toc.yml").is_file():
        raise BenchError(f"{book} is not the book's folder (no _toc.yml): pass --book.")
    if built and not (book / "_build" / ".jupyter_cache").is_dir():
        raise BenchError(f"{book} has not been built (no _build/.jupyter_cache): build it with "
                         "the same data source and cache first, or leave out --built.")
    copy = workdir / "book"
    if copy.exists():
        raise BenchError(f"{copy} exists already (a copy from an earlier run?): give the "
                         "benchmark an empty --workdir.")
    def skip(folder, names):  # stray notebooks beside the chapters; the execution cache's stay
        top = Path(folder) == book
        return {n for n in names if n == ".ipynb_checkpoints"
                or top and (n.endswith(".ipynb") or n == "_build" and not built)}

    shutil.copytree(book, copy, ignore=skip)
    env = {**_worker_env({}), "CNNBOOK_PROFILE": "quick"}
    if cache_dir:
        env["CNNBOOK_CACHE"] = str(cache_dir)
    if data_source:
        env["CNNBOOK_DATA"] = str(data_source)
    from . import data

    runs = data.cache_root(cache_dir) / "runs"
    before = {p.name for p in runs.glob("*-quick-*")} if runs.is_dir() else set()
    times: dict[str, float | None] = {}
    executed: dict[str, list[str]] = {}
    if built:
        _build(copy, env, "first build of the copy")
        times["cold"] = None
        log("  cold build not measured (--built: the book was built already)")
    else:
        times["cold"], executed["cold"] = _build(copy, env, "cold")
        log(f"  cold build {times['cold']:.0f} s")
    after = {p.name for p in runs.glob("*-quick-*")} if runs.is_dir() else set()
    repeats = [_build(copy, env, "no change") for _ in range(settings.rebuilds)]
    times["no_change"] = statistics.median(t for t, _ in repeats)
    executed["no_change"] = sorted({page for _, pages in repeats for page in pages})
    log(f"  no-change rebuild {times['no_change']:.0f} s")
    chapter = copy / TRAINING_CHAPTER
    chapter.write_text(prose_edit(chapter.read_text()))
    times["prose_edit"], executed["prose_edit"] = _build(copy, env, "prose edit")
    log(f"  prose-edit rebuild {times['prose_edit']:.0f} s")
    chapter.write_text(code_edit(chapter.read_text()))
    times["code_edit"], executed["code_edit"] = _build(copy, env, "code edit")
    log(f"  code-edit rebuild {times['code_edit']:.0f} s")
    runs_now = {p.name for p in runs.glob("*-quick-*")} if runs.is_dir() else set()
    return {"seconds": times, "profile": "quick", "edited_chapter": TRAINING_CHAPTER,
            "no_change_repeats": settings.rebuilds,
            "executed_pages": executed,  # pages (docnames) each build executed; the rest cached
            "quick_runs_trained_by_rebuilds": sorted(runs_now - after),
            "quick_runs_trained_by_cold_build": None if built else sorted(after - before),
            "cold_means": "not measured: the benchmark was given a book already built (--built)"
                          if built else "no _build folder (no executed notebooks, no HTML); "
                          "the run cache as found: models it lacks are trained",
            "site": site_weight(copy / "_build" / "html")}


_IMAGES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".webp"}


def site_weight(html: Path) -> dict:
    """Total bytes of the built site, its heaviest page (HTML + its own images), largest image."""
    from bs4 import BeautifulSoup

    files = [p for p in html.rglob("*") if p.is_file()]
    if not files:
        raise BenchError(f"{html} holds no built site.")
    pages = []
    for page in sorted(html.glob("*.html")):
        soup = BeautifulSoup(page.read_text(errors="replace"), "html.parser")
        images = {(page.parent / img["src"]).resolve() for img in soup.find_all("img", src=True)
                  if not re.match(r"^(https?:|data:|//)", img["src"])}
        image_bytes = sum(p.stat().st_size for p in images if p.is_file())
        pages.append({"page": page.name, "html_bytes": page.stat().st_size,
                      "image_bytes": image_bytes,
                      "bytes": page.stat().st_size + image_bytes})
    images = [p for p in files if p.suffix.lower() in _IMAGES and "_static" not in p.parts]
    largest = max(images, key=lambda p: p.stat().st_size, default=None)
    return {
        "total_bytes": sum(p.stat().st_size for p in files),
        "files": len(files),
        "pages": pages,
        "heaviest_page": max(pages, key=lambda p: p["bytes"]) if pages else None,
        "largest_image": {"file": largest.relative_to(html).as_posix(),
                          "bytes": largest.stat().st_size} if largest else None,
    }


# ------------------------------------------------------------------------------------ machine
def machine() -> dict:
    """The processor (with the flags that matter here), the library versions, the settings."""
    from . import calc, train

    flags: set[str] = set()
    try:
        found = re.search(r"flags\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        flags = set(found.group(1).split()) if found else set()
    except OSError:
        pass
    nominal = calc.build_machine()
    import keras
    import numpy as np
    import tensorflow as tf

    versions = {"python": platform.python_version(), "tensorflow": tf.__version__,
                "keras": keras.__version__, "numpy": np.__version__}
    for dist in ("jupyter-book", "sphinx", "myst-nb"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    info = {
        **train.hardware(),
        "cpu_flags": sorted(flags & {"avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16",
                                     "amx_tile", "avx512_vnni"}),
        "nominal_float32_peak_flops": nominal.peak_flops,
        "nominal_peak_source": nominal.source,
        "versions": versions,
        "onednn": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default (on for x86 Linux)"),
        "book_steps_per_execution": train.STEPS_PER_EXECUTION,
        "book_pipeline": train.PIPELINE,
    }
    info["bfloat16"] = bfloat16_support(info)
    return info


def load_average() -> list[float] | None:
    """The 1-, 5- and 15-minute load averages (None where the system has none)."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def busy_threshold(cores: int | None) -> float:
    """The 1-minute load above which this machine counts as busy: BUSY_LOAD per 4 cores."""
    return BUSY_LOAD * max(1, (cores or 1) / 4)


def check_idle(cores: int | None, allow_busy: bool, load=None) -> dict:
    """The load at the start and whether it makes the run busy; stops a busy run unless allowed."""
    load = load_average() if load is None else load
    limit = busy_threshold(cores)
    busy = bool(load) and load[0] > limit
    if busy and not allow_busy:
        raise BenchError(
            f"this machine is busy: its 1-minute load average is {load[0]:.2f} on {cores} cores "
            f"(the benchmark wants {limit:.1f} or less). Other work would slow the measured "
            "paths and the peak unevenly. Stop it and wait until `uptime` shows a low load, or "
            "pass --allow-busy to measure anyway (the results are then labelled busy).")
    return {"load_average_at_start": load, "busy_threshold": limit, "busy": busy}


def run(settings: Settings = FULL, *, out=None, book=None, data_source=None, cache_dir=None,
        models=("conv", "pool"), builds: bool = True, built: bool = False,
        allow_busy: bool = False, workdir=None, log=print) -> dict:
    """Measure everything and write the JSON to ``out`` (when given); returns the results.

    ``workdir``: where the copy of the book and the workers' logs go (kept); by default a
    temporary folder, removed at the end.
    """
    from . import data

    data.resolve_source(data_source)  # a bad source fails now, with the data module's message
    load = check_idle(os.cpu_count(), allow_busy)  # before anything of ours adds to the load
    start = time.perf_counter()
    info = machine()
    if load["busy"]:
        log(f"BUSY: load average {load['load_average_at_start'][0]:.2f} at the start; the "
            "results are labelled busy")
    results = {"benchmark": "cnnbook bench", "mode": settings.name, "settings": asdict(settings),
               "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
               "machine": info, **load,
               "data_source": data.resolve_source(data_source).description}
    with tempfile.TemporaryDirectory(prefix="cnnbook-bench-") as tmp:
        tmp = Path(workdir) if workdir else Path(tmp)
        tmp.mkdir(parents=True, exist_ok=True)
        log(f"Training throughput ({settings.name}): {len(models)} models, alternating paths; "
            f"bfloat16 {'measured' if info['bfloat16']['native'] else 'skipped'}: "
            f"{info['bfloat16']['why']}")
        training = measure_training(settings, data_source=data_source, cache_dir=cache_dir,
                                    models=models, bfloat16=info["bfloat16"]["native"],
                                    log=log, workdir=tmp)
        add_flops_and_estimates(training, cached_full_runs(cache_dir))
        results["training"] = training
        if builds:
            book = Path(book) if book else Path(__file__).resolve().parents[2] / "book"
            log(f"Book builds on a copy of {book}")
            results["builds"] = measure_builds(book, settings, tmp, data_source=data_source,
                                               cache_dir=cache_dir, built=built, log=log)
    results["load_average_at_end"] = load_average()
    results["bench_seconds"] = time.perf_counter() - start
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial = out.with_name(f".{out.name}.partial")
        partial.write_text(json.dumps(results, indent=1) + "\n")
        os.replace(partial, out)  # a failed run leaves the previous file as it was
    return results


def summary(results: dict) -> str:
    """A few lines for the terminal."""
    t = results["training"]
    load = results["load_average_at_start"]
    lines = [("BUSY run: " if results["busy"] else "idle run: ")
             + (f"load average {load[0]:.2f} at the start (busy above "
                f"{results['busy_threshold']:.1f})" if load else "no load average"),
             "peak (matmul, best of before, between and after): " + ", ".join(
                 f"{d} {v / 1e9:.0f} GFLOP/s" for d, v in t["peak_flops"].items())]
    bf16 = results["machine"]["bfloat16"]
    if not bf16["native"]:
        lines.append(f"bfloat16 not measured: {bf16['why']}")
    for model, entry in t["models"].items():
        for key, row in entry["paths"].items():
            lines.append(f"{model:5s} {row['label']:58s} {row['images_per_second']:7.1f} img/s "
                         f"x{row['speedup_vs_assignment']:.2f} "
                         f"{row['percent_of_peak']:5.1f} % of {row['precision']} peak")
        e = entry["epoch_seconds"]
        lines.append(f"{model:5s} full epoch: at least {e['predicted_at_float32_peak']:.0f} s "
                     f"(float32 peak), measured {e['measured_book_f32']:.0f} s (book float32)")
    if "builds" in results:
        b = results["builds"]
        lines.append("builds: " + ", ".join(f"{k} {v:.0f} s" if v is not None else
                                             f"{k} not measured"
                                             for k, v in b["seconds"].items()))
        site = b["site"]
        lines.append(f"site: {site['total_bytes'] / 1e6:.1f} MB in {site['files']} files; "
                     f"heaviest page {site['heaviest_page']['page']} "
                     f"{site['heaviest_page']['bytes'] / 1e6:.2f} MB")
    lines.append(f"benchmark took {results['bench_seconds']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker(json.loads(sys.argv[2]))
