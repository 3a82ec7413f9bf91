"""Training runs: profiles, the run cache (hit, miss, forced, atomic), resume, and the CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import filelock
import keras
import numpy as np
import pytest

from cnnbook import report, train
from cnnbook.__main__ import main
from conftest import write_image_folder

TINY = dict(train_per_class=2, test_per_class=1, epochs=2)  # 20 / 10 fixture images


@pytest.fixture
def tiny(image_folder, cache_dir):
    """Keyword arguments for a tiny run on the fixture image folder."""
    return dict(TINY, profile="quick", data_source=str(image_folder[0]), verbose=0)


class Interrupt(keras.callbacks.Callback):
    """Kill the run when epoch ``at`` begins, as a power cut would."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.at:
            raise KeyboardInterrupt(f"simulated kill at epoch {epoch}")


class CountEpochs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)


def test_profiles(monkeypatch):
    monkeypatch.delenv("CNNBOOK_PROFILE", raising=False)
    full = train.get_profile()
    assert (full.name, full.epochs, full.train_per_class, full.test_per_class) == ("full", 15, None, None)
    monkeypatch.setenv("CNNBOOK_PROFILE", "quick")
    assert train.get_profile().name == "quick"
    assert train.get_profile("full").name == "full"  # the argument wins over the variable
    with pytest.raises(ValueError, match="Unknown profile 'fast'.*choose one of full, quick"):
        train.get_profile("fast")
    assert full.description == ("50,000 training and 10,000 test images, 15 epochs: "
                                "the assignment's setup")
    assert train.get_profile("quick").description.startswith(
        "1,500 training and 500 test images, 3 epochs")


def test_tiny_end_to_end_run(tiny, cache_dir):
    result = train.train("conv", **tiny)
    assert not result.from_cache
    assert set(result.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(v) == 2 for v in result.history.values())
    assert len(result.epoch_seconds) == 2 and all(s > 0 for s in result.epoch_seconds)
    assert 0.0 <= result.test_accuracy <= 1.0
    # the test set is the validation set, as in the assignment
    assert result.test_accuracy == pytest.approx(result.history["val_accuracy"][-1], abs=1e-6)
    p = result.provenance
    assert (p["profile"], p["train_images"], p["test_images"], p["seed"]) == ("quick", 20, 10, 0)
    assert "image folder" in p["data_source"]
    assert {"python", "tensorflow", "keras", "numpy"} <= set(p["versions"])
    assert p["hardware"]["cores"] >= 1 and p["hardware"]["cpu"]
    assert p["wall_seconds"] > 0 and p["date"].startswith("20")
    model = result.load_model()
    assert model.count_params() == 1_191_502
    assert sorted(p.name for p in result.run_dir.iterdir()) == [
        "history.csv", "model.weights.h5", "result.json"]
    assert "trained now" in result.describe()


def test_cache_hit_returns_the_stored_run_without_training(tiny, monkeypatch):
    first = train.train("conv", **tiny)
    monkeypatch.setattr(keras.Model, "fit", lambda *a, **k: pytest.fail("trained again"))
    again = train.train("conv", **tiny)
    assert again.from_cache and again.run_dir == first.run_dir
    assert again.history == first.history and again.test_accuracy == first.test_accuracy
    assert "loaded from the run cache" in again.describe()


def test_changed_hyper_parameter_misses_the_cache(tiny):
    first = train.train("conv", **tiny)
    for change in ({"learning_rate": 0.0005}, {"seed": 1}, {"batch_size": 16},
                   {"epochs": 1}, {"train_per_class": 1}):
        other = train.train("conv", **{**tiny, **change})
        assert not other.from_cache and other.run_dir != first.run_dir, change


def test_key_covers_model_data_and_profile(image_folder, official_archive):
    base = train.run_config("conv", "quick", data_source=image_folder[0])
    assert train.run_key(base) == train.run_key(
        train.run_config("conv", "quick", data_source=image_folder[0]))
    for other in (train.run_config("pool", "quick", data_source=image_folder[0]),
                  train.run_config("conv", "full", data_source=image_folder[0]),
                  train.run_config("conv", "quick", data_source=official_archive[0])):
        assert train.run_key(other) != train.run_key(base)


