"""The book: it builds with the quick profile, its pages hold the executed outputs, the build is
strict, unchanged or prose-only rebuilds retrain nothing, and a package change re-executes pages.

These tests run ``jupyter-book build`` for real and take a few minutes: ``pytest -m "not book"``
runs the unit suite alone.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from bs4 import BeautifulSoup

from cnnbook import bench, models
from conftest import BOOK, build

pytestmark = pytest.mark.book

CHAPTER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3 (ipykernel)
  language: python
  name: python3
---

# {title}

{body}
"""


def toc_files(book: Path) -> list[str]:
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    return [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]


def run_dirs(cache: Path) -> dict[str, float]:
    runs = cache / "runs"
    return {p.name: p.stat().st_mtime for p in runs.iterdir()} if runs.exists() else {}


def page(book: Path, name: str) -> BeautifulSoup:
    return BeautifulSoup((book / "_build" / "html" / f"{name}.html").read_text(), "html.parser")


def test_every_chapter_is_built_and_in_the_navigation(built_book):
    book, _, _ = built_book
    names = toc_files(book)
    assert names[:10] == ["intro", "data", "conv_only", "max_pooling", "comparison", "inside",
                          "assignment_results", "beating", "alexnet", "i3_time"]
    nav = page(book, "intro").select_one("nav.bd-links")
    linked = {a["href"].split("#")[0] for a in nav.find_all("a", href=True)}
    for name in names[1:]:
        assert (book / "_build" / "html" / f"{name}.html").is_file()
        assert f"{name}.html" in linked, f"{name} is missing from the navigation"


def test_pages_hold_executed_outputs(built_book):
    book, _, _ = built_book
    conv, pool = page(book, "conv_only"), page(book, "max_pooling")
    for soup, total in ((conv, "1,191,502"), (pool, "589,390")):
        outputs = " ".join(o.get_text(" ") for o in soup.select("div.cell_output"))
        assert "Total params" in outputs and total in outputs  # the model.summary() tables
        assert "Trainable params" in outputs
        figures = soup.select("div.cell_output img")
        assert len(figures) >= 3  # training curves, confusion matrix, misclassified images
        assert all(img.get("alt") for img in figures), "every figure has alt text"
        assert soup.select_one("div.admonition.warning"), "the quick-preview note is visible"
        text = soup.get_text(" ")
        assert re.search(r"of the training\s+images and\s+\d+\.\d%\s+of the test\s+images", text)
    assert "387,972" in conv.get_text()  # the conv stack's summary
    data = page(book, "data")
    assert data.select("div.cell_output img") and "total" in data.get_text()


