"""The benchmark: its pieces on small fixtures, and the reduced mode end to end (it builds the book).

No test here asserts a timing threshold: the machine is shared and its speed varies. They check
that every measurement is present, positive and consistent with the others.
"""

from __future__ import annotations

import json
import os
import statistics
from pathlib import Path

import pytest

from cnnbook import bench, calc, models
from cnnbook.__main__ import main

BOOK = Path(__file__).resolve().parents[1] / "book"


def test_prose_edit_adds_a_sentence_to_the_overview_only():
    text = (BOOK / bench.TRAINING_CHAPTER).read_text()
    edited = bench.prose_edit(text)
    assert len(edited) > len(text)
    assert edited.count("```{code-cell}") == text.count("```{code-cell}")
    overview = edited.split("## Overview\n\n", 1)[1]
    assert overview.startswith("This sentence was added by the benchmark. ")
    with pytest.raises(bench.BenchError, match="Overview"):
        bench.prose_edit("# no overview here\n")


def test_code_edit_changes_the_last_code_cell():
    text = (BOOK / bench.TRAINING_CHAPTER).read_text()
    edited = bench.code_edit(text)
    cells = bench._CODE_CELL.findall(edited)
    assert cells[-1].endswith("\n# edited by the benchmark")
    assert cells[:-1] == bench._CODE_CELL.findall(text)[:-1]
    with pytest.raises(bench.BenchError, match="no code cell"):
        bench.code_edit("# prose only\n")


def test_site_weight_counts_pages_with_their_own_images(tmp_path):
    html = tmp_path / "html"
    (html / "_images").mkdir(parents=True)
    (html / "_static").mkdir()
    (html / "_images" / "big.png").write_bytes(b"x" * 5000)
    (html / "_images" / "small.png").write_bytes(b"x" * 100)
    (html / "_static" / "theme.js").write_bytes(b"x" * 700)
    (html / "a.html").write_text('<img src="_images/big.png"><img src="https://example.org/x.png">')
    (html / "b.html").write_text('<img src="_images/small.png">' + "p" * 2000)
    weight = bench.site_weight(html)
    sizes = {p["page"]: p for p in weight["pages"]}
    a_html = (html / "a.html").stat().st_size
    assert sizes["a.html"] == {"page": "a.html", "html_bytes": a_html, "image_bytes": 5000,
                               "bytes": a_html + 5000}
    assert sizes["b.html"]["image_bytes"] == 100
    assert weight["heaviest_page"]["page"] == "a.html"
    assert weight["largest_image"] == {"file": "_images/big.png", "bytes": 5000}
    assert weight["files"] == 5
    assert weight["total_bytes"] == sum(p.stat().st_size for p in html.rglob("*") if p.is_file())
    with pytest.raises(bench.BenchError, match="no built site"):
        bench.site_weight(tmp_path / "empty")


def training_fixture(seconds: dict, peaks: dict) -> dict:
    precision = {"book_bf16": "bfloat16"}
    return {"train_images": 500, "validation_images": 100, "peak_flops": peaks,
            "models": {"conv": {"paths": {
                k: {"label": k, "precision": precision.get(k, "float32"), "seconds": s,
                    "median_seconds": statistics.median(s),
                    "images_per_second": 500 / statistics.median(s)}
                for k, s in seconds.items()}}}}


def test_flops_and_estimates_follow_the_calculator():
    seconds = {"book_f32": [2.0, 2.2, 1.8], "assignment_f64": [2.5, 2.4, 2.6],
               "book_bf16": [1.0, 1.1, 0.9]}
    training = training_fixture(seconds, {"float32": 2000e9, "bfloat16": 8000e9})
    bench.add_flops_and_estimates(training, {"conv": [{"precision": "float32"}]})
    entry = training["models"]["conv"]
    layers = calc.presets()["conv"]
    forward = calc.analyze(layers).totals["flops"]
    epoch_flops = 500 * 3 * forward + 100 * forward
    assert entry["flops"]["epoch"] == epoch_flops
    book, bf16 = entry["paths"]["book_f32"], entry["paths"]["book_bf16"]
    assert book["achieved_flops"] == pytest.approx(epoch_flops / 2.0)
    assert book["percent_of_peak"] == pytest.approx(100 * epoch_flops / 2.0 / 2000e9)
    # bfloat16 is judged against the bfloat16 peak, never the float32 one
    assert bf16["percent_of_peak"] == pytest.approx(100 * epoch_flops / 1.0 / 8000e9)
    assert entry["ratios"]["book_f32_vs_assignment_f64"] == pytest.approx(2.5 / 2.0)
    assert entry["ratios"]["book_bf16_vs_book_f32"] == pytest.approx(2.0 / 1.0)
    e = entry["epoch_seconds"]
    full_flops = 50_000 * 3 * forward + 10_000 * forward
    assert e["predicted_at_float32_peak"] == pytest.approx(full_flops / 2000e9)
    assert e["predicted_at_bfloat16_peak"] == pytest.approx(full_flops / 8000e9)
    assert e["measured_book_f32"] == pytest.approx(2.0 * 100)  # 500 images -> 50,000
    assert e["measured_book_bf16"] == pytest.approx(1.0 * 100)
    # no measured epoch beats the prediction at the peak of its own precision
    assert e["measured_book_f32"] >= e["predicted_at_float32_peak"]
    assert e["full_profile_runs"] == [{"precision": "float32"}]


