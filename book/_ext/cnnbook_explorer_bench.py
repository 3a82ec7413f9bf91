"""Benchmark of the explorer (cnnbook_explorer.py) in headless Chromium: run by hand, not a test.

    python book/_ext/cnnbook_explorer_bench.py [book/_build/html] [--shots DIR] [--runs 20]

On a built site (served on 127.0.0.1 by Python's http.server, which sends no gzip: the sizes
are the files' own) it prints

* the bytes the explorer's page loads before the reader touches the explorer, and those of the
  other chapters for comparison, then the bytes loaded once the explorer has started (its first
  image shown), file by file: the Performance API's ``encodedBodySize`` (the bytes of each
  file's body, as sent) and ``transferSize`` (the same plus the HTTP headers), summed over the
  navigation and every resource;
* the time from choosing a sample image (a click on its thumbnail) to both models' predictions
  and the chosen model's feature maps drawn (the explorer's ``cnnbook-explorer-shown`` event,
  then the next frame), over ``--runs`` different images after the first: median, min and max,
  with TensorFlow.js's CPU backend (Chromium launched with ``--disable-webgl``) and, for
  comparison, with WebGL (headless Chromium's SwiftShader, a software renderer);
* each model's multiply-accumulates per image (cnnbook.calc) and TensorFlow.js's time for one
  prediction of each, which is most of the time above.

``--shots DIR`` also saves screenshots of the started explorer at desktop (1280 px) and phone
(390 px) width, light and dark.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import json
import statistics
import sys
import threading
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
PAGE = "inside.html"
NO_WEBGL = ["--no-sandbox", "--disable-gpu", "--disable-webgl"]
WEBGL = ["--no-sandbox", "--disable-gpu"]  # headless Chromium still has WebGL (SwiftShader)

LOADED = """() => [performance.getEntriesByType('navigation')[0],
  ...performance.getEntriesByType('resource')].map((e) => ({
    name: e.name, body: e.encodedBodySize, transfer: e.transferSize }))"""

CHOOSE = """async (i) => {
  const root = document.querySelector('.cnnbook-explorer');
  const thumb = root.querySelectorAll('.cnnbook-explorer__thumb')[i];
  const done = new Promise((resolve) => root.addEventListener('cnnbook-explorer-shown', resolve, { once: true }));
  const t0 = performance.now();
  thumb.click();
  await done;
  await new Promise((resolve) => requestAnimationFrame(() => setTimeout(resolve, 0)));
  return performance.now() - t0;
}"""

PREDICT = """async (runs) => {
  const px = new Uint8Array(32 * 32 * 3).fill(100);
  const out = {};
  for (const model of ['conv', 'pool']) {
    await cnnbookExplorer.predict(model, px);
    const times = [];
    for (let i = 0; i < runs; i++) {
      const t0 = performance.now();
      await cnnbookExplorer.predict(model, px);
      times.push(performance.now() - t0);
    }
    out[model] = times.sort((a, b) => a - b)[Math.floor(runs / 2)];
  }
  return out;
}"""


def serve(root: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def open_page(browser, url, width=1280, scheme="light"):
    context = browser.new_context(viewport={"width": width, "height": 900}, color_scheme=scheme)
    page = context.new_page()
    problems = []
    page.on("console", lambda m: problems.append(f"{m.type}: {m.text}")
            if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"uncaught: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
    page.goto(url)
    page.wait_for_load_state("networkidle")
    return context, page, problems


def start(page):
    page.click(".cnnbook-explorer__start")
    page.wait_for_function("document.querySelector('.cnnbook-explorer').dataset.state === 'shown'",
                           timeout=300_000)


def total(entries) -> tuple[int, int]:
    return sum(e["body"] for e in entries), sum(e["transfer"] for e in entries)


def kib(n: int) -> str:
    return f"{n / 1024:,.1f} KiB"


def sizes(browser, base: str, root: Path) -> None:
    print("Bytes loaded (Performance API, no gzip; body = encodedBodySize, "
          "transfer = transferSize incl. headers), at load, without scrolling:")
    others = sorted(p.name for p in root.glob("*.html")
                    if p.name not in (PAGE, "index.html", "search.html", "genindex.html"))
    for name in [PAGE, *others]:
        context, page, _ = open_page(browser, f"{base}/{name}")
        body, transfer = total(page.evaluate(LOADED))
        print(f"  {name:28s} body {kib(body):>12s}   transfer {kib(transfer):>12s}")
        context.close()
    context, page, problems = open_page(browser, f"{base}/{PAGE}")
    before = page.evaluate(LOADED)
    start(page)
    after = page.evaluate(LOADED)
    seen = {e["name"] for e in before}
    new = [e for e in after if e["name"] not in seen]
    print(f"  {PAGE}, explorer started (first image shown): body {kib(total(after)[0])}, "
          f"transfer {kib(total(after)[1])}; added by the explorer:")
    for e in new:
        print(f"    {e['name'].split('/_static/')[-1]:40s} {e['body']:>12,} bytes")
    print(f"    {'total':40s} {total(new)[0]:>12,} bytes ({kib(total(new)[0])})")
    if problems:
        print("  problems:", problems)
    context.close()


def timing(browser, label: str, runs: int) -> dict:
    context, page, problems = open_page(browser, BASE + f"/{PAGE}")
    start(page)
    backend = page.locator(".cnnbook-explorer").get_attribute("data-backend")
    times = [page.evaluate(CHOOSE, i) for i in range(1, runs + 1)]
    one = page.evaluate(PREDICT, 5)
    context.close()
    result = {"label": label, "backend": backend, "median_ms": statistics.median(times),
              "min_ms": min(times), "max_ms": max(times), "predict_ms": one, "problems": problems}
    print(f"{label} (backend {backend}): choose an image -> all shown, {runs} images: median "
          f"{result['median_ms']:.0f} ms (min {result['min_ms']:.0f}, max {result['max_ms']:.0f}); "
          f"one prediction alone (median of 5): conv {one['conv']:.0f} ms, pool {one['pool']:.0f} ms"
          + (f"; problems: {problems}" if problems else ""))
    return result


def screenshots(browser, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for width, tag in ((1280, "desktop"), (390, "phone")):
        for scheme in ("light", "dark"):
            context, page, problems = open_page(browser, BASE + f"/{PAGE}", width, scheme)
            page.wait_for_function(f"document.documentElement.dataset.theme === '{scheme}'")
            start(page)
            page.locator(".cnnbook-explorer__thumb").nth(31).click()
            page.wait_for_function(
                "document.querySelector('.cnnbook-explorer').dataset.state === 'shown'")
            page.evaluate("document.fonts.ready")
            path = folder / f"explorer-{tag}-{scheme}.png"
            # a viewport as tall as the explorer, scrolled so that it starts below the theme's
            # sticky header: the whole explorer in one screenshot
            place = page.locator(".cnnbook-explorer-place")
            height = place.bounding_box()["height"]
            page.set_viewport_size({"width": width, "height": int(height) + 200})
            page.evaluate("(el) => window.scrollTo(0, el.getBoundingClientRect().top + window.scrollY - 100)",
                          place.element_handle())
            box = place.bounding_box()
            page.screenshot(path=str(path), clip={"x": max(0, box["x"] - 8), "y": box["y"] - 8,
                                                  "width": min(width, box["width"] + 16),
                                                  "height": box["height"] + 16})
            print(f"wrote {path}" + (f" (problems: {problems})" if problems else ""))
            context.close()


def macs() -> None:
    from cnnbook import calc

    manifest = json.loads((ROOT / "_static" / "explorer" / "manifest.json").read_text())
    for name, spec in manifest["models"].items():
        m = calc.analyze(spec["layers"]).totals["macs"]
        print(f"  {name}: {m / 1e6:,.1f} million multiply-accumulates per image "
              f"({spec['title']})")


def main() -> int:
    global BASE, ROOT
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("html", nargs="?", default=str(Path(__file__).parents[1] / "_build" / "html"))
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--shots", type=Path, help="also save screenshots of the explorer here")
    ap.add_argument("--no-webgl-comparison", action="store_true")
    args = ap.parse_args()
    ROOT = Path(args.html).resolve()
    if not (ROOT / PAGE).is_file():
        print(f"no {PAGE} in {ROOT}: build the book first", file=sys.stderr)
        return 2
    from playwright.sync_api import sync_playwright

    server, BASE = serve(ROOT)
    with sync_playwright() as pw:
        cpu = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=NO_WEBGL)
        sizes(cpu, BASE, ROOT)
        print("Multiply-accumulates (cnnbook.calc):")
        macs()
        timing(cpu, "CPU backend", args.runs)
        if args.shots:
            screenshots(cpu, args.shots)
        cpu.close()
        if not args.no_webgl_comparison:
            gl = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=WEBGL)
            timing(gl, "WebGL (SwiftShader)", args.runs)
            gl.close()
    server.shutdown()
    return 0


BASE = ""
ROOT = Path()

if __name__ == "__main__":
    sys.exit(main())
