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


def receptive_fields(layers: list[dict]) -> list[dict]:
    """How many input pixels each layer's unit looks at (its receptive field), layer by layer.

    The standard recurrence: a window of ``k`` with stride ``s`` on a layer whose units are
    ``jump`` input pixels apart and see ``size`` pixels each sees ``size + (k - 1) * jump``.
    """
    rows, size, jump = [], 1, 1
    shapes = [row["shape"] for row in _calc.layer_rows(layers)]
    for spec, shape in zip(layers, shapes):
        if spec["type"] in ("conv", "maxpool"):
            k = spec["kernel"] if spec["type"] == "conv" else spec["pool"]
            stride = spec.get("stride") or k
            size, jump = size + (k - 1) * jump, jump * stride
        if spec["type"] in ("input", "conv", "maxpool"):
            rows.append({"layer": spec["name"], "type": spec["type"], "output": tuple(shape),
                         "receptive field": size, "stride in pixels": jump})
    return rows


# ------------------------------------------------------------------------------------- export
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
def plot_filters(models: dict[str, keras.Model], titles: dict[str, str] | None = None):
    """Each model's first-layer filters as colour patches, one row per model.

    Each filter is scaled on its own to [0, 1] around grey: 0.5 is a weight of 0, and the
    filter's largest absolute weight reaches 0 or 1, so that its pattern is visible whatever its
    size; a bright red patch means the filter responds to red there.
    """
    filters = {name: first_layer_filters(model) for name, model in models.items()}
    columns = max(len(f) for f in filters.values())
    fig, axes = plt.subplots(len(filters), columns, figsize=(0.8 * columns + 0.4,
                                                             1.15 * len(filters) + 0.2),
                             squeeze=False)
    for row, (name, kernels) in zip(axes, filters.items()):
        for i, ax in enumerate(row):
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(kernels):
                ax.set_axis_off()
                continue
            k = kernels[i]
            ax.imshow(0.5 + 0.5 * k / max(float(np.abs(k).max()), 1e-12),
                      interpolation="nearest")
            ax.set_xlabel(str(i + 1), fontsize=8, labelpad=2)
        row[0].set_ylabel((titles or {}).get(name, name), fontsize=8, rotation=0, ha="right",
                          va="center", labelpad=6)
    fig.tight_layout(w_pad=0.3, h_pad=0.6)
    return fig


def plot_feature_maps(maps: dict[str, np.ndarray], image: np.ndarray, *, channels: int = 8,
                      title: str | None = None):
    """One image's feature maps, one row per layer: the first ``channels`` channels of each.

    ``maps`` is :func:`feature_maps`'s result for a batch whose first image is ``image``. Every
    map is drawn on its own scale, from 0 (black) to its largest value (bright); an all-zero map
    (ReLU switched every unit off) is drawn black and marked "0".
    """
    rows = len(maps)
    fig, axes = plt.subplots(rows, channels + 1, figsize=(0.78 * (channels + 1) + 0.6,
                                                          0.82 * rows + 0.3), squeeze=False)
    for r, (row, (name, values)) in enumerate(zip(axes, maps.items())):
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
        if r == 0:
            row[0].imshow(image, interpolation="nearest")
        else:
            row[0].set_axis_off()
        stack = values[0]
        row[1].set_ylabel(f"{name}\n{'x'.join(map(str, stack.shape))}", fontsize=7,
                          rotation=0, ha="right", va="center", labelpad=4)
        for c, ax in enumerate(row[1:]):
            if c >= stack.shape[-1]:
                ax.set_axis_off()
                continue
            channel = stack[..., c]
            top = float(channel.max())
            ax.imshow(channel, cmap="magma", vmin=0, vmax=top if top > 0 else 1,
                      interpolation="nearest")
            if top <= 0:
                ax.text(0.5, 0.5, "0", color="white", fontsize=7, ha="center", va="center",
                        transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(w_pad=0.15, h_pad=0.25)
    return fig
