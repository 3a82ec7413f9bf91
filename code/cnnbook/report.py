"""Figures, tables and notes the chapters show: sample grids, curves, confusion matrices, provenance."""

from __future__ import annotations

import inspect

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from IPython.display import Markdown

from . import calc as _calc
from . import models as _models
from . import train as _train

# The assignment's own Colab run (official CIFAR-10 archive, a Colab GPU), copied from its logs:
# per-epoch history, seconds per epoch and the final test accuracy. Cited as facts, not reproduced.
ASSIGNMENT = {
    "conv": {
        "accuracy": [0.3443, 0.5106, 0.5783, 0.6195, 0.6503, 0.6725, 0.6939, 0.7169, 0.7354,
                     0.7540, 0.7780, 0.7932, 0.8146, 0.8282, 0.8449],
        "val_accuracy": [0.4438, 0.5465, 0.6003, 0.6167, 0.6358, 0.6511, 0.6428, 0.6558, 0.6598,
                         0.6578, 0.6627, 0.6581, 0.6592, 0.6544, 0.6504],
        "loss": [1.7485, 1.3580, 1.1819, 1.0720, 0.9861, 0.9234, 0.8636, 0.8049, 0.7523, 0.6946,
                 0.6352, 0.5861, 0.5265, 0.4831, 0.4398],
        "val_loss": [1.5231, 1.2748, 1.1254, 1.0908, 1.0437, 1.0149, 1.0350, 0.9983, 1.0271,
                     1.0405, 1.0625, 1.1349, 1.2415, 1.2006, 1.4546],
        "epoch_seconds": [29] + [14] * 14,
        "test_accuracy": 0.6504,
    },
    "pool": {
        "accuracy": [0.3743, 0.5475, 0.6034, 0.6353, 0.6576, 0.6801, 0.6981, 0.7153, 0.7327,
                     0.7454, 0.7639, 0.7771, 0.7910, 0.8044, 0.8224],
        "val_accuracy": [0.5313, 0.5453, 0.6087, 0.6234, 0.6273, 0.6733, 0.6554, 0.6700, 0.6796,
                         0.6865, 0.6644, 0.6900, 0.6802, 0.6701, 0.6719],
        "loss": [1.6893, 1.2528, 1.1161, 1.0206, 0.9544, 0.9002, 0.8450, 0.8011, 0.7524, 0.7139,
                 0.6690, 0.6293, 0.5856, 0.5457, 0.4959],
        "val_loss": [1.3107, 1.2781, 1.1016, 1.0489, 1.0661, 0.9558, 0.9819, 0.9460, 0.9406,
                     0.9511, 1.0512, 0.9683, 1.0173, 1.0353, 1.1521],
        "epoch_seconds": [27, 24, 23, 24, 23, 24, 23, 23, 23, 22, 24, 22, 23, 23, 23],
        "test_accuracy": 0.6719,
    },
}


# The assignment's AlexNet table (its last part), row by row as it prints it: layer, the shape it gives,
# "Memory" (a count of values) and "Parameters"; then its stated totals and its Method 1 time estimate.
ASSIGNMENT_ALEXNET = {
    "rows": [
        ("Input", "227x227x3", 154_587, 0),
        ("Conv1", "55x55x96", 290_400, 11_616),
        ("Maxpool", "27x27x96", 69_984, 0),
        ("Norm Layer", "27x27x96", 69_984, 0),
        ("Conv2", "27x27x256", 186_624, 6_400),
        ("Maxpool", "13x13x256", 43_264, 0),
        ("Norm Layer", "13x13x256", 43_264, 0),
        ("Conv3", "13x13x384", 64_896, 3_456),
        ("Conv4", "13x13x384", 64_896, 3_456),
        ("Conv5", "13x13x256", 43_264, 2_304),
        ("Maxpool", "6x6x256", 9_216, 0),
        ("FC6", "6x6x256x4096", 4_096, 37_748_736),
        ("FC7", "4096x4096", 4_096, 16_777_216),
        ("FC6", "1000x4096", 1_000, 4_096_000),  # sic: the last row is FC8
    ],
    "total_parameters": 58_649_184,
    "total_memory_values": 1_049_751,
    "total_memory_mb": 4.2,
    # Method 1: a "clock speed available" of 2.5 GHz (peak 3.06 GHz, 2 cores), 15 epochs = 30 passes,
    # 1,049,751 "instructions" per pass, 10,000 images; about 126 s on one core, 40-60 s on all.
    "method1": {"peak_ghz": 3.06, "clock_ghz": 2.5, "epochs": 15, "passes": 30, "images": 10_000,
                "memory_mb_total": 126, "instructions": 31_492_530, "seconds_per_image": 0.012597,
                "seconds": 126, "seconds_all_cores": (40, 60)},
}