def test_beating_the_assignment_keeps_the_budget_and_reports_its_own_runs(built_book):
    """The new chapter's model is within the assignment's budget (variant 2's parameters, variant
    1's MACs, both from Keras and the calculator); its table shows the cached runs' own numbers;
    its verdicts follow them, and a quick build says it cannot judge the full-profile goal."""
    from cnnbook import calc, train

    book, env, _ = built_book
    soup = page(book, "beating")
    text = " ".join(soup.select_one("main").get_text(" ").split()).replace("\u2019", "'")
    size = {name: (models.build_model(name).count_params(),
                   calc.analyze(calc.from_keras(models.build_model(name))).totals["macs"])
            for name in models.MODELS}
    assert size["bn_aug"][0] == size["bn"][0] <= size["pool"][0]
    assert size["bn_aug"][1] == size["bn"][1] <= size["conv"][1]
    assert "Both figures are inside the budget." in text
    assert f"at most {size['pool'][0]:,} parameters and {size['conv'][1]:,} MACs per image" in text
    runs = {name: train.train(name, "quick", data_source=env.get("CNNBOOK_DATA"),
                              cache_dir=env["CNNBOOK_CACHE"], verbose=0) for name in size}
    assert all(run.from_cache for run in runs.values())  # the build's runs, not new ones
    table = next(t for t in soup.select("main table") if "test accuracy" in t.get_text())
    header = [th.get_text(" ", strip=True) for th in table.select("thead th")][1:]
    rows = {tr.select_one("th").get_text(" ", strip=True):
            dict(zip(header, (td.get_text(strip=True) for td in tr.select("td"))))
            for tr in table.select("tbody tr")}
    assert list(rows) == [models.TITLES[name] for name in ("conv", "pool", "bn", "bn_aug")]
    for name, run in runs.items():
        row = rows[models.TITLES[name]]
        assert row["parameters"] == f"{size[name][0]:,}" and row["MACs per image"] == f"{size[name][1]:,}"
        assert float(row["test accuracy"]) == round(run.test_accuracy, 4)
        gap = run.history["accuracy"][-1] - run.history["val_accuracy"][-1]
        assert float(row["gap (points)"]) == round(100 * gap, 1)
    new, old = runs["bn_aug"].test_accuracy, max(runs["conv"].test_accuracy,
                                                 runs["pool"].test_accuracy)
    assert f"reached a test accuracy of {new:.4f}" in text
    assert ("points above the better of the assignment's models" in text) == (new > old)
    assert ("in this build it did not beat the assignment" in text) == (new <= old)
    assert "this preview cannot say whether it is met" in text  # a quick build
    # the fair gap: the trained networks scored on the clean training images
    from cnnbook import data, report

    quick = train.get_profile("quick")
    x, y = data.load_cifar10(env.get("CNNBOOK_DATA"), train_per_class=quick.train_per_class,
                             test_per_class=quick.test_per_class,
                             cache_dir=env["CNNBOOK_CACHE"]).train
    clean = {name: float(np.mean(report.predictions(runs[name], x) == y.ravel()))
             for name in ("bn", "bn_aug")}
    for name in clean:
        assert f"{clean[name]:.1%} of its training images" in text or \
            f"on {clean[name]:.1%} and {runs[name].test_accuracy:.1%}" in text
    shrank = (clean["bn_aug"] - runs["bn_aug"].test_accuracy
              < clean["bn"] - runs["bn"].test_accuracy)
    assert ("augmentation and dropout shrank the gap" in text) == shrank
    assert ("augmentation and dropout did not shrink the gap" in text) == (not shrank)


def test_no_tracebacks_or_log_noise_in_any_page(built_book):
    book, _, _ = built_book
    for name in toc_files(book):
        soup = page(book, name)
        outputs = " ".join(o.get_text(" ") for o in soup.select("div.cell_output"))
        for bad in ("Traceback", "Error", "oneDNN custom operations", "WARNING", "absl::", "\x08", "\x1b["):
            assert bad not in outputs, f"{name}: {bad!r} in a cell output"
        assert not soup.select(".stderr"), f"{name}: stderr output in the page"


def test_training_results_show_their_provenance(built_book):
    book, _, _ = built_book
    for name in ("conv_only", "max_pooling", "comparison", "assignment_results", "beating"):
        text = page(book, name).get_text(" ")
        assert "profile quick" in text
        assert "trained now" in text or "loaded from the run cache" in text
        assert "cores" in text  # the hardware
        assert re.search(r"\d+ epochs?, seed 0\b", text)  # describe() names the seed
    for name in ("conv_only", "max_pooling"):  # and so does the provenance table
        table = page(book, name).select("table")
        rows = {tr.select_one("th").get_text(strip=True): tr.select_one("td").get_text(strip=True)
                for t in table for tr in t.select("tbody tr") if tr.select_one("th")
                and tr.select_one("td")}
        assert rows.get("seed") == "0", name
    conv = page(book, "conv_only").get_text(" ")
    assert "trained now" in conv  # trained in its own chapter, in table-of-contents order
    assert "loaded from the run cache" in page(book, "comparison").get_text(" ")


def test_rebuild_without_change_and_after_prose_edit_trains_nothing(reduced_bench, built_book):
    """The benchmark's rebuilds of its copy of the session's book (tests/conftest.py)."""
    results, _, copy = reduced_bench
    builds = results["builds"]
    assert builds["executed_pages"] == {"no_change": [], "prose_edit": [],  # prose: not in the key
                                        "code_edit": ["conv_only"]}
    assert bench.TRAINING_CHAPTER == "conv_only.md"
    assert "This sentence was added by the benchmark." in page(copy, "conv_only").get_text()
    assert builds["quick_runs_trained_by_rebuilds"] == []  # nothing retrained
    # one quick run per model of the book: conv, pool, bn and bn_aug
    assert sorted(name.split("-")[0] for name in run_dirs(Path(built_book[1]["CNNBOOK_CACHE"]))) \
        == sorted(models.MODELS)


