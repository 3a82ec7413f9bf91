"""Light pages and the book's PDF (book/_ext/cnnbook_pages.py, book/_ext/cnnbook_pdf.py), on the
session's quick build: what each built page loads, that the theme's icons still render from the
cut-down icon fonts, and that the PDF command prints the chapters in the book's order."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from bs4 import BeautifulSoup
from fontTools.ttLib import TTFont
from pypdf import PdfReader

from test_browser import browser, pages, site, visit  # noqa: F401 (the browser tests' fixtures)

pytestmark = pytest.mark.book

ROOT = Path(__file__).resolve().parents[1]
PDF_COMMAND = ROOT / "book" / "_ext" / "cnnbook_pdf.py"
WEBFONTS = "_static/vendor/fontawesome/webfonts"


def loaded(soup: BeautifulSoup) -> set[str]:
    """The scripts and stylesheets a page loads, without their query strings."""
    return {re.sub(r"\?.*", "", tag.get("src") or tag.get("href") or "")
            for tag in soup.select("script[src], link[rel=stylesheet]")}


def built_pages(root: Path) -> dict[str, BeautifulSoup]:
    return {name: BeautifulSoup((root / name).read_text(encoding="utf-8"), "html.parser")
            for name in pages(root) if name != "index.html"}  # index.html: the redirect


def test_each_page_loads_only_the_scripts_it_uses(built_book):
    root = built_book[0] / "_build" / "html"
    soups = built_pages(root)
    with_maths = set()
    for name, soup in soups.items():
        files = loaded(soup)
        main = soup.select_one("main") or soup
        assert not [f for f in files if "fontawesome" in f], name  # 1.49 MB of SVG icons
        maths = bool(main.select(".math"))
        if maths:
            with_maths.add(name)
        # maths is MathML written at build time: no MathJax, its configuration or a loader
        assert not [f for f in files if "mathjax" in f.lower()], name
        assert not soup.find("script", string=re.compile("MathJax|mathjax")), name
        assert all(m.find("math") for m in main.select(".math")), name
        # figures load as the reader scrolls to them
        assert all(img.get("loading") == "lazy" for img in main.select("img[src*='_images/']")), name
        search = {"_static/searchtools.js", "_static/language_data.js", "searchindex.js"}
        # the search scripts and index: on the search page only (search-as-you-type is off)
        assert search <= files if name == "search.html" else not search & files, name
        code = bool(main.select("div.highlight"))
        assert {"_static/copybutton.js", "_static/clipboard.min.js"} <= files if code else \
            not {"_static/copybutton.js", "_static/clipboard.min.js"} & files, name
        assert not [f for f in files if "thebe" in f], name  # live code is off (launch_buttons)
        assert not soup.find("script", string=re.compile("THEBE_JS_URL")), name
        if not main.select("[class*='sd-']"):
            assert "_static/sphinx-design.min.css" not in files, name
            assert "_static/design-tabs.js" not in files, name
    # the chapters with maths have it as MathML; the pages without have none
    assert {"conv_only.html", "max_pooling.html", "alexnet.html"} <= with_maths
    assert "intro.html" not in with_maths and "data.html" not in with_maths
    assert not (root / "_static" / "scripts" / "fontawesome.js").exists()
    assert not (root / "_static" / "mathjax").exists()


def icon_table(css: str) -> dict[str, int]:
    """Font Awesome's ``.fa-NAME:before{content:"\\f019"}`` rules: name -> code point."""
    table = {}
    for selectors, code in re.findall(r'([^{}]*)\{content:"\\([0-9a-f]{4})"\}', css):
        for name in re.findall(r"\.(fa-[a-z0-9-]+):before", selectors):
            table[name] = int(code, 16)
    return table


def test_icon_fonts_hold_every_icon_the_pages_show(built_book):
    """The theme's web fonts, cut down to the site's icons: each icon class in the pages has its
    glyph in the font of its style (solid or brands), and the fonts weigh kilobytes."""
    root = built_book[0] / "_build" / "html"
    table = icon_table((root / "_static/styles/pydata-sphinx-theme.css").read_text(encoding="utf-8"))
    fonts = {style: TTFont(root / WEBFONTS / f"fa-{style}.woff2") for style in ("solid-900", "brands-400")}
    cmaps = {style: set(font.getBestCmap()) for style, font in fonts.items()}
    shown = {}
    for name, soup in built_pages(root).items():
        for tag in soup.select("[class*='fa-']"):
            classes = tag.get("class", [])
            style = "brands-400" if {"fab", "fa-brands"} & set(classes) else "solid-900"
            for cls in classes:
                if cls in table:
                    shown.setdefault((style, cls), name)
    assert ("brands-400", "fa-github") in shown and ("solid-900", "fa-download") in shown
    assert ("solid-900", "fa-book") in shown  # the PDF's link in the download menu
    missing = [(style, cls, page) for (style, cls), page in shown.items()
               if table[cls] not in cmaps[style]]
    assert missing == []
    for path in (root / WEBFONTS).glob("*.woff2"):
        assert path.stat().st_size < 10_000, path.name  # the theme's: 25 to 156 KB


