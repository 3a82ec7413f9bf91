"""The explorer's export (files, offsets, sha256, weights, logits, samples, atomic and cached) and
the chapter's helpers (feature maps, filters), on tiny runs of fixture images."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil

import matplotlib.pyplot as plt
import numpy as np
import pytest
from PIL import Image

from cnnbook import calc, data, explore, train
from conftest import write_image_folder

# One epoch on 10 training images; 10 test images per class, as the export's 100 samples need.
TINY = train.Profile("quick", 1, 1, 10, "a test")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """Once per module: the two tiny runs and their export (tests that change it copy it)."""
    root = tmp_path_factory.mktemp("explore")
    arrays = write_image_folder(root / "images", train_per_class=1, test_per_class=10)
    args = dict(profile=TINY, data_source=str(root / "images"), cache_dir=root / "cache")
    manifest = explore.export(root / "export", **args)
    runs = {name: train.train(name, TINY, data_source=args["data_source"],
                              cache_dir=args["cache_dir"], verbose=0) for name in ("conv", "pool")}
    return {"root": root, "folder": root / "export", "manifest": manifest, "args": args,
            "runs": runs, "arrays": arrays}


def _files(folder):
    """Each file's inode, mtime and bytes, to tell a rewrite from none."""
    return {p.name: (p.stat().st_ino, p.stat().st_mtime_ns, p.read_bytes())
            for p in sorted(folder.iterdir())}


def test_the_export_holds_exactly_the_contract_files(exported):
    folder, manifest = exported["folder"], exported["manifest"]
    assert sorted(p.name for p in folder.iterdir()) == [
        "conv.weights.bin", "manifest.json", "pool.weights.bin", "samples.bin"]
    assert json.loads((folder / "manifest.json").read_text()) == manifest
    assert manifest["format"] == 1 and manifest["profile"] == "quick" and manifest["preview"]
    assert manifest["classes"] == list(data.CLASS_NAMES) and manifest["input_scale"] == 255
    assert manifest["data_source"] == exported["runs"]["conv"].provenance["data_source"]
    assert [p for p in exported["root"].iterdir() if p.name.startswith(".")] == []