def test_benchmarks_page_agrees_with_its_results_file(built_book):
    """The appendix's words (busy or idle, bfloat16, ceilings, verdicts) follow from latest.json."""
    import json

    book, _, _ = built_book
    results = json.loads((book / "_static" / "bench" / "latest.json").read_text())
    soup = page(book, "benchmarks")
    main = soup.select_one("main")
    text = " ".join(main.get_text(" ").split())
    assert not re.search(r"\bnan\b|\binf\b|Traceback", text)
    warnings = " ".join(w.get_text(" ") for w in main.select("div.admonition.warning"))
    if results["busy"]:
        assert "This run was busy" in " ".join(warnings.split())
    else:
        assert "The machine was idle when the run started" in text and "busy" not in warnings
    training = results["training"]
    measured_bf16 = "bfloat16" in training["peak_flops"]
    assert measured_bf16 == results["machine"]["bfloat16"]["native"]
    assert ("This run did not measure it" in text) != measured_bf16
    # the throughput table: every path at or below the peak of its own precision
    table = next(t for t in main.select("table")
                 if "% of peak" in [th.get_text(strip=True) for th in t.select("thead th")])
    header = [th.get_text(strip=True) for th in table.select("thead tr")[-1].select("th")]
    rows = [[c.get_text(strip=True) for c in tr.select("th, td")]
            for tr in table.select("tbody tr")]
    n_paths = sum(len(e["paths"]) for e in training["models"].values())
    assert len(rows) == n_paths
    shares = [float(r[-2]) for r in rows]  # "% of peak", then "peak"
    assert all(0 < v <= 100 for v in shares) and {r[-1] for r in rows} <= {"float32", "bfloat16"}
    assert ("bfloat16" in {r[-1] for r in rows}) == measured_bf16
    assert f"No path came above {max(round(v) for v in shares)} % of the peak" in text
    # the time at the measured peak is a yardstick: the page says whether an epoch beat it
    above = []
    for s in (e["epoch_seconds"] for e in training["models"].values()):
        above += [s["measured_book_f32"] / s["predicted_at_float32_peak"],
                  s["measured_assignment_f64"] / s["predicted_at_float32_peak"]]
        if "measured_book_bf16" in s:
            above.append(s["measured_book_bf16"] / s["predicted_at_bfloat16_peak"])
    if min(above) >= 1:
        assert "Every epoch the benchmark measured took longer than the time at the measured peak"\
            in text
    else:
        assert "At least one epoch the benchmark measured was shorter than the time at" in text
    assert "shortest possible" not in text and "is the ceiling" not in text
    f32 = [e["ratios"]["book_f32_vs_assignment_f64"] for e in training["models"].values()]
    if min(f32) >= 1.05:
        assert "The book's path won for both models" in text
    elif max(f32) <= 1 / 1.05:
        assert "The assignment's path was faster for both models" in text
    else:
        assert "Neither path is clearly faster for both models" in text
    for ratio in f32:
        assert f"{ratio:.2f} times" in text
    cold = results.get("builds", {}).get("seconds", {}).get("cold")
    if cold is not None:
        assert f"The cold build took {cold / 60:.1f} minutes" in text


# --- strictness and the package-aware cache, on tiny books that share the real configuration --

def test_alexnet_pages_show_the_calculators_numbers(built_book):
    book, _, _ = built_book
    alexnet = page(book, "alexnet")
    text = alexnet.get_text(" ")
    for number in ["62,378,344", "62,367,776", "1,135,256,096", "1,049,571", "60,965,224"]:
        assert number in text
    wrong = [td.get_text(strip=True) for td in alexnet.select("table td") if "filters only" in td.get_text()]
    assert len(wrong) == 5  # the five convolution rows of the assignment's table
    assert alexnet.select("div.cnnbook-calc[data-widget=model]")
    i3 = page(book, "i3_time")
    headers = [th.get_text(" ", strip=True) for th in i3.select("table thead th")]
    assert "measured s (median epoch)" in headers and "predicted s, own steps' FLOP/s" in headers
    assert "GFLOP/s achieved" in i3.get_text()
    assert i3.select("div.cnnbook-calc[data-widget=time]")
    for soup in (alexnet, i3):
        assert not re.search(r"\bnan\b|\binf\b|Traceback", soup.select_one("main").get_text())