def test_icons_render_in_the_browser(visit):
    """The header's icons are drawn from the loaded Font Awesome fonts, in both colour modes."""
    for scheme in ("light", "dark"):
        v = visit("data.html", scheme=scheme)
        shown = v.page.evaluate("""async () => {
          await document.fonts.ready;
          const icons = [...document.querySelectorAll('.bd-header-article [class*="fa-"]')]
            .filter((el) => el.offsetWidth > 0);
          return {
            icons: icons.map((el) => {
              const before = getComputedStyle(el, '::before');
              return { cls: el.className, width: el.getBoundingClientRect().width,
                       font: before.fontFamily, code: before.content.codePointAt(1) };
            }),
            fonts: [...document.fonts].filter((f) => f.status === 'loaded').map((f) => f.family),
          };
        }""")
        assert len(shown["icons"]) >= 4  # launch, repository, download, fullscreen, mode
        for icon in shown["icons"]:
            assert icon["width"] > 0 and "Font Awesome" in icon["font"], icon
            assert 0xE000 <= icon["code"] < 0xF900, icon  # a Font Awesome glyph, not text
        assert any("Font Awesome 6 Free" in f for f in shown["fonts"])
        assert any("Font Awesome 6 Brands" in f for f in shown["fonts"])
        assert v.problems == []
        v.close()


def test_download_menu_links_the_books_pdf(built_book):
    book = built_book[0]
    root = book / "_build" / "html"
    name = yaml.safe_load((book / "_config.yml").read_text())["sphinx"]["config"]["cnnbook_pdf"]
    for page, soup in built_pages(root).items():
        menu = soup.select_one(".dropdown-download-buttons")
        if menu is None:  # generated pages (search, index) have no sources to download
            assert page in ("search.html", "genindex.html"), page
            continue
        links = [a for a in menu.select("a[href]") if a["href"].split("/")[-1] == name]
        assert len(links) == 1 and "Book (.pdf)" in links[0].get_text(), page


def test_pdf_command_prints_the_chapters_in_the_books_order(built_book, tmp_path):
    """The command of the README on two pages of the built book (the whole book takes about a
    minute): a title and contents sheet, the root page, then a chapter of the first part with
    maths and a calculator."""
    book = built_book[0]
    out = tmp_path / "book.pdf"
    run = subprocess.run([sys.executable, str(PDF_COMMAND), "--book", str(book), "--out", str(out),
                          "--pages", "conv_only", "intro"], capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr
    reader = PdfReader(out)
    assert f"Wrote {out}: {len(reader.pages)} pages" in run.stdout
    config = yaml.safe_load((book / "_config.yml").read_text())
    title, author = config["title"], config["author"]
    assert reader.metadata.title == title
    # the outline: contents, the root page, then the part and its chapter, in the book's order
    outline = reader.outline
    assert [item.title for item in outline if not isinstance(item, list)] == [
        "Contents", "Convolutional networks on CIFAR-10", "Two CNNs for CIFAR-10"]
    assert [item.title for item in outline[3]] == ["2. A CNN of convolutions only"]
    chapter_start = reader.get_destination_page_number(outline[3][0])
    assert reader.get_destination_page_number(outline[1]) == 1 and chapter_start > 1
    texts = [" ".join(page.extract_text().split()) for page in reader.pages]
    # the title and contents sheet gives the page each chapter starts on
    assert texts[0].startswith(f"{title} {author} Contents {title} 2 Two CNNs for CIFAR-10 "
                               f"2. A CNN of convolutions only {chapter_start + 1}")
    assert texts[1].startswith("Convolutional networks on CIFAR-10 Overview")
    assert texts[chapter_start].startswith("2. A CNN of convolutions only")
    assert "2.1. Overview" in texts[chapter_start]
    # page numbers in every footer, after the book's title
    for number, text in enumerate(texts, start=1):
        assert text.endswith(f"{title} {number}"), (number, text[-200:])
    # no navigation chrome: the theme's buttons and sidebars are not printed
    whole = "\n".join(texts)
    assert "Skip to main content" not in whole and "Download this page" not in whole
    assert "Ctrl+K" not in whole
