"""Publishing rules for the book: notebooks that run and render in Colab, Binder and any Jupyter,
download links that return a notebook ready to run, the repository and the site's address,
link-preview descriptions and a "last built with" footer.

* Launch notebooks: every chapter is a MyST Markdown notebook, which Colab cannot open (the
  theme's Colab link points at the ``.md`` file, jupyter-book #752), and whose MyST-only syntax
  (roles, labels, directives, ``:::`` admonitions) plain Jupyter shows as literal text. At the end
  of each build this extension writes ``notebooks/<chapter>.ipynb`` in the repository
  (``cnnbook_notebooks``, relative to the book): the chapter's cells in plain Markdown, with

  - an install cell and a profile cell in front (``quick`` unless ``$CNNBOOK_PROFILE`` says
    otherwise, with the expected time of both profiles from the committed benchmark results);
  - the glued values written in as this build computed them (``{glue:text}`` with its format),
    cross-references as links to the site, citations as (author, year) linking to the site's
    references, admonitions as block quotes, a calculator or the explorer as a link to it on the
    site, labels and comments dropped. A construct without a plain-Markdown form fails the build.

  The values come from the build (``jupyter_execute/<page>.glue.json`` and Sphinx's references):
  they are kept in the notebook's metadata (``cnnbook``), with the profile and the date of the
  execution, so ``tests/test_publish.py`` regenerates the same text from the chapter and those
  values and fails when a notebook is missing or stale. ``python book/_ext/cnnbook_publish.py``
  rewrites them without a build, reusing the values stored in them; it refuses when a chapter
  needs a value they do not hold. Commit the folder with the chapters.
* Install cell: it installs the helper package from the repository with the compatible ranges of
  ``code/pyproject.toml`` (not the exact pins of ``requirements.txt``, which break in Colab's own,
  moving environment), and only when the package is missing, so in a clone it does nothing.
* Notes printed by cells: the build sets ``$CNNBOOK_MARKDOWN`` to the Markdown flavour that renders
  cell outputs (``nb_render_markdown_format``, ``myst`` here), so ``cnnbook.report.preview_note``
  prints an admonition in the book and a plain block quote in any other Jupyter.
* Downloads: the theme's ".ipynb" download is the executed notebook (outputs included); the same
  install cell is put in front of it.
* Front door: ``index.html`` redirects to the first chapter, like the one sphinx-external-toc
  writes, but with the book's title and its favicon inlined, so a browser opening the site's root
  asks for no ``/favicon.ico`` (a 404 in the console) and no icon file (a request the redirect
  would cancel), and a reader without automatic redirects gets a link.
* Repository and address: in GitHub Actions the repository is GitHub's own context
  (``$GITHUB_REPOSITORY``, and the branch ``$GITHUB_REF_NAME`` when a branch was pushed), so a fork
  publishes with its own buttons, launch links and address without editing anything. Elsewhere
  (a local build) ``repository.url`` and ``repository.branch`` of ``_config.yml`` are the default,
  and the footer says the build is local and what the address will be once published. The site's
  address is ``https://OWNER.github.io/NAME/`` (``https://OWNER.github.io/`` for a repository named
  ``OWNER.github.io``) unless ``ogp_site_url`` is set.
"""

from __future__ import annotations

import ast
import base64
import html
import json
import mimetypes
import os
import posixpath
import re
import statistics
import sys
import textwrap
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

import jupytext
import nbformat
from cnnbook_build import MARK as SOURCE_MARK  # the cache comment it writes into import cells

INSTALL_TAG = "cnnbook-install"
PROFILE_TAG = "cnnbook-profile"
NOTE_TAG = "cnnbook-values"
MARKDOWN_ENV = "CNNBOOK_MARKDOWN"  # read by cnnbook.report.preview_note
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


# --- the repository and the site's address ------------------------------------------------------

def repository_parts(url: str) -> tuple[str, str]:
    """``("owner", "name")`` of a ``https://github.com/owner/name`` URL, with a clear error."""
    parts = urlsplit(url)
    path = parts.path.strip("/").removesuffix(".git").split("/")
    if parts.netloc != "github.com" or len(path) != 2 or not all(path):
        raise ValueError(f"repository.url in book/_config.yml must look like "
                         f"https://github.com/OWNER/NAME, not {url!r}: set it to your fork.")
    return path[0], path[1]