def tiny_book(tmp_path: Path, chapters: dict[str, str], extra_config: str = "") -> Path:
    book = tmp_path / "tiny"
    book.mkdir()
    shutil.copy(BOOK / "_config.yml", book / "_config.yml")
    shutil.copy(BOOK / "references.bib", book / "references.bib")  # the config names it
    shutil.copytree(BOOK / "_ext", book / "_ext")
    shutil.copytree(BOOK / "_static", book / "_static")
    if extra_config:
        config = yaml.safe_load((book / "_config.yml").read_text())
        config["sphinx"]["config"].update(yaml.safe_load(extra_config))
        (book / "_config.yml").write_text(yaml.safe_dump(config))
    names = list(chapters)
    toc = {"format": "jb-book", "root": names[0]}
    if names[1:]:
        toc["chapters"] = [{"file": name} for name in names[1:]]
    (book / "_toc.yml").write_text(yaml.safe_dump(toc))
    for name, body in chapters.items():
        (book / f"{name}.md").write_text(CHAPTER.format(title=name.title(), body=body))
    return book


def cell(code: str) -> str:
    return f"```{{code-cell}} ipython3\n{code}\n```\n"


def test_a_cell_that_raises_fails_the_build(tmp_path):
    book = tiny_book(tmp_path, {"index": "Fine.\n\n" + cell("1 / 0")})
    result = build(book, dict(os.environ))
    assert result.returncode != 0
    assert "ZeroDivisionError" in result.stdout + result.stderr


def test_a_sphinx_warning_fails_the_build(tmp_path):
    book = tiny_book(tmp_path, {"index": "See {ref}`no-such-label`.\n\n" + cell("print(1)")})
    result = build(book, dict(os.environ))
    assert result.returncode != 0
    assert "no-such-label" in result.stdout + result.stderr


def test_a_clean_tiny_book_builds(tmp_path):
    book = tiny_book(tmp_path, {"index": "Fine.\n\n" + cell("print(1 + 1)")})
    result = build(book, dict(os.environ))
    assert result.returncode == 0, result.stdout[-3000:]


def test_package_change_re_executes_the_pages_that_import_it(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "helpers.py").write_text("VERSION = 1\n")
    log = tmp_path / "executions.log"
    uses = cell(f"import cnnbook\nopen({str(log)!r}, 'a').write('uses\\n')")
    plain = cell(f"open({str(log)!r}, 'a').write('plain\\n')")
    book = tiny_book(tmp_path, {"index": "Uses the package.\n\n" + uses,
                                "other": "Does not.\n\n" + plain},
                     extra_config=f"cnnbook_watch: [{str(package)!r}]")
    env = {k: v for k, v in os.environ.items() if k not in ("CNNBOOK_PROFILE", "CNNBOOK_DATA")}

    def executions():
        return sorted(log.read_text().split())

    assert build(book, env).returncode == 0
    assert executions() == ["plain", "uses"]
    assert build(book, env).returncode == 0  # nothing changed: nothing runs
    assert executions() == ["plain", "uses"]
    (package / "helpers.py").write_text("VERSION = 2\n")
    assert build(book, env).returncode == 0
    assert executions() == ["plain", "uses", "uses"]  # only the page that imports the package
    # another profile or data source changes what the page computes: it runs again too
    assert build(book, dict(env, CNNBOOK_PROFILE="quick")).returncode == 0
    assert executions() == ["plain", "uses", "uses", "uses"]
    assert build(book, dict(env, CNNBOOK_PROFILE="quick", CNNBOOK_DATA=str(tmp_path))).returncode == 0
    assert executions() == ["plain", "uses", "uses", "uses", "uses"]


def test_a_chapter_runs_on_its_own_in_jupyter_with_the_same_cache(built_book, tmp_path):
    import json

    book, env, _ = built_book
    import shlex

    from sphinx.util.matching import Matcher

    before = run_dirs(Path(env["CNNBOOK_CACHE"]))
    (tmp_path / "book").mkdir()
    shutil.copy(book / "conv_only.md", tmp_path / "book" / "conv_only.md")
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    command = next(line for line in readme.splitlines() if line.startswith("jupytext "))
    argv = shlex.split(command.split("#")[0])  # the README's command, as a reader types it
    assert argv[-1] == "book/conv_only.md"
    argv[0] = str(Path(sys.executable).with_name("jupytext"))
    result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    # what it leaves beside the chapter is not part of the next build (no "multiple files found")
    patterns = yaml.safe_load((book / "_config.yml").read_text())["exclude_patterns"]
    assert sorted(p.name for p in (tmp_path / "book").iterdir()) == [
        "conv_only.ipynb", "conv_only.md"]
    assert Matcher(patterns)("conv_only.ipynb") and not Matcher(patterns)("conv_only.md")
    notebook = json.loads((tmp_path / "book" / "conv_only.ipynb").read_text())
    outputs = [o for c in notebook["cells"] if c["cell_type"] == "code" for o in c["outputs"]]
    assert not [o for o in outputs if o["output_type"] == "error" or o.get("name") == "stderr"]
    text = json.dumps(outputs)
    assert "loaded from the run cache" in text and "1,191,502" in text
    assert run_dirs(Path(env["CNNBOOK_CACHE"])) == before  # the book's run, not a new one


