"""The in-browser calculators: the ``cnnbook-calculator`` directive, their data, their files.

A chapter places a calculator with a directive (the widget, ``model`` or ``time``, and the preset
it starts from; ``:machine:`` for the time widget)::

    ```{cnnbook-calculator}
    :widget: model
    :preset: alexnet
    ```

It renders three things:

* a skip link past the calculator (the model calculator alone has about 70 tab stops);
* ``<div class="cnnbook-calc" data-widget=... data-preset=...>``, which calc-widget.js turns into
  the editable form;
* inside that div, what the widget shows for its preset as plain tables, computed here at build
  time from :mod:`cnnbook.calc` (the same numbers): a reader without JavaScript sees them, and the
  widget removes them when it starts.

The widgets' files (``book/_ext/static/calc``: calc-core.js, calc-widget.js, calc.css) are served
from ``_static/calc`` and loaded only on the pages that have a calculator (Jupyter Book would load
anything under book/_static on every page). They read one generated file,
``_static/calc/presets.js`` in the build output, so the browser and :mod:`cnnbook.calc` share one
source of truth: the layer presets and their titles, the machine presets (with the build machine
as read at build time), the dtype sizes, optimizer slots, layer field defaults, the limits on every
input (so both sides refuse the same numbers), the estimator's defaults and the assignment's own
time estimate. It is a script (``window.CNNBOOK_CALC = {...}``) rather than a JSON file fetched at
run time, so a page opened from disk (``file://``) works too. It is not committed: every build
writes it.

The extension also adds book/_templates (the theme's search field and colour-mode button) and
draws two pieces of myst-nb's and docutils's markup that axe-core rejects (hidden-cell summaries,
citation lists): see "accessibility fixes" below, and book/_static/a11y.css.
"""

from __future__ import annotations

import html
import inspect
import json
import math
from dataclasses import asdict
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import directives
from sphinx.util.docutils import SphinxDirective

SCRIPT = "calc/presets.js"
STATIC = Path(__file__).parent / "static"  # holds calc/: served as _static/calc
TEMPLATES = Path(__file__).parent.parent / "_templates"  # book/_templates: theme fixes
SCRIPTS = ("calc/calc-core.js", "calc/calc-widget.js")
STYLE = "calc/calc.css"
WIDGETS = ("model", "time")
DASH = "\u2014"
NBSP = "\u00a0"


def calculator_data() -> dict:
    """Everything the widgets need from :mod:`cnnbook.calc` and :mod:`cnnbook.report`, as JSON."""
    from cnnbook import calc, report

    presets = calc.presets()
    machines = {**calc.MACHINES, "build": calc.build_machine()}
    method1 = report.ASSIGNMENT_ALEXNET["method1"]
    return {
        "presets": {name: {"title": calc.PRESET_TITLES[name], "layers": layers}
                    for name, layers in presets.items()},
        "machines": {key: {**asdict(m), "peak_flops": m.peak_flops} for key, m in machines.items()},
        "dtype_bytes": calc.DTYPE_BYTES,
        "optimizer_slots": calc.OPTIMIZER_SLOTS,
        "layer_types": list(calc.LAYER_TYPES),
        "fields": {kind: {"required": sorted(required), "optional": optional}
                   for kind, (required, optional) in calc._FIELDS.items()},
        "limits": limits(),
        "defaults": defaults(),
        "assignment": {**method1, "seconds_all_cores": list(method1["seconds_all_cores"]),
                       "total_memory_values": report.ASSIGNMENT_ALEXNET["total_memory_values"]},
    }


def defaults() -> dict:
    """The widgets' starting settings: the Python calculators' own defaults."""
    from cnnbook import calc, report

    estimate = inspect.signature(calc.estimate_training).parameters
    memory = inspect.signature(calc.training_memory).parameters
    method1 = report.ASSIGNMENT_ALEXNET["method1"]
    return {
        "dtype": memory["dtype"].default,
        "optimizer": memory["optimizer"].default,
        "batch_size": estimate["batch_size"].default,
        "efficiency": estimate["efficiency"].default,
        "images": method1["images"],
        "epochs": method1["epochs"],
        "ram_gib": 2,  # the assignment's scenario: half of a 4 GB machine free for training
    }