def repository(config_url: str, config_branch: str, environ=os.environ) -> tuple[str, str, bool]:
    """``(url, branch, from_github)``: the repository being built and its branch.

    In GitHub Actions (``$GITHUB_ACTIONS``) on github.com, GitHub's context names them: the
    repository the workflow runs in, and the pushed branch (a pull request's merge ref or a tag is
    no branch to open notebooks from: then the configured branch). Elsewhere: ``_config.yml``."""
    server = environ.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    slug = environ.get("GITHUB_REPOSITORY", "")
    if (environ.get("GITHUB_ACTIONS") != "true" or server != "https://github.com"
            or slug.count("/") != 1):
        return config_url, config_branch, False
    ref, name = environ.get("GITHUB_REF", ""), environ.get("GITHUB_REF_NAME", "")
    branch = name if ref.startswith("refs/heads/") and name else config_branch
    return f"{server}/{slug}", branch, True


def site_url(repo_url: str) -> str:
    """The GitHub Pages address of a repository: ``https://owner.github.io/name/``, or
    ``https://owner.github.io/`` for the repository called ``owner.github.io``."""
    owner, name = repository_parts(repo_url)
    host = f"{owner.lower()}.github.io"
    return f"https://{host}/" if name.lower() == host else f"https://{host}/{name}/"


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


# --- MyST to plain Markdown -------------------------------------------------------------------

@lru_cache(maxsize=4)
def _parser(extensions: tuple[str, ...]):
    from markdown_it.renderer import RendererHTML
    from myst_parser.config.main import MdParserConfig
    from myst_parser.parsers.mdit import create_md_parser

    return create_md_parser(MdParserConfig(enable_extensions=set(extensions)), RendererHTML)


BOOK_EXTENSIONS = ("colon_fence", "dollarmath", "amsmath", "substitution")  # parse: in _config.yml
_ROLE_NAME = re.compile(r"\{([a-zA-Z0-9_\-+:]+)\}")  # myst-parser's own role-name pattern
# What the strict check looks for besides the parser: the raw shapes of MyST-only syntax.
MYST_SHAPES = {
    "label": re.compile(r"^\s*\([^()\s]+\)=\s*$", re.M),
    "directive fence": re.compile(r"^\s*(`{3,}|~{3,}|:{3,})\s*\{", re.M),
    "colon fence": re.compile(r"^\s*:{3,}", re.M),
    "substitution": re.compile(r"\{\{.*?\}\}"),
}


def myst_constructs(text: str, extensions=BOOK_EXTENSIONS) -> list[str]:
    """The MyST-only constructs in a Markdown text, as MyST's parser and the raw shapes find them:
    ``["role {glue:text}", "label", "directive {raw}", ...]``; empty for plain Markdown."""
    found = []
    for token in _parser(tuple(sorted(extensions))).parse(text):
        for t in [token, *(token.children or [])]:
            if t.type == "myst_role":
                found.append(f"role {{{t.meta.get('name')}}}")
            elif t.type == "myst_target":
                found.append("label")
            elif t.type in ("colon_fence", "fence") and t.info.strip().startswith("{"):
                found.append(f"directive {t.info.split()[0]}")
            elif t.type == "colon_fence":
                found.append("colon fence")
            elif t.type in ("myst_line_comment", "myst_block_break", "front_matter",
                            "substitution_inline", "substitution_block", "myst_role_error"):
                found.append(t.type)
    code = re.compile(r"^(`{3,}|~{3,})(?!\s*\{).*?^\1", re.M | re.S)  # plain code blocks
    prose = code.sub("", text)
    found += ["role"] * len(list(_scan_roles(prose)))  # a role shape outside code spans
    for name, shape in MYST_SHAPES.items():
        if name != "role":
            found += [name] * len(shape.findall(prose))
    return found


def _scan_roles(text: str):
    """``(start, end, name, content)`` of each role, scanned the way myst-parser's inline rule
    does (before code spans: a code span is skipped whole, a role inside it is no role)."""
    i = 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        match = _ROLE_NAME.match(text, i) if text[i] == "{" else None
        if match and text.startswith("`", match.end()):
            ticks = len(text[match.end():]) - len(text[match.end():].lstrip("`"))
            start = match.end() + ticks
            close = text.find("`" * ticks, start + 1)
            if close != -1:
                yield i, close + ticks, match.group(1), text[start:close].replace("\n", " ")
                i = close + ticks
                continue
        if text[i] == "`":
            ticks = len(text[i:]) - len(text[i:].lstrip("`"))
            close = re.compile(rf"(?<!`)`{{{ticks}}}(?!`)").search(text, i + ticks)
            i = close.end() if close else i + ticks
            continue
        i += 1


class NoPlainForm(ValueError):
    """A MyST construct that the launch notebooks have no plain-Markdown form for."""


ADMONITIONS = {"note": "Note", "warning": "Warning", "tip": "Tip", "important": "Important",
               "hint": "Hint", "caution": "Caution", "attention": "Attention",
               "danger": "Danger", "error": "Error", "seealso": "See also"}
