"""The figures of :mod:`cnnbook.report`: the run's provenance in their titles, and the backgrounds
that book/_static/figures.css relies on in dark mode (a chart is opaque and white, so inverting it
leaves no white box; photographs are transparent around the images, their labels on light boxes,
and are never inverted)."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.text import Text  # noqa: E402
from PIL import Image  # noqa: E402

from cnnbook import report, train  # noqa: E402

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
SOURCE = "CIFAR-10 image-folder archive cifar10-jpeg.tar.gz (sha256 d34c68f61cca)"


def run(model: str, *, from_cache: bool, seed: int = 0) -> train.RunResult:
    history = {k: [0.2, 0.3, 0.4] for k in ("accuracy", "val_accuracy", "loss", "val_loss")}
    provenance = {"profile": "quick", "data_source": SOURCE, "train_images": 1500,
                  "test_images": 500, "seed": seed}
    return train.RunResult(model, history, [1.0, 1.0, 1.0], 1.5, 0.4, provenance, Path("."),
                           from_cache, {"seed": seed})


def png(fig) -> np.ndarray:
    """The figure as Jupyter's inline backend saves it (its own face colour), as RGBA pixels."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", bbox_inches="tight", facecolor=fig.get_facecolor(),
                edgecolor=fig.get_edgecolor())
    plt.close(fig)
    return np.asarray(Image.open(buffer).convert("RGBA"))


def test_training_figures_are_titled_with_the_runs_provenance():
    fig = report.training_curves(run("conv", from_cache=True))
    assert fig.get_suptitle() == ("Variant 1: only convolutions\nprofile quick, 1,500 training "
                                  "images, seed 0, loaded from the run cache\n" + SOURCE)
    plt.close(fig)
    fig = report.compare_curves({"only convolutions": run("conv", from_cache=False),
                                 "with max pooling": run("pool", from_cache=True, seed=3)})
    assert fig.get_suptitle() == ("profile quick, 1,500 training images, seed 0, 3, loaded from "
                                  "the run cache / trained during this build\n" + SOURCE)
    plt.close(fig)


def test_charts_are_opaque_white_and_photographs_transparent_with_boxed_labels():
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 10, 200), rng.integers(0, 10, 200)
    for chart in (png(report.confusion_matrix(y_true[:, None], y_pred, NAMES)),
                  png(report.training_curves(run("pool", from_cache=False)))):
        assert (chart[..., 3] == 255).all() and (chart[0, 0] == 255).all()  # opaque, white
    x = rng.integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    for fig, labels in ((report.sample_grid(x, y_true[:20, None], NAMES, n=9), 9),
                        (report.misclassified(x, y_true[:20, None], y_pred[:20], NAMES, n=5), 5)):
        titles = [t for t in fig.findobj(Text) if t.get_bbox_patch() is not None]
        assert len(titles) == labels
        for title in titles:  # dark text on an opaque white box: readable on any page
            assert title.get_color() == "black"
            assert tuple(title.get_bbox_patch().get_facecolor()) == (1.0, 1.0, 1.0, 1.0)
        pixels = png(fig)
        alpha = pixels[..., 3]
        assert alpha[0, 0] == 0 and (alpha == 0).mean() > 0.1  # the page shows through
        assert (alpha == 255).mean() > 0.3  # the photographs themselves are opaque