def limits() -> dict:
    """The calculators' input limits, Python's constants: calc-core.js checks with these."""
    from cnnbook import calc

    return {
        "max_field": calc.MAX_FIELD,  # any whole number above it is absurdly large
        "min_rate": calc.MIN_RATE, "max_rate": calc.MAX_RATE,  # clock GHz, bandwidth GB/s
        "min_efficiency": calc.MIN_EFFICIENCY, "max_efficiency": calc.MAX_EFFICIENCY,
        "min_flops_per_second": calc.MIN_FLOPS_PER_SECOND,
        "max_flops_per_second": calc.MAX_FLOPS_PER_SECOND,
        "max_ram_gib": calc.MAX_RAM_GIB, "max_ram_bytes": calc.MAX_RAM_BYTES,
    }


# ------------------------------------------------------------- the widget's texts, in Python
def group(n: int) -> str:
    return f"{int(n):,}"


def _exponential(x: float, digits: int) -> str:
    """JavaScript's toExponential: 1.23e+6, not Python's 1.23e+06."""
    mantissa, exponent = f"{x:.{digits}e}".split("e")
    return f"{mantissa}e{int(exponent):+d}"


def _precision(x: float, digits: int = 3) -> str:
    """JavaScript's toPrecision for the sizes shown here (0.001 to 1e21)."""
    if x == 0:
        return f"{0:.{digits - 1}f}"
    exponent = math.floor(math.log10(abs(x)))
    if float(f"{x:.{digits - 1}e}") >= 10 ** (exponent + 1):  # rounding carried: 99.96 -> 100
        exponent += 1
    if exponent < -6 or exponent >= digits:
        return _exponential(x, digits - 1)
    return f"{x:.{max(0, digits - 1 - exponent)}f}"


def bytes_text(n: int) -> str:
    units = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"]
    if n < 1024:
        return f"{group(n)}{NBSP}bytes"
    value, i = float(n), 0
    while value >= 1024 and i < len(units) - 1:
        value /= 1024
        i += 1
    shown = _exponential(value, 2) if value >= 1e6 else f"{value:.{0 if value >= 100 else 1}f}"
    return f"{shown}{NBSP}{units[i]}"


def seconds_text(s: float) -> str:
    def sig(x):
        return _exponential(x, 2) if x >= 1e6 else group(round(x)) if x >= 100 else _precision(x)

    for limit, size, unit in ((120, 1, "s"), (2 * 3600, 60, "min"), (2 * 86400, 3600, "hours"),
                              (2 * 365.25 * 86400, 86400, "days")):
        if s < limit:
            return f"{sig(s / size)}{NBSP}{unit}"
    return f"{sig(s / (365.25 * 86400))}{NBSP}years"


def seconds_exact(s: float) -> str:
    return f"{group(round(s))}{NBSP}s" if s < 1e15 else f"{_exponential(s, 3)}{NBSP}s"


def flops_text(x: float) -> str:
    for size, unit in ((1e18, "EFLOP"), (1e15, "PFLOP"), (1e12, "TFLOP"), (1e9, "GFLOP"),
                       (1e6, "MFLOP")):
        if x >= size:
            return f"{_precision(x / size)}{NBSP}{unit}"
    return f"{group(round(x))}{NBSP}FLOP"


# ------------------------------------------------------------------ the tables without JavaScript
def _esc(value) -> str:
    return html.escape(str(value), quote=True)


def _table(caption: str, head: list[str] | None, rows: list[str], cls: str,
           foot: str = "") -> str:
    thead = ("<thead><tr>" + "".join(f'<th scope="col">{_esc(h)}</th>' for h in head)
             + "</tr></thead>") if head else ""
    return (f'<table class="cnnbook-calc__fallback-table {cls}"><caption>{_esc(caption)}</caption>'
            f"{thead}<tbody>{''.join(rows)}</tbody>{foot}</table>")


def _row(label: str, key: str, value, text: str, attr: str = "data-key") -> str:
    return (f'<tr><th scope="row">{_esc(label)}</th>'
            f'<td class="num" {attr}="{_esc(key)}" data-value="{_esc(value)}">{_esc(text)}</td></tr>')


def _scroll(table: str, label: str) -> str:
    """A wide table scrolls sideways on a phone; the region is reachable by keyboard (axe)."""
    return (f'<div class="cnnbook-calc__scroll" role="region" tabindex="0" '
            f'aria-label="{_esc(label)} (scrolls sideways)">{table}</div>')