@pytest.mark.parametrize("name", ["conv", "pool"])
def test_weights_tile_the_file_and_read_back_exactly(exported, name):
    entry = exported["manifest"]["models"][name]
    run = exported["runs"][name]
    model = run.load_model()
    blob = (exported["folder"] / f"{name}.weights.bin").read_bytes()
    record = entry["weights"]
    assert record["file"] == f"{name}.weights.bin" and record["bytes"] == len(blob)
    assert record["sha256"] == hashlib.sha256(blob).hexdigest()
    tensors = record["tensors"]
    assert [t["offset"] for t in tensors] == [0, *np.cumsum([t["bytes"] for t in tensors])[:-1]]
    assert sum(t["bytes"] for t in tensors) == len(blob)
    assert len(tensors) == len(model.weights)
    for t, variable in zip(tensors, model.weights):
        stored = np.frombuffer(blob, "<f4", count=t["bytes"] // 4, offset=t["offset"])
        expected = np.asarray(variable)
        assert t["shape"] == list(expected.shape) and t["name"] == variable.name
        np.testing.assert_array_equal(stored.reshape(expected.shape), expected)
    # kernel then bias, layer by layer, named as the calculator names the layers
    layers = [spec["name"] for spec in entry["layers"] if spec["type"] in ("conv", "dense")]
    assert [(t["layer"], t["name"]) for t in tensors] == [
        (layer, part) for layer in layers for part in ("kernel", "bias")]
    assert tensors[0]["shape"] == [3, 3, 3, 8]
    assert entry["parameters"] == {"conv": 1_191_502, "pool": 589_390}[name] \
        == len(blob) // 4 == model.count_params()


@pytest.mark.parametrize("name", ["conv", "pool"])
def test_layers_and_shapes_are_the_calculators(exported, name):
    entry = exported["manifest"]["models"][name]
    model = exported["runs"][name].load_model()
    assert entry["layers"] == calc.from_keras(model)
    assert entry["shapes"] == [list(row["shape"]) for row in calc.layer_rows(entry["layers"])]
    assert entry["shapes"] == [[32, 32, 3]] + [list(layer.output.shape[1:])
                                               for layer in model.layers]
    assert [spec["name"] for spec in entry["layers"]][-3:] == ["flatten", "fc1", "fc2"]
    assert entry["title"] == {"conv": "Variant 1: only convolutions",
                              "pool": "Variant 2: convolutions + max pooling"}[name]
    run = exported["runs"][name]
    assert entry["test_accuracy"] == run.test_accuracy
    assert entry["provenance"] == {**run.provenance, "run": run.run_dir.name,
                                   "from_cache": False}


def test_samples_are_the_first_ten_of_each_class_with_keras_logits(exported):
    samples = exported["manifest"]["samples"]
    x_test, y_test = data.load_cifar10(exported["args"]["data_source"], train_per_class=1,
                                       test_per_class=10).test
    y_test = y_test.ravel()
    order = np.argsort(y_test, kind="stable")  # class by class, each in test-set order
    blob = (exported["folder"] / "samples.bin").read_bytes()
    assert samples["count"] == 100 and samples["shape"] == [100, 32, 32, 3]
    assert samples["bytes"] == len(blob) == 307_200
    assert samples["sha256"] == hashlib.sha256(blob).hexdigest()
    assert samples["test_indices"] == order.tolist()
    assert samples["labels"] == [c for c in range(10) for _ in range(10)]
    images = np.frombuffer(blob, np.uint8).reshape(100, 32, 32, 3)
    np.testing.assert_array_equal(images, x_test[order])
    some = np.arange(0, 100, 5)  # two images of each class: Keras's work is the test's cost
    for name, run in exported["runs"].items():
        reference = run.load_model().predict(x_test[order][some] / 255.0, verbose=0)
        stored = np.array(samples["logits"][name])
        assert stored.shape == (100, 10) and np.isfinite(stored).all()
        stored = stored[some]
        np.testing.assert_allclose(stored, reference, rtol=0, atol=1e-5)
        assert (stored.argmax(1) == reference.argmax(1)).all()


def test_a_second_export_is_a_no_op_and_a_damaged_one_is_rewritten(exported, tmp_path):
    folder = tmp_path / "export"
    before = _files(exported["folder"])
    assert explore.export(exported["folder"], **exported["args"]) == exported["manifest"]
    assert _files(exported["folder"]) == before  # same inodes, times and bytes
    shutil.copytree(exported["folder"], folder)
    blob = bytearray((folder / "pool.weights.bin").read_bytes())
    blob[100] ^= 1
    (folder / "pool.weights.bin").write_bytes(bytes(blob))
    again = explore.export(folder, **exported["args"])
    assert (folder / "pool.weights.bin").read_bytes() == before["pool.weights.bin"][2]
    for name in ("conv", "pool"):  # the runs came from the cache this time
        assert again["models"][name].pop("provenance") == {
            **exported["manifest"]["models"][name]["provenance"], "from_cache": True}
    assert again == {**exported["manifest"], "models": {
        name: {k: v for k, v in entry.items() if k != "provenance"}
        for name, entry in exported["manifest"]["models"].items()}}


def _change_run(run):
    """Leave ``run``'s folder as a forced retrain would (same name, other weights), untrained."""
    model = run.load_model()
    model.set_weights([w + 0.25 for w in model.get_weights()])
    model.save_weights(run.run_dir / "model.weights.h5")
    stored = json.loads((run.run_dir / "result.json").read_text())
    stored["files"]["model.weights.h5"] = train._file_record(run.run_dir / "model.weights.h5")
    (run.run_dir / "result.json").write_text(json.dumps(stored))


def test_a_changed_run_rewrites_the_export(exported, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(exported["root"], root)
    args = {**exported["args"], "cache_dir": root / "cache"}
    folder = root / "export"
    pool = train.train("pool", TINY, data_source=args["data_source"],
                       cache_dir=args["cache_dir"], verbose=0)
    _change_run(pool)
    changed = train.train("pool", TINY, data_source=args["data_source"],
                          cache_dir=args["cache_dir"], verbose=0)
    assert changed.run_dir.name == exported["manifest"]["models"]["pool"]["provenance"]["run"]
    old = exported["manifest"]
    new = explore.export(folder, **args)
    assert new["export_key"] != old["export_key"]
    assert new["models"]["conv"]["weights"] == old["models"]["conv"]["weights"]
    blob = (folder / "pool.weights.bin").read_bytes()
    assert new["models"]["pool"]["weights"]["sha256"] == hashlib.sha256(blob).hexdigest() \
        != old["models"]["pool"]["weights"]["sha256"]
    kernel = changed.load_model().weights[0]
    np.testing.assert_array_equal(np.frombuffer(blob, "<f4", count=216).reshape(3, 3, 3, 8),
                                  np.asarray(kernel))
    assert new["samples"]["logits"]["pool"] != old["samples"]["logits"]["pool"]
    assert new["samples"]["logits"]["conv"] == old["samples"]["logits"]["conv"]


def test_a_failure_midway_leaves_the_old_export_intact(exported, tmp_path, monkeypatch):
    folder = tmp_path / "export"
    shutil.copytree(exported["folder"], folder)
    before = _files(folder)
    monkeypatch.setattr(explore, "_export_key", lambda *a: "another run")  # not up to date

    def broken(*args):
        raise RuntimeError("the model fell over")

    monkeypatch.setattr(explore, "logits", broken)  # after the samples and conv's weights
    with pytest.raises(RuntimeError, match="fell over"):
        explore.export(folder, **exported["args"])
    assert _files(folder) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]

    monkeypatch.undo()
    monkeypatch.setattr(explore, "_export_key", lambda *a: "another run")
    real_replace, calls = os.replace, []

    def replace(src, dst):  # the old export moves aside, then the new one fails to move in
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(explore.os, "replace", replace)
    monkeypatch.setattr(explore, "logits", lambda model, x: np.zeros((len(x), 10), np.float32))
    with pytest.raises(explore.ExportError, match="left as it was"):
        explore.export(folder, **exported["args"])
    monkeypatch.undo()
    assert _files(folder) == before  # moved aside and back: the same files
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]