# --- figures (issue 13, item 9) ----------------------------------------------------------------

# The figures each page draws, by the name a {numref} targets. The benchmark's build times are
# drawn only when its results file holds them (not with --no-builds).
FIGURES = {
    "data": ["fig-data-samples"],
    "conv_only": ["fig-conv-curves", "fig-conv-confusion", "fig-conv-misclassified"],
    "max_pooling": ["fig-pool-curves", "fig-pool-confusion", "fig-pool-misclassified"],
    "comparison": ["fig-comparison-curves"],
    "inside": ["fig-inside-filters", "fig-inside-maps-conv", "fig-inside-maps-pool"],
    "assignment_results": ["fig-assignment-val-accuracy"],
    "beating": ["fig-beating-augment", "fig-beating-curves"],
    "benchmarks": ["fig-bench-throughput", "fig-bench-epoch-seconds", "fig-bench-build-times"],
}
PHOTOS = {"fig-data-samples", "fig-conv-misclassified", "fig-pool-misclassified",
          "fig-inside-filters", "fig-inside-maps-conv", "fig-inside-maps-pool",
          "fig-beating-augment"}


def test_figures_are_numbered_captioned_and_referenced(built_book):
    """Every image a code cell draws is a <figure> with an id and a numbered caption; numbers are
    unique in the book and follow the chapters; every {numref} in the text links to a figure
    that exists and shows that figure's number; every figure is referenced from the text; each
    says whether it holds a chart or photographs, which book/_static/figures.css styles for
    dark mode."""
    import json

    book, _, _ = built_book
    results = json.loads((book / "_static" / "bench" / "latest.json").read_text())
    expected = dict(FIGURES)
    if results.get("builds") is None:
        expected["benchmarks"] = [f for f in FIGURES["benchmarks"] if f != "fig-bench-build-times"]
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    numbered = [c["file"] for part in toc["parts"] if part.get("numbered")
                for c in part["chapters"]]  # numbered across parts (use_multitoc_numbering)
    chapters = {name: i for i, name in enumerate(numbered, start=1)}
    numbers: dict[str, str] = {}  # "conv_only.html#fig-conv-curves": "Fig. 2.1"
    links: list[tuple[str, str, str]] = []  # (page, href, the link's text)
    for name in toc_files(book):
        soup = page(book, name)
        main = soup.select_one("main")
        images = main.select("div.cell_output img")
        assert all(img.find_parent("figure") for img in images), f"{name}: an image outside a figure"
        figures = main.select("figure")
        assert [f.get("id") for f in figures] == expected.get(name, []), name
        for figure in figures:
            assert len(figure.select("img")) == 1 and figure.find_parent("div", class_="cell_output")
            kinds = {"cnnbook-plot", "cnnbook-photos"} & set(figure["class"])
            assert kinds == {"cnnbook-photos" if figure["id"] in PHOTOS else "cnnbook-plot"}, (
                f"{name}: {figure['id']} is styled as {kinds or 'neither'} in dark mode")
            caption = figure.select_one("figcaption")
            number = caption.select_one("span.caption-number").get_text(strip=True)
            if name in chapters:  # a numbered chapter: its figures are Fig. <chapter>.<n>
                assert re.fullmatch(rf"Fig\. {chapters[name]}\.\d+", number), (name, number)
            else:  # the appendix
                assert re.fullmatch(r"Fig\. \d+", number), (name, number)
            assert len(caption.select_one("span.caption-text").get_text(" ", strip=True)) > 40
            assert caption.select_one("a.headerlink[href='#" + figure["id"] + "']")
            numbers[f"{name}.html#{figure['id']}"] = number
        links += [(name, a["href"], a.get_text(strip=True))
                  for a in main.select("a.reference.internal") if a.select_one("span.std-numref")]
        assert not main.select("span.std-numref:not(a span)"), f"{name}: an unresolved {{numref}}"
    assert sum(map(len, expected.values())) == len(numbers)
    assert len(set(numbers.values())) == len(numbers), "two figures share a number"
    referenced = set()
    for name, href, text in links:
        target = href if "#" in href and not href.startswith("#") else f"{name}.html{href}"
        assert target in numbers, f"{name}: a {{numref}} to {href}, which is no figure"
        assert text == numbers[target], (name, href, text)
        referenced.add(target)
    unreferenced = set(numbers) - referenced - {"benchmarks.html#fig-bench-build-times"}
    assert not unreferenced, f"figures the text never refers to: {sorted(unreferenced)}"


