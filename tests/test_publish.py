"""Publishing: the GitHub Actions workflows, the reader's buttons and the site's polish.

The workflow checks run offline: GitHub's workflow schema (check-jsonschema) and zizmor's security
audit. The site checks open the quick build of ``tests/test_book.py`` (the same session fixture,
so the book is built once) in headless Chromium, served over HTTP as GitHub Pages would serve it.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import re
import subprocess
import sys
import threading
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import jupytext
import nbformat
import pytest
import yaml
from bs4 import BeautifulSoup

from conftest import BOOK, CHROMIUM, build

ROOT = BOOK.parent
WORKFLOWS = ROOT / ".github" / "workflows"
BIN = Path(sys.executable).parent
CONFIG = yaml.safe_load((BOOK / "_config.yml").read_text())
REPO_URL, BRANCH = CONFIG["repository"]["url"], CONFIG["repository"]["branch"]
OWNER, NAME = urlsplit(REPO_URL).path.strip("/").split("/")

sys.path.insert(0, str(BOOK / "_ext"))  # the book's extensions, as Jupyter Book loads them
import cnnbook_publish as publish  # noqa: E402

# What the session's build names: GitHub's context when the tests run in Actions, else the config
BUILT_URL, BUILT_BRANCH, FROM_GITHUB = publish.repository(REPO_URL, BRANCH)
BUILT_OWNER, BUILT_NAME = publish.repository_parts(BUILT_URL)


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def steps_using(job: dict, action: str) -> list[dict]:
    return [s for s in job["steps"] if s.get("uses", "").split("@")[0] == action]


def chapters() -> list[str]:
    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    return [toc["root"]] + [c["file"] for part in toc["parts"] for c in part["chapters"]]


# --- workflows -------------------------------------------------------------------------------

def test_workflows_are_valid_against_githubs_schema():
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert [f.name for f in files] == ["checks.yml", "publish.yml"]
    result = subprocess.run([str(BIN / "check-jsonschema"), "--builtin-schema",
                             "vendor.github-workflows", *map(str, files)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_workflows_have_no_high_severity_zizmor_findings():
    result = subprocess.run([str(BIN / "zizmor"), "--offline", "--format", "json",
                             "--min-severity", "high", str(WORKFLOWS)],
                            capture_output=True, text=True)
    findings = json.loads(result.stdout)
    assert findings == [], json.dumps(findings, indent=1)[:3000]
    for file in WORKFLOWS.glob("*.yml"):  # every action pinned to a commit, tag in a comment
        for uses in re.findall(r"uses:\s*(\S+)", file.read_text()):
            assert re.fullmatch(r"actions/[\w-]+(/[\w-]+)?@[0-9a-f]{40}", uses), uses


def test_pull_requests_run_the_tests_and_upload_build_reports_and_screenshots():
    checks = workflow("checks.yml")
    assert set(checks[True]) == {"pull_request", "workflow_dispatch"}  # YAML reads `on` as True
    assert checks["permissions"] == {"contents": "read"}
    job = checks["jobs"]["tests"]
    assert job["env"]["CNNBOOK_PROFILE"] == "quick"
    assert steps_using(job, "actions/setup-python")[0]["with"]["cache"] == "pip"
    runs = [s.get("run", "") for s in job["steps"]]
    assert "python -m pip install -r requirements.txt" in runs
    assert any(r.startswith("pytest") for r in runs)  # includes the strict quick book build
    reports, screenshots = steps_using(job, "actions/upload-artifact")
    assert reports["if"] == "failure()" and "_build/html/reports" in reports["with"]["path"]
    # the browser tests' screenshots, on every run: where $CNNBOOK_ARTIFACTS puts them
    assert job["env"]["CNNBOOK_ARTIFACTS"] == "${{ github.workspace }}/screenshots"
    assert screenshots["if"] == "always()" and screenshots["with"]["path"].rstrip("/") == "screenshots"


def test_publish_builds_the_readme_command_with_the_full_profile_and_deploys_to_pages():
    pages = workflow("publish.yml")
    # every push triggers it; the build runs for the default branch only, read from GitHub's
    # context, so a fork publishes whatever its default branch is called, with no edit here
    assert pages[True]["push"] is None and "workflow_dispatch" in pages[True]
    assert "branches" not in (ROOT / ".github" / "workflows" / "publish.yml").read_text()
    assert pages["jobs"]["build"]["if"] == ("github.event_name == 'workflow_dispatch' || "
                                            "github.ref_name == github.event.repository.default_branch")
    assert pages["permissions"] == {}  # nothing by default; each job asks for what it needs
    assert pages["concurrency"]["group"] == "pages"
    build, deploy = pages["jobs"]["build"], pages["jobs"]["deploy"]
    assert build["permissions"] == {"contents": "read"}
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert deploy["environment"]["name"] == "github-pages"
    assert deploy["needs"] == "build" and steps_using(deploy, "actions/deploy-pages")
    assert 150 <= build["timeout-minutes"] <= 360  # a cold full CPU build, under GitHub's 6 h
    assert build["env"]["CNNBOOK_PROFILE"] == "full"

    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```bash\n(.*?)```", readme, re.S).group(1)
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == ["pip install -r requirements.txt", "jupyter-book build book/", "pytest"]
    order = [s.get("uses", "").split("@")[0] or s.get("run") for s in build["steps"]]
    assert "jupyter-book build book/" in order  # the README's build command, plus the profile
    assert order.index("jupyter-book build book/") < order.index("actions/upload-pages-artifact")
    assert steps_using(build, "actions/upload-pages-artifact")[0]["with"]["path"] == "book/_build/html"


def test_publish_keeps_what_a_failed_or_timed_out_build_trained():
    build = workflow("publish.yml")["jobs"]["build"]
    assert steps_using(build, "actions/setup-python")[0]["with"]["cache"] == "pip"
    download = steps_using(build, "actions/cache")  # the official archive never changes
    assert [s["with"]["path"] for s in download] == ["~/.keras/datasets"]
    assert build["env"]["CNNBOOK_CACHE"].endswith("/.cnnbook-cache")
    restores = {s["with"]["path"]: s for s in steps_using(build, "actions/cache/restore")}
    saves = {s["with"]["path"]: s for s in steps_using(build, "actions/cache/save")}
    assert set(restores) == set(saves) == {".cnnbook-cache", "book/_build/.jupyter_cache"}
    order = [s.get("run") or f'{s["with"]["path"]} {s["uses"].split("@")[0].split("/")[-1]}'
             for s in build["steps"] if s.get("run") or "path" in s.get("with", {})]
    for path, save in saves.items():
        restore = restores[path]
        assert save["if"] == "always()"  # saved whatever the build's outcome: partial runs too
        assert save["with"]["key"] == restore["with"]["key"]
        assert "github.run_id" in save["with"]["key"] and "run_attempt" in save["with"]["key"]
        prefix = restore["with"]["key"].split("${{")[0]
        assert restore["with"]["restore-keys"].split() == [prefix]  # the newest entry comes back
        assert (order.index(f"{path} restore") < order.index("jupyter-book build book/")
                < order.index(f"{path} save"))
    for file in WORKFLOWS.glob("*.yml"):  # Node 20 actions are retired: the pinned tags are newer
        for action, major in re.findall(r"uses:\s*actions/([\w/-]+)@[0-9a-f]{40} # v(\d+)",
                                        file.read_text()):
            assert int(major) >= {"cache": 5, "checkout": 5, "setup-python": 6,
                                  "upload-artifact": 6, "upload-pages-artifact": 4,
                                  "deploy-pages": 5}[action.split("/")[0]], (file.name, action)


# --- notebooks for Colab, Binder and the download button -------------------------------------

def launch_notebooks() -> dict[str, nbformat.NotebookNode]:
    names = [name for name in chapters() if publish.is_notebook(BOOK / f"{name}.md")]
    return {name: nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
            for name in names}


def test_committed_launch_notebooks_are_current():
    """Each notebook is what its chapter gives with the build values stored in it: a chapter
    edited since (new text, a new glued value, another cell) makes it stale."""
    folder = ROOT / "notebooks"
    names = [name for name in chapters() if publish.is_notebook(BOOK / f"{name}.md")]
    assert "references" in chapters() and "references" not in names  # a page, not a notebook
    assert len(names) == len(chapters()) - 1
    assert sorted(p.stem for p in folder.glob("*.ipynb")) == sorted(names)
    stale = ("run `jupyter-book build book/` (which writes them with the build's values) and "
             "commit notebooks/")
    for name in names:
        stored = publish.stored_build(folder / f"{name}.ipynb")
        try:
            expected = publish.chapter_notebook(BOOK / f"{name}.md", REPO_URL, BRANCH, stored)
        except publish.NoPlainForm as exc:
            pytest.fail(f"notebooks/{name}.ipynb is stale ({exc}): {stale}")
        assert (folder / f"{name}.ipynb").read_text() == expected, (
            f"notebooks/{name}.ipynb is stale: {stale}")
        if stored.get("glue"):  # the values say where they come from
            assert stored["profile"] in ("quick", "full")
            assert re.fullmatch(r"\d{4}-\d\d-\d\d", stored["executed"])


# The raw shapes of MyST-only syntax, written here independently of the publisher's own check.
MYST_ONLY = {
    "role": re.compile(r"\{[\w:+-]+\}`"),
    "label": re.compile(r"^\s*\(\S+\)=\s*$", re.M),
    "directive": re.compile(r"^\s*(```+|~~~+|:::+)\s*\{", re.M),
    "colon fence": re.compile(r"^\s*:::", re.M),
    "substitution": re.compile(r"\{\{"),
}


def test_a_stale_or_valueless_launch_notebook_is_refused(tmp_path):
    """A chapter edited after its notebook was written gives another text (the staleness test
    fails), one that glues a value the stored ones lack is refused, and without any build values
    nothing is written with MyST left in: the standalone command says to build."""
    book = tmp_path / "book"
    (book / "_static" / "bench").mkdir(parents=True)
    for name in ("_config.yml", "references.bib", "_static/bench/latest.json"):
        (book / name).write_text((BOOK / name).read_text())
    chapter = book / "conv_only.md"
    source = (BOOK / "conv_only.md").read_text()
    stored = publish.stored_build(ROOT / "notebooks" / "conv_only.ipynb")
    chapter.write_text(source)
    current = publish.chapter_notebook(chapter, REPO_URL, BRANCH, stored)
    assert current == (ROOT / "notebooks" / "conv_only.ipynb").read_text()
    chapter.write_text(source.replace("## Overview\n", "## Overview\n\nA new sentence.\n", 1))
    assert publish.chapter_notebook(chapter, REPO_URL, BRANCH, stored) != current
    glued = "## Overview\n\n{glue:text}`new_value`\n"
    chapter.write_text(source.replace("## Overview\n", glued, 1))
    with pytest.raises(publish.NoPlainForm, match=r"no value for the glued 'new_value': build"):
        publish.chapter_notebook(chapter, REPO_URL, BRANCH, stored)
    chapter.write_text(source)
    with pytest.raises(publish.NoPlainForm, match=r"build the book"):
        publish.chapter_notebook(chapter, REPO_URL, BRANCH, {})


def test_launch_notebooks_hold_no_myst_only_syntax():
    # the check finds every kind in a sample, and the chapters do use MyST: it has work to do
    sample = ("(a-label)=\n# T\n\nSee {ref}`a-label`, {glue:text}`x:,`.\n\n:::{note}\nA.\n:::\n\n"
              "```{raw} html\n<div></div>\n```\n\n% a comment\n\n{{ sub }}\n")
    found = publish.myst_constructs(sample)
    for kind in ("label", "role {ref}", "role {glue:text}", "directive {note}", "directive {raw}",
                 "myst_line_comment"):
        assert kind in found, (kind, found)
    assert [k for k, shape in MYST_ONLY.items() if shape.search(sample)] == list(MYST_ONLY)
    assert publish.myst_constructs("# Plain\n\nA `{code}` span, $x^2$, a | table |.\n") == []
    chapter = "\n".join(c.source for c in jupytext.read(BOOK / "conv_only.md").cells
                        if c.cell_type == "markdown")
    assert "label" in publish.myst_constructs(chapter)
    assert "role {glue:text}" in publish.myst_constructs(chapter)

    for name, notebook in launch_notebooks().items():
        for cell in notebook.cells:
            if cell.cell_type == "markdown":
                assert publish.myst_constructs(cell.source) == [], (name, cell.source[:500])
                assert not [k for k, shape in MYST_ONLY.items() if shape.search(cell.source)], (
                    name, cell.source[:500])
            else:
                assert not cell.get("outputs")


def test_launch_notebooks_write_in_the_builds_values_and_link_the_site():
    notebooks = launch_notebooks()
    site = publish.site_url(REPO_URL)
    text = {name: "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
            for name, nb in notebooks.items()}
    # {glue:text}`model_params:,`: the count with its thousands separator, as the book shows it
    assert "1,191,502" in text["conv_only"]
    assert notebooks["conv_only"].metadata["cnnbook"]["glue"]["model_params"] == {
        "text/plain": "1191502"}
    # a citation: (author, year) linking to the references page
    assert f"([Kingma and Ba, 2015]({site}references.html))" in text["conv_only"]
    # a calculator: a link to its section on the chapter's page
    assert f"]({site}conv_only.html#try-it-change-a-layer)" in text["conv_only"]
    assert f"]({site}i3_time.html#try-it-in-your-browser)" in text["i3_time"]
    # a file of the book: its address on the site
    assert f"]({site}_static/bench/latest.json)" in text["benchmarks"]
    # where the values come from, in a note under the profile cell
    note = notebooks["conv_only"].cells[2]
    stored = notebooks["conv_only"].metadata["cnnbook"]
    assert "cnnbook-values" in note.metadata["tags"]
    assert f"with the **{stored['profile']}** profile, executed {stored['executed']}" in note.source


def test_profile_cell_picks_quick_unless_told_and_gives_the_benchmarks_times():
    notebook = launch_notebooks()["conv_only"]
    cell = notebook.cells[1]
    assert cell.cell_type == "code" and "cnnbook-profile" in cell.metadata["tags"]
    code = compile(cell.source, "profile-cell", "exec")
    for before, after in ((None, "quick"), ("full", "full"), ("quick", "quick")):
        environ = {} if before is None else {"CNNBOOK_PROFILE": before}
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("os.environ", environ)
            exec(code, {"print": lambda *a: None})
        assert environ["CNNBOOK_PROFILE"] == after
    switch = [line for line in cell.source.splitlines() if "full" in line and "environ" in line]
    assert switch == [
        '# os.environ["CNNBOOK_PROFILE"] = "full"  # uncomment for the assignment\'s setup']
    # the full CPU time is the benchmark's own: 15 of its measured full-profile epochs
    results = json.loads((BOOK / "_static" / "bench" / "latest.json").read_text())
    epoch = results["training"]["models"]["conv"]["epoch_seconds"]["measured_book_f32"]
    assert f"#   full: about {15 * epoch / 3600:.1f} hours on a CPU like that one" in cell.source
    comment = " ".join(line[1:].strip() for line in cell.source.splitlines() if line[:1] == "#")
    assert f"benchmark ({results['machine']['cpu']}, {results['machine']['cores']} cores, " \
           f"{results['date'][:10]})" in comment
    # chapters that train nothing say so; those that train both models count both
    notebooks = launch_notebooks()
    assert "trains no model" in notebooks["alexnet"].cells[1].source
    assert publish.trained_models(notebooks["comparison"]) == ["conv", "pool"]
    assert publish.trained_models(notebooks["i3_time"]) == ["conv", "pool"]
    assert publish.trained_models(notebooks["conv_only"]) == ["conv"]


def test_install_cell_installs_the_package_with_its_ranges_from_this_repository():
    notebook = nbformat.read(ROOT / "notebooks" / "conv_only.ipynb", as_version=4)
    nbformat.validate(notebook)
    first = notebook.cells[0]
    assert first.cell_type == "code" and "cnnbook-install" in first.metadata["tags"]
    package = f"git+https://github.com/{OWNER}/{NAME}@{BRANCH}#subdirectory=code"
    assert f'"cnnbook[notebook] @ {package}"' in first.source
    installs = [line.strip() for line in first.source.splitlines() if "%pip" in line]
    assert len(installs) == 2 and not [line for line in installs if " -r " in line or "==" in line]
    # it is IPython that runs the %pip lines inside the `if` blocks: they must become Python
    from IPython.core.inputtransformer2 import TransformerManager

    python = TransformerManager().transform_cell(first.source)
    compile(python, "install-cell", "exec")
    assert python.count("get_ipython().run_line_magic('pip'") == 2
    # the ranges come from code/pyproject.toml: no exact pins there, and the extra exists
    project = tomllib.loads((ROOT / "code" / "pyproject.toml").read_text())["project"]
    for requirement in project["dependencies"] + project["optional-dependencies"]["notebook"]:
        assert "==" not in requirement, requirement
    # the other cells are the chapter's, without outputs
    body = [c for c in notebook.cells[1:] if c.cell_type == "code"]
    assert body and not any(c.outputs for c in body)
    assert "import cnnbook" in "\n".join(c.source for c in body)


def test_binder_installs_the_runtime_pins_and_the_package_only():
    binder = [line.split("#")[0].strip()
              for line in (ROOT / ".binder" / "requirements.txt").read_text().splitlines()]
    binder = [line for line in binder if line]
    pins = dict(line.split("==") for line in
                (line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text()
                 .splitlines()) if "==" in line)
    names = {line.split("==")[0] for line in binder if "==" in line}
    assert names == {"tensorflow-cpu", "keras", "numpy", "pandas", "pillow", "matplotlib",
                     "filelock", "ml_dtypes", "myst-nb"}
    for line in binder:
        if "==" in line:
            name, version = line.split("==")
            assert pins[name] == version, line  # the book's own pins
    assert binder[-1] == "-e ./code" and not [line for line in binder if line.startswith("-r")]
    for tool in ("pytest", "playwright", "zizmor", "jupyter-book", "check-jsonschema"):
        assert tool not in names


@pytest.mark.book
def test_a_launch_notebook_runs_top_to_bottom_with_the_quick_profile_by_default(built_book):
    """What Binder does, and Colab after the install cell: run notebooks/conv_only.ipynb as it
    is, with no profile set. It trains, so the default matters: quick loads the session build's
    quick run from the run cache (a full one would train for hours)."""
    from nbclient import NotebookClient

    _, env, _ = built_book
    env = {k: v for k, v in env.items() if k not in ("CNNBOOK_PROFILE", "CNNBOOK_MARKDOWN")}
    notebook = nbformat.read(ROOT / "notebooks" / "conv_only.ipynb", as_version=4)
    with pytest.MonkeyPatch.context() as patch:  # the kernel inherits this process's environment
        for name in ("CNNBOOK_PROFILE", "CNNBOOK_MARKDOWN"):
            patch.delenv(name, raising=False)
        for name, value in env.items():
            patch.setenv(name, value)
        NotebookClient(notebook, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()
    assert notebook.cells[0].outputs == []  # the package is there: the install cell did nothing
    assert notebook.cells[1].outputs[0]["text"] == "profile: quick\n"
    outputs = [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    assert outputs and not [o for o in outputs if o.output_type == "error"
                            or o.get("name") == "stderr"]
    shown = json.dumps([o.get("data", {}) for o in outputs])
    # the note renders in plain Jupyter: a block quote, not a MyST admonition
    assert "> **Quick preview.** These cells run with the **quick** profile" in shown
    assert ":::" not in shown
    assert "loaded from the run cache" in shown and "trained during this build" not in shown


def test_a_repository_url_that_is_not_on_github_is_refused_with_the_fix():
    with pytest.raises(ValueError, match=r"repository.url in book/_config.yml.*OWNER/NAME"):
        publish.repository_parts("https://gitlab.com/someone")


# --- the repository and the site's address ------------------------------------------------------

def test_the_repository_comes_from_githubs_context_in_actions_and_from_the_config_elsewhere():
    config = ("https://github.com/cnnbook/cifar10-cnn-book", "main")
    assert publish.repository(*config, environ={}) == (*config, False)
    actions = {"GITHUB_ACTIONS": "true", "GITHUB_SERVER_URL": "https://github.com",
               "GITHUB_REPOSITORY": "a-student/cnn-course", "GITHUB_REF": "refs/heads/trunk",
               "GITHUB_REF_NAME": "trunk"}
    assert publish.repository(*config, environ=actions) == (
        "https://github.com/a-student/cnn-course", "trunk", True)
    # a pull request's merge ref or a tag is no branch to open notebooks from
    for ref, name in (("refs/pull/7/merge", "7/merge"), ("refs/tags/v1", "v1")):
        assert publish.repository(*config, environ={**actions, "GITHUB_REF": ref,
                                                    "GITHUB_REF_NAME": name}) == (
            "https://github.com/a-student/cnn-course", "main", True)
    # not Actions, or another GitHub server (Enterprise): the configuration
    assert publish.repository(*config, environ={**actions, "GITHUB_ACTIONS": ""}) == (
        *config, False)
    assert publish.repository(*config, environ={**actions, "GITHUB_SERVER_URL":
                                                "https://git.example.org"}) == (*config, False)
    assert publish.site_url("https://github.com/a-student/cnn-course") == (
        "https://a-student.github.io/cnn-course/")
    assert publish.site_url("https://github.com/A-Student/a-student.github.io") == (
        "https://a-student.github.io/")


def test_a_fork_built_in_actions_publishes_its_own_addresses_and_plain_notebooks(tmp_path):
    """A tiny book built as GitHub Actions would build a fork: buttons, launch links, link
    previews and the notebooks' install cell name the fork, with no edit to _config.yml; the
    notebook has the glued value written in and its note as a block quote."""
    from test_book import cell, tiny_book

    body = ("(tiny-part)=\n## A part\n\n:::{note}\nThe answer is {glue:text}`answer:,`, "
            "see {ref}`tiny-part`.\n:::\n\n"
            + cell("from myst_nb import glue\nglue('answer', 1234567, display=False)"))
    book = tiny_book(tmp_path, {"index": body})
    env = dict(os.environ, GITHUB_ACTIONS="true", GITHUB_SERVER_URL="https://github.com",
               GITHUB_REPOSITORY="a-student/cnn-course", GITHUB_REF="refs/heads/trunk",
               GITHUB_REF_NAME="trunk")
    result = build(book, env)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    soup = BeautifulSoup((book / "_build" / "html" / "index.html").read_text(), "html.parser")
    buttons = links(soup)
    assert buttons["Repository"] == "https://github.com/a-student/cnn-course"
    assert buttons["Colab"] == ("https://colab.research.google.com/github/a-student/cnn-course"
                                "/blob/trunk/notebooks/index.ipynb")
    assert buttons["Binder"].startswith("https://mybinder.org/v2/gh/a-student/cnn-course/trunk?")
    assert soup.select_one('meta[property="og:url"]')["content"] == (
        "https://a-student.github.io/cnn-course/index.html")
    assert not soup.select(".cnnbook-address")  # the published build: no "local build" line
    notebook = nbformat.read(tmp_path / "notebooks" / "index.ipynb", as_version=4)
    assert "git+https://github.com/a-student/cnn-course@trunk#subdirectory=code" in (
        notebook.cells[0].source)
    text = "\n".join(c.source for c in notebook.cells if c.cell_type == "markdown")
    assert "> **Note.**" in text and "The answer is 1,234,567, see [" in text
    assert "](https://a-student.github.io/cnn-course/index.html#" in text
    assert not publish.myst_constructs(text)
    assert notebook.metadata["cnnbook"]["glue"] == {"answer": {"text/plain": "1234567"}}


# --- the built site in Chromium ---------------------------------------------------------------

@pytest.fixture(scope="module")
def site(built_book):
    """The quick build's HTML served on localhost, as GitHub Pages serves it."""
    book, _, _ = built_book
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    handler = functools.partial(Quiet, directory=str(book / "_build" / "html"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield book, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "no Chromium or Chrome found: install one, or set $CHROMIUM to its path"
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url)
    page.wait_for_load_state("networkidle")
    return page, errors


def links(soup: BeautifulSoup) -> dict[str, str]:
    """The header buttons: their visible text -> href."""
    return {a.get_text(" ", strip=True): a["href"]
            for a in soup.select(".article-header-buttons a[href]")}


@pytest.mark.book
def test_buttons_point_at_the_repository_colab_binder_and_downloads(site, browser):
    book, base = site
    page, errors = open_page(browser, f"{base}/conv_only.html")
    soup = BeautifulSoup(page.content(), "html.parser")
    buttons = links(soup)
    assert set(buttons) == {"Repository", "Suggest edit", "Open issue", "Colab", "Binder",
                            ".ipynb", ".md", "Book (.pdf)"}, buttons  # PDF: test_pages.py
    assert buttons["Repository"] == BUILT_URL
    assert buttons["Open issue"].startswith(f"{BUILT_URL}/issues/new")
    assert buttons["Suggest edit"] == f"{BUILT_URL}/edit/{BUILT_BRANCH}/book/conv_only.md"

    notebook = "notebooks/conv_only.ipynb"
    assert buttons["Colab"] == (f"https://colab.research.google.com/github/{BUILT_OWNER}/"
                                f"{BUILT_NAME}/blob/{BUILT_BRANCH}/{notebook}")
    assert (ROOT / notebook).is_file()  # the Colab link's path exists in this repository
    binder = buttons["Binder"]
    assert binder == (f"https://mybinder.org/v2/gh/{BUILT_OWNER}/{BUILT_NAME}/{BUILT_BRANCH}"
                      f"?urlpath=lab/tree/{notebook}")
    assert nbformat.reads((book.parent / notebook).read_text(), as_version=4).cells  # built too

    # the download buttons return the files: the executed notebook and the MyST source
    ipynb = page.request.get(f"{base}/{buttons['.ipynb'].lstrip('./')}")
    assert ipynb.status == 200
    downloaded = nbformat.reads(ipynb.text(), as_version=4)
    assert "cnnbook-install" in downloaded.cells[0].metadata["tags"]
    outputs = json.dumps([c.get("outputs", []) for c in downloaded.cells])
    assert "1,191,502" in outputs  # executed: the model summary is in it
    assert "cnnbook package and settings" not in ipynb.text()  # no build-cache comment
    md = page.request.get(f"{base}/{buttons['.md'].lstrip('./')}")
    assert md.status == 200 and "```{code-cell}" in md.text()
    assert md.text() == (book / "conv_only.md").read_text()
    assert not errors, errors
    page.close()


@pytest.mark.book
def test_launch_notebooks_links_to_the_site_land_on_a_page_and_an_anchor(site):
    """Every link a launch notebook makes into the book (calculators, cross-references,
    citations, files) names a file of the built site and, with a #fragment, an id on that page."""
    book, _ = site
    html, prefix = book / "_build" / "html", publish.site_url(REPO_URL)
    pages: dict[str, BeautifulSoup] = {}
    checked = 0
    for name, notebook in launch_notebooks().items():
        for cell in notebook.cells:
            for url in re.findall(r"\]\((https://[^)\s]+)\)", cell.source if cell.cell_type ==
                                  "markdown" else ""):
                if not url.startswith(prefix) or url == prefix:
                    continue
                path, _, fragment = url.removeprefix(prefix).partition("#")
                assert (html / path).is_file(), (name, url)
                if fragment:
                    soup = pages.setdefault(path, BeautifulSoup((html / path).read_text(),
                                                                "html.parser"))
                    assert soup.find(id=fragment), (name, url)
                checked += 1
    assert checked >= 20


@pytest.mark.book
def test_site_has_logo_favicon_link_preview_numbering_and_built_with_line(site, browser):
    _, base = site
    page, errors = open_page(browser, f"{base}/conv_only.html")
    soup = BeautifulSoup(page.content(), "html.parser")
    icon = soup.select_one('link[rel="icon"]')
    assert icon and page.request.get(f"{base}/{icon['href']}").status == 200
    logo = soup.select_one("img.logo__image")
    assert logo and logo.get("alt") and page.request.get(f"{base}/{logo['src']}").status == 200
    description = soup.select_one('meta[name="description"]')["content"]
    assert soup.select_one('meta[property="og:description"]')["content"] == description
    assert "convolution" in description.lower() and 40 < len(description) <= 205
    assert soup.select_one('meta[property="og:site_name"]')["content"] == CONFIG["title"]
    site = publish.site_url(BUILT_URL)
    assert soup.select_one('meta[property="og:url"]')["content"] == f"{site}conv_only.html"
    nav = [a.get_text(" ", strip=True) for a in soup.select("nav.bd-links a")]
    assert any(re.match(r"^2\. ", text) for text in nav), nav  # chapters are numbered
    footer = soup.select_one(".cnnbook-built-with").get_text(" ", strip=True)
    assert re.fullmatch(r"Last built \d{4}-\d\d-\d\d with profile quick on .+, \d+ cores, .+\.",
                        footer), footer
    # a local build says so, and where the site will be once published; the one in Actions
    # (GitHub's context) is the published one
    address = soup.select_one(".cnnbook-address")
    if FROM_GITHUB:
        assert address is None
    else:
        assert address.get_text(" ", strip=True) == (
            f"A local build. Published with GitHub Pages from {BUILT_URL.removeprefix('https://')} "
            f"( repository.url in book/_config.yml ), the book will be at {site}.")
        assert address.select_one("a")["href"] == BUILT_URL
    assert not errors, errors
    page.close()


@pytest.mark.book
def test_the_site_root_redirects_to_the_first_chapter_with_title_and_favicon(site, browser):
    book, base = site
    soup = BeautifulSoup((book / "_build" / "html" / "index.html").read_text(), "html.parser")
    assert soup.title.get_text() == CONFIG["title"]
    icon = soup.select_one('link[rel="icon"]')  # no request for /favicon.ico (a 404), and none
    logo = (BOOK / CONFIG["html"]["favicon"]).read_bytes()  # the redirect would cancel
    assert icon and icon["href"] == "data:image/svg+xml;base64," + base64.b64encode(logo).decode()
    refresh = soup.select_one('meta[http-equiv="Refresh"]')["content"]
    first = yaml.safe_load((BOOK / "_toc.yml").read_text())["root"] + ".html"
    assert refresh == f"0; url={first}" and soup.select_one("body a")["href"] == first
    # in a browser the root lands on the first chapter (that index.html loads with no console
    # error, failed request or HTTP error is test_browser.py's every-page test)
    page, errors = open_page(browser, f"{base}/")
    page.wait_for_url(f"{base}/{first}")
    assert not errors, errors
    page.close()


@pytest.mark.book
def test_search_finds_the_chapters(site, browser):
    _, base = site
    page, errors = open_page(browser, f"{base}/search.html?q=pooling")
    page.wait_for_selector("#search-results ul.search li", timeout=30_000)
    found = {a["href"].split("?")[0].split("#")[0]
             for a in BeautifulSoup(page.content(), "html.parser").select("#search-results a")}
    assert "max_pooling.html" in found, found
    assert not errors, errors
    page.close()
