"""The whole book as one PDF, printed from the built pages by Chromium (no TeX).

* ``python book/_ext/cnnbook_pdf.py`` (after ``jupyter-book build book/``) prints every page of
  ``_toc.yml`` in its order, the root page first, each with Chromium's print engine (Playwright
  and the system's Chromium or Chrome, as the browser tests use; ``$CHROMIUM`` wins) in light
  mode, after its figures and fonts have loaded and its calculators are drawn, and joins them
  with pypdf, behind a title and contents sheet (the page each chapter starts on), into
  ``book/_build/html/<cnnbook_pdf>``, beside the site, so the Pages workflow publishes it.
  Each page starts on a new sheet; the theme's print stylesheet already leaves out the navigation,
  and a few print rules below keep the numbered chapter titles and fit code, outputs, tables and
  figures on A4. The PDF has the book's title and author, an outline (parts, chapters) and page
  numbers (a footer printed by Chromium on blank pages and laid over the chapters' pages).
  ``--book`` and ``--html`` name another book folder or built site (e.g. a ``--path-output``
  build), ``--out`` another file.
* Sphinx: the theme's download menu gets a "Book (.pdf)" link to that file on every page.

``tests/test_pages.py`` prints a two-page book with this command and checks its order and text.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

DEFAULT_NAME = "book.pdf"
LINK_LABEL = "download-book-pdf-button"

# --- Sphinx: the link in the download menu ------------------------------------------------------


def _download_link(app, pagename, templatename, context, doctree) -> None:
    name = app.config.cnnbook_pdf
    if not name or app.builder.format != "html":
        return
    for group in context.get("header_buttons", []):
        if group.get("label") == "download-buttons":
            group["buttons"].append({
                "type": "link",
                "url": context["pathto"](name, 1),
                "text": "Book (.pdf)",
                "tooltip": "Download the whole book as one PDF",
                "icon": "fas fa-book",
                "label": LINK_LABEL,
            })


def setup(app):
    app.add_config_value("cnnbook_pdf", DEFAULT_NAME, "html")  # the PDF's name, beside the site
    app.connect("html-page-context", _download_link, priority=600)  # after the theme's (501)
    return {"parallel_read_safe": True, "parallel_write_safe": True}


# --- the command: print the pages, join them ------------------------------------------------------

PAGE = {"format": "A4", "margin": {"top": "16mm", "bottom": "18mm", "left": "16mm", "right": "16mm"}}

# The theme's print stylesheet hides the numbered title and shows its own, unnumbered, with a
# contents list of the page: a book wants "2. A CNN of convolutions only". Code wraps instead of
# being cut at the margin; outputs, tables and figures fit the sheet and are not split.
PRINT_CSS = """
@media print {
  #jb-print-docs-body { display: none !important; }
  .bd-main .bd-content .bd-article h1:first-of-type { display: block !important; margin-top: 0; }
  .bd-main .bd-content { margin-left: 0 !important; }
  .bd-article-container, .bd-content, .bd-article { max-width: 100% !important; width: 100% !important; }
  pre { white-space: pre-wrap !important; overflow-wrap: anywhere; overflow: visible !important; }
  .cell_output pre, .output pre { font-size: 0.72em; }
  .cell_output, .output, .table-wrapper, .pst-scrollable-table-container { overflow: visible !important; }
  table { font-size: 0.85em; }
  img { max-width: 100% !important; height: auto !important; }
  figure, img, table, .admonition { break-inside: avoid; }
  .cnnbook-calc { break-inside: avoid-page; }
}
"""

# Ready to print: lazy images loaded, web fonts loaded (maths is MathML, drawn at once).
READY = """async () => {
  for (const img of document.querySelectorAll('img[loading="lazy"]')) img.loading = 'eager';
  await Promise.all([...document.images].filter((i) => !i.complete)
    .map((i) => new Promise((done) => { i.onload = i.onerror = done; })));
  await document.fonts.ready;
  return document.title;
}"""

FOOTER = ('<div style="width: 100%; font-size: 8px; color: #555; padding: 0 16mm; '
          'display: flex; justify-content: space-between; font-family: sans-serif;">'
          '<span>{title}</span><span class="pageNumber"></span></div>')


def chromium() -> str:
    found = os.environ.get("CHROMIUM") or next(
        filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
    if not found:
        raise SystemExit("No Chromium or Chrome found: install one, or set $CHROMIUM.")
    return found


def toc_order(book: Path) -> list[tuple[str | None, str]]:
    """``(part caption or None, docname)`` for every page of ``_toc.yml``, in reading order."""
    from sphinx_external_toc.parsing import parse_toc_yaml

    site_map = parse_toc_yaml(book / "_toc.yml")
    order: list[tuple[str | None, str]] = []

    def walk(docname: str, caption: str | None) -> None:
        order.append((caption, docname))
        for tree in site_map[docname].subtrees:
            for item in tree.items:
                if isinstance(item, str):  # a page (not a glob or an external link)
                    walk(item, tree.caption or caption)

    walk(site_map.root.docname, None)
    return order


class _Site:
    """The built site served on 127.0.0.1, as a reader's browser gets it."""

    def __init__(self, root: Path):
        class Quiet(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Quiet, directory=str(root)))
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base = f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def print_book(book: Path, html: Path, out: Path, pages: list[str] | None = None) -> dict:
    """Print the book's pages (``pages``: only these docnames, in the book's order) into ``out``.
    Returns ``{"pages": page count, "chapters": [(docname, title, first page), ...]}``."""
    import yaml
    from playwright.sync_api import sync_playwright
    from pypdf import PdfReader, PdfWriter

    config = yaml.safe_load((book / "_config.yml").read_text(encoding="utf-8"))
    title, author = config.get("title", ""), config.get("author", "")
    order = [(c, d) for c, d in toc_order(book) if pages is None or d in pages]
    missing = [d for _, d in order if not (html / f"{d}.html").is_file()]
    if missing:
        raise SystemExit(f"Not built: {', '.join(missing)} (run jupyter-book build first).")
    printed = []  # (part caption, docname, heading, its PDF, its page count)
    site = _Site(html)
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium(), headless=True,
                                     args=["--no-sandbox", "--disable-gpu"])
        context = browser.new_context(color_scheme="light", viewport={"width": 1000, "height": 1400})
        for caption, docname in order:
            page = context.new_page()
            page.goto(f"{site.base}/{docname}.html", wait_until="networkidle")
            page.add_style_tag(content=PRINT_CSS)
            page.evaluate(READY)
            heading = page.locator("main .bd-article h1").first.inner_text().replace("#", "").strip()
            path = Path(tmp, f"{len(printed):03d}.pdf")
            page.pdf(path=str(path), print_background=True, **PAGE)
            page.close()
            printed.append((caption, docname, heading, path, len(PdfReader(path).pages)))
        # the title and contents sheet(s); the chapters' page numbers count them
        contents, skip = Path(tmp, "contents.pdf"), 1
        while True:
            _contents(context, contents, title, author, printed, skip)
            if len(PdfReader(contents).pages) == skip:
                break
            skip = len(PdfReader(contents).pages)
        writer = PdfWriter()
        writer.append(str(contents))
        writer.add_outline_item(title="Contents", page_number=0)
        chapters, parts = [], {}
        for caption, docname, heading, path, _ in printed:
            start = len(writer.pages)
            writer.append(str(path))
            parent = None
            if caption:
                if caption not in parts:
                    parts[caption] = writer.add_outline_item(title=caption, page_number=start)
                parent = parts[caption]
            writer.add_outline_item(title=heading, page_number=start, parent=parent)
            chapters.append((docname, heading, start + 1))
        numbers = _page_numbers(context, Path(tmp, "numbers.pdf"), len(writer.pages), title)
        browser.close()
        for page, overlay in zip(writer.pages, PdfReader(numbers).pages):
            page.merge_page(overlay)
        writer.add_metadata({"/Title": title, "/Author": author})
        writer.page_mode = "/UseOutlines"
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as f:
            writer.write(f)
    site.close()
    return {"pages": len(writer.pages), "chapters": chapters}