def test_forced_retrain_replaces_the_cached_run(tiny):
    first = train.train("conv", **tiny)
    forced = train.train("conv", **tiny, force=True)
    assert not forced.from_cache and forced.run_dir == first.run_dir
    assert not list(first.run_dir.parent.glob(".*"))  # no partial or old copy left behind
    assert train.train("conv", **tiny).from_cache


def test_interrupted_run_is_never_served_as_complete(tiny, cache_dir):
    with pytest.raises(KeyboardInterrupt):
        train.train("conv", **tiny, callbacks=[Interrupt(at=1)])
    assert not list((cache_dir / "runs").glob("*/result.json"))
    with pytest.raises(KeyboardInterrupt):  # and asking again does not pretend it finished
        train.train("conv", **tiny, callbacks=[Interrupt(at=1)])


def test_crash_while_saving_leaves_no_result(tiny, cache_dir, monkeypatch):
    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(train, "_publish", crash)
    with pytest.raises(OSError, match="disk full"):
        train.train("conv", **tiny)
    assert not [p for p in (cache_dir / "runs").iterdir() if not p.name.startswith(".partial-")]


def test_killed_run_resumes_from_its_last_finished_epoch(tiny, cache_dir):
    args = {**tiny, "epochs": 3}
    with pytest.raises(KeyboardInterrupt):
        train.train("pool", **args, callbacks=[Interrupt(at=2)])  # epochs 0 and 1 finished
    counter = CountEpochs()
    result = train.train("pool", **args, callbacks=[counter])
    assert counter.epochs == [2]  # only the missing epoch was trained
    assert all(len(v) == 3 for v in result.history.values()) and len(result.epoch_seconds) == 3
    assert result.provenance["resumed_from_epoch"] == 2
    stored = json.loads((result.run_dir / "result.json").read_text())
    assert len(stored["history"]["val_accuracy"]) == 3


