"""Inside the trained networks: feature maps, first-layer filters, and the browser explorer's export.

:func:`export` writes what the explorer on the chapter "Inside the trained networks" loads into the
built site (never into git): both trained models' weights as one float32 little-endian file each,
100 test images (the first 10 of each class) as raw RGB bytes, and ``manifest.json``, which
describes them: the layer list in the calculator's spec format (:func:`cnnbook.calc.from_keras`),
each layer's output shape as the calculator computes it, every weight tensor's byte offset, the
files' sha256, the runs' provenance and test accuracy, and Keras's logits for the 100 images, so
that the browser's arithmetic can be checked against Keras's. The export is written into a
temporary sibling folder and swapped in, so a failure never leaves half of one; an export that is
already up to date (same runs, same format, files whose sha256 match) is returned as it is.

The other functions draw what the chapter shows: the first layer's filters as colour patches
(:func:`plot_filters`) and the feature maps of every convolution and pooling layer
(:func:`feature_maps`, :func:`plot_feature_maps`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import keras
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from . import calc as _calc
from . import data as _data
from . import models as _models
from . import train as _train

FORMAT = 1
MODEL_NAMES = ("conv", "pool")
SAMPLES_PER_CLASS = 10
INPUT_SCALE = 255
MANIFEST = "manifest.json"
SAMPLES_FILE = "samples.bin"
FILES = (MANIFEST, *(f"{name}.weights.bin" for name in MODEL_NAMES), SAMPLES_FILE)
FEATURE_LAYERS = ("conv", "maxpool")  # the layer types whose outputs are pictures


class ExportError(ValueError):
    """An explorer export that cannot be written where it was asked for; the message says why."""


# ------------------------------------------------------------------------------------ samples
def sample_indices(y: np.ndarray, per_class: int = SAMPLES_PER_CLASS) -> np.ndarray:
    """Indices of the first ``per_class`` images of each class, class 0's first, in set order."""
    labels = np.asarray(y).reshape(-1)
    if isinstance(per_class, bool) or not isinstance(per_class, (int, np.integer)) \
            or per_class < 1:
        raise ValueError(f"per_class must be a positive whole number, not {per_class!r}.")
    picked = []
    for label in range(len(_data.CLASS_NAMES)):
        where = np.flatnonzero(labels == label)
        if len(where) < per_class:
            raise ValueError(
                f"The test set has {len(where)} image(s) of class {label} "
                f"({_data.CLASS_NAMES[label]}), fewer than the {per_class} needed: use a profile "
                f"or data source with at least {per_class} test images per class.")
        picked.append(where[:per_class])
    return np.concatenate(picked)


def test_images(result: _train.RunResult, data_source=None, cache_dir=None):
    """The test images and labels (``uint8``, ``(N, 32, 32, 3)`` and ``(N,)``) the run used."""
    dataset = _data.load_cifar10(data_source, train_per_class=result.config["train_per_class"],
                                 test_per_class=result.config["test_per_class"],
                                 cache_dir=cache_dir)
    x, y = dataset.test
    return x, np.asarray(y).reshape(-1)


def scaled(images: np.ndarray) -> np.ndarray:
    """What the networks see: ``uint8`` pixels as float32 divided by 255, as in training."""
    return np.asarray(images, dtype=np.float32) / np.float32(INPUT_SCALE)


