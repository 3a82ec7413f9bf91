"""Calculators: a network's shapes, parameters, memory and FLOPs, and how long training takes.

A model is a list of layer specs, plain dicts that JSON and the browser widgets read as well::

    {"type": "input", "shape": [227, 227, 3]}
    {"type": "conv", "filters": 96, "kernel": 11, "stride": 4, "padding": "valid", "groups": 1}
    {"type": "maxpool", "pool": 3, "stride": 2, "padding": "valid"}
    {"type": "lrn", "size": 5}
    {"type": "batchnorm"}
    {"type": "dropout", "rate": 0.5}
    {"type": "gap", "keepdims": False}
    {"type": "flatten"}
    {"type": "dense", "units": 4096}

``padding`` is ``"valid"``, ``"same"`` (Keras's meaning) or a whole number of zeros added on every
side. ``gap`` is global average pooling: the mean of each channel over the whole map, an output of
C values (``keepdims``: 1x1xC, as Keras's ``keepdims=True``). ``batchnorm`` keeps the shape and has
4 values per channel (of the last axis): gamma (counted as a weight) and beta (as a bias), which
training learns, and the moving mean and variance, which it does not (the ``non_trainable``
column); Keras's ``count_params`` counts all four, and so does ``params``. ``dropout`` keeps the
shape and has no parameters (``rate`` only matters to :func:`to_keras`).

Each layer's receptive field (``rf``: how many input pixels along each side one of its units
depends on) and jump (``jump``: how many input pixels apart two neighbouring units' windows are)
follow the standard recurrence: a window of ``k`` with stride ``s`` (a convolution or a pooling)
gives ``rf + (k - 1) x jump`` and ``jump x s``; normalization, dropout and a flatten (each of its
values is one unit of the map before) change neither. A unit of a dense or global average pooling
layer depends on the whole map before it: there ``rf`` and ``jump`` show the whole input (its
longer side; in every model of the book the windows of the last map cover every pixel, which
tests/test_calc.py checks with Keras's gradients). ``rf`` is not
clipped to the image: near a border, or once it is larger than the image, part of the window is
padding or outside. Where a stride is larger than its window, the layer skips pixels: the windows
after it have holes, and ``rf`` is their span.

Conventions: one multiply-accumulate (MAC) counts as 2 FLOPs; MACs count the convolutions and
dense layers only (pooling comparisons, a global average's H x W x C additions, normalization,
dropout, biases and ReLUs add well under 1 %). Activations count the values a layer stores: the
input counts, a flatten (a reshape) stores none.
"""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

DTYPE_BYTES = {"float64": 8, "float32": 4, "bfloat16": 2, "float16": 2, "int8": 1}
OPTIMIZER_SLOTS = {"sgd": 0, "momentum": 1, "adam": 2}  # values of state kept per parameter
LAYER_TYPES = ("input", "conv", "maxpool", "lrn", "batchnorm", "dropout", "gap", "flatten", "dense")
# Any whole number above this (2**31 - 1, far past any real layer, machine, batch or data set) is
# "absurdly large": a layer's fields, cores, FLOPs per cycle, images, epochs, batch sizes.
MAX_FIELD = 2_147_483_647
# The most memory largest_batch takes: a million GiB, as the model widget's "free memory" field.
MAX_RAM_GIB = 1_000_000
MAX_RAM_BYTES = MAX_RAM_GIB * 2**30
_FIELDS = {  # required fields, then optional fields with their defaults
    "input": ({"shape"}, {}),
    "conv": ({"filters", "kernel"}, {"stride": 1, "padding": "valid", "groups": 1, "bias": True}),
    "maxpool": ({"pool"}, {"stride": None, "padding": "valid"}),  # stride defaults to the pool size
    "lrn": (set(), {"size": 5}),
    "batchnorm": (set(), {}),
    "dropout": (set(), {"rate": 0.5}),
    "gap": (set(), {"keepdims": False}),
    "flatten": (set(), {}),
    "dense": ({"units"}, {"bias": True}),
}


# --------------------------------------------------------------------------------------- presets
def _conv(name, filters, kernel, stride=1, padding="valid", groups=1):
    return {"type": "conv", "name": name, "filters": filters, "kernel": kernel, "stride": stride,
            "padding": padding, "groups": groups}


def _pool(name, pool=3, stride=2):
    return {"type": "maxpool", "name": name, "pool": pool, "stride": stride, "padding": "valid"}


def _dense(name, units):
    return {"type": "dense", "name": name, "units": units}


