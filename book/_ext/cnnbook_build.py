"""Build rules for the book: every warning fails the build, and a change to the cnnbook package
re-executes the chapters that import it.

* Strict: Jupyter Book 1 only prints Sphinx warnings and exits 0. This extension turns on Sphinx's
  ``keep_going`` mode, which reports every warning and then ends the build with exit status 1,
  exactly like ``jupyter-book build -W --keep-going``, but for the command as typed.
* Order: chapters execute in table-of-contents order (Sphinx reads them alphabetically).
* Cache: myst-nb's execution cache hashes only the code cells, so an edit to the helper package,
  or another profile or data source, would be served stale outputs (MyST-NB #299). The
  package's sha256 and the values of ``CNNBOOK_PROFILE`` and ``CNNBOOK_DATA`` are stored as a
  config value (a change makes Sphinx re-read every page) and written as a comment into the code
  cell that imports ``cnnbook`` (a change makes jupyter-cache miss, so that page executes
  again). Pages that do not import the package keep their cached outputs.
* Data files: a code-cell line ``# results file: <path>`` (relative to the book folder) makes the
  page depend on that file: Sphinx re-reads the page when the file changes, and the file's sha256
  is written into the line, so jupyter-cache executes the page again (the benchmarks appendix
  reads the committed benchmark results this way).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path

MARK = "# cnnbook package and settings: "
_IMPORT = re.compile(r"^((?:import|from) cnnbook\b.*)$", re.MULTILINE)
_DATA_FILE = re.compile(r"^# results file: (\S+)$", re.MULTILINE)
# Environment variables that change what the chapters compute (see cnnbook.train and .data).
SETTINGS = {"CNNBOOK_PROFILE": "full", "CNNBOOK_DATA": "keras"}


def package_digest(folders) -> str:
    """sha256 over the names and bytes of every Python file in the given folders."""
    digest = hashlib.sha256()
    for folder in map(Path, folders):
        for path in sorted(folder.rglob("*.py")):
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _config_inited(app, config) -> None:
    folders = config.cnnbook_watch
    if not folders:
        spec = importlib.util.find_spec("cnnbook")
        folders = [Path(spec.origin).parent] if spec and spec.origin else []
    settings = " ".join(f"{name}={(os.environ.get(name) or default).strip()}"
                        for name, default in SETTINGS.items())
    config.cnnbook_package_digest = f"{package_digest(folders)} {settings}"


def _source_read(app, docname, source) -> None:
    digest = app.config.cnnbook_package_digest
    source[0] = _IMPORT.sub(lambda m: f"{MARK}{digest}\n{m.group(1)}", source[0], count=1)

    def data_file(match):
        path = Path(app.srcdir) / match.group(1)
        app.env.note_dependency(str(path))  # a change to the file makes Sphinx re-read the page
        sha = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else "missing"
        return f"{match.group(0)} (sha256 {sha})"

    source[0] = _DATA_FILE.sub(data_file, source[0])


def _toc_order(app, env, docnames) -> None:
    """Read (and so execute) the chapters in table-of-contents order, not alphabetically, so a
    model is trained in the chapter that teaches it and later chapters load it from the cache."""
    site_map = getattr(app.config, "external_site_map", None)
    if site_map is None:
        return
    order: list[str] = []

    def visit(name):
        if name in site_map and name not in order:
            order.append(name)
            for subtree in site_map[name].subtrees:
                for item in subtree.items:
                    if isinstance(item, str):
                        visit(item)

    visit(site_map.root.docname)
    docnames.sort(key=lambda d: order.index(d) if d in order else len(order))


def setup(app):
    app.keep_going = True  # report all warnings, then exit 1 (sphinx-build -W --keep-going)
    app.add_config_value("cnnbook_watch", [], "env")  # folders to hash; default: the package
    app.add_config_value("cnnbook_package_digest", "", "env")
    app.connect("config-inited", _config_inited)
    app.connect("source-read", _source_read)
    app.connect("env-before-read-docs", _toc_order)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