def test_without_bfloat16_there_is_no_bfloat16_figure():
    training = training_fixture({"book_f32": [2.0], "assignment_f64": [2.5]},
                                {"float32": 2000e9})
    bench.add_flops_and_estimates(training, {})
    entry = training["models"]["conv"]
    assert set(entry["ratios"]) == {"book_f32_vs_assignment_f64"}
    assert not [k for k in entry["epoch_seconds"] if "bf16" in k or "bfloat16" in k]
    assert entry["epoch_seconds"]["full_profile_runs"] == []


def test_a_path_faster_than_the_peak_is_a_measurement_error():
    forward = calc.analyze(calc.presets()["conv"]).totals["flops"]
    epoch_flops = 500 * 3 * forward + 100 * forward
    peak = epoch_flops / 2.0 / 1.2  # the book's 2-second epoch would be 120 % of this peak
    training = training_fixture({"book_f32": [2.0], "assignment_f64": [4.0]}, {"float32": peak})
    with pytest.raises(bench.BenchError, match=r"book_f32: .* 120 % of the measured float32 "
                                               r"peak .*idle machine"):
        bench.add_flops_and_estimates(training, {})


def test_bfloat16_is_native_only_with_avx512_bf16_amx_or_a_gpu():
    assert bench.bfloat16_support({"cpu_flags": ["avx2", "fma"], "gpus": []})["native"] is False
    assert "emulated" in bench.bfloat16_support({"cpu_flags": ["avx2"], "gpus": []})["why"]
    for flags, name in ((["avx512_bf16"], "AVX512_BF16"), (["amx_bf16"], "AMX")):
        support = bench.bfloat16_support({"cpu_flags": flags, "gpus": []})
        assert support == {"native": True, "why": f"the processor has {name}"}
    gpu = bench.bfloat16_support({"cpu_flags": [], "gpus": ["/physical_device:GPU:0"]})
    assert gpu["native"] and "GPU" in gpu["why"]


def test_a_busy_machine_stops_the_benchmark_unless_allowed():
    with pytest.raises(bench.BenchError, match=r"load average is 1\.50 on 2 cores.*--allow-busy"):
        bench.check_idle(2, allow_busy=False, load=[1.5, 1.0, 0.5])
    busy = bench.check_idle(2, allow_busy=True, load=[1.5, 1.0, 0.5])
    assert busy == {"load_average_at_start": [1.5, 1.0, 0.5], "busy_threshold": 1.0,
                    "busy": True}
    assert bench.check_idle(4, allow_busy=False, load=[0.9, 2, 2])["busy"] is False
    assert bench.check_idle(16, allow_busy=False, load=[3.9, 0, 0])["busy"] is False  # 1 per 4


def test_the_cli_refuses_a_busy_machine_with_the_fix(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(os, "getloadavg", lambda: (7.0, 5.0, 3.0))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    out = tmp_path / "results.json"
    assert main(["bench", "--reduced", "--out", str(out), "--data", str(tmp_path)]) == 2
    assert "busy" in capsys.readouterr().err and not out.exists()


def test_built_needs_a_built_book(tmp_path):
    (tmp_path / "_toc.yml").write_text("root: intro\n")
    with pytest.raises(bench.BenchError, match="has not been built"):
        bench.measure_builds(tmp_path, bench.REDUCED, tmp_path / "work", built=True)


def test_cached_full_runs_reads_the_run_cache(tmp_path):
    run = tmp_path / "runs" / "conv-full-0123"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({
        "model_name": "conv", "epoch_seconds": [10.0, 30.0, 20.0], "test_accuracy": 0.6,
        "config": {"precision": "mixed_bfloat16", "pipeline": "tf.data"},
        "provenance": {"date": "2026-01-01T00:00:00",
                       "hardware": {"cpu": "Some CPU", "cores": 2, "gpus": []}}}))
    (tmp_path / "runs" / "conv-quick-4567").mkdir()  # not full profile: ignored
    runs = bench.cached_full_runs(tmp_path)
    assert runs == {"conv": [{"run": "conv-full-0123", "precision": "mixed_bfloat16",
                              "pipeline": "tf.data", "epochs": 3, "median_epoch_seconds": 20.0,
                              "test_accuracy": 0.6, "date": "2026-01-01T00:00:00",
                              "hardware": "Some CPU", "cores": 2, "gpus": []}]}