CODE_ROLES = {"func", "mod", "class", "meth", "attr", "obj", "data", "exc", "code", "literal",
              "samp", "file", "command", "envvar", "program"}


class Converter:
    """Turns one chapter's MyST Markdown cells into plain Markdown (CommonMark, tables and
    ``$`` maths, which Jupyter renders), with the build's values written in.

    ``values``: ``{"glue": {key: {mime: data}}, "references": {"role:target": {"text", "uri"}}}``
    as stored in the notebook's metadata; ``site``: the site's address; ``page``: the chapter's
    docname."""

    def __init__(self, book: Path, page: str, site: str, values: dict,
                 extensions=BOOK_EXTENSIONS):
        self.book, self.page, self.site, self.values = book, page, site, values
        self.extensions = tuple(sorted(extensions))
        self.section = ""  # the anchor of the last heading seen: where a calculator sits
        self.headings: list[tuple[int, str]] = []
        self.used_glue: set[str] = set()
        self.used_references: set[str] = set()

    # -- helpers
    def url(self, target: str) -> str:
        """A link inside the book (``other.md#x``, ``_static/file``) as an address on the site."""
        path, _, anchor = target.partition("#")
        if path.endswith((".md", ".ipynb")):
            path = path.rsplit(".", 1)[0] + ".html"
        path = path or f"{self.page}.html"
        return self.site + path.lstrip("./") + (f"#{anchor}" if anchor else "")

    def glue(self, key: str) -> dict:
        if "::" in key:
            raise NoPlainForm(f"glue from another page ({key!r})")
        data = self.values.get("glue", {}).get(key)
        if data is None:
            raise NoPlainForm(f"no value for the glued {key!r}: build the book "
                              "(jupyter-book build book/), which writes the launch notebooks")
        self.used_glue.add(key)
        return data

    def reference(self, role: str, target: str) -> dict:
        key = f"{role}:{target}"
        found = self.values.get("references", {}).get(key)
        if found is None:
            raise NoPlainForm(f"the {{{role}}} reference {target!r} is not resolved: build the "
                              "book (jupyter-book build book/), which writes the launch notebooks")
        self.used_references.add(key)
        return found

    # -- roles
    def role(self, name: str, content: str) -> str:
        from myst_nb.core.variables import format_plain_text

        if name == "glue:text":
            key, _, spec = content.rpartition(":") if ":" in content else ("", "", "")
            key, spec = (key, spec) if key else (content, "s")
            data = self.glue(key).get("text/plain")
            if data is None:
                raise NoPlainForm(f"{{glue:text}} {key!r} has no text/plain value")
            return format_plain_text(data, spec).replace("*", r"\*").replace("_", r"\_")
        if name in ("glue:md", "glue", "glue:any"):
            key = content.rsplit(":", 1)[0] if name == "glue:md" else content
            data = self.glue(key)
            if "text/markdown" in data:
                return data["text/markdown"].strip()
            if name != "glue:md" and "text/plain" in data:
                return format_plain_text(data["text/plain"], "")
            raise NoPlainForm(f"{{{name}}} {key!r} has no Markdown or text value")
        if name.startswith("cite"):
            return self.cite(name, content)
        if name in ("ref", "numref", "doc", "eq"):
            explicit = re.fullmatch(r"(.*?)\s*<([^<>]+)>", content, re.S)
            text, target = explicit.groups() if explicit else (None, content.strip())
            found = self.reference(name, target)
            return f"[{text or found['text']}]({self.site}{found['uri']})"
        if name in CODE_ROLES or name.startswith("py:"):
            return f"`{content.lstrip('~!')}`"
        if name == "math":
            return f"${content}$"
        if name in ("sub", "sup", "kbd"):
            return f"<{name}>{html.escape(content)}</{name}>"
        if name == "abbr":
            m = re.fullmatch(r"(.*?)\s*\((.*)\)", content)
            return f"{m.group(1)} ({m.group(2)})" if m else content
        raise NoPlainForm(f"the role {{{name}}}")

    def cite(self, name: str, content: str) -> str:
        keys = [k.strip() for k in content.split(",") if k.strip()]
        entries = _bibliography(self.book)
        parts = []
        for key in keys:
            if key not in entries:
                raise NoPlainForm(f"the citation {key!r} is not in the bibliography")
            authors, year = entries[key]
            text = f"{authors}, {year}" if name != "cite:t" else f"{authors} ({year})"
            parts.append(f"[{text}]({self.site}references.html)")
        return "; ".join(parts) if name == "cite:t" else f"({'; '.join(parts)})"

    def roles(self, text: str) -> str:
        """Every role outside code blocks and maths, replaced (one pass: a glued Markdown value
        that itself holds MyST is converted by the next pass of :meth:`cell`)."""
        protected = self.protected_lines(text)
        lines = text.split("\n")
        out, chunk = [], []

        def flush():
            block = "\n".join(chunk)
            pieces, last = [], 0
            for start, end, name, content in _scan_roles(block):
                pieces += [block[last:start], self.role(name, content)]
                last = end
            out.append("".join(pieces) + block[last:])
            chunk.clear()

        for n, line in enumerate(lines):
            if n in protected:
                if chunk:
                    flush()
                out.append(line)
            else:
                chunk.append(line)
        if chunk:
            flush()
        return "\n".join(out)

    def tokens(self, text: str):
        return _parser(self.extensions).parse(text)

    def protected_lines(self, text: str) -> set[int]:
        lines = set()
        for t in self.tokens(text):
            if t.map and t.type in ("fence", "code_block", "math_block", "math_block_label",
                                    "amsmath", "html_block") and not t.info.startswith("{"):
                lines.update(range(*t.map))
        return lines

    # -- blocks
    def block(self, token) -> list[str] | None:
        """The plain lines for a block construct (None: keep the lines as they are)."""
        if token.type in ("myst_target", "myst_line_comment"):
            return []
        if token.type == "heading_open":
            return None
        directive = token.info.strip()
        if token.type not in ("fence", "colon_fence") or not directive.startswith("{"):
            if token.type == "colon_fence":
                raise NoPlainForm("a ::: fence without a directive")
            return None
        name, _, argument = directive[1:].partition("}")
        name, argument = name.strip(), argument.strip()
        body, options = token.content.split("\n"), {}
        while body and re.match(r"^:[\w-]+:", body[0]):  # the directive's options
            key, _, value = body.pop(0)[1:].partition(":")
            options[key] = value.strip()
        body = "\n".join(body).strip("\n")
        if name == "cnnbook-calculator":  # book/_ext/cnnbook_calc.py
            return self.calculator(options, token.map[0])
        if name == "cnnbook-explorer":  # book/_ext/cnnbook_explorer.py
            return self.explorer(token.map[0])
        if name == "raw" and "cnnbook-calc" in body:  # the same, written as its HTML
            from bs4 import BeautifulSoup

            div = BeautifulSoup(body, "html.parser").select_one(".cnnbook-calc")
            return self.calculator({k.removeprefix("data-"): v for k, v in div.attrs.items()},
                                   token.map[0])
        if name in ADMONITIONS or name == "admonition":
            title = argument if name == "admonition" else ADMONITIONS[name]
            inner = self.cell(body) if body else ""
            quoted = [f"> **{title}.**", ">"] + [f"> {line}".rstrip() for line in inner.split("\n")]
            return quoted
        if name == "math":
            return ["$$", body, "$$"]
        if name in ("code-block", "code", "sourcecode"):
            return [f"```{argument}", body, "```"]
        raise NoPlainForm(f"the directive {{{name}}}")

    def section_link(self, line: int) -> str:
        """The address on the site of the chapter's section that holds ``line``."""
        section = next((anchor for start, anchor in reversed(self.headings) if start < line),
                       self.section)
        return f"{self.site}{self.page}.html" + (f"#{section}" if section else "")

    def calculator(self, options: dict, line: int) -> list[str]:
        """A link to the calculator on the chapter's page (the section it is in)."""
        widget, preset = options.get("widget", ""), options.get("preset", "")
        what = {"model": "the layer calculator (shapes, parameters, MACs and memory per layer)",
                "time": "the training-time calculator"}.get(widget, "the calculator")
        link = self.section_link(line)
        lines = [f"> **Calculator.** On the book's site this place holds {what}, preset "
                 f"`{preset}`, which runs in your browser: [open it on this chapter's page]"
                 f"({link})."]
        if widget == "model":
            lines += [">", f"> In this notebook, `cnnbook.calc.analyze(cnnbook.calc.presets()"
                           f"[\"{preset}\"]).table` computes the same table."]
        return lines

    def explorer(self, line: int) -> list[str]:
        """A link to the explorer on the chapter's page (the section it is in)."""
        return [f"> **Explorer.** On the book's site this place holds the explorer, which runs "
                f"both trained models in your browser on a test image or your own, layer by "
                f"layer: [open it on this chapter's page]({self.section_link(line)})."]

    def links(self, text: str) -> str:
        """Links and images to files of the book, as addresses on the site."""
        targets = set()
        for token in self.tokens(text):
            for child in token.children or []:
                href = child.attrs.get("href") or child.attrs.get("src")
                if href and not re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", str(href)):
                    targets.add(str(href))
        for href in sorted(targets, key=len, reverse=True):
            text = text.replace(f"]({href})", f"]({self.url(href)})")
        return text

    def cell(self, text: str) -> str:
        """One Markdown cell (or an admonition's body) in plain Markdown."""
        for _ in range(4):  # glued Markdown can itself hold MyST: convert until none is left
            text = self.roles(text)
            lines = text.split("\n")
            self.headings = headings(self.tokens(text))
            for token in reversed(self.tokens(text)):
                if not token.map:
                    continue
                replaced = self.block(token)
                if replaced is not None:
                    start, end = token.map
                    indent = re.match(r"\s*", lines[start]).group(0)
                    lines[start:end] = [indent + line if line else line for line in replaced]
            text = "\n".join(lines)
            text = re.sub(r"\n{3,}", "\n\n", text).strip("\n")
            if not myst_constructs(text, self.extensions):
                return self.links(text)
        raise NoPlainForm(f"{', '.join(myst_constructs(text, self.extensions))}")

    def notebook_cells(self, notebook) -> None:
        for cell in notebook.cells:
            if cell.cell_type != "markdown":
                continue
            try:
                cell.source = self.cell(cell.source)
            except NoPlainForm as exc:
                raise NoPlainForm(f"{self.page}.md: {exc} has no plain-Markdown form for the "
                                  "launch notebooks (see book/_ext/cnnbook_publish.py)") from None
            found = headings(self.tokens(cell.source))
            self.section = found[-1][1] if found else self.section


