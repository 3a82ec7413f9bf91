"""The built site in a real browser: every page loads cleanly and offline, passes axe-core's
accessibility checks in light and dark mode, and the calculators (book/_ext/static/calc, placed
by book/_ext/cnnbook_calc.py) give exactly the Python calculators' numbers and messages, show the
build's numbers without JavaScript, and load on their own pages only; the explorer
(book/_ext/cnnbook_explorer.py) gives Keras's logits with WebGL and without it.

Headless Chromium (Debian's, which .ci/run installs, or $CHROMIUM) driven by Playwright,
against the session's quick build (``built_book`` in conftest.py) served on 127.0.0.1.
Screenshots of every widget page, desktop and phone width, go to $CNNBOOK_ARTIFACTS (or a pytest
temporary folder, printed): look at them.
"""

from __future__ import annotations

import functools
import http.server
import json
import math
import os
import random
import re
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from bs4 import BeautifulSoup
from PIL import Image
from playwright.sync_api import sync_playwright

from cnnbook import calc, report
from conftest import CHROMIUM
from test_calc import REFUSED, refusal

pytestmark = pytest.mark.book

DESKTOP, PHONE = 1280, 390
DASH = "\u2014"
PRESETS = calc.presets()
DEFAULT_RAM = 2 * 1024**3  # the widget's "free memory" default, 2 GiB


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def site(built_book):
    """The built HTML served on localhost: (root folder, base URL)."""
    root = built_book[0] / "_build" / "html"

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
                super().handle_error(request, client_address)  # a closed page is no error

    server = Server(("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def browser():
    assert CHROMIUM, "no Chromium or Chrome found: install one (.ci/run does), or set $CHROMIUM"
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                      args=["--no-sandbox", "--disable-gpu"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    folder = Path(os.environ.get("CNNBOOK_ARTIFACTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


class Visit:
    """A page opened in its own context, recording every console error, uncaught exception,
    failed request, error response and request that leaves 127.0.0.1."""

    def __init__(self, browser, base, name, width=DESKTOP, scheme="light", javascript=True):
        self.context = browser.new_context(viewport={"width": width, "height": 900},
                                           color_scheme=scheme, java_script_enabled=javascript)
        self.page = self.context.new_page()
        self.problems = []
        page = self.page
        page.on("console", lambda m: self.problems.append(
            f"console {m.type}: {m.text} ({m.location.get('url') or 'no address'})")
                if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: self.problems.append(f"uncaught: {e}"))
        page.on("requestfailed", lambda r: self.problems.append(f"failed: {r.url}")
                if javascript or r.resource_type != "script" else None)  # scripts off: not loaded
        page.on("response", lambda r: self.problems.append(f"HTTP {r.status}: {r.url}")
                if r.status >= 400 else None)
        page.on("request", lambda r: self.problems.append(f"network: {r.url}")
                if not r.url.startswith((base, "data:", "blob:", "about:")) else None)
        page.goto(f"{base}/{name}")
        page.wait_for_load_state("networkidle")

    def close(self):
        if self.context:
            self.context.close()
            self.context = None


@pytest.fixture
def visit(browser, site):
    opened = []

    def open_page(name, **kwargs):
        opened.append(Visit(browser, site[1], name, **kwargs))
        return opened[-1]

    yield open_page
    for v in opened:
        v.close()


def pages(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.html")
                  if not {"_static", "_sources", "_images"} & set(p.relative_to(root).parts))


def widget_pages(root: Path) -> dict[str, list[dict]]:
    """Pages with calculator placeholders, and the placeholders' data attributes."""
    found = {}
    for name in pages(root):
        soup = BeautifulSoup((root / name).read_text(), "html.parser")
        divs = soup.select("div.cnnbook-calc")
        if divs:
            found[name] = [{k[5:]: v for k, v in d.attrs.items() if k.startswith("data-")} for d in divs]
    return found


# --------------------------------------------------------------------------- Python reference
def memory_parts(layers, batch_size=32, optimizer="adam", dtype="float32"):
    mem = calc.training_memory(layers, batch_size=batch_size, optimizer=optimizer, dtype=dtype)
    return {k: str(int(v)) for k, v in mem.items()}


def python_model(layers, dtype="float32", batch_size=32, optimizer="adam", ram=DEFAULT_RAM):
    """What the model widget should show, as strings (the widget's data-value attributes)."""
    summary = calc.analyze(layers, dtype)
    rows = [{"output": r["output"],
             **{c: str(int(r[c])) for c in ("params", "activations", "macs", "rf", "jump")}}
            for r in summary.table.to_dict("records")]
    totals = {k: str(v) for k, v in summary.totals.items()}
    memory = memory_parts(layers, batch_size, optimizer, dtype)
    memory["total"] = str(sum(int(v) for v in memory.values()))
    largest = str(calc.largest_batch(layers, ram, optimizer=optimizer, dtype=dtype))
    return {"rows": rows, "totals": totals, "memory": memory, "largest": largest}


READ_MODEL = """root => {
  const v = (n) => n.dataset.value;
  const rows = [...root.querySelectorAll('.cnnbook-calc__perlayer tbody tr')].map((tr) => ({
    output: v(tr.querySelector('[data-col="output"]')),
    params: v(tr.querySelector('[data-col="params"]')),
    activations: v(tr.querySelector('[data-col="activations"]')),
    macs: v(tr.querySelector('[data-col="macs"]')),
    rf: v(tr.querySelector('[data-col="rf"]')),
    jump: v(tr.querySelector('[data-col="jump"]')),
  }));
  const totals = {};
  root.querySelectorAll('.cnnbook-calc__summary [data-total]').forEach((n) => { totals[n.dataset.total] = v(n); });
  root.querySelectorAll('.cnnbook-calc__perlayer tfoot [data-total]').forEach((n) => {
    if (totals[n.dataset.total] !== v(n)) totals[n.dataset.total] = 'mismatch: ' + v(n);
  });
  totals.output = root.querySelector('.cnnbook-calc__total-output').textContent;
  const memory = {};
  root.querySelectorAll('[data-memory]').forEach((n) => { memory[n.dataset.memory] = v(n); });
  return { rows, totals, memory, largest: v(root.querySelector('[data-largest-batch]')) };
}"""


def read_model(widget) -> dict:
    return widget.evaluate(READ_MODEL)


def expected_shown(layers, **kwargs) -> dict:
    want = python_model(layers, **kwargs)
    want["totals"] = {k: want["totals"][k] for k in
                      ("params", "weights", "biases", "non_trainable", "activations",
                       "activation_bytes", "macs", "flops", "param_bytes", "output")}
    return want


def python_estimate(layers, machine, **kwargs) -> dict:
    est = calc.estimate_training(layers, machine, **kwargs)
    return {k: (str(v) if isinstance(v, int) else v) for k, v in est.items() if k != "machine"}


READ_TIME = """root => {
  const out = {};
  root.querySelectorAll('[data-result]').forEach((n) => { out[n.dataset.result] = n.dataset.value; });
  return out;
}"""


def read_time(widget) -> dict:
    shown = widget.evaluate(READ_TIME)
    shown.pop("headline", None)  # the big number above the table (the no-JavaScript table has none)
    floats = ("peak_flops", "sustained_flops", "compute_seconds", "memory_seconds", "seconds")
    return {k: (float(v) if k in floats else v) for k, v in shown.items()}


def model_widget(page, preset: str):
    return page.locator(f'div.cnnbook-calc[data-widget="model"][data-preset="{preset}"]').first


def no_bad_numbers(widget):
    text = widget.inner_text()
    for bad in ("NaN", "Infinity", "undefined", "null"):
        assert bad not in text, f"{bad!r} shown in the widget"


# ----------------------------------------------------------------------------- the whole site
def test_every_page_loads_cleanly_and_offline(site, visit):
    root, _ = site
    names = pages(root)
    assert "conv_only.html" in names and "max_pooling.html" in names
    for name in names:
        v = visit(name)
        assert v.problems == [], f"{name}: {v.problems}"
        v.close()


def test_math_is_drawn_by_the_browser_from_mathml(site, visit):
    """The formulas are MathML in the page (cnnbook_pages): no script typesets them, and Chromium
    draws them: the floor brackets and the fraction of the output-size formula, a subscript."""
    root, _ = site
    soup = BeautifulSoup((root / "alexnet.html").read_text(), "html.parser")
    blocks = soup.select("div.math > math[display=block]")
    assert len(blocks) == 3
    assert blocks[0].find("mfrac") and [o.text for o in blocks[0].select("mo[fence]")] == ["⌊", "⌋"]
    assert soup.select_one("span.math > math msub mtext").text in {"out", "in"}
    v = visit("alexnet.html")
    sizes = v.page.eval_on_selector_all(
        "div.math > math, span.math > math",
        "els => els.map(e => [e.getBoundingClientRect().width, e.getBoundingClientRect().height])")
    assert len(sizes) == len(soup.select("div.math > math, span.math > math"))
    assert all(w > 5 and h > 5 for w, h in sizes), sizes  # drawn, not left as empty elements
    # display formulas are centred on their line (the theme's flex row expects MathJax; math.css)
    row = v.page.locator("div.math").first.bounding_box()
    formula = v.page.locator("div.math > math > mrow").first.bounding_box()
    assert abs((formula["x"] + formula["width"] / 2) - (row["x"] + row["width"] / 2)) < 10, (row, formula)
    fraction = v.page.locator("div.math mfrac").first.bounding_box()
    assert fraction["height"] > v.page.locator("div.math mi").first.bounding_box()["height"] * 1.5
    assert v.problems == []


def test_theme_mode_is_valid(visit):
    v = visit("intro.html")
    mode = v.page.evaluate("document.documentElement.dataset.mode")
    assert mode == "auto" and v.problems == []


# ---------------------------------------------------------------------------- widgets render
def test_widgets_render_on_their_pages_with_screenshots(site, visit, artifacts):
    root, _ = site
    found = widget_pages(root)
    assert found == {
        "alexnet.html": [{"widget": "model", "preset": "alexnet"}],
        "i3_time.html": [{"widget": "time", "preset": "alexnet", "machine": "i3-540"}],
        "conv_only.html": [{"widget": "model", "preset": "conv"}],
        "max_pooling.html": [{"widget": "model", "preset": "pool"}],
    }
    for name, widgets in found.items():
        for width, scheme in ((DESKTOP, "light"), (PHONE, "light"), (DESKTOP, "dark"), (PHONE, "dark")):
            v = visit(name, width=width, scheme=scheme)
            page = v.page
            assert page.evaluate("document.documentElement.dataset.theme") == scheme
            divs = page.locator("div.cnnbook-calc")
            assert divs.count() == len(widgets)
            for i, attrs in enumerate(widgets):
                div = divs.nth(i)
                assert div.get_attribute("data-state") == "ok", f"{name} widget {i}"
                assert div.locator("input").count() > 0
                assert div.locator(".cnnbook-calc__fallback").count() == 0  # the form replaced it
                no_bad_numbers(div)
                if attrs["widget"] == "model":
                    pressed = div.locator('button[aria-pressed="true"]')
                    assert pressed.get_attribute("data-preset") == attrs["preset"]
                else:
                    assert div.locator('select[data-field="model"]').input_value() == attrs["preset"]
                    assert div.locator('select[data-field="machine"]').input_value() == attrs["machine"]
                # readable on a phone: nothing sticks out of the page sideways
                box = div.bounding_box()
                assert box["x"] >= 0 and box["x"] + box["width"] <= width + 1, f"{name} at {width}px"
            assert page.evaluate("document.documentElement.scrollWidth") <= width + 1
            for i in range(len(widgets)):
                box = divs.nth(i).bounding_box()
                page.screenshot(path=str(artifacts / f"{name[:-5]}-{i}-{width}px-{scheme}.png"),
                                full_page=True, clip={"x": 0, "y": max(0, box["y"] - 8),
                                                      "width": width, "height": box["height"] + 16})
            assert v.problems == [], f"{name}: {v.problems}"
            v.close()


def test_text_is_readable_in_light_and_dark_modes(visit):
    def luminance(rgb):
        def channel(c):
            c = c / 255
            return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4
        r, g, b = (channel(x) for x in rgb)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    def rgb(css):
        return [int(x) for x in re.findall(r"\d+", css)[:3]]

    for scheme in ("light", "dark"):
        v = visit("conv_only.html", scheme=scheme)
        widget = model_widget(v.page, "conv")
        background = widget.locator(".cnnbook-calc__box").evaluate("e => getComputedStyle(e).backgroundColor")
        for selector in (".cnnbook-calc__status", ".cnnbook-calc__title", "input", "tbody th"):
            color = widget.locator(selector).first.evaluate("e => getComputedStyle(e).color")
            if selector == "input":
                bg = widget.locator("input").first.evaluate("e => getComputedStyle(e).backgroundColor")
            else:
                bg = background
            hi, lo = sorted((luminance(rgb(color)), luminance(rgb(bg))), reverse=True)
            assert (hi + 0.05) / (lo + 0.05) >= 4.5, f"{scheme}: {selector} {color} on {bg}"


# ------------------------------------------------------------------------- Python's numbers
@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_gives_the_python_numbers(visit, preset):
    v = visit("conv_only.html")
    widget = model_widget(v.page, "conv")
    widget.locator(f'button[data-preset="{preset}"]').click()
    assert widget.locator(f'button[data-preset="{preset}"]').get_attribute("aria-pressed") == "true"
    assert read_model(widget) == expected_shown(PRESETS[preset])
    status = widget.locator(".cnnbook-calc__status").inner_text()
    assert f"{calc.analyze(PRESETS[preset]).totals['params']:,} parameters" in status
    no_bad_numbers(widget)
    assert v.problems == []


def test_exported_presets_are_the_python_presets(visit):
    v = visit("conv_only.html")
    data = v.page.evaluate("window.CNNBOOK_CALC")
    assert {k: p["layers"] for k, p in data["presets"].items()} == json.loads(json.dumps(PRESETS))
    assert {k: p["title"] for k, p in data["presets"].items()} == calc.PRESET_TITLES
    assert data["dtype_bytes"] == calc.DTYPE_BYTES and data["optimizer_slots"] == calc.OPTIMIZER_SLOTS
    for key, machine in calc.MACHINES.items():
        assert data["machines"][key]["peak_flops"] == machine.peak_flops
        assert data["machines"][key]["name"] == machine.name
    assert data["machines"]["build"]["cores"] == calc.build_machine().cores
    method1 = report.ASSIGNMENT_ALEXNET["method1"]
    assert data["assignment"]["seconds"] == method1["seconds"]
    assert data["assignment"]["seconds_all_cores"] == list(method1["seconds_all_cores"])


def time_widget(v):
    return v.page.locator('div.cnnbook-calc[data-widget="time"]').first


@pytest.fixture
def time_page(visit):
    return visit("i3_time.html")


def test_time_widget_gives_the_python_estimates(time_page):
    widget = time_widget(time_page)
    method1 = report.ASSIGNMENT_ALEXNET["method1"]
    assert widget.locator('[data-assignment="seconds"]').inner_text() == f"about {method1['seconds']} s"
    low, high = method1["seconds_all_cores"]
    assert widget.locator('[data-assignment="all-cores"]').inner_text() == f"{low}\u2013{high} s on all cores"
    machines = {**calc.MACHINES, "build": None}
    data = time_page.page.evaluate("window.CNNBOOK_CALC.machines.build")
    machines["build"] = calc.Machine(data["name"], data["cores"], data["clock_ghz"],
                                     data["flops_per_cycle"], data["bandwidth_gbs"], data["source"])
    for preset, layers in PRESETS.items():
        widget.locator('select[data-field="model"]').select_option(preset)
        for key, machine in machines.items():
            widget.locator('select[data-field="machine"]').select_option(key)
            want = python_estimate(layers, machine, images=method1["images"], epochs=method1["epochs"],
                                   efficiency=0.5, batch_size=32)
            assert read_time(widget) == want, (preset, key)
    # edited fields: a 2.5 GHz i3 as in the assignment, one core, SGD, float16, 20 epochs
    widget.locator('select[data-field="model"]').select_option("alexnet")
    widget.locator('select[data-field="machine"]').select_option("i3-540")
    for field, value in (("clock_ghz", "2.5"), ("cores", "1"), ("efficiency", "0.25"),
                         ("epochs", "20"), ("batch_size", "7"), ("images", "12345")):
        widget.locator(f'input[data-field="{field}"]').fill(value)
    widget.locator('select[data-field="optimizer"]').select_option("sgd")
    widget.locator('select[data-field="dtype"]').select_option("float16")
    edited = calc.Machine("i3", 1, 2.5, 8, 21.3, "")
    want = python_estimate(PRESETS["alexnet"], edited, images=12345, epochs=20, efficiency=0.25,
                           batch_size=7, optimizer="sgd", dtype="float16")
    assert read_time(widget) == want
    no_bad_numbers(widget)
    assert time_page.problems == []


# ------------------------------------------------------------------------------ editing
def fill_layer(widget, index, field, value):
    widget.locator(f'.cnnbook-calc__layers tr[data-layer-index="{index}"] [data-field="{field}"]').fill(value)


def test_editing_fields_updates_everything(visit):
    v = visit("conv_only.html")
    widget = model_widget(v.page, "conv")
    layers = [dict(layer) for layer in PRESETS["conv"]]
    before = read_model(widget)
    fill_layer(widget, 1, "filters", "16")  # conv1: 8 -> 16 filters
    layers[1]["filters"] = 16
    after = read_model(widget)
    assert after != before and after == expected_shown(layers)
    # settings: input size, dtype, batch size, optimizer, memory
    widget.locator('[data-field="shape-0"]').fill("40")
    widget.locator('select[data-field="dtype"]').select_option("bfloat16")
    widget.locator('[data-field="batch_size"]').fill("100")
    widget.locator('select[data-field="optimizer"]').select_option("momentum")
    widget.locator('[data-field="ram_gib"]').fill("0.5")
    layers[0]["shape"] = [40, 32, 3]
    assert read_model(widget) == expected_shown(layers, dtype="bfloat16", batch_size=100,
                                                optimizer="momentum", ram=2**29)
    # change a layer's type, insert one with the keyboard, remove one
    widget.locator('.cnnbook-calc__layers tr[data-layer-index="2"] select[data-field="type"]').select_option("maxpool")
    layers[2] = {"type": "maxpool", "pool": 2, "stride": 2, "padding": "valid"}  # named by position
    assert read_model(widget) == expected_shown(layers, dtype="bfloat16", batch_size=100,
                                                optimizer="momentum", ram=2**29)
    insert = widget.locator('.cnnbook-calc__layers tr[data-layer-index="1"] [data-action="insert"]')
    insert.focus()
    v.page.keyboard.press("Enter")  # a conv layer after layer 1; focus moves to its type
    assert v.page.evaluate("document.activeElement.dataset.field") == "type"
    layers.insert(2, {"type": "conv", "filters": 32, "kernel": 3, "stride": 1, "padding": "same", "groups": 1})
    widget.locator('.cnnbook-calc__layers tr[data-layer-index="4"] [data-action="remove"]').click()
    del layers[4]
    want = expected_shown(layers, dtype="bfloat16", batch_size=100, optimizer="momentum", ram=2**29)
    assert read_model(widget) == want
    names = widget.locator(".cnnbook-calc__perlayer tbody th").all_inner_texts()
    assert names == [f"{i} {r['layer']}" for i, r in enumerate(calc.analyze(layers).table.to_dict("records"))]
    assert v.problems == []


def test_keyboard_alone_drives_the_widget(visit):
    v = visit("conv_only.html")
    page = v.page
    widget = model_widget(page, "conv")
    widget.locator('button[data-preset="alexnet"]').focus()
    page.keyboard.press("Enter")
    assert read_model(widget)["totals"]["params"] == str(calc.analyze(PRESETS["alexnet"]).totals["params"])
    page.keyboard.press("Tab")  # the next preset button
    page.keyboard.press("Space")
    assert widget.locator('button[aria-pressed="true"]').get_attribute("data-preset") == "alexnet_grouped"
    # Tab reaches the layer table; typing into a field updates the totals
    for _ in range(60):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.dataset.field") == "filters":
            break
    assert page.evaluate("document.activeElement.getAttribute('aria-label')") == "layer 1 (conv1) filters"
    page.keyboard.press("Control+A")
    page.keyboard.type("48")
    layers = [dict(layer) for layer in PRESETS["alexnet_grouped"]]
    layers[1]["filters"] = 48
    assert read_model(widget) == expected_shown(layers)


def test_every_control_has_a_label(site, visit):
    for name in widget_pages(site[0]):
        v = visit(name)
        unlabelled = v.page.evaluate("""() => [...document.querySelectorAll(
              '.cnnbook-calc input, .cnnbook-calc select, .cnnbook-calc button')]
            .filter((e) => !((e.labels && e.labels.length) || e.getAttribute('aria-label') || e.textContent.trim()))
            .map((e) => e.outerHTML)""")
        assert unlabelled == [], name


# ---------------------------------------------------------------------- random architectures
def random_architecture(rng: random.Random, *, dom: bool = False) -> list[dict]:
    """A valid small model, as tests/test_calc.py's hypothesis strategy draws them (seeded here).
    ``dom``: only what the widget's fields can express (biases on, default names)."""
    h, w, c = rng.randint(4, 24), rng.randint(4, 24), rng.randint(1, 6)
    layers = [{"type": "input", "name": "input", "shape": [h, w, c]}]
    for i in range(rng.randint(1, 4)):
        kind = rng.choice(["conv", "conv", "maxpool", "lrn", "batchnorm", "dropout"])
        name = {} if dom else {"name": f"l{i}"}
        if kind == "lrn":
            layers.append({"type": "lrn", **name, "size": rng.choice([3, 5])})
        elif kind in ("batchnorm", "dropout"):  # the widget has no field for a dropout's rate
            rate = {"rate": rng.choice([0, 0.2, 0.5])} if kind == "dropout" and not dom else {}
            layers.append({"type": kind, **name, **rate})
        else:
            padding = rng.choice(["valid", "same", 0, 1, 2])
            room = min(h, w) + (2 * padding if isinstance(padding, int) else 0)
            k = rng.randint(1, 7 if padding == "same" else min(room, 7))
            s = rng.randint(1, 3)
            if kind == "conv":
                g = rng.choice([d for d in range(1, c + 1) if c % d == 0])
                layers.append({"type": "conv", **name, "filters": g * rng.randint(1, 4), "kernel": k,
                               "stride": s, "padding": padding, "groups": g,
                               "bias": True if dom else rng.random() < 0.5})
            else:
                layers.append({"type": "maxpool", **name, "pool": k, "stride": s, "padding": padding})
        h, w, c = calc.analyze(layers).table["shape"].iloc[-1]
    head = rng.choice(["none", "flatten", "gap", "gap keepdims"])
    if head != "none":
        if head == "flatten":
            layers.append({"type": "flatten", **({} if dom else {"name": "flat"})})
        elif dom:  # the widget's global average pooling gives C values (keepdims off)
            layers.append({"type": "gap"})
        else:
            layers.append({"type": "gap", "name": "gap", "keepdims": head == "gap keepdims"})
            if head == "gap keepdims":
                layers.append({"type": "flatten", "name": "flat"})
        for j in range(rng.randint(1, 2)):
            if rng.random() < 0.5:
                layers.append({"type": rng.choice(["batchnorm", "dropout"]),
                               **({} if dom else {"name": f"x{j}"})})
            layers.append({"type": "dense", **({} if dom else {"name": f"fc{j}"}),
                           "units": rng.randint(1, 16), "bias": True if dom else rng.random() < 0.5})
    return layers


def python_everything(case: dict) -> dict:
    layers, dtype = case["layers"], case["dtype"]
    summary = calc.analyze(layers, dtype)
    numbers = ("weights", "biases", "non_trainable", "params", "activations", "macs", "flops",
               "activation_bytes", "param_bytes", "rf", "jump")
    table = [{**row, "shape": [int(d) for d in row["shape"]], **{k: str(int(row[k])) for k in numbers}}
             for row in summary.table.to_dict("records")]
    m = case["machine"]
    machine = calc.Machine("random", m["cores"], m["clock_ghz"], m["flops_per_cycle"],
                           m["bandwidth_gbs"], "")
    return {
        "table": table,
        "totals": {k: str(v) for k, v in summary.totals.items()},
        "memory": memory_parts(layers, case["batch_size"], case["optimizer"], dtype),
        "largest": str(calc.largest_batch(layers, case["ram"], optimizer=case["optimizer"], dtype=dtype)),
        "estimate": python_estimate(layers, machine, images=case["images"], epochs=case["epochs"],
                                    efficiency=case["efficiency"], batch_size=case["batch_size"],
                                    optimizer=case["optimizer"], dtype=dtype),
    }


BROWSER_EVERYTHING = """cases => cases.map((c) => {
  const C = window.CnnbookCalc;
  const s = C.analyze(c.layers, c.dtype);
  const table = s.table.map((r) => ({ ...C.plain(r), shape: r.shape.map(Number) }));
  const est = C.plain(C.estimateTraining(c.layers, c.machine, { images: c.images, epochs: c.epochs,
    efficiency: c.efficiency, batchSize: c.batch_size, optimizer: c.optimizer, dtype: c.dtype }));
  delete est.machine;
  return {
    table, totals: C.plain(s.totals),
    memory: C.plain(C.trainingMemory(c.layers, { batchSize: c.batch_size, optimizer: c.optimizer, dtype: c.dtype })),
    largest: C.largestBatch(c.layers, BigInt(c.ram), { optimizer: c.optimizer, dtype: c.dtype }).toString(),
    estimate: est,
  };
})"""


def random_case(rng: random.Random) -> dict:
    return {
        "layers": random_architecture(rng),
        "dtype": rng.choice(sorted(calc.DTYPE_BYTES)),
        "optimizer": rng.choice(sorted(calc.OPTIMIZER_SLOTS)),
        "batch_size": rng.randint(1, 512),
        "ram": rng.randint(1, 2**34),
        "images": rng.randint(1, 100_000),
        "epochs": rng.randint(1, 100),
        "efficiency": rng.choice([0.5, 1.0, rng.uniform(0.01, 1.0)]),
        "machine": {"cores": rng.randint(1, 64), "clock_ghz": round(rng.uniform(0.5, 5.0), 2),
                    "flops_per_cycle": rng.choice([8, 16, 32, 64, 128]),
                    "bandwidth_gbs": rng.choice([0.0, 21.3, round(rng.uniform(1, 900), 1)])},
    }


def test_random_architectures_agree_with_python(visit):
    rng = random.Random(20260405)
    cases = [random_case(rng) for _ in range(200)]
    v = visit("conv_only.html")
    shown = v.page.evaluate(BROWSER_EVERYTHING, cases)
    for case, got in zip(cases, shown):
        assert got == python_everything(case), json.dumps(case)
    assert v.problems == []


def enter_architecture(widget, layers):
    """Types a model into the widget: input shape, then one row per layer, as a reader would."""
    for i, d in enumerate(layers[0]["shape"]):
        widget.locator(f'[data-field="shape-{i}"]').fill(str(d))
    remove = widget.locator('.cnnbook-calc__layers [data-action="remove"]')
    while remove.count():
        remove.first.click()
    for index, spec in enumerate(layers[1:], start=1):
        widget.locator('[data-action="append"]').click()
        row = widget.locator(f'.cnnbook-calc__layers tr[data-layer-index="{index}"]')
        row.locator('select[data-field="type"]').select_option(spec["type"])
        for field in ("filters", "units", "kernel", "pool", "size", "stride", "padding", "groups"):
            if field in spec:
                row.locator(f'[data-field="{field}"]').fill(str(spec[field]))


def test_random_architectures_typed_into_the_page_agree_with_python(visit):
    rng = random.Random(7)
    v = visit("max_pooling.html")
    widget = model_widget(v.page, "pool")
    for _ in range(6):
        layers = random_architecture(rng, dom=True)
        enter_architecture(widget, layers)
        assert widget.get_attribute("data-state") == "ok", widget.locator(".cnnbook-calc__msg").all_inner_texts()
        assert read_model(widget) == expected_shown(layers), json.dumps(layers)
    assert v.problems == []


# ------------------------------------------------------------------------------- bad input
def python_message(layers) -> str:
    with pytest.raises(ValueError) as caught:
        calc.analyze(layers)
    return str(caught.value)


def conv_with(**fields):
    layers = [dict(layer) for layer in PRESETS["conv"]]
    layers[1] = {**layers[1], **fields}
    return layers


def message_for(widget, locator) -> str:
    """The message tied to a field by aria-describedby (checks aria-invalid too)."""
    field = widget.locator(locator)
    assert field.get_attribute("aria-invalid") == "true", locator
    ids = field.get_attribute("aria-describedby").split()
    return " ".join(widget.locator(f"#{i}").inner_text() for i in ids).strip()


CONV1 = '.cnnbook-calc__layers tr[data-layer-index="1"] [data-field="{}"]'
# (what is wrong, field, typed text, the message: a string, or the layers Python rejects)
MODEL_CASES = [
    ("negative", CONV1.format("filters"), "-8", conv_with(filters=-8)),
    ("zero", CONV1.format("filters"), "0", conv_with(filters=0)),
    ("zero input size", '[data-field="shape-1"]', "0",
     [{**PRESETS["conv"][0], "shape": [32, 0, 3]}] + PRESETS["conv"][1:]),
    ("empty", CONV1.format("kernel"), "", "layer 1 (conv1): kernel is empty; enter a whole number."),
    ("non-numeric", CONV1.format("filters"), "eight",
     "layer 1 (conv1): filters must be a whole number, got eight."),
    ("not whole", CONV1.format("kernel"), "3.5", "layer 1 (conv1): kernel must be a whole number, got 3.5."),
    ("kernel larger than the input", CONV1.format("kernel"), "33", conv_with(kernel=33)),
    ("kernel larger than the padded input", CONV1.format("kernel"), "35",
     conv_with(kernel=35, padding=1)),  # with padding 1, typed first
    ("stride 0", CONV1.format("stride"), "0", conv_with(stride=0)),
    ("negative padding", CONV1.format("padding"), "-1", conv_with(padding=-1)),
    ("unknown padding", CONV1.format("padding"), "full", conv_with(padding="full")),
    ("groups that do not divide the channels", CONV1.format("groups"), "2", conv_with(groups=2)),
    ("absurd size", '[data-field="shape-0"]', "99999999999999999999",
     "layer 0 (input): shape is absurdly large: at most 2,147,483,647, got 99,999,999,999,999,999,999."),
    ("absurd filters", CONV1.format("filters"), "4294967296",
     "layer 1 (conv1): filters is absurdly large: at most 2,147,483,647, got 4,294,967,296."),
    ("empty batch", '[data-field="batch_size"]', "", "batch_size is empty; enter a whole number."),
    ("zero batch", '[data-field="batch_size"]', "0", "batch_size must be positive, got 0."),
    ("zero memory", '[data-field="ram_gib"]', "0",
     "memory (GiB) must be above 0 and at most 1,000,000, got 0."),
]


@pytest.mark.parametrize("what, locator, text, expected", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
def test_bad_model_input_shows_its_message(visit, what, locator, text, expected):
    v = visit("conv_only.html")
    widget = model_widget(v.page, "conv")
    touched = [CONV1.format("padding"), locator] if "padded" in what else [locator]
    original = {loc: widget.locator(loc).input_value() for loc in touched}
    if "padded" in what:
        widget.locator(CONV1.format("padding")).fill("1")
    widget.locator(locator).fill(text)
    message = expected if isinstance(expected, str) else python_message(expected)
    assert message_for(widget, locator) == message
    settings_only = locator.startswith('[data-field="batch_size"]') or "ram_gib" in locator
    if not settings_only:
        assert widget.get_attribute("data-state") == "error"
        assert widget.locator('.cnnbook-calc__summary [data-total="params"]').inner_text() == DASH
        assert "Fix the marked field" in widget.locator(".cnnbook-calc__status").inner_text()
    no_bad_numbers(widget)
    # put it right: the message goes and the numbers come back
    for loc, value in original.items():
        widget.locator(loc).fill(value)
    assert widget.get_attribute("data-state") == "ok"
    assert widget.locator(".cnnbook-calc__msg:visible").count() == 0
    assert read_model(widget) == expected_shown(PRESETS["conv"])
    assert v.problems == []


def test_layer_order_errors_show_at_the_type(visit):
    v = visit("conv_only.html")
    widget = model_widget(v.page, "conv")
    row = '.cnnbook-calc__layers tr[data-layer-index="{}"] select[data-field="type"]'
    widget.locator(row.format(8)).select_option("lrn")  # flatten -> LRN: the dense layer gets 14x14x64
    layers = [dict(layer) for layer in PRESETS["conv"]]
    layers[8] = {"type": "lrn", "name": "lrn8", "size": 5}
    assert message_for(widget, row.format(9)) == python_message(layers)
    widget.locator(row.format(8)).select_option("flatten")
    widget.locator(row.format(1)).select_option("flatten")  # then conv2 gets a flat input
    layers = [dict(layer) for layer in PRESETS["conv"]]
    layers[1] = {"type": "flatten", "name": "flatten1"}
    assert message_for(widget, row.format(2)) == python_message(layers)
    no_bad_numbers(widget)
    assert v.problems == []


def test_huge_but_valid_sizes_are_exact(visit):
    v = visit("conv_only.html")
    widget = model_widget(v.page, "conv")
    for i, d in enumerate(("2000000000", "2000000000", "3")):
        widget.locator(f'[data-field="shape-{i}"]').fill(d)
    widget.locator(CONV1.format("filters")).fill("2000000000")
    widget.locator(CONV1.format("padding")).fill("same")
    for index in range(2, 8):  # keep conv1, then the head
        widget.locator('.cnnbook-calc__layers tr[data-layer-index="2"] [data-action="remove"]').click()
    layers = [{**PRESETS["conv"][0], "shape": [2_000_000_000, 2_000_000_000, 3]},
              {**PRESETS["conv"][1], "filters": 2_000_000_000, "padding": "same"}] + PRESETS["conv"][8:]
    assert widget.get_attribute("data-state") == "ok"
    assert read_model(widget) == expected_shown(layers)  # Python's ints are exact too
    no_bad_numbers(widget)
    assert v.problems == []


TIME_CASES = [
    ("efficiency above 1", "efficiency", "1.5", "efficiency must be a number from 0.001 to 1, got 1.5."),
    ("tiny efficiency", "efficiency", "1e-320",
     "efficiency must be a number from 0.001 to 1, got 1e-320."),
    ("zero epochs", "epochs", "0", "epochs must be positive, got 0."),
    ("negative images", "images", "-5", "images must be positive, got -5."),
    ("empty clock", "clock_ghz", "", "clock_ghz is empty; enter a number."),
    ("non-numeric cores", "cores", "two", "cores must be a whole number, got two."),
    ("zero clock", "clock_ghz", "0", "clock_ghz must be a number from 0.001 to 1,000,000, got 0.0."),
    ("tiny clock", "clock_ghz", "1e-320",
     "clock_ghz must be a number from 0.001 to 1,000,000, got 1e-320."),
    ("tiny bandwidth", "bandwidth_gbs", "1e-320",
     "bandwidth_gbs must be a number from 0.001 to 1,000,000, got 1e-320."),
    ("absurd clock", "clock_ghz", "1e300",
     "clock_ghz must be a number from 0.001 to 1,000,000, got 1e+300."),
    ("absurd images", "images", "99999999999",
     "images is absurdly large: at most 2,147,483,647, got 99,999,999,999."),
    ("zero batch", "batch_size", "0", "batch_size must be positive, got 0."),
]


@pytest.mark.parametrize("what, field, text, message", TIME_CASES, ids=[c[0] for c in TIME_CASES])
def test_bad_time_input_shows_its_message(time_page, what, field, text, message):
    widget = time_widget(time_page)
    widget.locator(f'input[data-field="{field}"]').fill(text)
    assert message_for(widget, f'input[data-field="{field}"]') == message
    if field in ("efficiency", "epochs"):  # the same check in Python, word for word
        with pytest.raises(ValueError, match=re.escape(message)):
            calc.estimate_training(PRESETS["alexnet"], calc.MACHINES["i3-540"], images=10,
                                   epochs=int(text) if field == "epochs" else 1,
                                   efficiency=float(text) if field == "efficiency" else 0.5)
    if field in ("clock_ghz", "bandwidth_gbs") and text:  # Python's Machine, word for word
        numbers = {"cores": 2, "clock_ghz": 3.06, "flops_per_cycle": 8, "bandwidth_gbs": 21.3}
        with pytest.raises(ValueError, match=re.escape(message)):
            calc.Machine("edited", **{**numbers, field: float(text)}, source="")
    assert widget.get_attribute("data-state") == "error"
    assert widget.locator('[data-result="seconds"]').inner_text() == DASH
    no_bad_numbers(widget)
    widget.locator('select[data-field="machine"]').select_option("i3-550")  # reloads the machine
    if field in ("clock_ghz", "bandwidth_gbs", "cores"):
        assert widget.get_attribute("data-state") == "ok"
    assert time_page.problems == []


def to_page(value):
    """A Python value as page.evaluate carries it: NaN, infinities and ints past 2**53 tagged."""
    if isinstance(value, float) and not math.isfinite(value):
        return {"$": repr(value)}
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 2**53:
        return {"$": "int", "digits": str(value)}
    if isinstance(value, (list, tuple)):
        return [to_page(v) for v in value]
    if isinstance(value, dict):
        return {k: to_page(v) for k, v in value.items()}
    return value


BROWSER_REFUSALS = """cases => cases.map(([fn, args, kwargs]) => {
  const C = window.CnnbookCalc;
  const back = (v) => {
    if (Array.isArray(v)) return v.map(back);
    if (v && typeof v === "object") {
      if (v.$ === "int") return BigInt(v.digits);
      if (v.$ !== undefined) return { nan: NaN, inf: Infinity, "-inf": -Infinity }[v.$];
      return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, back(x)]));
    }
    return v;
  };
  const a = back(args), kw = back(kwargs);  // Python's keywords, and as calc-core names them:
  const camel = Object.fromEntries(Object.entries(kw).map(
    ([k, v]) => [k.replace(/_([a-z])/g, (_, c) => c.toUpperCase()), v]));  // batchSize, ...
  try {
    if (fn === "Machine") C.checkMachine({ name: "m", ...kw });
    else if (fn === "estimate_training") C.estimateTraining(a[0], { name: "m", ...a[1] }, camel);
    else if (fn === "estimate_epoch_seconds") C.estimateEpochSeconds(a[0], a[1], a[2], camel);
    else if (fn === "training_memory") C.trainingMemory(a[0], camel);
    else if (fn === "largest_batch") C.largestBatch(a[0], a[1], camel);
    else if (fn === "analyze") C.analyze(a[0], ...(camel.dtype !== undefined ? [camel.dtype] : []));
    else return `no such function ${fn}`;
    return null;
  } catch (e) {
    return e instanceof C.CalcError ? e.message : `not a CalcError: ${e}`;
  }
})"""


def test_bad_inputs_are_refused_as_python_refuses_them(visit):
    """tests/test_calc.py's REFUSED, in one call: the same inputs refused, the same messages."""
    v = visit("conv_only.html")
    limits = v.page.evaluate("window.CnnbookCalc.limits")
    assert limits == {"max_field": calc.MAX_FIELD, "min_rate": calc.MIN_RATE,
                      "max_rate": calc.MAX_RATE, "min_efficiency": calc.MIN_EFFICIENCY,
                      "max_efficiency": calc.MAX_EFFICIENCY,
                      "min_flops_per_second": calc.MIN_FLOPS_PER_SECOND,
                      "max_flops_per_second": calc.MAX_FLOPS_PER_SECOND,
                      "max_ram_gib": calc.MAX_RAM_GIB, "max_ram_bytes": calc.MAX_RAM_BYTES}
    assert v.page.evaluate("String(window.CnnbookCalc.MAX_FIELD)") == str(calc.MAX_FIELD)
    shown = v.page.evaluate(BROWSER_REFUSALS, [to_page(list(case[1:4])) for case in REFUSED])
    python = {case[0]: refusal(*case[1:4]) for case in REFUSED}
    assert dict(zip(python, shown)) == python
    assert python == {case[0]: case[4] for case in REFUSED}
    assert v.problems == []


# --------------------------------------------------------------------------- accessibility
AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"  # axe-core 4.14.1, MPL-2.0
AXE_RUN = """() => axe.run(document, { resultTypes: ["violations"] }).then((r) => r.violations
  .filter((v) => v.impact === "serious" || v.impact === "critical")
  .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                 nodes: v.nodes.map((n) => `${n.target.join(" ")}: ${n.failureSummary}`) })))"""


SETTLED = """() => Promise.all(document.getAnimations()
  .filter((a) => a instanceof CSSTransition).map((a) => a.finished.catch(() => null)))"""


def test_every_page_passes_axe_in_light_and_dark_mode(site, visit):
    """axe-core's checks (WCAG 2 A/AA and best practices) on every page, the theme included:
    no serious or critical violation, in either colour mode."""
    root, _ = site
    script = AXE.read_text(encoding="utf-8")
    found = {}
    for name in pages(root):
        v = visit(name, scheme="light")
        v.page.add_script_tag(content=script)
        for scheme in ("light", "dark"):
            # the theme follows the reader's system setting (its "auto" mode): switch that, and
            # the theme's own script switches the page
            v.page.emulate_media(color_scheme=scheme)
            v.page.wait_for_function(f"document.documentElement.dataset.theme === '{scheme}'")
            v.page.evaluate(SETTLED)  # colours that fade from one mode to the other have arrived
            violations = v.page.evaluate(AXE_RUN)
            if violations:
                found[f"{name} ({scheme})"] = violations
        assert v.problems == [], f"{name}: {v.problems}"
        v.close()
    report_lines = [f"{page}: {x['impact']} {x['id']} ({x['help']}): {len(x['nodes'])} nodes, "
                    f"e.g. {x['nodes'][0]}" for page, found_here in found.items() for x in found_here]
    assert not found, "\n".join(report_lines)


def python_fallback_model(layers) -> dict:
    """The model widget's preset as the no-JavaScript tables carry it (data-value strings)."""
    want = python_model(layers)
    memory = {**want["memory"], "largest": want["largest"]}
    return {"rows": want["rows"], "totals": want["totals"], "memory": memory}


READ_FALLBACK_MODEL = """root => {
  const v = (n) => n.dataset.value;
  const rows = [...root.querySelectorAll('.cnnbook-calc__fallback-perlayer tbody tr')].map((tr) => ({
    output: v(tr.querySelector('[data-col="output"]')),
    params: v(tr.querySelector('[data-col="params"]')),
    activations: v(tr.querySelector('[data-col="activations"]')),
    macs: v(tr.querySelector('[data-col="macs"]')),
    rf: v(tr.querySelector('[data-col="rf"]')),
    jump: v(tr.querySelector('[data-col="jump"]')),
  }));
  const totals = {};
  root.querySelectorAll('[data-total]').forEach((n) => { totals[n.dataset.total] = v(n); });
  totals.output = root.querySelector('.cnnbook-calc__fallback-perlayer tfoot [data-col="output"]').textContent;
  const memory = {};
  root.querySelectorAll('[data-memory]').forEach((n) => { memory[n.dataset.memory] = v(n); });
  return { rows, totals, memory };
}"""

# The texts both show, keyed alike: the per-layer cells, totals, memory, estimate.
SHOWN_TEXTS = """root => {
  const out = {};
  root.querySelectorAll('.cnnbook-calc__perlayer tbody tr, .cnnbook-calc__fallback-perlayer tbody tr')
    .forEach((tr) => tr.querySelectorAll('td[data-col]').forEach((td) => {
      out[`row ${tr.dataset.layerIndex} ${td.dataset.col}`] = td.textContent;
    }));
  const keyed = { total: 'total', memory: 'memory', result: 'result', assignment: 'assignment' };
  for (const [attr, prefix] of Object.entries(keyed)) {
    root.querySelectorAll(`[data-${attr}]`).forEach((n) => {
      if (n.closest('tfoot') || n.dataset[attr] === 'headline') return;
      out[`${prefix} ${n.dataset[attr]}`] = n.textContent;
    });
  }
  root.querySelectorAll('[data-largest-batch]').forEach((n) => { out['memory largest'] = n.textContent; });
  return out;
}"""


def test_calculators_show_their_preset_without_javascript(site, visit):
    """JavaScript off: each calculator place shows its preset as tables, Python's numbers; with
    JavaScript on, the widget shows the same texts for them."""
    root, _ = site
    machines = calc.MACHINES
    method1 = report.ASSIGNMENT_ALEXNET["method1"]
    for name, widgets in widget_pages(root).items():
        off = visit(name, javascript=False)
        on = visit(name)
        for i, attrs in enumerate(widgets):
            div = off.page.locator("div.cnnbook-calc").nth(i)
            fallback = div.locator(".cnnbook-calc__fallback")
            assert fallback.is_visible() and div.bounding_box()["height"] > 200, f"{name} {i}"
            layers = PRESETS[attrs["preset"]]
            assert calc.PRESET_TITLES[attrs["preset"]] in fallback.locator(".cnnbook-calc__title").inner_text()
            if attrs["widget"] == "model":
                assert div.evaluate(READ_FALLBACK_MODEL) == python_fallback_model(layers), name
                params = calc.analyze(layers).totals["params"]
                assert f"{params:,}" in fallback.locator('[data-total="params"]').inner_text()
            else:
                shown = read_time(div)
                want = python_estimate(layers, machines[attrs["machine"]], images=method1["images"],
                                       epochs=method1["epochs"], efficiency=0.5, batch_size=32)
                assert shown == want, name
                assert div.locator('[data-key="machine"]').inner_text() == machines[attrs["machine"]].name
            widget = on.page.locator("div.cnnbook-calc").nth(i)
            assert widget.get_attribute("data-state") == "ok"
            texts_off, texts_on = div.evaluate(SHOWN_TEXTS), widget.evaluate(SHOWN_TEXTS)
            assert len(texts_off) >= 10 and texts_off == texts_on, (name, i)
        assert off.problems == [] and on.problems == [], name
        off.close()
        on.close()


def test_skip_link_moves_focus_past_each_calculator(site, visit):
    root, _ = site
    for name, widgets in widget_pages(root).items():
        v = visit(name)
        page = v.page
        places = page.locator(".cnnbook-calc-place")
        assert places.count() == len(widgets)
        for i in range(len(widgets)):
            place = places.nth(i)
            skip = place.locator("a.cnnbook-calc__skip")
            # the first stop in the place, before the calculator's own controls
            assert place.evaluate("""p => p.querySelector(
                'a[href], button, input, select, [tabindex]:not([tabindex="-1"])')
                === p.querySelector('a.cnnbook-calc__skip')""")
            skip.focus()
            assert skip.is_visible()
            box = skip.bounding_box()
            assert box["width"] > 50 and box["height"] > 15  # shown while focused
            page.keyboard.press("Enter")
            focused = page.evaluate("document.activeElement.className")
            assert focused == "cnnbook-calc__after", f"{name}: focus on {focused!r}"
            page.keyboard.press("Tab")  # the next stop is after the calculator
            after = page.evaluate("""p => {
              const a = document.activeElement;
              return !p.contains(a) && Boolean(p.compareDocumentPosition(a) & Node.DOCUMENT_POSITION_FOLLOWING);
            }""", place.element_handle())
            assert after, f"{name}: Tab after the skip link lands inside or before the calculator"
        assert v.problems == [], name
        v.close()


def test_pages_without_a_calculator_load_no_calculator_files(site):
    root, _ = site
    with_widgets = widget_pages(root)
    calc_files = {"_static/calc/presets.js", "_static/calc/calc-core.js",
                  "_static/calc/calc-widget.js", "_static/calc/calc.css"}
    for name in pages(root):
        soup = BeautifulSoup((root / name).read_text(), "html.parser")
        loaded = {re.sub(r"\?.*", "", tag.get("src") or tag.get("href") or "")
                  for tag in soup.select("script[src], link[rel=stylesheet]")}
        found = {f for f in loaded if "/calc/" in f or f.startswith("_static/calc")}
        if name in with_widgets:
            assert found == calc_files, name
        else:
            assert found == set(), f"{name} loads {found}"


# ------------------------------------------------------------------------------- the explorer
# The explorer (book/_ext/cnnbook_explorer.py, book/_ext/static/explorer-app) on the chapter
# "Inside the trained networks": TensorFlow.js in the browser against Keras, with WebGL (headless
# Chromium's SwiftShader, which the `browser` fixture has) and without it (a second Chromium
# launched with --disable-webgl, which must fall back to TensorFlow.js's CPU backend).
EXPLORER_PAGE = "inside.html"
EXPLORER_FILES = {"_static/explorer-app/explorer.js", "_static/explorer-app/explorer.css"}
HEAVY = ("/vendor/tfjs/", "/_static/explorer/")  # TensorFlow.js and the models' export

# every `step`-th sample image through both models (logits), and every layer's activation shape
# for the first one; started without waiting, so the two browsers compute at the same time
EXPLORER_RUN = """(step) => { window.explorerRun = (async () => {
  const api = window.cnnbookExplorer;
  const response = await fetch('_static/explorer/samples.bin');
  const samples = new Uint8Array(await response.arrayBuffer());
  const n = 32 * 32 * 3;
  const out = { logits: {}, shapes: {} };
  for (const model of ['conv', 'pool']) {
    out.logits[model] = [];
    for (let i = 0; i < samples.length / n; i += step) {
      out.logits[model].push(await api.predict(model, samples.subarray(i * n, (i + 1) * n)));
    }
    out.shapes[model] = (await api.activations(model, samples.subarray(0, n))).map((a) => [a.name, a.shape, a.data.length]);
  }
  out.backend = api.backend;
  return out;
})(); }"""

READ_SHOWN = """root => ({
  state: root.dataset.state,
  logits: Object.fromEntries(['conv', 'pool'].map((m) => [m,
    [...root.querySelectorAll(`td[data-model="${m}"]`)].map((td) => Number(td.dataset.logit))])),
  seen: Array.from(root.querySelector('.cnnbook-explorer__seen').getContext('2d')
    .getImageData(0, 0, 32, 32).data),
  caption: root.querySelector('.cnnbook-explorer__caption').textContent,
  status: root.querySelector('.cnnbook-explorer__status').textContent,
})"""


EXPLORER_TEST = "test_explorer_agrees_with_keras_with_and_without_webgl"
# Which samples each backend computes: all 100 on the CPU backend; on WebGL every fifth (two of
# each class), since headless Chromium's WebGL is SwiftShader, a GPU emulated on the CPU, which
# took about 1 s per image and model on the loaded 2-core machine, the most of any CI step.
EXPLORER_STEP = {"webgl": 5, "cpu": 1}


@pytest.fixture(scope="module", autouse=True)
def explorer_runs(request):
    """The heavy part of the explorer's test, started with this module's first test: a page in
    the browser with WebGL and one in a browser without it each put the 100 sample images through
    both models, in the browsers' own processes, while the other tests run; the explorer's test,
    the module's last, reads their results. Nothing starts when that test is not selected."""
    if not any(item.name == EXPLORER_TEST for item in request.session.items):
        yield None
        return
    browser = request.getfixturevalue("browser")
    _, base = request.getfixturevalue("site")
    no_webgl = browser.browser_type.launch(executable_path=CHROMIUM, headless=True,
                                           args=["--no-sandbox", "--disable-gpu", "--disable-webgl"])
    views = {"webgl": Visit(browser, base, EXPLORER_PAGE),
             "cpu": Visit(no_webgl, base, EXPLORER_PAGE)}
    for backend, v in views.items():
        v.page.evaluate(EXPLORER_RUN, EXPLORER_STEP[backend])
    yield views
    for v in views.values():
        v.close()
    no_webgl.close()


def explorer_manifest(root: Path) -> dict:
    return json.loads((root / "_static" / "explorer" / "manifest.json").read_text())


def keras_models(root: Path, manifest: dict) -> dict:
    """Both models rebuilt in Keras from the manifest's layer list (cnnbook.calc.to_keras) with
    the exported weights: the reference, independent of the browser's code."""
    built = {}
    for name, spec in manifest["models"].items():
        model = calc.to_keras(spec["layers"], name=name)
        blob = (root / "_static" / "explorer" / spec["weights"]["file"]).read_bytes()
        per_layer: dict[str, list] = {}
        for t in spec["weights"]["tensors"]:
            array = np.frombuffer(blob, "<f4", t["bytes"] // 4, t["offset"]).reshape(t["shape"])
            per_layer.setdefault(t["layer"], []).append(array)
        for layer, arrays in per_layer.items():
            model.get_layer(layer).set_weights(arrays)
        built[name] = model
    return built


def wait_shown(v, caption_part: str):
    v.page.wait_for_function(
        """part => { const r = document.querySelector('.cnnbook-explorer');
          return r.dataset.state === 'shown' && r.querySelector('.cnnbook-explorer__caption')
            .textContent.includes(part); }""", arg=caption_part, timeout=120_000)
    return v.page.locator("div.cnnbook-explorer").evaluate(READ_SHOWN)


def test_explorer_page_is_light_until_used(site, visit):
    """Only the explorer's page loads its two small files; TensorFlow.js and the models are not
    requested until the reader starts it; without JavaScript a note says what the explorer is;
    the skip link jumps past it."""
    root, _ = site
    for name in pages(root):
        soup = BeautifulSoup((root / name).read_text(), "html.parser")
        loaded = {re.sub(r"\?.*", "", tag.get("src") or tag.get("href") or "")
                  for tag in soup.select("script[src], link[rel=stylesheet]")}
        found = {f for f in loaded if "explorer" in f}
        assert found == (EXPLORER_FILES if name == EXPLORER_PAGE else set()), name
        assert bool(soup.select("div.cnnbook-explorer")) == (name == EXPLORER_PAGE), name
    v = visit(EXPLORER_PAGE)
    requested = v.page.evaluate("performance.getEntriesByType('resource').map((e) => e.name)")
    assert not [u for u in requested if any(h in u for h in HEAVY)], requested
    assert v.page.locator(".cnnbook-explorer__start").is_visible()
    assert v.page.locator(".cnnbook-explorer__fallback").count() == 0  # the widget replaced it
    skip = v.page.locator("a.cnnbook-explorer__skip")
    skip.focus()
    assert skip.is_visible()
    v.page.keyboard.press("Enter")
    assert v.page.evaluate("document.activeElement.className") == "cnnbook-explorer__after"
    off = visit(EXPLORER_PAGE, javascript=False)
    note = off.page.locator(".cnnbook-explorer__fallback")
    assert note.is_visible() and "JavaScript" in note.inner_text()
    assert v.problems == [] and off.problems == []


def test_explorer_agrees_with_keras_with_and_without_webgl(site, explorer_runs, tmp_path):
    """For both models and all 100 sample images (every fifth on WebGL), TensorFlow.js's logits
    equal the Keras logits of the export within 1e-4 and give the same class; every layer's activation shape is the
    calculator's; an uploaded 32x32 PNG is seen pixel for pixel and gives the logits of Keras
    (the models rebuilt from the manifest with cnnbook.calc.to_keras and the exported weights);
    bad files get an inline message and the explorer keeps working; the started explorer passes
    axe; no console error, failed request or request off the machine: in a browser with WebGL,
    and in one without, which says it runs on the CPU backend."""
    root, _ = site
    manifest = explorer_manifest(root)
    views = explorer_runs  # computing since the module's first test
    keras = keras_models(root, manifest)
    rng = np.random.default_rng(14)
    upload = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    Image.fromarray(upload).save(tmp_path / "mine.png")
    want_upload = {name: m(upload[None].astype("float32") / manifest["input_scale"]).numpy()[0]
                   for name, m in keras.items()}
    huge = tmp_path / "huge.png"
    with open(huge, "wb") as f:
        f.truncate(26 * 2**20)  # over the explorer's limit, refused before it is read
    shapes = {name: [[row["layer"], list(row["shape"])] for row in
                     calc.layer_rows(spec["layers"])[1:]]
              for name, spec in manifest["models"].items()}
    for backend, v in views.items():
        result = v.page.evaluate("() => window.explorerRun")
        assert result["backend"] == backend
        for name in ("conv", "pool"):
            got = np.array(result["logits"][name])
            want = np.array(manifest["samples"]["logits"][name])
            assert want.shape == (100, 10)
            want = want[::EXPLORER_STEP[backend]]
            assert got.shape == want.shape == (100 // EXPLORER_STEP[backend], 10), (backend, name)
            assert np.abs(got - want).max() <= 1e-4, (backend, name, np.abs(got - want).max())
            assert (got.argmax(1) == want.argmax(1)).all(), (backend, name)
            assert [[n, s] for n, s, _ in result["shapes"][name]] == shapes[name], (backend, name)
            assert all(size == math.prod(s) for _, s, size in result["shapes"][name])
        # the reader's own image, through the file picker
        page, widget = v.page, v.page.locator("div.cnnbook-explorer")
        page.set_input_files(".cnnbook-explorer__file", tmp_path / "mine.png")
        shown = wait_shown(v, "mine.png")
        seen = np.array(shown["seen"], dtype=np.uint8).reshape(32, 32, 4)
        assert (seen[..., :3] == upload).all() and (seen[..., 3] == 255).all(), backend
        for name, want in want_upload.items():
            got = np.array(shown["logits"][name])
            assert np.abs(got - want).max() <= 1e-4, (backend, name, got, want)
            assert got.argmax() == want.argmax(), backend
        words = {"webgl": "WebGL", "cpu": "CPU backend"}
        assert words[backend] in shown["status"] and widget.get_attribute("data-backend") == backend
        # bad files: an inline message each, and the explorer still works after them
        error = page.locator(".cnnbook-explorer__error")
        for file, message in (
                ({"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not a picture"},
                 "notes.txt is not an image (text/plain)"),
                ({"name": "empty.png", "mimeType": "image/png", "buffer": b""}, "empty.png is empty."),
                ({"name": "broken.png", "mimeType": "image/png", "buffer": b"\x89PNG\r\n\x1a\nnot really"},
                 "broken.png is not an image this browser can read."),
                (huge, "huge.png is 26.0\u00a0MiB; the explorer takes images up to 25.0\u00a0MiB.")):
            page.set_input_files(".cnnbook-explorer__file", file)
            error.wait_for(state="visible")
            assert message in error.inner_text(), (backend, message)
            assert widget.get_attribute("data-state") == "shown"
        page.locator(".cnnbook-explorer__thumb").nth(57).click()  # a sample: shown, error gone
        shown = wait_shown(v, "Sample 58 of 100")
        label = manifest["samples"]["labels"][57]
        assert f"true label \u201c{manifest['classes'][label]}\u201d" in shown["caption"]
        assert error.is_hidden()
        for name in ("conv", "pool"):
            assert np.abs(np.array(shown["logits"][name])
                          - manifest["samples"]["logits"][name][57]).max() <= 1e-4
    # the started explorer, in both colour modes, passes axe (the CPU page)
    page = views["cpu"].page
    page.add_script_tag(content=AXE.read_text(encoding="utf-8"))
    for scheme in ("light", "dark"):
        page.emulate_media(color_scheme=scheme)
        page.wait_for_function(f"document.documentElement.dataset.theme === '{scheme}'")
        page.evaluate(SETTLED)
        assert page.evaluate(AXE_RUN) == [], scheme
    for backend, v in views.items():
        assert v.problems == [], (backend, v.problems)