CONTENTS = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><style>
body {{ font-family: sans-serif; color: #222; }}
h1 {{ font-size: 30pt; font-weight: 500; margin: 30mm 0 4mm; }}
.author {{ font-size: 13pt; color: #555; margin: 0 0 22mm; }}
h2 {{ font-size: 16pt; font-weight: 500; margin: 0 0 5mm; }}
table {{ width: 100%; border-collapse: collapse; font-size: 11pt; }}
td {{ padding: 1.2mm 0; }} td.page {{ text-align: right; width: 12mm; }}
tr.part td {{ padding-top: 5mm; font-weight: 600; }} tr.chapter td:first-child {{ padding-left: 6mm; }}
</style></head><body><h1>{title}</h1><p class="author">{author}</p><h2>Contents</h2>
<table>{rows}</table></body></html>"""


def _contents(context, path: Path, title: str, author: str, printed: list, skip: int) -> None:
    """The book's title, author and contents (parts, chapters, the page each starts on)."""
    import html as html_lib

    esc = html_lib.escape
    rows, part, number = [], None, skip + 1
    for caption, _, heading, _, count in printed:
        if caption and caption != part:
            rows.append(f'<tr class="part"><td colspan="2">{esc(caption)}</td></tr>')
            part = caption
        kind = "chapter" if caption else "front"
        rows.append(f'<tr class="{kind}"><td>{esc(heading)}</td><td class="page">{number}</td></tr>')
        number += count
    page = context.new_page()
    page.set_content(CONTENTS.format(title=esc(title), author=esc(author), rows="".join(rows)))
    page.pdf(path=str(path), **PAGE)
    page.close()


def _page_numbers(context, path: Path, count: int, title: str) -> Path:
    """``count`` blank A4 pages whose footers carry the book's title and the page number, printed
    by Chromium with the chapters' margins, to lay over the chapters' pages."""
    import html as html_lib

    page = context.new_page()
    sheets = '<div style="break-after: page; height: 1px"></div>' * (count - 1) + "<div></div>"
    page.set_content(f"<!DOCTYPE html><html><body style='margin: 0'>{sheets}</body></html>")
    page.pdf(path=str(path), display_header_footer=True, header_template="<span></span>",
             footer_template=FOOTER.format(title=html_lib.escape(title)), **PAGE)
    page.close()
    return path


def main(argv: list[str]) -> int:
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--book", type=Path, default=here, help="the book folder (_config.yml, _toc.yml)")
    parser.add_argument("--html", type=Path, help="the built site (default: BOOK/_build/html)")
    parser.add_argument("--out", type=Path, help="the PDF (default: HTML/<cnnbook_pdf>)")
    parser.add_argument("--pages", nargs="+", help="only these pages (docnames), for a quick try")
    args = parser.parse_args(argv)
    import yaml

    html = args.html or args.book / "_build" / "html"
    config = yaml.safe_load((args.book / "_config.yml").read_text(encoding="utf-8"))
    name = config.get("sphinx", {}).get("config", {}).get("cnnbook_pdf", DEFAULT_NAME)
    out = args.out or html / name
    result = print_book(args.book, html, out, args.pages)
    for docname, heading, first in result["chapters"]:
        print(f"p. {first:3d}  {heading}")
    print(f"Wrote {out}: {result['pages']} pages, {out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