def show_source(obj) -> Markdown:
    """The source code of a function from the package, shown as a highlighted code block."""
    return Markdown(f"```python\n{inspect.getsource(obj).rstrip()}\n```")


def preview_note(profile: _train.Profile | str | None = None) -> Markdown:
    """A visible note saying which profile produced the page's numbers.

    In the book's build, whose outputs MyST renders (the build sets ``$CNNBOOK_MARKDOWN`` to
    ``myst``: book/_ext/cnnbook_publish.py), an admonition; anywhere else (Jupyter, Colab,
    Binder), where an admonition would show as literal text, a plain Markdown block quote."""
    import os

    prof = _train.get_profile(profile)
    book = os.environ.get("CNNBOOK_MARKDOWN") == "myst"
    where = "This page was built" if book else "These cells run"
    if prof.name == "full":
        kind, title = "note", "Full profile."
        text = f"{where} with the **full** profile: {prof.description}."
    else:
        kind, title = "warning", "Quick preview."
        text = (f"{where} with the **{prof.name}** profile ({prof.description}). "
                f"{'Its' if book else 'Their'} numbers show that the code runs; they are not "
                "the assignment's results. "
                + ("Build with `CNNBOOK_PROFILE=full` for those." if book else
                   "Set `CNNBOOK_PROFILE` to `full` (the notebook's profile cell) for those."))
    if book:
        lead = f"**{title}** " if kind == "warning" else ""
        return Markdown(f":::{{{kind}}}\n{lead}{text}\n:::")
    return Markdown(f"> **{title}** {text}")


def provenance(result: _train.RunResult):
    """Where a training result came from, as a two-column table (long values kept whole)."""
    p = result.provenance
    gpus = ", ".join(p["hardware"]["gpus"]) or "none"
    rows = {
        "model": _models.TITLES.get(result.model_name, result.model_name),
        "profile": p["profile"],
        "data source": p["data_source"],
        "images (train / test)": f"{p['train_images']:,} / {p['test_images']:,}",
        "epochs": (str(result.epochs) + (f" (weights of epoch {p['restored_epoch']} restored)"
                                         if p.get("restored_epoch") else ""))
        if not p.get("stopped_early") else
        f"{result.epochs} of {result.config['epochs']} (stopped early by "
        f"{' and '.join(p['stopped_early']['by'])})",
        "seed": str(p["seed"]),
        "this build": ("loaded from the run cache" if result.from_cache
                       else "trained during this build"),
        "trained on": f"{p['date'][:16].replace('T', ' ')} UTC",
        "hardware": f"{p['hardware']['cpu']}, {p['hardware']['cores']} cores, GPU: {gpus}",
        "training time": f"{p['wall_seconds']:.0f} s",
        "versions": ", ".join(f"{k} {v}" for k, v in p["versions"].items()),
    }
    frame = pd.DataFrame({"value": list(rows.values())}, index=pd.Index(list(rows), name="run"))
    return frame.style.set_properties(**{"text-align": "left"})


def _photo_figure(fig):
    """A figure of photographs on a transparent background, so that a page in dark mode shows
    the photographs on its own background: the labels (see :func:`_photo_title`) carry their own
    light box. The site never inverts these colours (book/_static/figures.css)."""
    fig.patch.set_alpha(0.0)
    fig.tight_layout()
    return fig


def _photo_title(ax, text: str) -> None:
    """A photograph's label: dark text on a small light box, readable on a light or dark page."""
    ax.set_title(text, fontsize=10, color="black", pad=6,
                 bbox={"boxstyle": "round,pad=0.25", "facecolor": "white", "edgecolor": "none"})