def model_fallback(preset: str) -> str:
    """What the model widget shows for ``preset`` with its default settings, as plain tables."""
    from cnnbook import calc

    d = defaults()
    layers = calc.presets()[preset]
    summary = calc.analyze(layers, d["dtype"])
    rows = []
    for i, r in enumerate(summary.table.to_dict("records")):
        cells = "".join(f'<td class="num" data-col="{c}" data-value="{int(r[c])}">{group(r[c])}</td>'
                        for c in ("params", "activations", "macs", "rf", "jump"))
        rows.append(f'<tr data-layer-index="{i}"><th scope="row">{i} {_esc(r["layer"])}</th>'
                    f'<td data-col="output" data-value="{_esc(r["output"])}">{_esc(r["output"])}</td>'
                    f"{cells}</tr>")
    t = summary.totals
    foot = ('<tfoot><tr><th scope="row">Total</th>'
            f'<td data-col="output">{_esc(t["output"])}</td>'
            + "".join(f'<td class="num" data-col="{c}" data-value="{t[c]}">{group(t[c])}</td>'
                      for c in ("params", "activations", "macs")) + "<td></td><td></td></tr></tfoot>")
    per_layer = _scroll(_table("Per layer, for one image",
                               ["Layer", "Output", "Parameters", "Activations", "MACs",
                                "Receptive field", "Jump"], rows,
                               "cnnbook-calc__fallback-perlayer", foot), "Per-layer results")
    labels = [("params", "Parameters (all, as Keras counts them)"), ("weights", "Weights"),
              ("biases", "Biases"),
              ("non_trainable", "Non-trainable (batch norm's moving means and variances)"),
              ("activations", "Activations per image (values stored)"),
              ("activation_bytes", "Activation memory per image"),
              ("macs", "Multiply-accumulates per image (forward)"),
              ("flops", "FLOPs per image (forward, 2 per MAC)"),
              ("param_bytes", "Parameter memory")]
    totals = _table("Totals per image", None, [
        _row(label, key, t[key], f"{bytes_text(t[key])} ({group(t[key])} bytes)"
             if key.endswith("bytes") else group(t[key]), "data-total")
        for key, label in labels], "cnnbook-calc__fallback-summary")
    memory = calc.training_memory(layers, batch_size=d["batch_size"], optimizer=d["optimizer"],
                                  dtype=d["dtype"])
    ram = int(d["ram_gib"] * 2**30)
    largest = calc.largest_batch(layers, ram, optimizer=d["optimizer"], dtype=d["dtype"])
    memory = {part: int(v) for part, v in memory.items()}
    total = sum(memory.values())
    memory_rows = [_row(part[0].upper() + part[1:], part, int(v), bytes_text(int(v)), "data-memory")
                   for part, v in memory.items()]
    memory_rows.append(_row("Total", "total", total, f"{bytes_text(total)} ({group(total)} bytes)",
                            "data-memory"))
    memory_rows.append(_row(f"Largest batch that fits in {d['ram_gib']} GiB", "largest", largest,
                            f"{group(largest)} images", "data-memory"))
    memory_table = _table(f"Training memory for one step (batch size {d['batch_size']}, "
                          f"{d['optimizer']}, {d['dtype']})", None, memory_rows,
                          "cnnbook-calc__fallback-memory")
    return _fallback("Model calculator", calc.PRESET_TITLES[preset],
                     f'<p>Input {"x".join(str(x) for x in layers[0]["shape"])}, {d["dtype"]} numbers.</p>'
                     + per_layer + f'<div class="cnnbook-calc__results">{totals}{memory_table}</div>')