def test_figures_in_dark_mode_are_inverted_charts_and_untouched_photos(built_book):
    """In dark mode a chart is inverted (no white box on the dark page) and photographs keep
    their colours: the computed styles of a page with both kinds, in headless Chromium."""
    from playwright.sync_api import sync_playwright

    from conftest import CHROMIUM

    book, _, _ = built_book
    html = book / "_build" / "html"
    for name in FIGURES:
        links = [l["href"] for l in page(book, name).select("link[rel=stylesheet]")]
        assert any(h.split("?")[0].endswith("_static/figures.css") for h in links), name
    style = """(id) => { const s = getComputedStyle(document.querySelector(`#${id} img`));
                         return [s.filter, s.backgroundColor]; }"""
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        try:
            tab = browser.new_page()
            tab.goto((html / "conv_only.html").as_uri())
            seen = {}
            for mode in ("light", "dark"):
                tab.evaluate(f"document.documentElement.dataset.theme = '{mode}'")
                seen[mode] = {i: tab.evaluate(style, i) for i in FIGURES["conv_only"]}
        finally:
            browser.close()
    for figure in FIGURES["conv_only"]:
        assert seen["light"][figure][0] == "none"
        dark_filter, dark_background = seen["dark"][figure]
        if figure in PHOTOS:
            assert dark_filter == "none"  # never inverted, not dimmed
        else:
            assert dark_filter.startswith("invert(0.92)") and "hue-rotate(180deg)" in dark_filter
        assert dark_background == "rgba(0, 0, 0, 0)"  # not the theme's light box


# --- what the review of issue 15 found: each verdict follows from the numbers on its page ------

def words(book: Path, name: str) -> str:
    """A built page's main text, its white space collapsed."""
    return " ".join(page(book, name).select_one("main").get_text().split())


def percents(text: str, after: str) -> list[float]:
    """The signed percentages in ``text`` after ``after`` up to the next full stop."""
    start = text.index(after) + len(after)
    return [float(v) for v in re.findall(r"([+\-−]?\d+) %", text[start:text.index(". ", start)]
                                         .replace("−", "-"))]


def test_intro_shows_the_settings_whole(built_book):
    from cnnbook import data, train

    book, env, _ = built_book
    cells = [td.get_text(" ", strip=True) for td in page(book, "intro").select("main table td")]
    assert f"quick: {train.get_profile('quick').description}" in cells
    assert data.resolve_source(env["CNNBOOK_DATA"]).description in cells
    assert not any(c.endswith("...") for c in cells)
    assert "laptop" not in words(book, "intro")


def test_conv_only_verdicts_follow_its_numbers(built_book):
    book, _, _ = built_book
    text = words(book, "conv_only")
    assert "hard for people too" not in text and "running mean over the epoch" in text
    train_acc, test_acc = (float(v) for v in re.search(
        r"right on ([\d.]+)% of the training images and ([\d.]+)% of the test images",
        text).groups())
    assert ("training figure is the lower one" in text) == (train_acc < test_acc)
    acc, share = (float(v) for v in re.search(
        r"right on ([\d.]+)% of (?:them|the test images) \(guessing gives 10%\).*?(\d+)% of "
        r"(?:all test images|them)", text).groups())
    assert acc == test_acc
    assert ("It has not learned enough yet" in text) == (acc < 20 or share > 50)


