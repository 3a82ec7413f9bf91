"""Light pages: each page loads only the scripts and styles it uses.

The theme (sphinx-book-theme on pydata-sphinx-theme) and Jupyter Book's extensions put the same
assets on every page. This extension keeps, page by page, only what the page needs:

* Icons: pydata-sphinx-theme loads ``fontawesome.js`` (1.49 MB, every Font Awesome icon as SVG
  data) on every page to replace the ``<i class="fa-...">`` icons by SVG. Its stylesheet already
  draws the same icons from Font Awesome's web fonts (``vendor/fontawesome/webfonts``), so the
  script is dropped (``templates/layout.html``, and the file is removed from the site) and the
  fonts are cut down with fontTools to the glyphs the site uses: the icon classes found in the
  built pages and the theme's scripts, and the icons the theme's stylesheets draw themselves
  (admonitions, the "on this page" arrow). About 2 KB instead of 1.49 MB plus 270 KB of fonts.
* Maths: written into the pages as MathML at build time (latex2mathml), which browsers draw
  themselves, instead of MathJax (1.16 MB of script, 263 KB gzipped, that typesets a dozen
  formulas in the reader's browser and kept the maths pages' Lighthouse performance near 60).
* Images (figures drawn by the chapters' cells) load lazily (``loading="lazy"``), as the reader
  scrolls to them, not all before the first screen.
* Sphinx's search scripts and the search index only on the search page: the theme loads them
  everywhere for its search-as-you-type option, which is off (``search_as_you_type``).
* Copy buttons (sphinx-copybutton) only where there is code, toggle buttons
  (sphinx-togglebutton) only where something toggles, sphinx-design's styles and tab script only
  where its components are, and sphinx-thebe (live code) nowhere unless ``launch_buttons.thebe``
  is on.

``tests/test_pages.py`` checks what each built page loads and that the icons still render.
"""

from __future__ import annotations

import re
from pathlib import Path

from docutils import nodes

TEMPLATES = Path(__file__).with_name("templates")
FONTAWESOME_JS = "_static/scripts/fontawesome.js"
FONT_FOLDER = "_static/vendor/fontawesome/webfonts"

# What in a page's rendered body shows that it uses code blocks (copy buttons), toggles,
# sphinx-design components and sphinx-design tabs
HIGHLIGHT = re.compile(r'<div class="highlight')
TOGGLE = re.compile(r'class="[^"]*\b(toggle|dropdown)\b')
DESIGN = re.compile(r'class="[^"]*\bsd-')
TABS = re.compile(r'class="[^"]*\bsd-tab-set\b')


def _mathml(latex: str, display: str) -> str:
    from latex2mathml.converter import convert

    return convert(latex.strip(), display=display)


def visit_math(self, node) -> None:
    """Inline maths (``$...$``) as MathML, in the span Sphinx's renderers use."""
    self.body.append(self.starttag(node, "span", "", CLASS="math notranslate nohighlight"))
    self.body.append(_mathml(node.astext(), "inline") + "</span>")
    raise nodes.SkipNode


def visit_math_block(self, node) -> None:
    """Display maths (``$$...$$``) as block MathML, with its number when it has a label."""
    self.body.append(self.starttag(node, "div", CLASS="math notranslate nohighlight"))
    if node.get("number"):
        from sphinx.util.math import get_node_equation_number

        number = get_node_equation_number(self, node)
        self.body.append(f'<span class="eqno">({number})')
        self.add_permalink_ref(node, "Link to this equation")
        self.body.append("</span>")
    self.body.append(_mathml(node.astext(), "block") + "</div>\n")
    raise nodes.SkipNode


def _thebe_on(app) -> bool:
    launch = app.config.html_theme_options.get("launch_buttons", {}) or {}
    return bool(launch.get("thebe")) or bool(app.config.html_theme_options.get("use_thebe"))


def _name(asset) -> str:
    return (getattr(asset, "filename", asset) or "").split("?")[0]


def _body(asset) -> str:
    return getattr(asset, "attributes", {}).get("body", "") or ""


def keeps_script(app, script, body: str) -> bool:
    """Whether a page whose rendered body is ``body`` needs ``script``."""
    name, inline = _name(script), _body(script).lstrip()
    if name.endswith("sphinx-thebe.js") or "THEBE_JS_URL" in inline:
        return _thebe_on(app)
    if name.endswith(("copybutton.js", "clipboard.min.js")):
        return bool(HIGHLIGHT.search(body))
    if name.endswith("togglebutton.js") or inline.startswith(("let toggleHint", "let toggleOpen",
                                                              "var togglebuttonSelector")):
        return bool(TOGGLE.search(body))
    if name.endswith("design-tabs.js"):
        return bool(TABS.search(body))
    return True


def keeps_style(app, sheet, body: str) -> bool:
    name = _name(sheet)
    if name.endswith("sphinx-thebe.css"):
        return _thebe_on(app)
    if name.endswith("copybutton.css"):
        return bool(HIGHLIGHT.search(body))
    if name.endswith("togglebutton.css"):
        return bool(TOGGLE.search(body))
    if name.endswith("sphinx-design.min.css"):
        return bool(DESIGN.search(body))
    return True