def headings(tokens) -> list[tuple[int, str]]:
    """``(line, anchor)`` of each heading: the section ids Sphinx gives them (docutils' make_id
    of the title's text)."""
    from docutils.nodes import make_id

    found = []
    for before, token in zip(tokens, tokens[1:]):
        if before.type == "heading_open" and token.type == "inline":
            title = "".join(c.content for c in token.children or []
                            if c.type in ("text", "code_inline", "math_inline"))
            found.append((before.map[0], make_id(title)))
    return found


@lru_cache(maxsize=4)
def _bibliography_of(path: Path, mtime: float) -> dict[str, tuple[str, str]]:
    import pybtex.database

    entries = {}
    for key, entry in pybtex.database.parse_file(str(path)).entries.items():
        names = [" ".join(p.last_names).replace("{", "").replace("}", "")
                 for p in entry.persons.get("author", [])]
        authors = (names[0] if len(names) == 1 else " and ".join(names) if len(names) == 2
                   else f"{names[0]} et al." if names else key)
        entries[key] = (authors, entry.fields.get("year", "n.d."))
    return entries


def _bibliography(book: Path) -> dict[str, tuple[str, str]]:
    """``key: (authors, year)`` of the book's bibliography, as its author_year citations show them
    (``Krizhevsky et al., 2012``; ``n.d.`` without a year)."""
    files = [book / "references.bib"]
    return {key: value for f in files if f.is_file()
            for key, value in _bibliography_of(f, f.stat().st_mtime).items()}