def test_cli_trains_then_loads_from_the_cache(image_folder, cache_dir, capsys):
    argv = ["train", "--model", "conv", "--profile", "quick", "--data", str(image_folder[0]),
            "--epochs", "1", "--train-per-class", "2", "--test-per-class", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "1/1 - " in out and "val_accuracy" in out  # Keras's one line per epoch (verbose=2)
    assert "trained now" in out and "test accuracy" in out
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Loaded from the run cache" in out and "1/1 - " not in out


def test_cli_reports_bad_settings_without_a_traceback(image_folder, cache_dir, capsys):
    assert main(["train", "--model", "conv", "--data", str(image_folder[0]), "--epochs", "0"]) == 2
    assert "epochs must be a positive whole number, not 0" in capsys.readouterr().err


def test_cli_reports_bad_data_source(tmp_path, cache_dir, capsys):
    assert main(["train", "--model", "conv", "--data", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_bfloat16_is_an_explicit_option_with_its_own_cache_entry(tiny):
    f32 = train.run_config("conv", "quick", data_source=tiny["data_source"])
    bf16 = train.run_config("conv", "quick", data_source=tiny["data_source"],
                            precision="mixed_bfloat16")
    assert f32["precision"] == "float32"  # never on by default
    assert train.run_key(f32) != train.run_key(bf16)
    assert f32["pipeline"] == bf16["pipeline"] == train.PIPELINE
    with pytest.raises(train.ConfigError, match="Unknown precision 'float16'"):
        train.run_config("conv", "quick", data_source=tiny["data_source"], precision="float16")
    result = train.train("conv", **tiny, precision="mixed_bfloat16")
    assert not result.from_cache and "in mixed_bfloat16: trained now" in result.describe()
    model = result.load_model()
    assert {l.dtype_policy.name for l in model.layers if isinstance(l, keras.layers.Conv2D)} == {
        "mixed_bfloat16"}
    assert {l.dtype_policy.name for l in model.layers if isinstance(l, keras.layers.Dense)} == {
        "float32"}
    assert keras.config.dtype_policy().name == "float32"  # the session's policy is left alone
    assert train.train("conv", **tiny).config["precision"] == "float32"


def test_book_datasets_scale_uint8_batches_like_the_assignment(image_folder):
    (x_train, y_train), (x_test, y_test) = image_folder[1]["train"], image_folder[1]["test"]
    train_ds, test_ds = train.book_datasets((x_train, y_train), (x_test, y_test), batch_size=16)
    batches = list(test_ds.as_numpy_iterator())  # the test set keeps its order
    assert [len(x) for x, _ in batches] == [16, 4]
    images = np.concatenate([x for x, _ in batches])
    assert images.dtype == np.float32
    np.testing.assert_allclose(images, x_test.astype("float64") / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), y_test)
    shuffle = train.EpochShuffle()
    train_ds, _ = train.book_datasets((x_train, y_train), (x_test, y_test), batch_size=16,
                                      seed=7, epochs=3, shuffle=shuffle)
    for epoch in (0, 1, 2, 1):  # each pass follows its epoch's order, whatever came before
        shuffle.on_epoch_begin(epoch)
        batches = list(train_ds.as_numpy_iterator())
        assert [len(x) for x, _ in batches] == [16, 16, 8]
        order = train.shuffle_order(len(x_train), 7, epoch)
        np.testing.assert_array_equal(np.concatenate([y for _, y in batches]), y_train[order])
        np.testing.assert_allclose(np.concatenate([x for x, _ in batches]),
                                   x_train[order].astype("float64") / 255.0, rtol=1e-6)
    assert sorted(order) == list(range(len(x_train)))  # every image once
    assert not np.array_equal(train.shuffle_order(40, 7, 0), train.shuffle_order(40, 7, 1))
    assert not np.array_equal(train.shuffle_order(40, 7, 0), train.shuffle_order(40, 8, 0))
    with pytest.raises(train.ConfigError, match="expects uint8 images"):
        train.book_datasets((x_train / 255.0, y_train), (x_test, y_test))


# --- interruptions: kills, full disks, damaged files, two processes at once -------------------

KILL_MID_EPOCH = """
import json, os, signal, sys
import keras
from cnnbook import train

class Kill(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):  # the epoch's steps ran; it is not saved yet
        if self.epoch == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)

train.train("pool", **json.loads(sys.argv[1]), callbacks=[Kill()])
"""


def _python(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})},
                          **kwargs)


def _same_history(a: train.RunResult, b: train.RunResult) -> None:
    for key in train.HISTORY_KEYS:
        np.testing.assert_allclose(a.history[key], b.history[key], rtol=1e-5, err_msg=key)
    assert a.test_accuracy == pytest.approx(b.test_accuracy, abs=1e-6)


def test_a_run_killed_mid_epoch_resumes_as_the_same_run(tiny, tmp_path):
    args = {**tiny, "epochs": 3, "train_per_class": 4, "batch_size": 8}  # 5 batches per epoch
    killed = _python("-c", KILL_MID_EPOCH, json.dumps(args), "1")
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    resumed = train.train("pool", **args)
    assert resumed.provenance["resumed_from_epoch"] == 1  # epoch 0 was saved, epoch 1 was not
    assert "resumed at epoch 2 after an interruption" in resumed.describe()
    csv = (resumed.run_dir / "history.csv").read_text().splitlines()
    assert [line.split(",")[0] for line in csv] == ["epoch", "0", "1", "2"]  # each epoch once
    assert sorted(p.name for p in resumed.run_dir.iterdir()) == sorted(train.RUN_FILES)
    whole = train.train("pool", **args, cache_dir=tmp_path / "other-cache")
    assert whole.provenance["resumed_from_epoch"] is None
    assert whole.run_dir.name == resumed.run_dir.name  # the same cache key ...
    _same_history(resumed, whole)  # ... and the same run: the shuffling order was restored