def test_max_pooling_exercise_one_can_be_done_and_its_numbers_are_keras(built_book):
    import keras

    book, _, _ = built_book
    text = words(book, "max_pooling")
    layers = keras.layers

    def model(last):
        return keras.Sequential([keras.Input(shape=(32, 32, 3)),
            layers.Conv2D(8, 3, padding="same"), layers.Conv2D(24, 3, padding="same"),
            layers.MaxPooling2D(2, 2), layers.Conv2D(36, 3, padding="same"),
            layers.Conv2D(48, 5, padding="same"), layers.MaxPooling2D(2, 2),
            layers.Conv2D(36, 7, padding="same"), layers.Conv2D(36, 7, padding="same"),
            layers.MaxPooling2D(2), layers.Conv2D(64, 9, padding=last), layers.Flatten(),
            layers.Dense(64), layers.Dense(10)])

    with pytest.raises(ValueError, match="zero or negative"):
        model("valid")
    repaired = model("same")
    side = repaired.layers[-4].output.shape[1]
    assert f"receives a {side}x{side} map" in text
    assert ("Keras refuses to build the model, saying that its output size would be zero or "
            "negative") in text
    assert f"the whole model {repaired.count_params():,}" in text
    assert f"first dense layer has {repaired.layers[-2].count_params():,} parameters" in text
    assert "window of k pixels" in text and "window of p pixels" not in text


def test_comparison_verdicts_follow_its_numbers(built_book):
    from cnnbook import calc

    book, _, _ = built_book
    text = words(book, "comparison")
    macs = {m: calc.analyze(calc.presets()[m]).totals["macs"] for m in ("conv", "pool")}
    mac_ratio = macs["pool"] / macs["conv"]
    assert f"{macs['conv']:,}" in text and f"{macs['pool']:,}" in text  # the MAC column
    assert f"{mac_ratio:.2f} times the MACs per image" in text
    ratio = float(re.search(r"(?:each of its epochs|its epochs) took ([\d.]+) times as long",
                            text).group(1))
    if ratio > 1 and abs(ratio / mac_ratio - 1) <= 0.25:
        assert "time followed the arithmetic" in text
    elif ratio > 1:
        assert "the arithmetic gives the direction, not the size" in text
    else:
        assert "the arithmetic did not predict which model trains faster" in text
    gaps = [float(g) for g in re.findall(r"a gap of (-?[\d.]+) percentage points", text)]
    assert len(gaps) == 2
    if all(g < 0 for g in gaps):
        assert "Both gaps are negative" in text
    elif any(g < 0 for g in gaps):
        assert re.search(r"The gap of the (convolutions-only model|model with max pooling) is "
                         "negative", text)
    else:
        assert "Both gaps are positive" in text
    assert "EarlyStopping" in text and "part of the run key" in text


def test_assignment_results_cite_and_compute_their_claims(built_book):
    from cnnbook import calc, report

    book, _, _ = built_book
    text = words(book, "assignment_results")
    assert "publisher warns" not in text and "Kim" in text  # the JPEG copy's publisher, cited
    need = [calc.estimate_epoch_seconds(calc.presets()[m], 50_000, 1e12, validation_images=10_000)
            * 1e12 / float(np.median(report.ASSIGNMENT[m]["epoch_seconds"]))
            for m in ("conv", "pool")]
    assert f"{min(need) / 1e12:.1f}" in text and "TFLOP/s sustained" in text
    cpu = calc.build_machine()
    assert ("the assignment trained on a GPU" in text) == (
        min(need) > cpu.peak_flops and max(need) <= calc.MACHINES["t4"].peak_flops)


def test_alexnet_memory_units_and_input_size_are_explained(built_book):
    from cnnbook import calc

    book, _, _ = built_book
    text = words(book, "alexnet")
    alexnet = calc.presets()["alexnet"]
    totals = calc.analyze(alexnet).totals
    mib = totals["param_bytes"] / 2**20
    assert f"({mib:.2f} MB)" in text  # what Keras's summary prints ...
    assert f"{totals['param_bytes'] / 1e6:.2f} MB and {mib:.2f} MiB" in text  # ... explained
    assert "(224 − 11)/4 + 1 = 54.25, not a whole number" in text
    assert "(227 − 11)/4 + 1 = 55, a whole number" in text
    assert "dominated by the dense layers" not in text
    parts = calc.training_memory(alexnet, batch_size=128, optimizer="momentum")
    batch = (parts["activations"] + parts["input batch"]) / 2**20
    assert (f"activations and the input batch ({batch:,.0f} MiB) take more memory than the "
            "weights" in text) == (batch > parts["weights"] / 2**20)