def time_fallback(preset: str, machine_key: str) -> str:
    """What the time widget shows for ``preset`` on ``machine_key`` with its defaults."""
    from cnnbook import calc, report

    d = defaults()
    machine = calc.MACHINES[machine_key]
    est = calc.estimate_training(calc.presets()[preset], machine, images=d["images"],
                                 epochs=d["epochs"], efficiency=d["efficiency"],
                                 batch_size=d["batch_size"], optimizer=d["optimizer"],
                                 dtype=d["dtype"])
    settings = _table("Settings", None, [
        _row("Processor", "machine", machine.name, machine.name),
        _row("Clock (GHz)", "clock_ghz", machine.clock_ghz, f"{machine.clock_ghz}"),
        _row("Cores", "cores", machine.cores, f"{machine.cores}"),
        _row("FLOPs per cycle per core", "flops_per_cycle", machine.flops_per_cycle,
             f"{machine.flops_per_cycle}"),
        _row("Memory bandwidth (GB/s)", "bandwidth_gbs", machine.bandwidth_gbs,
             f"{machine.bandwidth_gbs}"),
        _row("Efficiency (share of peak)", "efficiency", d["efficiency"], f"{d['efficiency']}"),
        _row("Training images", "images", d["images"], group(d["images"])),
        _row("Epochs", "epochs", d["epochs"], f"{d['epochs']}"),
        _row("Batch size", "batch_size", d["batch_size"], f"{d['batch_size']}"),
        _row("Optimizer", "optimizer", d["optimizer"], d["optimizer"]),
        _row("Number type (dtype)", "dtype", d["dtype"], d["dtype"]),
    ], "cnnbook-calc__fallback-settings")
    shown = {
        "seconds": f"{seconds_text(est['seconds'])} ({seconds_exact(est['seconds'])})",
        "bound": "arithmetic" if est["bound"] == "compute" else "memory traffic",
        "compute_seconds": seconds_exact(est["compute_seconds"]),
        "memory_seconds": seconds_exact(est["memory_seconds"]) if est["memory_seconds"]
        else "not modelled (no bandwidth)",
        "training_flops": flops_text(est["training_flops"]),
        "peak_flops": f"{flops_text(est['peak_flops'])}/s",
        "sustained_flops": f"{flops_text(est['sustained_flops'])}/s",
        "traffic_bytes": bytes_text(est["traffic_bytes"]),
    }
    labels = {"seconds": "Estimated time", "bound": "Limited by",
              "compute_seconds": "Compute time (FLOPs / sustained FLOP/s)",
              "memory_seconds": "Memory-traffic time (bytes / bandwidth)",
              "training_flops": "Training FLOPs (3 x forward x images x epochs)",
              "peak_flops": "Peak FLOP/s (cores x clock x FLOPs per cycle)",
              "sustained_flops": "Sustained FLOP/s (peak x efficiency)",
              "traffic_bytes": "Memory traffic"}
    results = _table("This calculator's estimate", None,
                     [_row(label, key, est[key], shown[key], "data-result")
                      for key, label in labels.items()], "cnnbook-calc__fallback-estimate")
    a = report.ASSIGNMENT_ALEXNET["method1"]
    low, high = a["seconds_all_cores"]
    assignment = (f'<p class="cnnbook-calc__fallback-assignment">The assignment\'s estimate '
                  f'(Method 1): <span data-assignment="seconds">about {a["seconds"]} s</span>, '
                  f'<span data-assignment="all-cores">{low}\u2013{high} s on all cores</span>.</p>')
    return _fallback("Training-time calculator", calc.PRESET_TITLES[preset],
                     f'<div class="cnnbook-calc__results">{settings}{results}</div>{assignment}')


def _fallback(title: str, preset_title: str, body: str) -> str:
    return ('<div class="cnnbook-calc__fallback cnnbook-calc__box">'
            f'<p class="cnnbook-calc__title">{_esc(title)}: {_esc(preset_title)}</p>'
            '<p class="cnnbook-calc__fallback-note">This calculator runs in JavaScript, which is '
            "off or has not loaded: here is what it shows for its starting model, computed with "
            "<code>cnnbook.calc</code> when the book was built.</p>"
            f"{body}</div>")


# ------------------------------------------------------------------------------ the directive
class CalculatorDirective(SphinxDirective):
    """``{cnnbook-calculator}`` with ``:widget: model|time``, ``:preset:`` and (time) ``:machine:``."""

    has_content = False
    option_spec = {
        "widget": lambda arg: directives.choice(arg, WIDGETS),
        "preset": directives.unchanged_required,
        "machine": directives.unchanged_required,
    }

    def run(self):
        from cnnbook import calc

        widget = self.options.get("widget")
        preset = self.options.get("preset")
        if widget is None or preset is None:
            raise self.error("cnnbook-calculator needs :widget: (model or time) and :preset:")
        if preset not in calc.presets():
            raise self.error(f"unknown preset {preset!r}; use one of {', '.join(calc.presets())}")
        attrs = f'data-widget="{widget}" data-preset="{_esc(preset)}"'
        if widget == "time":
            machine = self.options.get("machine", "i3-540")
            if machine not in calc.MACHINES:
                raise self.error(f"unknown machine {machine!r}; use one of {', '.join(calc.MACHINES)}")
            attrs += f' data-machine="{_esc(machine)}"'
            fallback = time_fallback(preset, machine)
        elif "machine" in self.options:
            raise self.error(":machine: is for the time widget only")
        else:
            fallback = model_fallback(preset)
        after = f"cnnbook-calc-after-{self.env.new_serialno('cnnbook-calc')}"
        markup = (f'<div class="cnnbook-calc-place">'
                  f'<a class="cnnbook-calc__skip" href="#{after}">Skip past the calculator</a>'
                  f'<div class="cnnbook-calc" {attrs}>{fallback}</div>'
                  f'<span id="{after}" class="cnnbook-calc__after" tabindex="-1"></span></div>')
        pages = self.env.cnnbook_calc_pages = getattr(self.env, "cnnbook_calc_pages", set())
        pages.add(self.env.docname)
        return [nodes.raw("", markup, format="html")]