# --- the profile cell: quick by default, the expected times from the benchmark --------------------

def trained_models(notebook) -> list[str]:
    """The models a chapter trains when its run cache is empty: the model names written in the
    code cells that call ``cnnbook.train.train``."""
    from cnnbook.models import MODELS

    found = []
    for cell in notebook.cells:
        if cell.cell_type != "code" or "train.train(" not in cell.source:
            continue
        try:
            tree = ast.parse("\n".join(line for line in cell.source.splitlines()
                                       if not line.lstrip().startswith(("%", "!"))))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and node.value in MODELS and node.value not in found:
                found.append(node.value)
    return found


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"about {max(10, round(seconds, -1)):.0f} seconds"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60):.0f} minutes"
    return f"about {seconds / 3600:.1f} hours"


@lru_cache(maxsize=1)
def _presets() -> dict:
    from cnnbook import calc

    return calc.presets()  # builds the Keras models: once


def expected_times(book: Path, models: list[str]) -> dict:
    """Expected training seconds of ``models`` for each profile, on the benchmark's CPU and on a
    GPU: the committed benchmark's float32 epochs (``_static/bench/latest.json``) and the
    assignment's own Colab GPU epochs, each scaled by the FLOPs of an epoch of the profile
    (``cnnbook.bench.epoch_flops``)."""
    from cnnbook import data, report
    from cnnbook.bench import epoch_flops
    from cnnbook.train import PROFILES

    results = json.loads((book / "_static" / "bench" / "latest.json").read_text())
    training, machine = results["training"], results["machine"]
    gpus = ", ".join(machine["gpus"])

    def flops(model, profile):
        n_train = 10 * (profile.train_per_class or data.TRAIN_PER_CLASS)
        n_test = 10 * (profile.test_per_class or data.TEST_PER_CLASS)
        return epoch_flops(_presets()[model], n_train, n_test)["epoch"]

    full = PROFILES["full"]
    times = {}
    for name, profile in PROFILES.items():
        cpu = gpu = 0.0
        for model in models:
            bench = training["models"][model]
            per_flop = bench["paths"]["book_f32"]["median_seconds"] / bench["flops"]["epoch"]
            cpu += profile.epochs * flops(model, profile) * per_flop
            colab = report.ASSIGNMENT[model]["epoch_seconds"]  # GPU: the assignment's Colab run
            steady = statistics.median(colab)
            share = flops(model, profile) / flops(model, full)  # of a full epoch's work
            gpu += (colab[0] - steady) + profile.epochs * steady * share  # + the first's set-up
        times[name] = {"cpu": cpu, "gpu": gpu, "description": profile.description}
    return {"times": times, "cpu": f"{machine['cpu']}, {machine['cores']} cores"
                                   + (f", {gpus}" if gpus else ""),
            "date": results["date"][:10], "busy": results["busy"]}