def test_bad_input_gets_a_clear_error(tmp_path):
    with pytest.raises(train.ProfileError, match="choose one of full, quick"):
        explore.export(tmp_path / "x", profile="fast")
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(explore.ExportError, match="is a file, not a folder"):
        explore.export(tmp_path / "a-file", profile="quick")
    with pytest.raises(explore.ExportError, match="is a file, not a folder"):
        explore.export(tmp_path / "a-file" / "explorer", profile="quick")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("keep me")
    with pytest.raises(explore.ExportError, match=r"not an explorer export \(thesis.tex\)"):
        explore.export(tmp_path / "mine", profile="quick")
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "keep me"


def test_sample_indices():
    y = np.tile(np.arange(10), 3)[::-1]  # 9, 8, ..., 0, 9, ...: class c at 9-c, 19-c, 29-c
    assert explore.sample_indices(y, 2).tolist() == [i for c in range(10)
                                                     for i in (9 - c, 19 - c)]
    with pytest.raises(ValueError, match="3 image.*of class 0 .*fewer than the 4 needed"):
        explore.sample_indices(y, 4)
    with pytest.raises(ValueError, match="positive whole number"):
        explore.sample_indices(y, 0)


@pytest.mark.parametrize("name", ["conv", "pool"])
def test_feature_maps_are_the_layers_outputs(exported, name):
    model = exported["runs"][name].load_model()
    images = exported["arrays"]["test"][0][:2]
    maps = explore.feature_maps(model, images)
    specs = calc.from_keras(model)
    shapes = {row["layer"]: list(row["shape"]) for row in calc.layer_rows(specs)}
    assert list(maps) == [s["name"] for s in specs if s["type"] in ("conv", "maxpool")]
    x = images.astype(np.float32) / 255
    for layer, (key, value) in zip(model.layers, maps.items()):  # conv and pool layers come first
        x = np.asarray(layer(x))
        assert list(value.shape) == [2, *shapes[key]]
        np.testing.assert_allclose(value, x, rtol=1e-5, atol=1e-6)
        assert value.min() >= 0
    filters = explore.first_layer_filters(model)
    assert filters.shape == (8, 3, 3, 3)
    np.testing.assert_array_equal(filters[5], np.asarray(model.weights[0])[..., 5])


def test_initial_model_is_where_the_run_started(exported):
    """One epoch of Adam on one batch moves each weight by about the learning rate at most: the
    trained first layer is close to the rebuilt start, and far from another seed's start."""
    run = exported["runs"]["conv"]
    start = explore.first_layer_filters(explore.initial_model(run))
    trained = explore.first_layer_filters(run.load_model())
    assert 0 < np.abs(trained - start).max() <= 2e-3
    other_seed = train.RunResult(**{**run.__dict__, "config": {**run.config, "seed": 1}})
    other = explore.first_layer_filters(explore.initial_model(other_seed))
    assert np.abs(other - start).max() > 0.1


def test_activity_counts_zeros_and_silent_channels():
    values = np.zeros((2, 3, 3, 4), np.float32)
    values[0, 1, 1, 0] = 2.0  # channel 0 on in one place of one image
    values[1, :, :, 2] = 0.5  # channel 2 on everywhere in the second image
    table = explore.activity({"conv9": values})
    assert table.loc["conv9"].to_dict() == {"output": "3x3x4", "outputs that are 0": 62 / 72,
                                            "silent channels": 2, "channels": 4}
    assert explore.top_channels(values, 2).tolist() == [2, 0]


def test_figures_are_small_pngs_of_the_maps(exported):
    models = {name: run.load_model() for name, run in exported["runs"].items()}
    images = exported["arrays"]["test"][0][:2]
    maps = explore.feature_maps(models["pool"], images)
    for fig in (explore.plot_filters(models), explore.plot_feature_maps(maps, images)):
        png = explore.as_png(fig).data
        image = Image.open(io.BytesIO(png))
        assert image.format == "PNG" and image.mode == "P" and len(png) < 150_000
    assert plt.get_fignums() == []  # closed: a notebook shows the small PNG only