@pytest.mark.book
def test_reduced_benchmark_end_to_end(reduced_bench, built_book):
    """`python -m cnnbook bench --reduced --built` on the session's built book and run cache."""
    results, printed, _ = reduced_bench
    cache = Path(built_book[1]["CNNBOOK_CACHE"])
    assert "peak (matmul, best of before, between and after)" in printed
    assert results["mode"] == "reduced, 2 rounds of 10 images per class"  # tests/conftest.py
    assert results["settings"]["rounds"] == 2 and results["date"].startswith("20")
    assert {"tensorflow", "keras", "numpy", "jupyter-book"} <= set(results["machine"]["versions"])
    assert results["machine"]["cores"] >= 1 and results["machine"]["cpu"]
    load, limit = results["load_average_at_start"], results["busy_threshold"]
    assert results["busy"] == (load[0] > limit) and len(results["load_average_at_end"]) == 3
    assert ("BUSY run" in printed) == results["busy"]

    training = results["training"]
    assert (training["train_images"], training["validation_images"]) == (100, 20)
    native = results["machine"]["bfloat16"]["native"]
    dtypes = {"float32", "bfloat16"} if native else {"float32"}
    assert set(training["peak_flops"]) == dtypes
    for dtype in dtypes:
        runs = training["peak_flops_runs"][dtype]
        assert len(runs["before"]) == len(runs["after"]) == bench.REDUCED.peak_products
        assert len(runs["between"]) == 2 * training["rounds"] * bench.REDUCED.peak_between
        assert training["peak_flops"][dtype] == max(runs["before"] + runs["between"]
                                                    + runs["after"])
        assert training["peak_spread"][dtype]["all"]["max"] == training["peak_flops"][dtype]
        assert training["peak_flops"][dtype] > 1e9  # any CPU of this century
    if not native:
        assert "bfloat16 not measured" in printed and "emulated" in printed
    for model in ("conv", "pool"):
        entry = training["models"][model]
        assert set(entry["paths"]) == {"book_f32", "assignment_f64"} | (
            {"book_bf16"} if native else set())
        for row in entry["paths"].values():
            assert len(row["seconds"]) == training["rounds"] and min(row["seconds"]) > 0
            assert row["images_per_second"] == pytest.approx(100 / row["median_seconds"])
            assert 0 < row["percent_of_peak"] <= 100  # of the peak of its own precision
        ratios = entry["ratios"]
        assert ratios["book_f32_vs_assignment_f64"] == pytest.approx(
            entry["paths"]["book_f32"]["images_per_second"]
            / entry["paths"]["assignment_f64"]["images_per_second"])
        e = entry["epoch_seconds"]
        assert 0 < e["predicted_at_float32_peak"] <= e["measured_book_f32"]
        assert entry["flops"]["training_per_image"] == calc.training_flops_per_image(
            calc.presets()[model])

    builds = results["builds"]
    seconds = builds["seconds"]
    assert seconds["cold"] is None and builds["quick_runs_trained_by_cold_build"] is None
    assert all(seconds[k] > 0 for k in ("no_change", "prose_edit", "code_edit"))
    # the session's quick runs (one per model of the book) were reused: the benchmark trained nothing
    assert sorted(p.name.split("-")[0] for p in (cache / "runs").iterdir()) == sorted(models.MODELS)
    assert builds["quick_runs_trained_by_rebuilds"] == []
    site = builds["site"]
    pages = {p["page"] for p in site["pages"]}
    assert {"intro.html", "conv_only.html", "benchmarks.html"} <= pages
    assert 0 < site["heaviest_page"]["bytes"] < site["total_bytes"]
    assert site["largest_image"]["file"].endswith(".png") and site["largest_image"]["bytes"] > 0
    assert results["bench_seconds"] > 0


def test_rounds_and_epoch_size_can_be_overridden_and_the_mode_says_so():
    custom = bench.with_overrides(bench.REDUCED, rounds=2, train_per_class=10)
    assert (custom.rounds, custom.train_per_class, custom.test_per_class) == (2, 10, 2)
    assert custom.name == "reduced, 2 rounds of 10 images per class"
    assert custom.matmul_size == bench.REDUCED.matmul_size and not custom.variants
    assert bench.with_overrides(bench.FULL) is bench.FULL
    for bad in ({"rounds": 0}, {"rounds": True}, {"train_per_class": 4}, {"rounds": 2.5}):
        with pytest.raises(bench.BenchError, match="whole number"):
            bench.with_overrides(bench.REDUCED, **bad)
