"""The rendered site (``make docs``, tools/build_site.py): every notebook page shows all its
figures and its Binder link, the explorers are pictures with a sentence, every internal
link and anchor of the site resolves, and a rebuild executes nothing.

The build executes the seven notebooks in fast mode (cached in build/site-notebooks/, which
the browser test of the site shares), about 1.5 minutes on 2 idle cores.
"""

import base64
import os
import re
import subprocess
import sys
import tomllib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nbformat
import pytest
from nbclient.exceptions import CellTimeoutError

from tool_scripts import load_tool

ROOT = Path(__file__).resolve().parents[2]
build_site = load_tool("build_site")
EXPLORERS = set(build_site.WIDGET_SENTENCES)


class Page(HTMLParser):
    """The links, image sources and element ids of one HTML page."""

    def __init__(self, text: str):
        super().__init__()
        self.refs: list[str] = []
        self.images: list[str] = []
        self.ids: set[str] = set()
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "a" and attrs.get("href"):
            self.refs.append(attrs["href"])
        if tag in ("img", "script") and attrs.get("src"):
            (self.images if tag == "img" else self.refs).append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.refs.append(attrs["href"])


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site_dir = tmp_path_factory.mktemp("site") / "site"
    done = subprocess.run([sys.executable, str(ROOT / "tools" / "build_site.py"), "--site_dir", str(site_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    return site_dir


def _png_outputs(notebook) -> list[str]:
    return [o["data"]["image/png"] for cell in notebook.cells for o in cell.get("outputs", [])
            if "image/png" in o.get("data", {})]


@pytest.mark.parametrize("path", build_site.NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_page_shows_every_figure_and_links_to_binder(site, path):
    html = (site / "notebooks" / f"{path.stem}.html").read_text()
    page = Page(html)
    executed = nbformat.read(build_site.PAGES / path.name, as_version=4)
    figures = _png_outputs(executed)
    assert figures, f"{path.name} drew no figure"
    shown = [src.removeprefix("data:image/png;base64,") for src in page.images if src.startswith("data:image/png")]
    assert len(shown) == len(figures), f"{path.name}: {len(figures)} figures, {len(shown)} shown"
    for src in shown:
        assert base64.b64decode(src).startswith(b"\x89PNG"), "an image on the page is not a PNG"
    assert build_site.notebook_binder_link(path) in page.refs
    assert "Traceback (most recent call last)" not in html
    assert "widget-view+json" not in html and "Error displaying widget" not in html
    notes = re.findall(r'class="nngk-static-widget"', html)
    # notebook 2 has two explorers: the playground and the trainable playground
    assert len(notes) == ({"02_training": 2}.get(path.stem, 1) if path.stem in EXPLORERS else 0)
    if path.stem in EXPLORERS:
        assert re.search(r"default position \((\w[\w ]* = [^,)]+(, )?)+\)", html), "the sliders' values are not named"


def test_every_internal_link_and_image_of_the_site_resolves(site):
    pages = {p: Page(p.read_text()) for p in site.rglob("*.html")}
    assert {p.stem for p in pages} >= {"index", *(p.stem for p in (ROOT / "docs").glob("*.md"))}
    broken = []
    for path, page in pages.items():
        for ref in page.refs + page.images:
            parts = urlsplit(ref)
            if parts.scheme or ref.startswith(("data:", "//")):
                continue
            # 404.html links from the site's root: it is served for any missing address
            base = site if parts.path.startswith("/") else path.parent
            target = (base / unquote(parts.path).lstrip("/")).resolve() if parts.path else path
            if target.is_dir():
                target = target / "index.html"
            if not target.is_file():
                broken.append(f"{path.relative_to(site)}: {ref}")
            elif parts.fragment and target.suffix == ".html" and parts.fragment not in pages[target].ids:
                broken.append(f"{path.relative_to(site)}: {ref} (no such anchor)")
    assert not broken, f"{len(broken)} broken links, e.g. {broken[:10]}"


def test_a_rebuild_executes_nothing(site):
    said = []
    build_site.executed_pages(log=said.append)
    assert len(said) == len(build_site.NOTEBOOKS) and all(line.endswith(")") and ": cached" in line for line in said)


def test_an_explorer_becomes_its_picture_and_its_controls_values():
    png = base64.b64encode(b"\x89PNG fake").decode()
    state = {
        "box": {"model_name": "VBoxModel", "state": {"children": ["IPY_MODEL_row", "IPY_MODEL_text", "IPY_MODEL_img"]}},
        "row": {"model_name": "HBoxModel", "state": {"children": ["IPY_MODEL_s", "IPY_MODEL_k"]}},
        "s": {"model_name": "FloatLogSliderModel", "state": {"_model_name": "FloatLogSliderModel",
                                                            "description": "sigma", "value": 0.123456}},
        "k": {"model_name": "SelectionSliderModel", "state": {"_model_name": "SelectionSliderModel", "description": "K",
                                                             "_options_labels": ["1", "5", "20"], "index": 2}},
        "text": {"model_name": "HTMLModel", "state": {"value": "test accuracy: 0.9"}},
        "img": {"model_name": "ImageModel", "state": {}, "buffers": [{"path": ["value"], "data": png}]},
    }
    notebook = nbformat.v4.new_notebook(metadata={"widgets": {build_site.WIDGET_STATE: {"state": state}}})
    cell = nbformat.v4.new_code_cell("explorer", outputs=[nbformat.v4.new_output(
        "display_data", data={build_site.WIDGET_VIEW: {"model_id": "box"}, "text/plain": "VBox(...)"}),
        nbformat.v4.new_output("stream", text="after\n")])
    notebook.cells.append(cell)
    path = Path("03_sigma_sensitivity.ipynb")
    assert build_site.static_widgets(notebook, path) == 1
    note, text, image, stream = cell.outputs
    assert "(sigma = 0.123, K = 20)" in note.data["text/html"]
    assert build_site.WIDGET_SENTENCES["03_sigma_sensitivity"] in note.data["text/html"]
    assert build_site.notebook_binder_link(path) in note.data["text/html"]
    assert text.data == {"text/html": "test accuracy: 0.9"} and image.data == {"image/png": png}
    assert stream.text == "after\n" and "widgets" not in notebook.metadata

    notebook.cells[0].outputs = [nbformat.v4.new_output("display_data", data={build_site.WIDGET_VIEW: {"model_id": "x"}})]
    with pytest.raises(ValueError, match="WIDGET_SENTENCES"):
        build_site.static_widgets(notebook, Path("99_new.ipynb"))


def test_the_docs_requirements_and_the_docs_extra_list_the_same_packages():
    listed = [line.strip() for line in (ROOT / "requirements-docs.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["docs"]
    assert listed == extra
    assert "-r requirements-docs.txt" in (ROOT / "requirements.txt").read_text().splitlines()  # make setup installs it


def test_a_notebook_whose_cell_hangs_runs_once_more_in_a_new_kernel(tmp_path):
    marker = tmp_path / "first-try"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        f"import pathlib, time\nm = pathlib.Path({str(marker)!r})\n"
        "if not m.exists():\n    m.touch()\n    time.sleep(60)  # the first kernel 'hangs'\nprint('ran')")])
    path = tmp_path / "hangs.ipynb"
    nbformat.write(notebook, path)
    said = []
    executed = build_site.execute(path, dict(os.environ), timeout=5, log=said.append)
    assert executed.cells[0].outputs[0]["text"] == "ran\n"
    assert said == ["hangs.ipynb: a cell passed the time limit; running the notebook again in a new kernel"]

    marker.unlink()
    path.write_text(path.read_text().replace("if not m.exists():", "if True:"))
    with pytest.raises(CellTimeoutError):
        build_site.execute(path, dict(os.environ), timeout=5, log=said.append)