def _purge(app, env, docname):
    getattr(env, "cnnbook_calc_pages", set()).discard(docname)


def _merge(app, env, docnames, other):
    env.cnnbook_calc_pages = getattr(env, "cnnbook_calc_pages", set()) | (
        getattr(other, "cnnbook_calc_pages", set()) & set(docnames))


def _page_files(app, pagename, templatename, context, doctree):
    """The calculators' scripts and styles, on the pages that have one only."""
    if pagename in getattr(app.env, "cnnbook_calc_pages", set()):
        app.add_css_file(STYLE)
        app.add_js_file(SCRIPT)
        for script in SCRIPTS:
            app.add_js_file(script)


def _paths(app, config):
    config.html_static_path.append(str(STATIC))
    config.templates_path.append(str(TEMPLATES))  # the theme's buttons, fixed (see the files)
    _accessible_markup(app)


# ---------------------------------------------------------- accessibility fixes of others' markup
# Two pieces of HTML that axe-core (tests/test_browser.py) rejects, written by Sphinx's helpers
# rather than by the theme's templates (those are overridden in book/_templates): each is drawn
# here instead, the same markup with the one attribute fixed.
def _visit_hidden_cell(self, node):
    """myst-nb's <details> around a hidden cell: its <summary> was labelled "Toggle hidden
    content" while it shows "Show code cell content" (label-content-name-mismatch); the text
    it shows now names it."""
    from html import escape

    self.body.append(f'<details class="admonition hide {" ".join(node["classes"])}">\n<summary>\n'
                     f'<p class="collapsed admonition-title">{escape(node["prompt_show"])}</p>\n'
                     f'<p class="expanded admonition-title">{escape(node["prompt_hide"])}</p>\n'
                     "</summary>\n")


def _depart_hidden_cell(self, node):
    self.body.append("</details>\n")


def _visit_citation(self, node):
    """docutils's citations: a role="list" whose entries had the deprecated role doc-biblioentry
    and no listitem (aria-required-children, critical); here they are list items."""
    if not isinstance(node.previous_sibling(), type(node)):
        self.body.append('<div role="list" class="citation-list">\n')
    self.body.append(self.starttag(node, "div", classes=[node.tagname], role="listitem"))


def _depart_citation(self, node):
    self.body.append("</div>\n")
    if not isinstance(node.next_node(descend=False, siblings=True), type(node)):
        self.body.append("</div>\n")


def _accessible_markup(app):
    from myst_nb.sphinx_ import HideCodeCellNode

    app.add_node(HideCodeCellNode, override=True, html=(_visit_hidden_cell, _depart_hidden_cell))
    app.add_node(nodes.citation, override=True, html=(_visit_citation, _depart_citation))


def _write(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    target = Path(app.outdir) / "_static" / SCRIPT
    target.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(calculator_data(), indent=1)  # in the package's order: the widgets list them so
    target.write_text(f"// Generated by book/_ext/cnnbook_calc.py from cnnbook.calc: do not edit.\n"
                      f"window.CNNBOOK_CALC = {text};\n", encoding="utf-8")


def setup(app):
    app.add_directive("cnnbook-calculator", CalculatorDirective)
    app.connect("config-inited", _paths)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    # before the handlers that rebuild the page's script list (priority 500 and up), so the
    # files added to this page are in the list they start from
    app.connect("html-page-context", _page_files, priority=400)
    app.connect("build-finished", _write)
    # env_version: environments pickled before the directive existed are read afresh
    return {"parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