def _page_assets(app, pagename, templatename, context, doctree) -> None:
    if app.builder.format != "html" or app.builder.name == "singlehtml":
        return
    body = context.get("body", "") or ""
    context["script_files"] = [s for s in context.get("script_files", [])
                               if keeps_script(app, s, body)]
    context["css_files"] = [s for s in context.get("css_files", []) if keeps_style(app, s, body)]


def _lazy_images(app, doctree, docname) -> None:
    """Images load as the reader scrolls to them (docutils writes ``loading="lazy"``)."""
    for image in doctree.findall(nodes.image):
        image.setdefault("loading", "lazy")


def _templates(app, config) -> None:
    """``templates/layout.html``: the theme's layout without fontawesome.js and, unless
    search-as-you-type is on, without the search scripts outside the search page."""
    config.templates_path = [*config.templates_path, str(TEMPLATES)]


# --- the icon fonts ---------------------------------------------------------------------------

ICON_RULE = re.compile(r"([^{}]*)\{([^{}]*)\}")
ICON_SELECTOR = re.compile(r"\.(fa-[a-z0-9-]+):(?:before|after)")
ESCAPE = re.compile(r"\\([0-9a-fA-F]{4,6})")
PRIVATE_USE = range(0xE000, 0xF900)  # where Font Awesome puts its icons


def _code_points(text: str) -> set[int]:
    """The private-use characters in CSS text, written as they are or as ``\\f019`` escapes."""
    found = {int(h, 16) for h in ESCAPE.findall(text)} | {ord(c) for c in text}
    return {c for c in found if c in PRIVATE_USE}


def icon_code_points(stylesheets: list[str], sources: list[str]) -> set[int]:
    """The icon glyphs the site needs: each ``fa-NAME`` class named in the pages and scripts
    (``sources``), looked up in Font Awesome's icon table (``.fa-NAME:before{content:"\\f019"}``),
    and every icon the stylesheets draw outside that table."""
    table: dict[str, set[int]] = {}
    drawn: set[int] = set()
    for css in stylesheets:
        for selectors, declarations in ICON_RULE.findall(css):
            points = _code_points(declarations)
            if not points:
                continue
            parts = [s.strip() for s in selectors.split(",")]
            names = [ICON_SELECTOR.fullmatch(p) for p in parts]
            if all(names):
                for match in names:
                    table.setdefault(match.group(1), set()).update(points)
            else:
                drawn |= points
    used = {name for text in sources for name in re.findall(r"\bfa-[a-z0-9-]+", text)}
    return drawn.union(*(table.get(name, set()) for name in used))


def subset_font(source: Path, target: Path, code_points: set[int]) -> None:
    """``target``: the font ``source`` with only the glyphs of ``code_points`` (same format)."""
    from fontTools import subset

    flavor = {".woff2": "woff2", ".woff": "woff"}.get(source.suffix)
    options = subset.Options(flavor=flavor, ignore_missing_unicodes=True)
    font = subset.load_font(str(source), options)
    subsetter = subset.Subsetter(options)
    subsetter.populate(unicodes=sorted(code_points))
    subsetter.subset(font)
    subset.save_font(font, str(target), options)


def _theme_file(app, relative: str) -> Path | None:
    """The theme's own copy of a file of its ``static`` folder (the site's copy may already be
    a subset from an earlier build)."""
    for folder in app.builder.theme.get_theme_dirs():
        path = Path(folder, "static", relative)
        if path.is_file():
            return path
    return None


def _icons(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    for name in (FONTAWESOME_JS, FONTAWESOME_JS + ".map", FONTAWESOME_JS + ".LICENSE.txt"):
        (out / name).unlink(missing_ok=True)  # no page loads it (templates/layout.html)
    static = out / "_static"
    stylesheets = [p.read_text(encoding="utf-8") for p in static.rglob("*.css")]
    sources = [p.read_text(encoding="utf-8") for p in out.glob("*.html")]
    sources += [p.read_text(encoding="utf-8") for p in static.rglob("*.js")]
    code_points = icon_code_points(stylesheets, sources)
    for target in sorted((out / FONT_FOLDER).glob("*")):
        source = _theme_file(app, target.relative_to(static).as_posix())
        if source is not None and target.suffix in (".woff2", ".woff", ".ttf"):
            subset_font(source, target, code_points)


def _math_renderer(app, config) -> None:
    config.html_math_renderer = "mathml"


def setup(app):
    app.add_html_math_renderer("mathml", (visit_math, None), (visit_math_block, None))
    app.connect("config-inited", _math_renderer)
    app.connect("config-inited", _templates)
    # after every extension that adds assets (cnnbook_calc, cnnbook_publish, ...)
    app.connect("html-page-context", _page_assets, priority=900)
    app.connect("doctree-resolved", _lazy_images)
    app.connect("build-finished", _icons)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