def test_i3_verdicts_follow_its_numbers(built_book):
    from cnnbook import calc

    book, _, _ = built_book
    text = words(book, "i3_time")
    errors = percents(text, "the measured epochs were off by")
    assert len(errors) == 2
    assert ("took over a quarter longer" in text) == (max(errors) > 25)
    assert ("took over a quarter less time" in text) == (min(errors) < -25)
    assert ("came within a quarter of every measured epoch" in text) == (
        max(abs(e) for e in errors) <= 25)
    assert f"{min(errors):+.0f} % to {max(errors):+.0f} % in this build" in text  # the summary
    assert "predicts this book's own epoch times" not in text
    i3 = calc.MACHINES["i3-540"]
    assert f"{i3.peak_flops / 1e9:.1f} GFLOP/s in float32 ({i3.peak_flops / 2e9:.1f}" in text
    alexnet = calc.presets()["alexnet"]
    free, data = 2 * 2**30, 10_000 * 227 * 227 * 3
    beside = {o: calc.largest_batch(alexnet, free - data, optimizer=o)
              for o in ("sgd", "momentum", "adam")}
    assert f"as 8-bit integers, {data / 2**30:.2f} GiB" in text
    for opt, n in beside.items():
        assert (f"{opt} up to batch {n}" in text) == (n > 0)
    f32 = calc.training_memory(alexnet, batch_size=128)
    b16 = calc.training_memory(alexnet, batch_size=128, dtype="bfloat16")
    kept = ["weights", "gradients", "optimizer state"]
    mixed = f32[kept].sum() + b16.drop(kept).sum()
    assert f"{mixed / 2**20:,.0f} MiB in mixed precision" in text


def test_every_exercise_has_one_solution_in_a_closed_dropdown(built_book):
    """On every page of the book, under each "Exercises" heading, the numbered exercises and the
    "Solution" admonitions alternate, one solution right after each exercise, and each solution
    is a dropdown that the page opens closed (sphinx-togglebutton: no ``toggle-shown``)."""
    book, _, _ = built_book
    problems, counted = [], {}
    for name in toc_files(book):
        html = (book / "_build" / "html" / f"{name}.html").read_text()
        if ">Exercises<" not in html:  # no such heading: nothing to parse
            continue
        main = BeautifulSoup(html[html.index("<main"):html.index("</main>") + 7], "html.parser")
        for section in main.select("section"):
            heading = section.find(re.compile(r"^h[1-6]$"), recursive=False)
            if heading is None or "".join(
                    heading.find_all(string=True, recursive=False)).strip() != "Exercises":
                continue
            order, numbers, solutions = [], [], 0
            for child in section.find_all(recursive=False):
                if child.name == "ol":
                    first = int(child.get("start", 1))
                    items = child.find_all("li", recursive=False)
                    numbers += range(first, first + len(items))
                    order += ["exercise"] * len(items)
                elif "admonition" in child.get("class", []):
                    title = child.select_one(".admonition-title")
                    if title is None or title.get_text(strip=True) != "Solution":
                        continue
                    classes = set(child["class"])
                    if "dropdown" not in classes or "toggle-shown" in classes:
                        problems.append(f"{name}: solution {solutions + 1} is not a closed "
                                        f"dropdown (classes {sorted(classes)})")
                    order.append("solution")
                    solutions += 1
            nested = [a for a in section.select("div.admonition") if a.parent is not section
                      and a.select_one(".admonition-title")
                      and a.select_one(".admonition-title").get_text(strip=True) == "Solution"]
            if nested:
                problems.append(f"{name}: {len(nested)} solution(s) nested inside other elements")
            if numbers != list(range(1, len(numbers) + 1)):
                problems.append(f"{name}: the exercises are numbered {numbers}")
            if order != ["exercise", "solution"] * len(numbers):
                problems.append(f"{name}: {len(numbers)} exercises, {solutions} solutions, in "
                                f"the order {order}")
            if solutions and "togglebutton" not in html[:html.index("<main")]:
                problems.append(f"{name}: no sphinx-togglebutton script to close the dropdowns")
            counted[name] = len(numbers)
    assert sum(counted.values()) > 0, "no page has an Exercises section with exercises"
    assert not problems, "\n".join(problems)
