"""Publishing rules for the book: notebooks that run in Colab and Binder, download links that
return a notebook ready to run, link-preview descriptions and a "last built with" footer.

* Notebooks: every chapter is a MyST Markdown notebook, which Colab cannot open (the theme's Colab
  link points at the ``.md`` file, jupyter-book #752). At the end of each build this extension
  writes ``notebooks/<chapter>.ipynb`` in the repository (``cnnbook_notebooks``, relative to the
  book), a jupytext conversion of the chapter with an install cell in front. Commit that folder
  with the chapter: the Colab and Binder buttons open those files, and ``tests/test_publish.py``
  fails when one is missing or stale. ``python book/_ext/cnnbook_publish.py`` writes them without
  building the book.
* Install cell: it installs the helper package from the repository with the compatible ranges of
  ``code/pyproject.toml`` (not the exact pins of ``requirements.txt``, which break in Colab's own,
  moving environment), and only when the package is missing, so in a clone it does nothing.
* Downloads: the theme's ".ipynb" download is the executed notebook (outputs included); the same
  install cell is put in front of it.
* Front door: ``index.html`` redirects to the first chapter, like the one sphinx-external-toc
  writes, but with the book's title and its favicon inlined, so a browser opening the site's root
  asks for no ``/favicon.ico`` (a 404 in the console) and no icon file (a request the redirect
  would cancel), and a reader without automatic redirects gets a link.
* Repository: ``repository.url`` and ``repository.branch`` in ``_config.yml`` are the only place
  the repository is named; the install cell, the launch links and the site URL for link previews
  (``https://<owner>.github.io/<name>/`` unless ``ogp_site_url`` is set) are derived from them.
"""

from __future__ import annotations

import base64
import html
import mimetypes
import posixpath
import sys
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

import jupytext
import nbformat
from cnnbook_build import MARK as SOURCE_MARK  # the cache comment it writes into import cells

INSTALL_TAG = "cnnbook-install"
INSTALL_CELL = '''\
# Colab, Binder or a fresh Jupyter: install the book's helper package when it is missing.
# It comes from the book's repository with the version ranges of code/pyproject.toml, so it fits
# the TensorFlow that is already installed (Colab has one); in a clone of the repository that was
# set up with `pip install -r requirements.txt`, this cell does nothing.
import importlib.util

if importlib.util.find_spec("tensorflow") is None:
    %pip install --quiet "tensorflow>=2.16"
if importlib.util.find_spec("cnnbook") is None:
    %pip install --quiet "cnnbook[notebook] @ {package}"'''


def repository_parts(url: str) -> tuple[str, str]:
    """``("owner", "name")`` of a ``https://github.com/owner/name`` URL, with a clear error."""
    parts = urlsplit(url)
    path = parts.path.strip("/").removesuffix(".git").split("/")
    if parts.netloc != "github.com" or len(path) != 2 or not all(path):
        raise ValueError(f"repository.url in book/_config.yml must look like "
                         f"https://github.com/OWNER/NAME, not {url!r}: set it to your fork.")
    return path[0], path[1]


def package_url(repo_url: str, branch: str) -> str:
    """The pip requirement URL of the helper package (``code/``) on a branch of the repository."""
    owner, name = repository_parts(repo_url)
    return f"git+https://github.com/{owner}/{name}@{branch}#subdirectory=code"