def profile_cell(book: Path, notebook) -> nbformat.NotebookNode:
    """``CNNBOOK_PROFILE`` set to ``quick`` unless already set, one line to switch to ``full``,
    and how long each takes for this chapter."""
    from cnnbook import report
    from cnnbook.models import TITLES
    from cnnbook.train import PROFILES

    models = trained_models(notebook)
    order = sorted(PROFILES, key=lambda name: name != "quick")  # the default first
    lines = ["# Profile: how much data and how many epochs a training run uses."]
    for name in order:
        lines.append(f"#   {name}: {PROFILES[name].description}")
    if models:
        # A model's times need its benchmark figures and the assignment's Colab run (the GPU).
        bench = json.loads((book / "_static" / "bench" / "latest.json").read_text())
        timed = [m for m in models
                 if m in bench["training"]["models"] and m in report.ASSIGNMENT]
        untimed = [m for m in models if m not in timed]
        what = " and ".join(TITLES.get(m, m) for m in models)
        text = (f"This chapter trains {what} ({', '.join(models)}), unless the run cache "
                f"(~/.cache/cnnbook) already holds them.")
        if timed:
            est = expected_times(book, timed)
            text += (f" Expected training time of {', '.join(timed)}, from the book's benchmark "
                     f"({est['cpu']}, {est['date']}) and the assignment's Colab GPU run:")
        lines += textwrap.wrap(text, width=96, initial_indent="# ", subsequent_indent="# ")
        for name in order if timed else ():
            t = est["times"][name]
            lines.append(f"#   {name}: {_duration(t['cpu'])} on a CPU like that one, "
                         f"{_duration(t['gpu'])} on a GPU")
        if untimed:
            lines += textwrap.wrap(
                f"The benchmark has not measured {', '.join(untimed)}: no estimate for "
                f"{'them' if len(untimed) > 1 else 'it'}; the chapter's provenance table "
                "shows how long its own build took.", width=96, initial_indent="# ",
                subsequent_indent="# ")
        lines.append("# (plus the CIFAR-10 download, 170 MB, the first time).")
    else:
        lines.append("# This chapter trains no model: the profile only sets which images it uses.")
    lines += ["import os", "",
              'os.environ.setdefault("CNNBOOK_PROFILE", "quick")',
              '# os.environ["CNNBOOK_PROFILE"] = "full"  # uncomment for the assignment\'s setup',
              'print("profile:", os.environ["CNNBOOK_PROFILE"])']
    cell = nbformat.v4.new_code_cell("\n".join(lines))
    cell.metadata["tags"] = [PROFILE_TAG]
    cell.id = "profile"
    return cell


def values_note(site: str, title: str, build: dict) -> nbformat.NotebookNode:
    text = (f"> **This notebook** is a chapter of [*{title}*]({site}), where it reads best. "
            "Run the cells from the top: the first installs what is missing, the second picks "
            "the profile.")
    if build.get("glue"):
        text += (f" The numbers written into the text come from the book's build with the "
                 f"**{build['profile']}** profile, executed {build['executed']}; the cells "
                 "compute your own, which differ with the profile, the data and the hardware.")
    cell = nbformat.v4.new_markdown_cell(text)
    cell.metadata["tags"] = [NOTE_TAG]
    cell.id = "values"
    return cell


# --- the launch notebooks -----------------------------------------------------------------------