def logits(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """The model's ten logits per image, float32 (the models end in a linear Dense(10))."""
    return np.asarray(model(scaled(images), training=False), dtype=np.float32)


# ------------------------------------------------------------------------- layers and weights
def _named_layers(model: keras.Model) -> list[tuple[str, dict, keras.layers.Layer]]:
    """``(name, spec, layer)`` for every layer of ``model``, named as calc.from_keras names them."""
    specs = _calc.from_keras(model)[1:]
    layers = [layer for layer in model.layers
              if not isinstance(layer, keras.layers.ZeroPadding2D)]
    if len(layers) != len(specs):
        raise ValueError(f"{model.name}: {len(layers)} layers but {len(specs)} layer specs.")
    return [(spec["name"], spec, layer) for spec, layer in zip(specs, layers)]


def weight_tensors(model: keras.Model) -> list[tuple[str, str, np.ndarray]]:
    """``(layer, name, float32 array)`` for each weight in the order of ``model.weights``."""
    tensors, variables = [], []
    for name, _spec, layer in _named_layers(model):
        for variable in layer.weights:
            variables.append(variable)
            tensors.append((name, variable.name, np.asarray(variable, dtype=np.float32)))
    if [id(v) for v in variables] != [id(v) for v in model.weights]:
        raise ValueError(f"{model.name}: its layers' weights are not in the order of "
                         "model.weights.")
    return tensors


def feature_model(model: keras.Model) -> keras.Model:
    """A functional model over the trained layers whose outputs are every conv and pool layer's."""
    outputs = [layer.output for _n, spec, layer in _named_layers(model)
               if spec["type"] in FEATURE_LAYERS]
    return keras.Model(inputs=model.inputs[0], outputs=outputs)


def feature_maps(model: keras.Model, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every convolution's and pooling layer's output for ``images`` (``uint8``), by layer name.

    Each value is float32 ``(N, height, width, channels)``; a convolution's output is after its
    ReLU, so it holds no negative value.
    """
    names = [name for name, spec, _l in _named_layers(model) if spec["type"] in FEATURE_LAYERS]
    outputs = feature_model(model)(scaled(images), training=False)
    return {name: np.asarray(out, dtype=np.float32) for name, out in zip(names, outputs)}


def first_layer_filters(model: keras.Model) -> np.ndarray:
    """The first convolution's kernels, ``(filters, height, width, 3)`` float32."""
    for _name, spec, layer in _named_layers(model):
        if spec["type"] == "conv":
            kernel = np.asarray(layer.kernel, dtype=np.float32)  # (kh, kw, in, out)
            return np.transpose(kernel, (3, 0, 1, 2))
    raise ValueError(f"{model.name} has no convolution.")


def initial_model(result: _train.RunResult) -> keras.Model:
    """The run's model as training started it: built after seeding Keras with the run's seed.

    :func:`cnnbook.train.train` seeds (``keras.utils.set_random_seed``) and then builds the
    model, so the same two steps give the same random starting weights. Seeding resets Python's,
    NumPy's and Keras's random generators, as the training run did.
    """
    keras.utils.set_random_seed(result.config["seed"])
    return _train.build_model(result.model_name,
                              result.config.get("precision", _train.DEFAULT_PRECISION))


def activity(maps: dict[str, np.ndarray]) -> pd.DataFrame:
    """Per layer: its output shape, the share of its outputs that are 0, and its silent channels.

    A channel is silent when it is 0 at every position of every image in ``maps``.
    """
    rows = []
    for name, values in maps.items():
        per_channel = values.reshape(-1, values.shape[-1])
        rows.append({"layer": name, "output": "x".join(map(str, values.shape[1:])),
                     "outputs that are 0": float((values <= 0).mean()),
                     "silent channels": int((per_channel.max(axis=0) <= 0).sum()),
                     "channels": int(values.shape[-1])})
    return pd.DataFrame(rows).set_index("layer")


# ------------------------------------------------------------------------------------- export
def _sha256(path: Path) -> str:
    return _train._file_record(path)["sha256"]  # the run cache's own check of a file


def _run_identity(result: _train.RunResult) -> dict:
    """What names a run and its trained weights (a forced retrain keeps the folder's name)."""
    stored = json.loads((result.run_dir / "result.json").read_text())
    return {"run": result.run_dir.name,
            "weights_sha256": stored["files"]["model.weights.h5"]["sha256"]}


def _export_key(profile: _train.Profile, runs: dict[str, _train.RunResult]) -> str:
    """A hash of the format and both runs: equal keys, equal exports."""
    blob = json.dumps({"format": FORMAT, "profile": profile.name,
                       "runs": {name: _run_identity(run) for name, run in runs.items()}},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _check_folder(folder: Path) -> None:
    """An ExportError unless ``folder`` can become an export (new, empty, or an older export)."""
    for parent in [folder, *folder.parents]:
        if parent.exists() and not parent.is_dir():
            raise ExportError(f"The explorer export folder {folder} cannot be created: {parent} "
                              "is a file, not a folder. Move that file, or export to another "
                              "folder.")
    if folder.is_dir():
        stray = sorted(p.name for p in folder.iterdir() if p.name not in FILES)
        if stray:
            raise ExportError(f"The folder {folder} holds files that are not an explorer "
                              f"export ({', '.join(stray[:3])}{', ...' * (len(stray) > 3)}), and "
                              "an export replaces the whole folder: export to a new or empty "
                              "folder, or remove those files.")


def _current(folder: Path, key: str) -> dict | None:
    """The manifest of an export in ``folder`` with this key and intact files; else None."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if manifest.get("format") != FORMAT or manifest.get("export_key") != key:
            return None
        if sorted(p.name for p in folder.iterdir()) != sorted(FILES):
            return None
        records = [manifest["models"][name]["weights"] for name in MODEL_NAMES]
        records.append(manifest["samples"])
        for record in records:
            path = folder / record["file"]
            if path.stat().st_size != record["bytes"] or _sha256(path) != record["sha256"]:
                return None
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return manifest


def _model_entry(name: str, result: _train.RunResult, model: keras.Model, folder: Path) -> dict:
    """Write ``<name>.weights.bin`` into ``folder``; the manifest's entry for the model."""
    layers = _calc.from_keras(model)
    shapes = [list(row["shape"]) for row in _calc.layer_rows(layers)]
    records, offset = [], 0
    path = folder / f"{name}.weights.bin"
    with open(path, "wb") as f:
        for layer, tensor_name, array in weight_tensors(model):
            blob = np.ascontiguousarray(array, dtype="<f4").tobytes()
            f.write(blob)
            records.append({"layer": layer, "name": tensor_name, "shape": list(array.shape),
                            "offset": offset, "bytes": len(blob)})
            offset += len(blob)
    return {
        "title": _models.TITLES[name],
        "layers": layers,
        "shapes": shapes,
        "weights": {"file": path.name, "bytes": offset, "sha256": _sha256(path),
                    "tensors": records},
        "parameters": int(model.count_params()),
        "test_accuracy": float(result.test_accuracy),
        "provenance": {**result.provenance, "run": result.run_dir.name,
                       "from_cache": bool(result.from_cache)},
    }


def _write(folder: Path, profile: _train.Profile, runs: dict[str, _train.RunResult], key: str,
           data_source, cache_dir) -> dict:
    """Write every file of the export into the (new, empty) ``folder``; the manifest."""
    first = runs[MODEL_NAMES[0]]
    x_test, y_test = test_images(first, data_source, cache_dir)
    index = sample_indices(y_test)
    samples = np.ascontiguousarray(x_test[index], dtype=np.uint8)
    (folder / SAMPLES_FILE).write_bytes(samples.tobytes())
    models, sample_logits = {}, {}
    for name, result in runs.items():
        model = result.load_model()
        models[name] = _model_entry(name, result, model, folder)
        sample_logits[name] = logits(model, samples).tolist()
    manifest = {
        "format": FORMAT,
        "export_key": key,
        "profile": profile.name,
        "preview": profile.name != "full",
        "data_source": first.provenance["data_source"],
        "classes": list(_data.CLASS_NAMES),
        "input_scale": INPUT_SCALE,
        "models": models,
        "samples": {"file": SAMPLES_FILE, "bytes": samples.nbytes,
                    "sha256": _sha256(folder / SAMPLES_FILE), "count": len(samples),
                    "shape": list(samples.shape), "labels": [int(v) for v in y_test[index]],
                    "test_indices": [int(i) for i in index], "logits": sample_logits},
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, separators=(",", ":")))
    return manifest


def export(folder, *, profile=None, data_source=None, cache_dir=None) -> dict:
    """Write the explorer's files into ``folder`` (replacing an older export); the manifest.

    The two runs are the ones the model chapters trained, ``cnnbook.train.train("conv")`` and
    ``("pool")`` under ``profile`` (default: ``$CNNBOOK_PROFILE``), taken from the run cache (or
    trained, if they are not there yet). An export already up to date is returned unchanged.
    """
    prof = _train.get_profile(profile)  # an unknown profile fails before anything is touched
    folder = Path(folder).expanduser().absolute()
    _check_folder(folder)
    runs = {name: _train.train(name, prof, data_source=data_source, cache_dir=cache_dir,
                               verbose=0) for name in MODEL_NAMES}
    key = _export_key(prof, runs)
    current = _current(folder, key) if folder.is_dir() else None
    if current is not None:
        return current
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"The explorer export folder {folder.parent} cannot be created "
                          f"({os.strerror(exc.errno) if exc.errno else exc}): fix its "
                          "permissions, or export to another folder.") from exc
    tmp = folder.with_name(f".{folder.name}.tmp-{os.getpid()}")
    old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    try:
        tmp.mkdir()
        manifest = _write(tmp, prof, runs, key, data_source, cache_dir)
        if folder.exists():
            os.replace(folder, old)
        try:
            os.replace(tmp, folder)
        except BaseException:
            if old.exists() and not folder.exists():
                os.replace(old, folder)  # the earlier export goes back in place
            raise
    except OSError as exc:
        raise ExportError(f"The explorer export into {folder} failed "
                          f"({os.strerror(exc.errno) if exc.errno else exc}); any earlier export "
                          "there is left as it was. Free some space or fix the folder's "
                          "permissions, and build again.") from exc
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
    return manifest


# -------------------------------------------------------------------------------------- plots
def _label(fig, ax, text: str) -> None:
    """A row's label left of ``ax``: dark text on a light box, readable on a light or dark page."""
    box = ax.get_position()
    fig.text(box.x0 - 0.008, (box.y0 + box.y1) / 2, text, fontsize=8, color="black",
             ha="right", va="center", linespacing=1.1,
             bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": "none"})


def plot_filters(models: dict[str, keras.Model], titles: dict[str, str] | None = None):
    """Each model's first-layer filters as colour patches, one row per model.

    Each filter is scaled on its own around grey: 0.5 is a weight of 0 and the filter's largest
    absolute weight reaches 0 or 1, so its pattern shows whatever its size. A reddish pixel means
    the filter adds red there (and takes away green and blue), a dark one that it takes away all
    three colours.
    """
    filters = {name: first_layer_filters(model) for name, model in models.items()}
    columns = max(len(f) for f in filters.values())
    fig, axes = plt.subplots(len(filters), columns, squeeze=False,
                             figsize=(0.62 * columns + 2.2, 0.8 * len(filters)),
                             gridspec_kw={"left": 2.2 / (0.62 * columns + 2.2), "right": 0.995,
                                          "top": 0.97, "bottom": 0.03, "wspace": 0.12,
                                          "hspace": 0.2})
    for row, (name, kernels) in zip(axes, filters.items()):
        for i, ax in enumerate(row):
            ax.set_axis_off()
            if i < len(kernels):
                k = kernels[i]
                ax.imshow(0.5 + 0.5 * k / max(float(np.abs(k).max()), 1e-12),
                          interpolation="nearest")
        kh, kw = filters[name].shape[1:3]
        _label(fig, row[0], f"{(titles or {}).get(name, name)}\n{len(kernels)} filters, "
                            f"{kh}x{kw}x3")
    fig.patch.set_alpha(0.0)
    return fig


def top_channels(values: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` channels with the largest mean output over a batch, largest first."""
    means = values.reshape(-1, values.shape[-1]).mean(axis=0)
    return np.argsort(-means, kind="stable")[:n]


def plot_feature_maps(maps: dict[str, np.ndarray], images: np.ndarray, *, channels: int = 4,
                      labels: list[str] | None = None):
    """Feature maps of a few images, one row per layer, one block of columns per image.

    ``maps`` is :func:`feature_maps`'s result for ``images``. The first row shows each image and
    its red, green and blue channels; each following row shows, for each image, the ``channels``
    channels of that layer whose mean output over all the images is largest (the same channels
    for every image, largest first). A row shares one scale per image, from 0 (black) to the
    row's largest value (bright), so a weak channel looks dark; a row with no value above 0
    (ReLU switched every unit off) is black. The row's label gives the layer, its output shape
    and how many of its channels are zero for every one of the images.
    """
    images = np.asarray(images)
    n = len(images)
    columns = n * channels + (n - 1)  # a narrow gap between the images' blocks
    widths = ([1] * channels + [0.25]) * (n - 1) + [1] * channels
    rows = 1 + len(maps)
    cell, left = 0.56, 1.45
    width = cell * sum(widths) + left
    fig, axes = plt.subplots(rows, columns, squeeze=False,
                             figsize=(width, cell * rows * 1.08 + 0.35),
                             gridspec_kw={"width_ratios": widths, "left": left / width,
                                          "right": 0.995, "top": 1 - 0.3 / (cell * rows * 1.08 + 0.35),
                                          "bottom": 0.01, "wspace": 0.08, "hspace": 0.08})
    for ax in axes.flat:
        ax.set_axis_off()
    starts = [b * (channels + 1) for b in range(n)]
    for b, start in enumerate(starts):
        axes[0, start].imshow(images[b], interpolation="nearest")
        for c in range(min(3, channels - 1)):
            axes[0, start + 1 + c].imshow(images[b][..., c], cmap="gray", vmin=0, vmax=255,
                                          interpolation="nearest")
        if labels:
            axes[0, start].set_title(labels[b], fontsize=8, color="black", loc="left", pad=3,
                                     bbox={"boxstyle": "round,pad=0.2", "facecolor": "white",
                                           "edgecolor": "none"})
    _label(fig, axes[0, 0], f"input\n{'x'.join(map(str, images.shape[1:]))}\nimage, R, G, B")
    for r, (name, values) in enumerate(maps.items(), start=1):
        shown = top_channels(values, channels)
        zero = int((values.reshape(-1, values.shape[-1]).max(axis=0) <= 0).sum())
        for b, start in enumerate(starts):
            top = float(values[b][..., shown].max())
            for c, channel in enumerate(shown):
                axes[r, start + c].imshow(values[b][..., channel], cmap="magma", vmin=0,
                                          vmax=top if top > 0 else 1, interpolation="nearest")
        _label(fig, axes[r, 0], f"{name}\n{'x'.join(map(str, values.shape[1:]))}\n"
                                f"{zero} of {values.shape[-1]} zero")
    fig.patch.set_alpha(0.0)
    return fig


def as_png(fig, colours: int = 256):
    """``fig`` as a PNG of at most ``colours`` colours (an IPython image), and ``fig`` closed.

    Feature maps and photographs drawn at screen size need no more than 256 colours, and the
    PNG is then less than half the size of matplotlib's full-colour one.
    """
    import io

    from IPython.display import Image
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(fig)
    image = PILImage.open(io.BytesIO(buffer.getvalue()))
    out = io.BytesIO()
    image.convert("RGBA").quantize(colours, method=PILImage.Quantize.FASTOCTREE).save(
        out, format="png", optimize=True)
    return Image(data=out.getvalue(), format="png")