def sample_grid(x: np.ndarray, y: np.ndarray, class_names, n: int = 25):
    """The first ``n`` images with their labels, in a square grid."""
    side = int(np.ceil(np.sqrt(n)))
    fig, axes = plt.subplots(side, side, figsize=(1.6 * side, 1.8 * side))
    for i, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if i < n:
            ax.imshow(x[i])
            _photo_title(ax, class_names[int(y[i, 0])])
    return _photo_figure(fig)


def image_row(images: np.ndarray, titles: list[str]):
    """Images (``uint8`` or floats in [0, 1]) side by side, each with its title."""
    fig, axes = plt.subplots(1, len(images), figsize=(1.6 * len(images), 2.0), squeeze=False)
    for image, title, ax in zip(images, titles, axes.flat):
        ax.set_axis_off()
        ax.imshow(np.clip(image, 0, 255 if image.dtype == np.uint8 else 1))
        _photo_title(ax, title)
    return _photo_figure(fig)


def class_counts(y_train: np.ndarray, y_test: np.ndarray, class_names) -> pd.DataFrame:
    """Images per class in each split."""
    count = lambda y: np.bincount(y.ravel(), minlength=len(class_names))  # noqa: E731
    table = pd.DataFrame({"train": count(y_train), "test": count(y_test)},
                         index=pd.Index(class_names, name="class"))
    table.loc["total"] = table.sum()
    return table


def training_curves(result: _train.RunResult, title: str | None = None):
    """Accuracy and loss, training and validation, per epoch: one figure, two panels."""
    h = result.history
    epochs = np.arange(1, result.epochs + 1)
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 3.8))
    acc.plot(epochs, h["accuracy"], "o-", label="training")
    acc.plot(epochs, h["val_accuracy"], "s--", label="validation (test set)")
    acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1), title="Accuracy")
    loss.plot(epochs, h["loss"], "o-", label="training")
    loss.plot(epochs, h["val_loss"], "s--", label="validation (test set)")
    loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    for ax in (acc, loss):
        ax.grid(alpha=0.3)
        ax.legend()
        ax.set_xticks(epochs)
    fig.suptitle(title or _caption(result), fontsize=10)
    fig.tight_layout()
    return fig


def compare_curves(results: dict[str, _train.RunResult]):
    """Training and validation accuracy and loss of several runs on one figure."""
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:purple")
    if not 1 <= len(results) <= len(colors):
        raise ValueError(f"compare_curves draws 1 to {len(colors)} runs, not {len(results)}.")
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 3.8))
    for (label, result), color in zip(results.items(), colors):
        epochs = np.arange(1, result.epochs + 1)
        h = result.history
        acc.plot(epochs, h["accuracy"], "o-", color=color, alpha=0.5, label=f"{label}, training")
        acc.plot(epochs, h["val_accuracy"], "s--", color=color, label=f"{label}, validation")
        loss.plot(epochs, h["loss"], "o-", color=color, alpha=0.5, label=f"{label}, training")
        loss.plot(epochs, h["val_loss"], "s--", color=color, label=f"{label}, validation")
    acc.set(xlabel="epoch", ylabel="accuracy", ylim=(0, 1), title="Accuracy")
    loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    for ax in (acc, loss):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(_provenance_line(list(results.values())), fontsize=10)
    fig.tight_layout()
    return fig


def predictions(result: _train.RunResult, x: np.ndarray) -> np.ndarray:
    """The trained model's predicted class for each ``uint8`` image."""
    model = result.load_model()
    logits = model.predict(x.astype("float32") / 255.0, batch_size=256, verbose=0)
    return logits.argmax(axis=1)


def per_class_accuracy(y_true: np.ndarray, y_pred: np.ndarray, class_names) -> pd.DataFrame:
    """Test accuracy of each class, best first."""
    frame = pd.DataFrame({"class": np.asarray(class_names)[y_true.ravel()],
                          "correct": y_true.ravel() == y_pred})
    table = frame.groupby("class")["correct"].agg(["mean", "sum", "count"])
    table.columns = ["accuracy", "correct", "images"]
    return table.sort_values("accuracy", ascending=False).round({"accuracy": 3})


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, class_names):
    """Rows: the true class; columns: the predicted class; each cell counts images."""
    table = pd.crosstab(pd.Categorical(np.asarray(class_names)[y_true.ravel()], class_names),
                        pd.Categorical(np.asarray(class_names)[y_pred], class_names),
                        rownames=["true"], colnames=["predicted"], dropna=False)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    image = ax.imshow(table.to_numpy(), cmap="Blues")
    ax.set_xticks(range(len(class_names)), class_names, rotation=45, ha="right")
    ax.set_yticks(range(len(class_names)), class_names)
    ax.set(xlabel="predicted class", ylabel="true class")
    high = table.to_numpy().max() / 2
    for (i, j), v in np.ndenumerate(table.to_numpy()):
        ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                color="white" if v > high else "black")
    fig.colorbar(image, ax=ax, label="images")
    fig.tight_layout()
    return fig