FILL_DISK_AT_EPOCH_1 = """
import resource, signal, sys
from cnnbook import train
from cnnbook.__main__ import main

begin = train._EpochTimer.on_epoch_begin

def on_epoch_begin(self, epoch, logs=None):  # the disk fills up during epoch 1
    if epoch == 1:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    begin(self, epoch, logs)

train._EpochTimer.on_epoch_begin = on_epoch_begin
sys.exit(main(sys.argv[1:]))
"""


def _cli_args(image_folder, *extra):
    return ["train", "--model", "pool", "--profile", "quick", "--data", str(image_folder[0]),
            "--epochs", "3", "--train-per-class", "2", "--test-per-class", "1", *extra]


def test_a_full_disk_is_one_error_line_and_the_next_start_finishes_the_run(tiny, image_folder,
                                                                             cache_dir):
    full = _python("-c", FILL_DISK_AT_EPOCH_1, *_cli_args(image_folder))
    assert full.returncode == 2, full.stderr[-3000:]
    errors = [line for line in full.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in full.stderr
    assert "ran out of space (File too large)" in errors[0] and "resumes" in errors[0]
    work = next((cache_dir / "runs").glob(".partial-*"))
    assert sorted(p.name for p in work.iterdir()) == ["checkpoint.json", "epoch-1.npz"]
    result = train.train("pool", **{**tiny, "epochs": 3})
    assert result.provenance["resumed_from_epoch"] == 1
    assert all(len(v) == 3 for v in result.history.values())
    assert sorted(p.name for p in result.run_dir.iterdir()) == sorted(train.RUN_FILES)


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """Once per module: a finished tiny run and an unfinished one (interrupted as epoch 2 began).

    The tests below damage copies of them, so that few of them need to train.
    """
    root = tmp_path_factory.mktemp("stored")
    write_image_folder(root / "images")
    args = dict(TINY, profile="quick", data_source=str(root / "images"), verbose=0,
                cache_dir=root / "cache")
    finished = train.train("conv", **args)
    with pytest.raises(KeyboardInterrupt):
        train.train("pool", **{**args, "epochs": 3}, callbacks=[Interrupt(at=2)])
    work = next((root / "cache" / "runs").glob(".partial-pool-*"))
    config = train.run_config("pool", "quick", data_source=args["data_source"], **{
        **TINY, "epochs": 3})
    return {"finished": finished, "work": work, "work_config": config, "args": args}


def _checkpoint_copy(stored, tmp_path):
    work = tmp_path / stored["work"].name
    shutil.copytree(stored["work"], work)
    return work, train._Checkpoint(work, stored["work_config"])


@pytest.mark.parametrize("damage, reason", [
    ("truncate-state", "epoch-2.npz has"),
    ("flip-byte", "epoch-2.npz does not have the sha256"),
    ("garbage-json", "JSONDecodeError"),
    ("other-config", "it belongs to another configuration"),
    ("no-checkpoint", "saved no finished epoch"),
])
def test_a_checkpoint_that_cannot_be_trusted_is_discarded(damage, reason, stored, tmp_path,
                                                          capsys):
    work, checkpoint = _checkpoint_copy(stored, tmp_path)
    state_npz, state = work / "epoch-2.npz", work / "checkpoint.json"
    if damage == "truncate-state":  # a crash or a full disk in the middle of a write
        state_npz.write_bytes(state_npz.read_bytes()[: state_npz.stat().st_size // 2])
    elif damage == "flip-byte":
        blob = bytearray(state_npz.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        state_npz.write_bytes(bytes(blob))
    elif damage == "garbage-json":
        state.write_text('{"epoch": 2, "rows": [')
    elif damage == "other-config":
        checkpoint.config = {**checkpoint.config, "seed": 1}
    else:
        state.unlink()
    assert checkpoint.restore(train.compiled_model("pool")) == 0
    out = capsys.readouterr().out
    assert f"starting {stored['work'].name[len('.partial-'):]} over" in out and reason in out
    assert list(work.iterdir()) == [] and checkpoint.rows == []


def test_a_damaged_checkpoint_trains_the_run_from_the_start(stored, tiny, capsys):
    with pytest.raises(KeyboardInterrupt):
        train.train("pool", **{**tiny, "epochs": 3}, callbacks=[Interrupt(at=2)])
    state = next((train._data.cache_root() / "runs").glob(".partial-*")) / "epoch-2.npz"
    state.write_bytes(state.read_bytes()[:1000])
    counter = CountEpochs()
    result = train.train("pool", **{**tiny, "epochs": 3}, callbacks=[counter])
    assert "its checkpoint cannot be used" in capsys.readouterr().out
    assert counter.epochs == [0, 1, 2] and result.provenance["resumed_from_epoch"] is None
    assert all(len(v) == 3 for v in result.history.values())


def test_an_interrupted_write_leaves_the_previous_checkpoint_usable(stored, tmp_path, capsys):
    work, checkpoint = _checkpoint_copy(stored, tmp_path)
    (work / ".tmp-epoch-3.npz").write_bytes(b"half a file")  # killed while writing epoch 3
    model = train.compiled_model("pool")
    assert checkpoint.restore(model) == 2
    assert "resuming an interrupted run at epoch 3 of 3 (epochs 1 to 2 were checkpointed)" in (
        capsys.readouterr().out)
    assert sorted(p.name for p in work.iterdir()) == ["checkpoint.json", "epoch-2.npz"]
    assert [row["epoch"] for row in checkpoint.rows] == [0, 1]
    assert int(model.optimizer.iterations.numpy()) == 2 * train.steps_per_epoch(20, 32)


def _damage_run(run_dir: Path, damage: str) -> None:
    result_json, weights = run_dir / "result.json", run_dir / "model.weights.h5"
    stored = json.loads(result_json.read_text())
    if damage == "garbage-json":
        result_json.write_text(result_json.read_text()[:100])
    elif damage == "missing-key":
        del stored["files"]
        result_json.write_text(json.dumps(stored))
    elif damage == "short-history":
        stored["history"]["loss"].pop()
        result_json.write_text(json.dumps(stored))
    elif damage == "old-format":
        del stored["format"]
        result_json.write_text(json.dumps(stored))
    elif damage == "truncated-weights":
        weights.write_bytes(weights.read_bytes()[:1000])
    elif damage == "flipped-byte":
        blob = bytearray(weights.read_bytes())
        blob[len(blob) // 2] ^= 0xFF
        weights.write_bytes(bytes(blob))
    else:
        weights.unlink()


@pytest.mark.parametrize("damage, reason", [
    ("garbage-json", "result.json cannot be read"),
    ("missing-key", "result.json lacks what a run records"),
    ("short-history", "result.json does not hold 2 epochs"),
    ("old-format", "result.json has format None, this version writes 2"),
    ("truncated-weights", "model.weights.h5 has"),
    ("flipped-byte", "model.weights.h5 does not have the sha256"),
    ("missing-weights", "model.weights.h5 is missing"),
])
def test_a_damaged_cached_run_is_noted_and_discarded(damage, reason, stored, tmp_path, capsys):
    finished = stored["finished"]
    run_dir = tmp_path / "runs" / finished.run_dir.name
    shutil.copytree(finished.run_dir, run_dir)
    assert train._cached_run(run_dir, finished.config).history == finished.history  # whole
    _damage_run(run_dir, damage)
    assert train._cached_run(run_dir, finished.config) is None  # no lock held: only a miss
    assert run_dir.exists() and capsys.readouterr().out == ""
    assert train._cached_run(run_dir, finished.config, discard_damaged=True) is None
    assert f"the cached run {run_dir} is damaged ({reason}" in capsys.readouterr().out
    assert list(run_dir.parent.iterdir()) == []  # removed, no .old- copy left


def test_a_damaged_cached_run_is_trained_again(tiny, capsys):
    first = train.train("conv", **tiny)
    _damage_run(first.run_dir, "truncated-weights")
    again = train.train("conv", **tiny)
    assert not again.from_cache and again.run_dir == first.run_dir
    assert "is damaged (model.weights.h5 has 1,000 bytes" in capsys.readouterr().out
    assert again.load_model().count_params() == 1_191_502
    assert train.train("conv", **tiny).from_cache
    assert not list(first.run_dir.parent.glob(".*"))


def test_a_publication_killed_between_its_renames_is_finished_on_the_next_start(tiny, monkeypatch,
                                                                               capsys):
    first = train.train("conv", **tiny)
    runs, name = first.run_dir.parent, first.run_dir.name
    # a forced retrain killed after its first rename: the new run waits in .partial-, the old
    # one in .old-, and nothing is at the run's own name
    shutil.copytree(first.run_dir, runs / f".partial-{name}")
    first.run_dir.rename(runs / f".old-{name}-12345")
    monkeypatch.setattr(train, "_train_now", lambda *a, **k: pytest.fail("trained again"))
    result = train.train("conv", **tiny)
    assert result.run_dir == first.run_dir and result.history == first.history
    assert "publishing" in capsys.readouterr().out
    assert sorted(p.name for p in runs.iterdir()) == [name]  # no .old- or .partial- left


def test_a_second_process_waits_for_the_first_and_loads_its_run(tiny, image_folder, cache_dir):
    config = train.run_config("pool", "quick", data_source=tiny["data_source"], epochs=3,
                              train_per_class=2, test_per_class=1)
    name = f"pool-quick-{train.run_key(config)}"
    (cache_dir / "locks").mkdir(parents=True)
    env = {"PYTHONUNBUFFERED": "1"}
    with filelock.FileLock(cache_dir / "locks" / f"{name}.lock"):  # a third party holds it first
        procs = [subprocess.Popen([sys.executable, "-m", "cnnbook", *_cli_args(image_folder)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env={**os.environ, **env}) for _ in range(2)]
        lines = [p.stdout.readline() for p in procs for _ in range(3)]
        assert sum("Another process is training this run" in line for line in lines) == 2
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    assert sorted("trained now" in out for out, _ in outs) == [False, True]
    assert sorted("Loaded from the run cache" in out for out, _ in outs) == [False, True]
    assert sorted(p.name for p in (cache_dir / "runs").iterdir()) == [name]
    assert train.train("pool", **{**tiny, "epochs": 3}).from_cache


@pytest.mark.parametrize("argv, message", [
    (["--seed", "-1"], "seed must be a whole number from 0 to 4,294,967,295, not -1."),
    (["--seed", str(2**32)], "seed must be a whole number from 0 to 4,294,967,295"),
    (["--train-per-class", "0"], "train_per_class must be a whole number from 1 to 5,000, not 0."),
    (["--test-per-class", "1001"], "test_per_class must be a whole number from 1 to 1,000"),
])
def test_cli_checks_settings_before_creating_anything(argv, message, image_folder, cache_dir,
                                                      capsys):
    assert main(_cli_args(image_folder, *argv)) == 2
    out, err = capsys.readouterr()
    assert err == f"error: {err[7:]}" and message in err and err.count("\n") == 1
    assert out == ""  # refused before anything else is said or done
    assert not cache_dir.exists()


def test_cli_cache_dir_that_is_a_file(image_folder, tmp_path, capsys):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file")
    assert main(_cli_args(image_folder, "--cache-dir", str(blocker))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: The cache folder") and f"{blocker} is a file" in err
    assert err.count("\n") == 1 and blocker.read_text() == "a file"


def test_cli_cache_that_cannot_be_written(image_folder, cache_dir, monkeypatch, capsys):
    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)  # as a read-only cache answers (tests run as root)
    assert main(_cli_args(image_folder)) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: The cache folder {cache_dir} cannot be created (Permission "
                          "denied)") and "CNNBOOK_CACHE" in err and err.count("\n") == 1


def test_a_read_only_cache_still_serves_its_runs(tiny, monkeypatch):
    first = train.train("conv", **tiny)

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    for name in ("mkdir", "write_bytes", "write_text", "unlink", "rename"):
        monkeypatch.setattr(Path, name, refuse)
    monkeypatch.setattr(os, "replace", refuse)
    assert train.train("conv", **tiny).history == first.history


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def test_a_run_stopped_early_by_a_callback_is_not_stored_and_resumes(tiny, cache_dir):
    with pytest.raises(RuntimeError, match="Training stopped after 1 of 2 epochs"):
        train.train("conv", **tiny, callbacks=[StopAfterFirstEpoch()])
    assert not list((cache_dir / "runs").glob("*/result.json"))
    counter = CountEpochs()
    result = train.train("conv", **tiny, callbacks=[counter])
    assert counter.epochs == [1] and result.provenance["resumed_from_epoch"] == 1


def never_good_enough():
    """EarlyStopping that stops after epoch 2 (no epoch beats epoch 1 by 100 in val_loss) and
    puts epoch 1's weights back: a certain early stop in a tiny run."""
    return keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=100, patience=0,
                                         restore_best_weights=True)


def test_early_stopping_that_does_not_stop_still_records_the_weights_it_restored(tiny):
    """Keras restores the best epoch's weights at the end even when it never stopped: the run
    says so, and its test metrics are that epoch's."""
    args = {**tiny, "epochs": 3}
    keep_first = keras.callbacks.EarlyStopping(monitor="loss", mode="max", patience=5,
                                               restore_best_weights=True)  # epoch 1: highest loss
    run = train.train("conv", **args, callbacks=[keep_first])
    assert run.epochs == 3 and "stopped_early" not in run.provenance
    assert run.history["loss"][0] == max(run.history["loss"])
    assert run.provenance["restored_epoch"] == 1
    assert run.test_accuracy == pytest.approx(run.history["val_accuracy"][0], abs=1e-6)
    assert "3 epochs, weights of epoch 1 restored by EarlyStopping, seed 0" in run.describe()
    assert report.provenance(run).data["value"]["epochs"] == "3 (weights of epoch 1 restored)"


def test_early_stopping_is_a_run_of_its_own_that_records_where_it_stopped(tiny):
    args = {**tiny, "epochs": 3}
    settings = {k: v for k, v in args.items() if k != "verbose"}
    base = train.run_key(train.run_config("conv", **settings))
    # watching callbacks leave the key alone; those that change the result are in it
    assert train.run_key(train.run_config("conv", **settings, callbacks=[CountEpochs()])) == base
    for other in (keras.callbacks.EarlyStopping(monitor="val_loss", patience=3),
                  keras.callbacks.ReduceLROnPlateau(factor=0.5), keras.callbacks.TerminateOnNaN()):
        assert train.run_key(train.run_config("conv", **settings, callbacks=[other])) != base
    early = train.train("conv", **args, callbacks=[never_good_enough()])
    assert not early.from_cache and not early.run_dir.name.endswith(base)
    assert early.epochs == 2 and all(len(v) == 2 for v in early.history.values())
    assert early.provenance["stopped_early"] == {"by": ["EarlyStopping"], "epochs_trained": 2,
                                                 "restored_epoch": 1}
    assert early.test_accuracy == pytest.approx(early.history["val_accuracy"][0], abs=1e-6)
    assert ("stopped early by EarlyStopping after 2 of 3 epochs, weights of epoch 1 restored"
            ", seed 0" in early.describe()
            and "callbacks: EarlyStopping(monitor='val_loss', min_delta=100, patience=0"
            in early.describe())
    again = train.train("conv", **args, callbacks=[never_good_enough()])
    assert again.from_cache and again.run_dir == early.run_dir and again.epochs == 2
    table = report.provenance(again).data["value"]
    assert (table["epochs"], table["seed"]) == ("2 of 3 (stopped early by EarlyStopping)", "0")


def test_callbacks_whose_effect_a_run_key_cannot_record_are_refused(tiny, cache_dir):
    with pytest.raises(train.ConfigError, match="LearningRateScheduler cannot be used in a "
                                                 "cached run: its schedule is a Python function"):
        train.train("conv", **tiny, callbacks=[keras.callbacks.LearningRateScheduler(abs)])
    with pytest.raises(train.ConfigError, match="callbacks must be a list of Keras callbacks"):
        train.train("conv", **tiny, callbacks=never_good_enough())
    assert not (cache_dir / "runs").exists() or not any((cache_dir / "runs").iterdir())