# The assignment's AlexNet (CS231n's simplified listing): one tower, 227x227x3 input,
# pooling before each normalization. 62,378,344 parameters.
ALEXNET = [
    {"type": "input", "name": "input", "shape": [227, 227, 3]},
    _conv("conv1", 96, 11, stride=4),                # 55x55x96
    _pool("pool1"),                                  # 27x27x96
    {"type": "lrn", "name": "norm1", "size": 5},
    _conv("conv2", 256, 5, padding=2),               # 27x27x256
    _pool("pool2"),                                  # 13x13x256
    {"type": "lrn", "name": "norm2", "size": 5},
    _conv("conv3", 384, 3, padding=1),               # 13x13x384
    _conv("conv4", 384, 3, padding=1),               # 13x13x384
    _conv("conv5", 256, 3, padding=1),               # 13x13x256
    _pool("pool3"),                                  # 6x6x256
    {"type": "flatten", "name": "flatten"},          # 9216
    _dense("fc6", 4096),
    _dense("fc7", 4096),
    _dense("fc8", 1000),                             # class scores
]

# Krizhevsky, Sutskever & Hinton (2012), split over two GPUs: conv2, conv4 and conv5 see only the
# half of the channels on their own GPU (groups=2); normalization comes before pooling.
# 60,965,224 parameters.
ALEXNET_GROUPED = [
    {"type": "input", "name": "input", "shape": [227, 227, 3]},
    _conv("conv1", 96, 11, stride=4),                # 55x55x96 (48 per GPU)
    {"type": "lrn", "name": "norm1", "size": 5},
    _pool("pool1"),                                  # 27x27x96
    _conv("conv2", 256, 5, padding=2, groups=2),     # 27x27x256
    {"type": "lrn", "name": "norm2", "size": 5},
    _pool("pool2"),                                  # 13x13x256
    _conv("conv3", 384, 3, padding=1),               # 13x13x384 (crosses the GPUs)
    _conv("conv4", 384, 3, padding=1, groups=2),     # 13x13x384
    _conv("conv5", 256, 3, padding=1, groups=2),     # 13x13x256
    _pool("pool3"),                                  # 6x6x256
    {"type": "flatten", "name": "flatten"},
    _dense("fc6", 4096),
    _dense("fc7", 4096),
    _dense("fc8", 1000),
]


def presets() -> dict[str, list[dict]]:
    """Every named architecture: the two AlexNets and the book's CIFAR-10 CNNs (read from Keras)."""
    from . import models

    return {
        "alexnet": [dict(layer) for layer in ALEXNET],  # the assignment's AlexNet, 62,378,344
        "alexnet_grouped": [dict(layer) for layer in ALEXNET_GROUPED],  # two GPUs, 60,965,224
        "conv": from_keras(models.build_model("conv")),  # variant 1, 1,191,502 parameters
        "pool": from_keras(models.build_model("pool")),  # variant 2, 589,390 parameters
    }


PRESET_TITLES = {
    "alexnet": "AlexNet as the assignment lists it",
    "alexnet_grouped": "AlexNet as published (two GPUs, grouped convolutions)",
    "conv": "CIFAR-10 variant 1: only convolutions",
    "pool": "CIFAR-10 variant 2: convolutions + max pooling",
}


# ------------------------------------------------------------------------------ layer arithmetic
def _whole(value, what: str, *, minimum: int = 1, maximum: int = MAX_FIELD) -> int:
    """``value`` as an int from ``minimum`` to ``maximum``, or a ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{what} must be a whole number, got {value!r}.")
    if value < minimum:
        bound = "positive" if minimum == 1 else f"at least {minimum}"
        raise ValueError(f"{what} must be {bound}, got {value}.")
    if value > maximum:
        raise ValueError(f"{what} is absurdly large: at most {maximum:,}, got {int(value):,}.")
    return int(value)


def _window(size: int, kernel: int, stride: int, padding, where: str) -> int:
    """Output length of a sliding window along one axis (Keras's rules for valid and same)."""
    if padding == "same":
        return -(-size // stride)
    padded = size + 2 * padding
    if kernel > padded:
        raise ValueError(
            f"{where}: kernel {kernel} is larger than its padded input {padded} "
            f"({size} + 2 x {padding} padding); use a smaller kernel, more padding or padding 'same'.")
    return (padded - kernel) // stride + 1


def _check_fields(spec, where: str) -> dict:
    if not isinstance(spec, dict):
        raise ValueError(f"{where}: a layer must be a dict with a 'type', got {spec!r}.")
    kind = spec.get("type")
    if not isinstance(kind, str) or kind not in _FIELDS:
        raise ValueError(f"{where}: unknown layer type {kind!r}; use one of {', '.join(LAYER_TYPES)}.")
    required, optional = _FIELDS[kind]
    missing = required - spec.keys()
    if missing:
        raise ValueError(f"{where}: a {kind} layer needs {', '.join(sorted(missing))}.")
    unknown = spec.keys() - required - optional.keys() - {"type", "name"}
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(map(str, unknown)))} "
                         f"for a {kind} layer.")
    name = spec.get("name")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"{where}: name must be a string, got {name!r}.")
    for flag in ("bias", "keepdims"):
        if flag in spec and not isinstance(spec[flag], (bool, np.bool_)):
            raise ValueError(f"{where}: {flag} must be True or False, got {spec[flag]!r}.")
    return {**optional, **spec}