def misclassified(x: np.ndarray, y_true: np.ndarray, y_pred: np.ndarray, class_names,
                  n: int = 10, per_row: int = 5):
    """The first ``n`` test images the model got wrong, with true and predicted labels."""
    wrong = np.flatnonzero(y_true.ravel() != y_pred)[:n]
    rows = max(1, int(np.ceil(len(wrong) / per_row)))
    fig, axes = plt.subplots(rows, per_row, figsize=(2.1 * per_row, 2.6 * rows), squeeze=False)
    for ax, i in zip(axes.flat, wrong):
        ax.imshow(x[i])
        _photo_title(ax, f"true: {class_names[int(y_true[i, 0])]}\npredicted: "
                         f"{class_names[int(y_pred[i])]}")
    for ax in axes.flat:
        ax.set_axis_off()
    return _photo_figure(fig)


def most_confused(y_true: np.ndarray, y_pred: np.ndarray, class_names) -> tuple[str, str, int]:
    """The (true class, predicted class, count) that the model mixes up most often."""
    counts = np.zeros((len(class_names), len(class_names)), dtype=int)
    np.add.at(counts, (y_true.ravel(), y_pred), 1)
    np.fill_diagonal(counts, 0)
    i, j = np.unravel_index(counts.argmax(), counts.shape)
    return class_names[i], class_names[j], int(counts[i, j])


def _caption(result: _train.RunResult) -> str:
    """The title of a figure drawn from one run: the model, then the run's provenance."""
    return (f"{_models.TITLES.get(result.model_name, result.model_name)}\n"
            f"{_provenance_line([result])}")


def _provenance_line(results: list[_train.RunResult]) -> str:
    """Where the runs of a figure came from, in two lines: profile, training images, seed and
    whether this build trained them or loaded them from the run cache; then the data source."""
    first = results[0].provenance
    seeds = sorted({r.provenance.get("seed", r.config.get("seed")) for r in results})
    how = sorted({"loaded from the run cache" if r.from_cache else "trained during this build"
                  for r in results})
    return (f"profile {first['profile']}, {first['train_images']:,} training images, "
            f"seed {', '.join(map(str, seeds))}, {' / '.join(how)}\n{first['data_source']}")


def alexnet_comparison() -> pd.DataFrame:
    """The assignment's AlexNet rows beside the calculator's, with what each row gets wrong."""
    specs = [s for s in _calc.presets()["alexnet"] if s["type"] != "flatten"]
    table = _calc.analyze(_calc.presets()["alexnet"]).table
    table = table[table["type"] != "flatten"].reset_index(drop=True)
    rows = []
    for (name, _, values, params), spec, (_, ours) in zip(ASSIGNMENT_ALEXNET["rows"], specs,
                                                          table.iterrows()):
        problems = []
        if values != ours["activations"]:
            problems.append("activation count")
        if params != ours["params"]:
            if spec["type"] == "conv" and params == spec["kernel"] ** 2 * spec["filters"]:
                problems.append("k x k x filters only")
            elif params == ours["weights"]:
                problems.append("biases left out")
            else:
                problems.append("parameter count")
        if name.startswith("FC") and name.lower() != ours["layer"]:
            problems.append(f"labelled {name}, is {ours['layer'].upper()}")
        rows.append({"layer": ours["layer"], "assignment: values": values,
                     "calculator: values": int(ours["activations"]), "assignment: parameters": params,
                     "calculator: parameters": int(ours["params"]),
                     "what is wrong": "; ".join(problems) or "right"})
    return pd.DataFrame(rows)