def install_cell(repo_url: str, branch: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(INSTALL_CELL.format(package=package_url(repo_url, branch)))
    cell.metadata["tags"] = [INSTALL_TAG]
    cell.id = "install"
    return cell


def with_install_cell(notebook: nbformat.NotebookNode, repo_url: str, branch: str):
    """The notebook with the install cell in front (replacing an earlier one) and without the
    build's cache comment in its import cells."""
    cells = [c for c in notebook.cells if INSTALL_TAG not in c.get("metadata", {}).get("tags", [])]
    for cell in cells:
        if cell.cell_type == "code" and SOURCE_MARK in cell.source:
            cell.source = "\n".join(line for line in cell.source.splitlines()
                                    if not line.startswith(SOURCE_MARK))
    notebook.cells = [install_cell(repo_url, branch)] + cells
    return notebook


def chapter_notebook(chapter: Path, repo_url: str, branch: str) -> str:
    """The ``.ipynb`` text for a MyST Markdown chapter: its cells, no outputs, the install cell
    first and stable cell ids, so the same chapter always gives the same file."""
    notebook = jupytext.read(chapter)
    for i, cell in enumerate(notebook.cells):
        cell.id = f"cell-{i:03d}"
    notebook.metadata.pop("jupytext", None)  # a plain notebook, not paired with a text file
    notebook.metadata["language_info"] = {"name": "python"}
    with_install_cell(notebook, repo_url, branch)
    nbformat.validate(notebook)
    return nbformat.writes(notebook) + "\n"


def is_notebook(source: Path) -> bool:
    """A MyST Markdown chapter with a kernel, i.e. one that myst-nb executes."""
    return source.suffix == ".md" and "kernelspec" in jupytext.read(source).metadata


def write_notebooks(chapters: list[Path], folder: Path, repo_url: str, branch: str) -> list[Path]:
    """Write ``folder/<chapter>.ipynb`` for each chapter (only files whose text changes)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for chapter in chapters:
        target = folder / f"{chapter.stem}.ipynb"
        text = chapter_notebook(chapter, repo_url, branch)
        if not target.exists() or target.read_text() != text:
            target.write_text(text)
        written.append(target)
    return written


def built_with() -> str:
    """``"Last built 2026-11-25 with profile quick on Intel Xeon ..., 2 cores, no GPU."``"""
    from cnnbook.train import get_profile, hardware  # the same description the chapters print

    hw = hardware()
    gpus = ", ".join(hw["gpus"]) or "no GPU"
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    return (f"Last built {day} with profile {get_profile().name} on {hw['cpu']}, "
            f"{hw['cores']} cores, {gpus}.")


# --- Sphinx ------------------------------------------------------------------------------------

def _repository(config) -> tuple[str, str]:
    options = config.html_theme_options
    return options.get("repository_url", ""), options.get("repository_branch", "main")


def _config_inited(app, config) -> None:
    repo_url, _ = _repository(config)
    owner, name = repository_parts(repo_url)
    if not config.ogp_site_url:
        config.ogp_site_url = f"https://{owner}.github.io/{name}/"
    if config.ogp_site_name is None:
        config.ogp_site_name = config.html_title  # the book's title from _config.yml
    options = config.html_theme_options
    line = f'<p class="cnnbook-built-with">{built_with()}</p>'
    options["extra_footer"] = (options.get("extra_footer") or "") + line


def _launch_links(app, pagename, templatename, context, doctree) -> None:
    """Point the Colab and Binder buttons at ``notebooks/<page>.ipynb`` in the repository."""
    folder = app.config.cnnbook_notebooks
    if not folder:
        return
    repo_url, branch = _repository(app.config)
    owner, name = repository_parts(repo_url)
    book = app.config.html_theme_options.get("path_to_docs", "")  # repository.path_to_book
    path = posixpath.normpath(posixpath.join(book, folder, f"{pagename}.ipynb"))
    colab = app.config.html_theme_options.get("launch_buttons", {}).get("colab_url", "")
    for group in context.get("header_buttons", []):
        if group.get("label") != "launch-buttons":
            continue
        for button in group.get("buttons", []):
            if button.get("text") == "Colab":
                button["url"] = f"{colab.rstrip('/')}/github/{owner}/{name}/blob/{branch}/{path}"
            elif button.get("text") == "Binder":
                button["url"] = button["url"].split("?urlpath=")[0] + f"?urlpath=lab/tree/{path}"


def _unique_scripts(app, pagename, templatename, context, doctree) -> None:
    """Drop repeated inline scripts: sphinx-thebe adds its ``const THEBE_JS_URL = ...`` line
    twice in a Jupyter Book build, and the second one stops the page's JavaScript with
    "Identifier 'THEBE_JS_URL' has already been declared"."""
    seen, unique = set(), []
    for script in context.get("script_files", []):
        attributes = getattr(script, "attributes", {})
        key = (getattr(script, "filename", script) or "", tuple(sorted(attributes.items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def _chapters(app) -> list[Path]:
    sources = [Path(app.env.doc2path(doc)) for doc in sorted(app.env.found_docs)]
    return [source for source in sources if is_notebook(source)]


def _build_finished(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    repo_url, branch = _repository(app.config)
    if app.config.cnnbook_notebooks:
        folder = (Path(app.confdir) / app.config.cnnbook_notebooks).resolve()
        write_notebooks(_chapters(app), folder, repo_url, branch)
    # the theme's ".ipynb" download: the executed notebook, with the install cell in front
    for path in Path(app.outdir, "_sources").glob("**/*.ipynb"):
        notebook = _with_outputs(app, nbformat.read(path, as_version=4))
        path.write_text(nbformat.writes(with_install_cell(notebook, repo_url, branch)) + "\n")


INDEX_PAGE = """<!DOCTYPE html>
<html lang="{lang}">
<head>
<meta charset="utf-8" />
<title>{title}</title>
{icon}<meta http-equiv="Refresh" content="0; url={target}" />
</head>
<body><p><a href="{target}">{title}</a></p></body>
</html>
"""


def _favicon_href(app) -> str:
    """The favicon for the redirect page, inlined as a data: URL when it is a local file: the page
    navigates away at once, which would cancel a request for it (a failed request in the console)."""
    favicon = app.config.html_favicon
    path = Path(app.confdir, favicon)
    if "://" in favicon or not path.is_file():
        return favicon
    kind = mimetypes.guess_type(path.name)[0] or "image/x-icon"
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


def _write_index(app, exception) -> None:
    """The site's front door (see the module's docstring). Runs before sphinx-external-toc's
    handler, which then leaves the file alone."""
    if exception is not None or app.builder.format != "html" or app.config.root_doc == "index":
        return
    icon = ""
    if app.config.html_favicon:
        icon = f'<link rel="icon" href="{html.escape(_favicon_href(app))}" />\n'
    Path(app.outdir, "index.html").write_text(INDEX_PAGE.format(
        lang=html.escape(app.config.language or "en"), title=html.escape(app.config.html_title),
        icon=icon, target=html.escape(app.builder.get_target_uri(app.config.root_doc))),
        encoding="utf8")


def _with_outputs(app, notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook with the outputs of its execution. When a page comes from myst-nb's
    execution cache, the notebook it writes for the download has none: take them from the cache
    (the notebook still holds the cache comment of cnnbook_build, so it matches its entry)."""
    config = app.env.mystnb_config
    if config.execution_mode != "cache" or not config.execution_cache_path:
        return notebook
    from jupyter_cache import get_cache

    try:
        return get_cache(config.execution_cache_path).merge_match_into_notebook(notebook)[1]
    except KeyError:  # never executed (a page without code): nothing to merge
        return notebook


def setup(app):
    app.add_config_value("cnnbook_notebooks", "", "html")  # folder for the launch notebooks
    app.setup_extension("sphinxext.opengraph")
    app.connect("config-inited", _config_inited)
    app.connect("html-page-context", _launch_links, priority=600)  # after the theme's (501)
    app.connect("html-page-context", _unique_scripts)
    app.connect("build-finished", _build_finished)
    app.connect("build-finished", _write_index, priority=400)  # before sphinx-external-toc's
    return {"parallel_read_safe": True, "parallel_write_safe": True}


def main(argv: list[str]) -> int:
    """``python book/_ext/cnnbook_publish.py``: write the launch notebooks without a build."""
    import yaml

    book = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((book / "_config.yml").read_text())
    repo = config["repository"]
    folder = book / config["sphinx"]["config"]["cnnbook_notebooks"]
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    names = [toc["root"]] + [c["file"] for part in toc.get("parts", [toc])
                             for c in part.get("chapters", [])]
    chapters = [book / f"{name}.md" for name in names if is_notebook(book / f"{name}.md")]
    for path in write_notebooks(chapters, folder.resolve(), repo["url"], repo["branch"]):
        print(path.relative_to(book.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
