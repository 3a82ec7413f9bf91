"""The explorer: the book's two trained models run in the reader's browser (TensorFlow.js).

A chapter places it with a directive without options::

    ```{cnnbook-explorer}
    ```

It renders a skip link past the explorer and ``<div class="cnnbook-explorer">``, which
``explorer.js`` turns into the explorer; inside it, for a reader without JavaScript, a note that
the explorer needs JavaScript and that the chapter's figures (drawn at build time) show the same
feature maps.

Two sets of files, both served from the built site and nothing from elsewhere:

* the explorer's own (``book/_ext/static/explorer-app``, served as ``_static/explorer-app``):
  explorer.js and explorer.css, loaded only on the pages with the directive, and TensorFlow.js
  (``vendor/tfjs/tf.min.js``, pinned, with its licence and a note of version and sha256), which
  explorer.js loads only when the reader first uses the explorer;
* the models' export (``_static/explorer``: manifest.json, the weights, 100 sample images),
  written at the end of every build that has an explorer page by
  :func:`cnnbook.explore.export` from the runs the model chapters trained (same profile, data
  source and run cache), never committed. explorer.js fetches them on first use, next to
  TensorFlow.js. An export that fails fails the build with its message.

A book without the directive gets neither (the tests build tiny books).
"""

from __future__ import annotations

from pathlib import Path

from docutils import nodes
from sphinx.util.docutils import SphinxDirective

EXPORT = "explorer"  # _static/explorer: cnnbook.explore.export's files
SCRIPT = "explorer-app/explorer.js"
STYLE = "explorer-app/explorer.css"
PAGES = "cnnbook_explorer_pages"  # the environment's set of pages with the directive
STATIC = Path(__file__).parent / "static"  # holds explorer-app/: served as _static/explorer-app


class ExplorerDirective(SphinxDirective):
    """``{cnnbook-explorer}``: the place of the explorer on the page (no options)."""

    has_content = False

    def run(self):
        after = f"cnnbook-explorer-after-{self.env.new_serialno('cnnbook-explorer')}"
        markup = (
            '<div class="cnnbook-explorer-place">'
            f'<a class="cnnbook-explorer__skip" href="#{after}">Skip past the explorer</a>'
            '<div class="cnnbook-explorer" data-state="idle">'
            '<p class="cnnbook-explorer__fallback">The explorer runs the two trained models in '
            "your browser with JavaScript, which is off or has not loaded here. The figures of "
            "this chapter, drawn when the book was built, show the same first-layer filters and "
            "feature maps for a few test images.</p></div>"
            f'<span id="{after}" class="cnnbook-explorer__after" tabindex="-1"></span></div>')
        pages = getattr(self.env, PAGES, None)
        if pages is None:
            pages = set()
            setattr(self.env, PAGES, pages)
        pages.add(self.env.docname)
        return [nodes.raw("", markup, format="html")]


def _purge(app, env, docname):
    getattr(env, PAGES, set()).discard(docname)


def _merge(app, env, docnames, other):
    setattr(env, PAGES, getattr(env, PAGES, set()) | (getattr(other, PAGES, set()) & set(docnames)))


def _page_files(app, pagename, templatename, context, doctree):
    """explorer.js and explorer.css, on the pages with an explorer only."""
    if pagename in getattr(app.env, PAGES, set()):
        app.add_css_file(STYLE)
        app.add_js_file(SCRIPT, defer="defer")


def _export(app, exception) -> None:
    """The models' files into ``_static/explorer``, when some page has an explorer."""
    if exception is not None or app.builder.format != "html" or not getattr(app.env, PAGES, None):
        return
    from cnnbook import explore

    explore.export(Path(app.outdir) / "_static" / EXPORT)  # an error fails the build, its message shown


def _paths(app, config):
    if str(STATIC) not in map(str, config.html_static_path):  # cnnbook_calc adds it too
        config.html_static_path.append(str(STATIC))


def setup(app):
    app.add_directive("cnnbook-explorer", ExplorerDirective)
    app.connect("config-inited", _paths)
    app.connect("env-purge-doc", _purge)
    app.connect("env-merge-info", _merge)
    app.connect("html-page-context", _page_files, priority=400)  # before cnnbook_pages (900)
    app.connect("build-finished", _export)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "env_version": 1}