def _padding(value, where: str):
    if value in ("valid", "same"):
        return 0 if value == "valid" else "same"
    if isinstance(value, str):
        raise ValueError(f"{where}: unknown padding {value!r}; use 'valid', 'same' or a whole number.")
    return _whole(value, f"{where}: padding", minimum=0)


def layer_rows(layers: list[dict], dtype: str = "float32") -> list[dict]:
    """One row per layer: output shape, weights, biases, non-trainable values (a batch
    normalization's moving mean and variance), parameters (all three, as Keras counts them),
    activations, MACs and FLOPs per image, receptive field and jump (see the module docstring)."""
    if not isinstance(dtype, str) or dtype not in DTYPE_BYTES:
        raise ValueError(f"Unknown dtype {dtype!r}; use one of {', '.join(DTYPE_BYTES)}.")
    size = DTYPE_BYTES[dtype]
    if not isinstance(layers, (list, tuple)) or not layers:
        raise ValueError("A model is a non-empty list of layer specs, starting with an input layer.")
    rows, shape = [], None
    rf = jump = whole_input = 1  # the input's pixels: each sees itself, one pixel apart
    for index, raw in enumerate(layers):
        where = f"layer {index}"
        spec = _check_fields(raw, where)
        name = spec.get("name") or f"{spec['type']}{index}"
        where = f"layer {index} ({name})"
        kind = spec["type"]
        weights = biases = frozen = macs = 0
        if (kind == "input") != (index == 0):
            raise ValueError(f"{where}: the first layer, and only the first, must be an input layer.")
        if kind == "input":
            dims = spec["shape"]
            if not isinstance(dims, (list, tuple)) or len(dims) not in (1, 3):
                raise ValueError(f"{where}: shape must be [height, width, channels] or [features], "
                                 f"got {dims!r}.")
            shape = tuple(_whole(d, f"{where}: shape") for d in dims)
            whole_input = max(shape[:2])  # an image's longer side, or a flat input's length
        elif kind == "flatten":
            shape = (math.prod(shape),)  # exact: np.prod wraps around past 2**63
        elif kind == "dense":
            if len(shape) != 1:
                raise ValueError(f"{where}: a dense layer needs a flat input but gets {_fmt(shape)}; "
                                 "add a flatten layer before it.")
            units = _whole(spec["units"], f"{where}: units")
            weights, biases = shape[0] * units, units if spec["bias"] else 0
            macs = shape[0] * units
            shape = (units,)
            rf = jump = whole_input
        elif kind == "batchnorm":  # per channel: gamma, beta (trained), moving mean, variance
            weights = biases = shape[-1]
            frozen = 2 * shape[-1]
        elif kind == "dropout":
            rate = spec["rate"]
            number = not isinstance(rate, (bool, np.bool_)) and isinstance(
                rate, (int, float, np.integer, np.floating))
            if not number or not 0 <= rate < 1:
                raise ValueError(f"{where}: rate must be a number from 0 to 1 (1 excluded), "
                                 f"got {rate!r}.")
        else:  # conv, maxpool, lrn, gap: they need height x width x channels
            if len(shape) != 3:
                raise ValueError(f"{where}: a {kind} layer needs a height x width x channels input, "
                                 f"got {_fmt(shape)}.")
            h, w, c = shape
            if kind == "lrn":
                _whole(spec["size"], f"{where}: size")
            elif kind == "gap":
                shape = (1, 1, c) if spec["keepdims"] else (c,)
                rf = jump = whole_input
            else:
                key = "kernel" if kind == "conv" else "pool"
                k = _whole(spec[key], f"{where}: {key}")
                s = _whole(spec["stride"] if spec["stride"] is not None else k, f"{where}: stride")
                p = _padding(spec["padding"], where)
                oh, ow = _window(h, k, s, p, where), _window(w, k, s, p, where)
                rf, jump = rf + (k - 1) * jump, jump * s
                if kind == "maxpool":
                    shape = (oh, ow, c)
                else:
                    f = _whole(spec["filters"], f"{where}: filters")
                    g = _whole(spec["groups"], f"{where}: groups")
                    if c % g or f % g:
                        raise ValueError(f"{where}: groups {g} must divide both the input channels "
                                         f"({c}) and the filters ({f}).")
                    weights, biases = k * k * (c // g) * f, f if spec["bias"] else 0
                    macs = oh * ow * f * k * k * (c // g)
                    shape = (oh, ow, f)
        values = 0 if kind == "flatten" else math.prod(shape)  # a reshape stores nothing new
        params = weights + biases + frozen
        rows.append({"layer": name, "type": kind, "output": _fmt(shape), "shape": shape,
                     "weights": weights, "biases": biases, "non_trainable": frozen,
                     "params": params, "activations": values, "macs": macs, "flops": 2 * macs,
                     "activation_bytes": values * size, "param_bytes": params * size,
                     "rf": rf, "jump": jump})
    return rows


def _fmt(shape) -> str:
    return "x".join(str(d) for d in shape)


@dataclass
class Summary:
    """What :func:`analyze` returns: a per-layer table and the model's totals."""

    table: pd.DataFrame
    totals: dict
    dtype: str

    def _repr_html_(self):  # a notebook shows the table
        return self.styled()._repr_html_()

    def styled(self, columns=None):
        """The table with thousands separators and a totals row, for a page (FLOPs = 2 x MACs).

        The default columns: layer, output, weights, biases, non_trainable (only for a model that
        has non-trainable values), params, activations, macs."""
        if columns is None:
            columns = ["layer", "output", "weights", "biases", "non_trainable", "params",
                       "activations", "macs"]
            if not self.totals["non_trainable"]:
                columns.remove("non_trainable")
        shown = self.table[list(columns)]
        total = {c: self.totals[c] for c in shown.columns if c in self.totals}
        shown = pd.concat([shown, pd.DataFrame([{"layer": "total", "output": "", **total}])],
                          ignore_index=True)
        numbers = [c for c in shown.columns if c not in ("layer", "type", "output")]
        return shown.style.format("{:,.0f}", subset=numbers, na_rep="").hide(axis="index")


def analyze(layers: list[dict], dtype: str = "float32") -> Summary:
    """Per-layer table and totals of a model given as layer specs (see the module docstring)."""
    table = pd.DataFrame(layer_rows(layers, dtype))
    sums = ["weights", "biases", "non_trainable", "params", "activations", "macs", "flops",
            "activation_bytes", "param_bytes"]
    totals = {c: int(table[c].sum()) for c in sums}
    totals["output"] = table["output"].iloc[-1]
    return Summary(table=table, totals=totals, dtype=dtype)


def receptive_fields(layers: list[dict]) -> list[dict]:
    """Each convolution's and pooling layer's receptive field and jump (and the input's), by name.

    A row per layer: ``layer``, ``type``, ``output``, ``receptive field`` (input pixels along each
    side that one unit depends on) and ``stride in pixels`` (the jump: input pixels between
    neighbouring units), the ``rf`` and ``jump`` columns of :func:`layer_rows`.
    """
    return [{"layer": row["layer"], "type": row["type"], "output": row["output"],
             "receptive field": row["rf"], "stride in pixels": row["jump"]}
            for row in layer_rows(layers) if row["type"] in ("input", "conv", "maxpool")]


# ----------------------------------------------------------------------------- training memory
def _optimizer_slots(optimizer: str) -> int:
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZER_SLOTS:
        raise ValueError(f"Unknown optimizer {optimizer!r}; use one of {', '.join(OPTIMIZER_SLOTS)}.")
    return OPTIMIZER_SLOTS[optimizer]


def training_memory(layers: list[dict], *, batch_size: int, optimizer: str = "adam",
                    dtype: str = "float32") -> pd.Series:
    """Bytes needed to train one step: weights, gradients, optimizer state, activations, input.

    Weights are every parameter; gradients and optimizer state only the trainable ones (a batch
    normalization's moving mean and variance get neither). The activations are every layer's output for the whole batch, kept for the backward pass
    (a framework may keep a little more, e.g. pre-activation values, or recompute some).
    """
    batch_size = _whole(batch_size, "batch_size")
    slots = _optimizer_slots(optimizer)
    table = analyze(layers, dtype).table
    size = DTYPE_BYTES[dtype]
    params = int(table["params"].sum())
    trainable = params - int(table["non_trainable"].sum())
    return pd.Series({
        "weights": params * size,
        "gradients": trainable * size,
        "optimizer state": trainable * size * slots,
        "activations": int(table["activations"].iloc[1:].sum()) * size * batch_size,
        "input batch": int(table["activations"].iloc[0]) * size * batch_size,
    }, name="bytes")


def largest_batch(layers: list[dict], ram_bytes: int, *, optimizer: str = "adam",
                  dtype: str = "float32") -> int:
    """The largest batch whose training memory fits in ``ram_bytes`` (0 if not even one image).

    ``ram_bytes`` is a whole number from 1 to ``MAX_RAM_BYTES`` (a million GiB).
    """
    ram_bytes = _whole(ram_bytes, "ram_bytes", maximum=MAX_RAM_BYTES)
    one = training_memory(layers, batch_size=1, optimizer=optimizer, dtype=dtype)
    fixed = int(one[["weights", "gradients", "optimizer state"]].sum())
    per_image = int(one[["activations", "input batch"]].sum())
    return max(0, (ram_bytes - fixed) // per_image)


# --------------------------------------------------------------------------------- time estimate
# Limits on a machine's clock (GHz) and bandwidth (GB/s), and on the efficiency: the smallest keep
# every time below 1e300 seconds (never infinite), the largest are far past any real processor.
MIN_RATE, MAX_RATE = 0.001, 1_000_000
MIN_EFFICIENCY, MAX_EFFICIENCY = 0.001, 1
# A sustained FLOP/s for estimate_epoch_seconds: from the slowest estimate_training can reach (one
# core at MIN_RATE GHz, one FLOP per cycle, MIN_EFFICIENCY) to past the fastest Machine (~4.6e33).
MIN_FLOPS_PER_SECOND, MAX_FLOPS_PER_SECOND = 1_000, 1e36


def _limit_text(x) -> str:
    """A limit as messages print it: 1,000,000 for a whole number, else Python's float repr."""
    return f"{int(x):,}" if float(x).is_integer() and abs(x) <= 2**53 else repr(float(x))


def _between(value, what: str, low: float, high: float) -> float:
    """``value`` as a float from ``low`` to ``high``, or a ValueError naming ``what``."""
    number = not isinstance(value, bool) and isinstance(value, (int, float, np.integer, np.floating))
    if not number or not low <= value <= high:
        try:  # a number shows as the float it would be; an int too large for one, as itself
            shown = repr(float(value)) if number else repr(value)
        except OverflowError:
            shown = str(int(value))
        raise ValueError(f"{what} must be a number from {_limit_text(low)} to {_limit_text(high)}, "
                         f"got {shown}.")
    return float(value)


@dataclass(frozen=True)
class Machine:
    """A processor's float32 peak and memory bandwidth, with where the numbers come from."""

    name: str
    cores: int
    clock_ghz: float
    flops_per_cycle: int  # float32 FLOPs per core per cycle at full vector width
    bandwidth_gbs: float  # main memory, GB/s
    source: str

    def __post_init__(self):  # checked, and kept as plain ints and floats
        set_ = object.__setattr__  # frozen
        set_(self, "cores", _whole(self.cores, "cores"))
        set_(self, "flops_per_cycle", _whole(self.flops_per_cycle, "flops_per_cycle"))
        set_(self, "clock_ghz", _between(self.clock_ghz, "clock_ghz", MIN_RATE, MAX_RATE))
        bandwidth = self.bandwidth_gbs
        if isinstance(bandwidth, bool) or bandwidth != 0:  # 0: not known, no memory bound
            bandwidth = _between(bandwidth, "bandwidth_gbs", MIN_RATE, MAX_RATE)
        set_(self, "bandwidth_gbs", float(bandwidth))

    @property
    def peak_flops(self) -> float:
        return self.cores * self.clock_ghz * 1e9 * self.flops_per_cycle


# First-generation Core i3 (Clarkdale, 32 nm, 2010): 2 cores / 4 threads, no Turbo Boost, SSE4.2 but no
# AVX. A core issues one 128-bit SSE multiply and one 128-bit SSE add per cycle: 4 + 4 = 8 float32
# FLOPs. Memory: two DDR3-1333 channels x 8 bytes x 1333 MT/s = 21.3 GB/s.
_I3 = "Intel ARK (Core i3-{} product page: clock, cores, threads, SSE4.2, DDR3-1333 x 2 channels)"
MACHINES = {
    "i3-530": Machine("Core i3-530", 2, 2.93, 8, 21.3, _I3.format(530)),
    "i3-540": Machine("Core i3-540", 2, 3.06, 8, 21.3, _I3.format(540)),
    "i3-550": Machine("Core i3-550", 2, 3.20, 8, 21.3, _I3.format(550)),
    "i3-560": Machine("Core i3-560", 2, 3.33, 8, 21.3, _I3.format(560)),
    # Colab's usual free GPU: NVIDIA T4 datasheet, 8.1 TFLOP/s float32 (2,560 cores x 1.59 GHz x 2),
    # 320 GB/s GDDR6.
    "t4": Machine("NVIDIA T4 (Colab)", 40, 1.59, 128, 320.0,
                  "NVIDIA T4 datasheet: 8.1 TFLOP/s float32, 320 GB/s (40 SMs x 64 FP32 lanes x 2)"),
}


def build_machine() -> Machine:
    """This computer, read from the operating system (Linux /proc/cpuinfo where available)."""
    info = ""
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        pass
    model = re.search(r"model name\s*:\s*(.+)", info)
    name = model.group(1).strip() if model else (platform.processor() or platform.machine())
    mhz = re.search(r"cpu MHz\s*:\s*([\d.]+)", info)
    ghz = re.search(r"@\s*([\d.]+)\s*GHz", name)
    clock = float(ghz.group(1)) if ghz else (float(mhz.group(1)) / 1000 if mhz else 2.0)
    found = re.search(r"flags\s*:\s*(.+)", info)
    flags = set(found.group(1).split()) if found else set()
    # Two vector FMA units per core on server cores: width x 2 (multiply + add) x 2 units.
    if "avx512f" in flags:
        per_cycle, isa = 64, "AVX-512 FMA"
    elif {"avx2", "fma"} <= flags:
        per_cycle, isa = 32, "AVX2 FMA"
    elif "avx" in flags:
        per_cycle, isa = 16, "AVX"
    else:
        per_cycle, isa = 8, "SSE"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return Machine(f"{name} (this build)", cores, round(clock, 2), per_cycle, 0.0,
                   f"read from /proc/cpuinfo: {cores} cores at {clock:.2f} GHz, {isa} "
                   f"(assumes two FMA units); memory bandwidth not measured")


def training_flops_per_image(layers: list[dict]) -> int:
    """FLOPs to train on one image: the forward pass plus a backward pass of about twice as much.

    The backward pass of a convolution or dense layer computes two products of the forward's size:
    the gradient with respect to its input and with respect to its weights. The first layer does not
    need the first one, and pooling, ReLU and normalization cost differently, so 3x is a rule.
    """
    return 3 * analyze(layers).totals["flops"]


def estimate_epoch_seconds(layers: list[dict], images: int, flops_per_second: float,
                           *, validation_images: int = 0) -> float:
    """Seconds per epoch at a sustained FLOP/s: training images plus a forward pass over validation.

    ``flops_per_second`` is from ``MIN_FLOPS_PER_SECOND`` to ``MAX_FLOPS_PER_SECOND``.
    """
    images = _whole(images, "images")
    validation_images = _whole(validation_images, "validation_images", minimum=0)
    rate = _between(flops_per_second, "flops_per_second", MIN_FLOPS_PER_SECOND,
                    MAX_FLOPS_PER_SECOND)
    forward = analyze(layers).totals["flops"]
    return (images * 3 * forward + validation_images * forward) / rate


def estimate_training(layers: list[dict], machine: Machine, *, images: int, epochs: int,
                      efficiency: float = 0.5, batch_size: int = 32, optimizer: str = "adam",
                      dtype: str = "float32") -> dict:
    """Training time on ``machine``: FLOPs over sustained FLOP/s, beside a memory-traffic bound.

    Sustained FLOP/s = cores x clock x FLOPs per cycle x ``efficiency`` (how much of the peak the
    convolution code reaches). The memory bound is a lower limit on the traffic: each activation
    written and read once forward and once backward, the weights read twice, their gradients written,
    and the optimizer reading and writing weights and state once per batch (non-trainable values,
    a batch normalization's moving statistics, are only read twice).
    """
    images, epochs = _whole(images, "images"), _whole(epochs, "epochs")
    efficiency = _between(efficiency, "efficiency", MIN_EFFICIENCY, MAX_EFFICIENCY)
    batch_size = _whole(batch_size, "batch_size")
    slots = _optimizer_slots(optimizer)
    summary = analyze(layers, dtype)
    size = DTYPE_BYTES[dtype]
    flops = images * epochs * 3 * summary.totals["flops"]
    sustained = machine.peak_flops * efficiency
    compute_s = flops / sustained
    per_image = 4 * summary.totals["activations"] * size
    frozen = summary.totals["non_trainable"]
    per_batch = (2 * frozen + (summary.totals["params"] - frozen) * (6 + 2 * slots)) * size
    traffic = images * epochs * per_image + -(-images // batch_size) * epochs * per_batch
    memory_s = traffic / (machine.bandwidth_gbs * 1e9) if machine.bandwidth_gbs else 0.0
    return {"machine": machine.name, "training_flops": flops, "peak_flops": machine.peak_flops,
            "sustained_flops": sustained, "compute_seconds": compute_s, "traffic_bytes": traffic,
            "memory_seconds": memory_s, "seconds": max(compute_s, memory_s),
            "bound": "compute" if compute_s >= memory_s else "memory"}


# ------------------------------------------------------------------------------------- to Keras
def to_keras(layers: list[dict], name: str = "from_specs"):
    """The same model in Keras (explicit padding becomes a ZeroPadding2D before the layer).

    Every convolution has a ReLU, and so has every dense layer but the last (which gives logits);
    ``batchnorm`` is a BatchNormalization (over the last axis), ``dropout`` a Dropout, ``gap`` a
    GlobalAveragePooling2D.
    """
    import keras

    layer_rows(layers)  # validate first: a clear ValueError rather than a Keras one
    last_dense = max((i for i, spec in enumerate(layers) if spec["type"] == "dense"), default=-1)
    model = keras.Sequential(name=name)
    for index, raw in enumerate(layers):
        spec = _check_fields(raw, f"layer {index}")
        kind, lname = spec["type"], spec.get("name") or f"{spec['type']}{index}"
        if kind == "input":
            model.add(keras.Input(shape=tuple(spec["shape"])))
            continue
        if kind in ("conv", "maxpool") and spec["padding"] not in ("valid", "same") and spec["padding"]:
            model.add(keras.layers.ZeroPadding2D(spec["padding"], name=f"{lname}_pad"))
        padding = "same" if spec.get("padding") == "same" else "valid"
        if kind == "conv":
            model.add(keras.layers.Conv2D(spec["filters"], spec["kernel"], strides=spec["stride"],
                                          padding=padding, groups=spec["groups"],
                                          use_bias=spec["bias"], activation="relu", name=lname))
        elif kind == "maxpool":
            model.add(keras.layers.MaxPooling2D(spec["pool"], strides=spec["stride"], padding=padding,
                                                name=lname))
        elif kind == "lrn":
            model.add(LocalResponseNorm(spec["size"], name=lname))
        elif kind == "batchnorm":
            model.add(keras.layers.BatchNormalization(name=lname))
        elif kind == "dropout":
            model.add(keras.layers.Dropout(spec["rate"], name=lname))
        elif kind == "gap":
            model.add(keras.layers.GlobalAveragePooling2D(keepdims=spec["keepdims"], name=lname))
        elif kind == "flatten":
            model.add(keras.layers.Flatten(name=lname))
        else:
            model.add(keras.layers.Dense(spec["units"], use_bias=spec["bias"], name=lname,
                                         activation="relu" if index < last_dense else None))
    return model


def _flat_layers(model) -> list:
    """A model's layers in order, with any Sequential inside it (an augmentation block) opened."""
    import keras

    out = []
    for layer in model.layers:
        out += _flat_layers(layer) if isinstance(layer, keras.Sequential) else [layer]
    return out


def _skipped(layer) -> bool:
    """Whether from_keras leaves ``layer`` out: an activation, or a preprocessing or augmentation
    layer (RandomFlip, RandomTranslation, RandomCrop, Rescaling, ...), as long as it has no
    parameters and keeps the shape; either kind is refused otherwise."""
    import keras

    activation = isinstance(layer, (keras.layers.ReLU, keras.layers.Activation,
                                    keras.layers.LeakyReLU, keras.layers.ELU, keras.layers.Softmax))
    preprocessing = type(layer).__module__.startswith("keras.src.layers.preprocessing")
    if not (activation or preprocessing):
        return False
    kind = "activation" if activation else "preprocessing"
    if layer.count_params():
        raise ValueError(f"{layer.name}: a {type(layer).__name__} layer with "
                         f"{layer.count_params():,} parameters; the calculator takes only "
                         f"{kind} layers without parameters.")
    before, after = tuple(layer.input.shape[1:]), tuple(layer.output.shape[1:])
    if before != after:
        raise ValueError(f"{layer.name}: {type(layer).__name__} changes the shape from "
                         f"{_fmt(before)} to {_fmt(after)}; the calculator takes only {kind} "
                         "layers that keep it (give the model the image size it works on).")
    return True


def from_keras(model) -> list[dict]:
    """Layer specs of a Keras Sequential model (see the module docstring for the layer types).

    It reads Conv2D (square kernels and strides; a ZeroPadding2D before it becomes its
    ``padding``), MaxPooling2D, BatchNormalization (over the last axis, with its beta and gamma),
    Dropout, GlobalAveragePooling2D, Flatten and Dense. A Sequential inside the model (an
    augmentation block, say) is opened. Left out, because they change neither a shape nor a
    count: activation layers (ReLU, Activation, ...; the calculator counts no work for ReLUs) and
    Keras's preprocessing and augmentation layers (RandomFlip, RandomTranslation, RandomCrop,
    Rescaling, ...), which do nothing at inference; such a layer with parameters (Normalization)
    or one that changes the shape (a RandomCrop to a smaller size, Resizing) is refused. Any other
    layer is refused with its name.
    """
    import keras

    specs = [{"type": "input", "name": "input", "shape": list(model.input_shape[1:])}]
    pad, counts = 0, {}
    for layer in _flat_layers(model):
        cfg = layer.get_config()
        if isinstance(layer, keras.layers.ZeroPadding2D):
            (top, bottom), (left, right) = cfg["padding"]
            if len({top, bottom, left, right}) != 1:
                raise ValueError(f"{layer.name}: only equal padding on all sides is supported.")
            pad = top
            continue
        if _skipped(layer):
            continue
        padding = pad or cfg.get("padding")
        pad = 0
        if isinstance(layer, keras.layers.Conv2D):
            specs.append(_conv(layer.name, cfg["filters"], _square(cfg["kernel_size"], layer),
                               _square(cfg["strides"], layer), padding, cfg["groups"]))
            specs[-1]["bias"] = cfg["use_bias"]
        elif isinstance(layer, keras.layers.MaxPooling2D):
            specs.append({"type": "maxpool", "name": layer.name, "pool": _square(cfg["pool_size"], layer),
                          "stride": _square(cfg["strides"], layer), "padding": padding})
        elif isinstance(layer, LocalResponseNorm):
            specs.append({"type": "lrn", "name": layer.name, "size": cfg["size"]})
        elif isinstance(layer, keras.layers.BatchNormalization):
            axis = cfg["axis"] if isinstance(cfg["axis"], (list, tuple)) else [cfg["axis"]]
            if list(axis) not in ([-1], [len(layer.input.shape) - 1]) or not (
                    cfg["center"] and cfg["scale"]):
                raise ValueError(f"{layer.name}: only a batch normalization over the last axis "
                                 "with both beta and gamma (center and scale) is supported.")
            specs.append({"type": "batchnorm", "name": layer.name})
        elif isinstance(layer, keras.layers.Dropout):
            specs.append({"type": "dropout", "name": layer.name, "rate": cfg["rate"]})
        elif isinstance(layer, keras.layers.GlobalAveragePooling2D):
            specs.append({"type": "gap", "name": layer.name, "keepdims": cfg["keepdims"]})
        elif isinstance(layer, keras.layers.Flatten):
            specs.append({"type": "flatten", "name": layer.name})
        elif isinstance(layer, keras.layers.Dense):
            specs.append({"type": "dense", "name": layer.name, "units": cfg["units"],
                          "bias": cfg["use_bias"]})
        else:
            raise ValueError(f"{layer.name}: {type(layer).__name__} layers are not supported.")
        # Stable names (conv1, pool1, bn1, fc1, ...) rather than Keras's session-wide counters.
        prefix = {"conv": "conv", "maxpool": "pool", "dense": "fc", "batchnorm": "bn",
                  "dropout": "drop"}.get(specs[-1]["type"], specs[-1]["type"])
        counts[prefix] = counts.get(prefix, 0) + 1
        specs[-1]["name"] = f"{prefix}{counts[prefix]}" if prefix != "flatten" else "flatten"
    return specs


def _square(pair, layer) -> int:
    if len(set(pair)) != 1:
        raise ValueError(f"{layer.name}: only square kernels, pools and strides are supported, "
                         f"got {pair}.")
    return int(pair[0])


def _lrn_layer_class():
    import keras
    import tensorflow as tf

    @keras.saving.register_keras_serializable(package="cnnbook")
    class LocalResponseNorm(keras.layers.Layer):
        """AlexNet's local response normalization across ``size`` neighbouring channels."""

        def __init__(self, size: int = 5, **kwargs):
            super().__init__(**kwargs)
            self.size = size

        def call(self, x):
            return tf.nn.local_response_normalization(x, depth_radius=self.size // 2, bias=2.0,
                                                      alpha=1e-4, beta=0.75)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "size": self.size}

    return LocalResponseNorm


LocalResponseNorm = _lrn_layer_class()


# ------------------------------------------------------------------------------------ measuring
def measure_training(layers: list[dict], *, batch_size: int = 8, steps: int = 5, warmup: int = 2,
                     seed: int = 0) -> dict:
    """Time real Keras training steps (``model.fit``) on random images: the median after warm-up.

    The warm-up steps run first (the first one traces and compiles the graph); then ``steps`` steps
    are timed one by one. Returns seconds per step, images per second and the achieved FLOP/s
    (the calculator's training FLOPs per image x images per second).
    """
    import keras

    started = time.perf_counter()
    keras.utils.set_random_seed(seed)
    model = to_keras(layers, name="measured")
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(seed)
    x = rng.random((batch_size * max(steps, warmup), *layers[0]["shape"]), dtype=np.float32)
    y = rng.integers(0, layers[-1]["units"], size=(len(x), 1))
    model.fit(x, y, batch_size=batch_size, epochs=1, steps_per_epoch=warmup, verbose=0)
    stamps = _BatchClock()
    model.fit(x, y, batch_size=batch_size, epochs=1, steps_per_epoch=steps, verbose=0,
              callbacks=[stamps])
    step_s = float(statistics.median(np.diff(stamps.times)))
    per_image = training_flops_per_image(layers)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return {"batch_size": batch_size, "steps": steps, "warmup": warmup, "step_seconds": step_s,
            "images_per_second": batch_size / step_s,
            "achieved_flops": per_image * batch_size / step_s,
            "load_average": load,  # other work on the machine slows the steps down
            "wall_seconds": time.perf_counter() - started}  # the whole measurement, warm-up included


def _batch_clock_class():
    import keras

    class BatchClock(keras.callbacks.Callback):
        """Records the time at the start of training and after every batch."""

        def on_train_begin(self, logs=None):
            self.times = [time.perf_counter()]

        def on_train_batch_end(self, batch, logs=None):
            self.times.append(time.perf_counter())

    return BatchClock


_BatchClock = _batch_clock_class()


def machines_table(machines: dict[str, Machine] | None = None) -> pd.DataFrame:
    """The machine presets as a table: cores, clock, FLOPs per cycle, peak GFLOP/s, bandwidth.

    Where each number comes from is each machine's ``source``.
    """
    machines = machines or {**MACHINES, "build": build_machine()}
    rows = [{**asdict(m), "peak GFLOP/s": m.peak_flops / 1e9} for m in machines.values()]
    return pd.DataFrame(rows, index=list(machines)).drop(columns=["name", "source"])