def chapter_notebook(chapter: Path, repo_url: str, branch: str, build: dict) -> str:
    """The ``.ipynb`` text of the launch notebook for a MyST Markdown chapter: its cells in plain
    Markdown with the build's values written in (``build``: ``profile``, ``executed``, ``glue``,
    ``references``; see :class:`Converter`), no outputs, the install and profile cells first and
    stable cell ids, so the same chapter and values always give the same file."""
    import yaml

    book = chapter.parent
    config = yaml.safe_load((book / "_config.yml").read_text())
    extensions = config.get("parse", {}).get("myst_enable_extensions", BOOK_EXTENSIONS)
    notebook = jupytext.read(chapter)
    for i, cell in enumerate(notebook.cells):
        cell.id = f"cell-{i:03d}"
    notebook.metadata.pop("jupytext", None)  # a plain notebook, not paired with a text file
    notebook.metadata["language_info"] = {"name": "python"}
    site = site_url(repo_url)
    converter = Converter(book, chapter.stem, site, build, extensions)
    converter.notebook_cells(notebook)
    notebook.metadata["cnnbook"] = {  # what the text was made from: the staleness test reuses it
        "profile": build.get("profile"), "executed": build.get("executed"),
        "glue": {k: build["glue"][k] for k in sorted(converter.used_glue)},
        "references": {k: build["references"][k] for k in sorted(converter.used_references)}}
    with_install_cell(notebook, repo_url, branch)
    notebook.cells[1:1] = [profile_cell(book, notebook),
                           values_note(site, config.get("title", ""), notebook.metadata["cnnbook"])]
    nbformat.validate(notebook)
    return nbformat.writes(notebook) + "\n"


def stored_build(path: Path) -> dict:
    """The build values kept in a launch notebook (empty when there is none)."""
    if not path.is_file():
        return {}
    return dict(nbformat.read(path, as_version=4).metadata.get("cnnbook", {}))


def is_notebook(source: Path) -> bool:
    """A MyST Markdown chapter with a kernel, i.e. one that myst-nb executes."""
    return source.suffix == ".md" and "kernelspec" in jupytext.read(source).metadata


