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

from cnnbook import bench, calc
from cnnbook.__main__ import main

from conftest import write_image_folder

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


def test_flops_and_estimates_follow_the_calculator():
    seconds = {"book_f32": [2.0, 2.2, 1.8], "assignment_f64": [2.5, 2.4, 2.6],
               "book_bf16": [1.0, 1.1, 0.9]}
    training = {"train_images": 500, "validation_images": 100,
                "peak_flops": {"float32": 200e9, "bfloat16": 800e9},
                "models": {"conv": {"paths": {
                    k: {"label": k, "seconds": s, "median_seconds": statistics.median(s),
                        "images_per_second": 500 / statistics.median(s)}
                    for k, s in seconds.items()}}}}
    bench.add_flops_and_estimates(training, {"conv": [{"precision": "float32"}]})
    entry = training["models"]["conv"]
    layers = calc.presets()["conv"]
    forward = calc.analyze(layers).totals["flops"]
    epoch_flops = 500 * 3 * forward + 100 * forward
    book = entry["paths"]["book_f32"]
    assert book["achieved_flops"] == pytest.approx(epoch_flops / 2.0)
    assert book["percent_of_float32_peak"] == pytest.approx(100 * epoch_flops / 2.0 / 200e9)
    assert entry["ratios"]["book_f32_vs_assignment_f64"] == pytest.approx(2.5 / 2.0)
    assert entry["ratios"]["book_bf16_vs_book_f32"] == pytest.approx(2.0 / 1.0)
    e = entry["epoch_seconds"]
    assert e["predicted_at_float32_peak"] == pytest.approx(
        (50_000 * 3 * forward + 10_000 * forward) / 200e9)
    assert e["measured_book_f32"] == pytest.approx(2.0 * 100)  # 500 images -> 50,000
    assert e["full_profile_runs"] == [{"precision": "float32"}]


def test_cached_full_runs_reads_the_run_cache(tmp_path):
    run = tmp_path / "runs" / "conv-full-0123"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({
        "model_name": "conv", "epoch_seconds": [10.0, 30.0, 20.0], "test_accuracy": 0.6,
        "config": {"precision": "mixed_bfloat16", "pipeline": "tf.data"},
        "provenance": {"date": "2026-01-01T00:00:00", "hardware": {"cpu": "Some CPU"}}}))
    (tmp_path / "runs" / "conv-quick-4567").mkdir()  # not full profile: ignored
    runs = bench.cached_full_runs(tmp_path)
    assert runs == {"conv": [{"run": "conv-full-0123", "precision": "mixed_bfloat16",
                              "pipeline": "tf.data", "epochs": 3, "median_epoch_seconds": 20.0,
                              "test_accuracy": 0.6, "date": "2026-01-01T00:00:00",
                              "hardware": "Some CPU"}]}


@pytest.mark.book
def test_reduced_benchmark_end_to_end(tmp_path, cache_dir, capsys):
    """`python -m cnnbook bench --reduced` runs and writes a complete, sane results file."""
    data = os.environ.get("CNNBOOK_DATA")
    if not data or not Path(data).exists():  # no real CIFAR-10 here: a generated look-alike
        data = str(tmp_path / "images")
        write_image_folder(Path(data), train_per_class=300, test_per_class=100)
    out = tmp_path / "bench" / "results.json"
    assert main(["bench", "--reduced", "--out", str(out), "--data", data]) == 0
    printed = capsys.readouterr().out
    assert "peak (matmul)" in printed and f"Wrote {out}" in printed
    results = json.loads(out.read_text())
    assert results["mode"] == "reduced" and results["date"].startswith("20")
    assert {"tensorflow", "keras", "numpy", "jupyter-book"} <= set(results["machine"]["versions"])
    assert results["machine"]["cores"] >= 1 and results["machine"]["cpu"]

    training = results["training"]
    assert (training["train_images"], training["validation_images"]) == (250, 50)
    peaks = training["peak_flops"]
    assert peaks["float32"] > 1e9 and peaks["bfloat16"] > 1e9  # any CPU of this century
    assert len(training["peak_flops_runs"]["float32"]) == 2 * training["rounds"]
    for model in ("conv", "pool"):
        entry = training["models"][model]
        assert set(entry["paths"]) == {"book_f32", "assignment_f64", "book_bf16"}
        for row in entry["paths"].values():
            assert len(row["seconds"]) == training["rounds"] and min(row["seconds"]) > 0
            assert row["images_per_second"] == pytest.approx(250 / row["median_seconds"])
            assert 0 < row["percent_of_float32_peak"] < 1000
        ratios = entry["ratios"]
        assert ratios["book_f32_vs_assignment_f64"] == pytest.approx(
            entry["paths"]["book_f32"]["images_per_second"]
            / entry["paths"]["assignment_f64"]["images_per_second"])
        e = entry["epoch_seconds"]
        assert e["predicted_at_float32_peak"] > 0 and e["measured_book_f32"] > 0
        assert entry["flops"]["training_per_image"] == calc.training_flops_per_image(
            calc.presets()[model])

    builds = results["builds"]
    assert set(builds["seconds"]) == {"cold", "no_change", "prose_edit", "code_edit"}
    assert all(s > 0 for s in builds["seconds"].values())
    # a fresh run cache: the cold build trained both quick-profile models
    assert [n.split("-")[:2] for n in builds["quick_runs_trained_by_cold_build"]] == [
        ["conv", "quick"], ["pool", "quick"]]
    site = builds["site"]
    pages = {p["page"] for p in site["pages"]}
    assert {"intro.html", "conv_only.html", "benchmarks.html"} <= pages
    assert 0 < site["heaviest_page"]["bytes"] < site["total_bytes"]
    assert site["largest_image"]["file"].endswith(".png") and site["largest_image"]["bytes"] > 0
    assert results["bench_seconds"] > 0