def write_notebooks(chapters: list[Path], folder: Path, repo_url: str, branch: str,
                    builds: dict[str, dict]) -> list[Path]:
    """Write ``folder/<chapter>.ipynb`` for each chapter (only files whose text changes)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for chapter in chapters:
        target = folder / f"{chapter.stem}.ipynb"
        text = chapter_notebook(chapter, repo_url, branch, builds.get(chapter.stem, {}))
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


def address_line(repo_url: str, site: str, from_github: bool) -> str:
    """The footer's line about the site's address: none when GitHub's context named the
    repository (the build that publishes); for a local build, that it is one and where the site
    will be once published."""
    if from_github:
        return ""
    return (f'<p class="cnnbook-address">A local build. Published with GitHub Pages from '
            f'<a href="{html.escape(repo_url)}">{html.escape(repo_url.removeprefix("https://"))}'
            '</a> (<code>repository.url</code> in <code>book/_config.yml</code>), the book will '
            f'be at {html.escape(site)}.</p>')


# --- Sphinx ------------------------------------------------------------------------------------

def _repository(config) -> tuple[str, str]:
    options = config.html_theme_options
    return options.get("repository_url", ""), options.get("repository_branch", "main")


def _config_inited(app, config) -> None:
    options = config.html_theme_options
    repo_url, branch, from_github = repository(*_repository(config))
    options["repository_url"], options["repository_branch"] = repo_url, branch
    site = site_url(repo_url)
    if not config.ogp_site_url:
        config.ogp_site_url = site
    if config.ogp_site_name is None:
        config.ogp_site_name = config.html_title  # the book's title from _config.yml
    line = f'<p class="cnnbook-built-with">{built_with()}</p>'
    line += address_line(repo_url, config.ogp_site_url, from_github)
    options["extra_footer"] = (options.get("extra_footer") or "") + line
    # the kernels that execute the chapters inherit it: cnnbook.report prints MyST notes only
    # where MyST renders them
    os.environ[MARKDOWN_ENV] = getattr(config, "nb_render_markdown_format", "commonmark")


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


def _resolve(app, docname: str, role: str, target: str) -> dict | None:
    """What Sphinx makes of a cross-reference on a page: its text and its address on the site."""
    from docutils import nodes
    from sphinx import addnodes

    domain = app.env.get_domain("math" if role == "eq" else "std")
    node = addnodes.pending_xref("", refdomain=domain.name, reftype=role, reftarget=target,
                                 refexplicit=False, refwarn=False, refdoc=docname)
    reference = domain.resolve_xref(app.env, docname, app.builder, role, target, node,
                                    nodes.inline(target, target))
    if reference is None:
        return None
    uri = reference.get("refuri") or f"#{reference.get('refid', '')}"
    if uri.startswith("#"):
        uri = app.builder.get_target_uri(docname) + uri
    else:
        uri = posixpath.normpath(posixpath.join(posixpath.dirname(docname), uri))
    return {"text": reference.astext(), "uri": uri}


def _build_values(app, docname: str, source: Path) -> dict:
    """The values a chapter's launch notebook writes in: the glued outputs of its execution,
    its resolved cross-references, the profile and the day it was executed."""
    from cnnbook.train import get_profile
    from myst_nb.sphinx_ import NbMetadataCollector

    glue_file = Path(app.outdir).parent / "jupyter_execute" / f"{docname}.glue.json"
    glue = {}
    if glue_file.is_file():
        glue = {key: {m: v for m, v in output["data"].items()
                      if m in ("text/plain", "text/markdown")}
                for key, output in json.loads(glue_file.read_text()).items()}
    executed = NbMetadataCollector.get_exec_data(app.env, docname)
    day = datetime.fromtimestamp(executed["mtime"] if executed else datetime.now().timestamp(),
                                 timezone.utc).strftime("%Y-%m-%d")
    references = {}
    for cell in jupytext.read(source).cells:
        if cell.cell_type != "markdown":
            continue
        for _, _, role, content in _scan_roles(cell.source):
            if role in ("ref", "numref", "doc", "eq"):
                explicit = re.fullmatch(r"(.*?)\s*<([^<>]+)>", content, re.S)
                target = explicit.group(2) if explicit else content.strip()
                found = _resolve(app, docname, role, target)
                if found:
                    references[f"{role}:{target}"] = found
    return {"profile": get_profile().name, "executed": day, "glue": glue,
            "references": references}


def _build_finished(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    repo_url, branch = _repository(app.config)
    chapters = _chapters(app)
    builds = {source.stem: _build_values(app, app.env.path2doc(str(source)), source)
              for source in chapters}
    if app.config.cnnbook_notebooks:
        folder = (Path(app.confdir) / app.config.cnnbook_notebooks).resolve()
        for chapter in chapters:
            try:
                write_notebooks([chapter], folder, repo_url, branch, builds)
            except NoPlainForm as exc:
                logger.warning(str(exc), type="cnnbook", subtype="notebooks")
    # the theme's ".ipynb" download: the executed notebook, with the install cell in front, its
    # text in plain Markdown like the launch notebooks'
    site = site_url(repo_url)
    for path in Path(app.outdir, "_sources").glob("**/*.ipynb"):
        notebook = _with_outputs(app, nbformat.read(path, as_version=4))
        docname = path.relative_to(Path(app.outdir, "_sources")).with_suffix("").as_posix()
        docname = docname.removesuffix(".md").removesuffix(".ipynb")
        try:
            plain_markdown(notebook, Path(app.srcdir), docname, site, builds.get(docname, {}))
        except NoPlainForm as exc:
            logger.warning(f"{path.name}: {exc}", type="cnnbook", subtype="notebooks")
        path.write_text(nbformat.writes(with_install_cell(notebook, repo_url, branch)) + "\n")


def plain_markdown(notebook, book: Path, docname: str, site: str, build: dict) -> None:
    """The executed notebook's Markdown cells and Markdown outputs in plain Markdown."""
    converter = Converter(book, docname, site, build)
    converter.notebook_cells(notebook)
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if "text/markdown" in output.get("data", {}):
                output["data"]["text/markdown"] = converter.cell(output["data"]["text/markdown"])


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
    """``python book/_ext/cnnbook_publish.py``: rewrite the launch notebooks without a build, from
    the chapters and the build values kept in the notebooks (the repository of ``_config.yml``, or
    GitHub's context in Actions)."""
    import yaml

    book = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((book / "_config.yml").read_text())
    repo_url, branch, _ = repository(config["repository"]["url"], config["repository"]["branch"])
    folder = (book / config["sphinx"]["config"]["cnnbook_notebooks"]).resolve()
    toc = yaml.safe_load((book / "_toc.yml").read_text())
    names = [toc["root"]] + [c["file"] for part in toc.get("parts", [toc])
                             for c in part.get("chapters", [])]
    chapters = [book / f"{name}.md" for name in names if is_notebook(book / f"{name}.md")]
    status = 0
    for chapter in chapters:
        build = stored_build(folder / f"{chapter.stem}.ipynb")
        try:
            for path in write_notebooks([chapter], folder, repo_url, branch, {chapter.stem: build}):
                print(path.relative_to(book.parent))
        except NoPlainForm as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
