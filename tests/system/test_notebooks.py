"""Every notebook runs top to bottom in fast mode (NNGK_FAST=1) without an error, and the
committed notebooks carry no outputs.

The notebooks share one temporary runs folder, in reading order, so notebooks 3-5 load
the run notebook 2 trained (each would train it itself if run alone).
"""

import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from dataset_fakes import make_cub
from nngk_lab.data.release_tree import prepare

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXPECTED = ["01_data_loading.ipynb", "02_training.ipynb", "03_sigma_sensitivity.ipynb",
            "04_embedding_space.ipynb", "05_neighbour_galleries.ipynb", "06_kernel_weights.ipynb",
            "07_compare_losses.ipynb"]
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def test_the_notebooks_exist_in_reading_order():
    assert [p.name for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    dirty = [i for i, cell in enumerate(notebook.cells) if cell.cell_type == "code"
             and (cell.outputs or cell.execution_count is not None)]
    assert not dirty, f"{path.name}: cells {dirty} hold outputs; clear them before committing (see docs/notebooks.md)"


MAX_PROSE_WORDS = 200  # a cell a student reads in one go; longer ones are split or moved to docs/


def _words(markdown: str) -> int:
    """Words of prose: a details box (measured numbers, collapsed) and table rows do not count."""
    prose = re.sub(r"<details>.*?</details>", "", markdown, flags=re.S)
    return sum(len(line.split()) for line in prose.splitlines() if not line.lstrip().startswith("|"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_prose_cells_are_short_and_the_notebook_ends_with_a_summary(path):
    notebook = nbformat.read(path, as_version=4)
    long = {i: _words(c.source) for i, c in enumerate(notebook.cells)
            if c.cell_type == "markdown" and _words(c.source) > MAX_PROSE_WORDS}
    assert not long, f"{path.name}: markdown cells over {MAX_PROSE_WORDS} words (cell: words): {long}"
    last = notebook.cells[-1]
    bullets = [line for line in last.source.splitlines() if line.startswith("- ")]
    assert last.cell_type == "markdown" and last.source.startswith("## Summary") and len(bullets) == 3, \
        f"{path.name} must end with a '## Summary' cell of three bullets"


def test_no_notebook_cites_a_file_the_repository_lacks():
    for path in NOTEBOOKS:
        text = path.read_text()
        for name in set(re.findall(r"(?:docs/)?[A-Za-z_\-]+\.md\b", text)):
            assert (ROOT / name).is_file() or (ROOT / "docs" / name).is_file(), f"{path.name} cites {name}"


@pytest.fixture(scope="module")
def notebook_env(tmp_path_factory):
    """Fast mode, a fresh runs folder and data folder, and this checkout on the kernel's path."""
    tmp = tmp_path_factory.mktemp("notebooks")
    saved = dict(os.environ)
    # OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning, which on a
    # shared machine made 2-thread training several times slower than 1 thread.
    os.environ.update(NNGK_FAST="1", NNGK_RUNS=str(tmp / "runs"), NNGK_DATA=str(tmp / "data"), MPLBACKEND="Agg",
                      OMP_WAIT_POLICY="PASSIVE",
                      PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    yield tmp
    os.environ.clear()
    os.environ.update(saved)


def _outputs(notebook, mime=None):
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            if mime is None or mime in output.get("data", {}):
                yield output


def _execute(path):
    """Run a notebook top to bottom (in notebooks/, as Jupyter does); return it and its text."""
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return notebook, "".join(o.get("text", "") for o in _outputs(notebook))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_in_fast_mode(path, notebook_env):
    notebook, text = _execute(path)
    assert "fast mode" in text, "the notebook did not report fast mode"
    assert list(_outputs(notebook, "image/png")), "the notebook drew no figure"
    bars = [o for o in _outputs(notebook) if "it/s]" in "".join(o.get("data", {}).get("text/plain", ""))]
    assert not bars, f"{len(bars)} progress bars were left in the saved outputs, e.g. {bars[0]['data']['text/plain']!r}"
    if path.name in ("02_training.ipynb", "03_sigma_sensitivity.ipynb", "05_neighbour_galleries.ipynb"):
        assert list(_outputs(notebook, WIDGET_MIME)), "the explorer widget was not displayed"
    if path.name == "02_training.ipynb":
        assert (notebook_env / "runs" / "digits-fast" / "checkpoint.pt").is_file()
        assert "allclose: True" in text and "closed form equals autograd: True" in text, \
            "the naive loss or its gradient did not match the library's"
        assert (notebook_env / "runs" / "cache-fast" / "refresh-interval-5.pt").is_file()
    if path.name == "04_embedding_space.ipynb":
        assert any("<script" in "".join(o["data"].get("text/html", "")) for o in _outputs(notebook, "text/html")), \
            "the film's animation was not shown"
        for loss in ("nngk", "softmax"):
            assert (notebook_env / "runs" / f"digits-fast-film-{loss}" / "centres-epoch-002.pt").is_file()
    if path.name == "05_neighbour_galleries.ipynb":
        assert "every one of which gets a wrong label" in text, "the held-out confidence was not printed"
        assert "among the held-out classes only: kernel classifier" in text, "the few-shot result was not printed"
    if path.name == "06_kernel_weights.ipynb":
        assert "among the" in text and "lowest-weighted" in text, "the label-noise result was not printed"


@pytest.fixture(scope="module")
def photo_env(notebook_env):
    """NNGK_DATASET=cub200: a prepared miniature of CUB-200-2011 in the data folder, and
    a runs folder of its own."""
    fake = make_cub(notebook_env / "cub-source", per_class=10)
    prepare("cub200", notebook_env / "data" / "cub200", fake.source, progress=False)
    saved = dict(os.environ)
    os.environ.update(NNGK_DATASET="cub200", NNGK_RUNS=str(notebook_env / "photo-runs"))
    yield notebook_env / "photo-runs"
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_on_a_prepared_dataset(path, photo_env):
    notebook, text = _execute(path)
    assert "Dataset: cub200" in text and "fast mode" in text
    assert list(_outputs(notebook, "image/png")), "the notebook drew no figure"
    assert not (photo_env / "digits-fast").exists(), "the notebook trained on the digits"
    if path.name == "01_data_loading.ipynb":
        assert "000_Black_footed_Albatross/" in text
    if path.name == "02_training.ipynb":
        assert (photo_env / "cub200-fast" / "checkpoint.pt").is_file()


def test_notebook_two_trains_on_the_bundled_photos(notebook_env, monkeypatch):
    """NNGK_DATASET=fashion: the photos that ship with the kit, with no prepare step (notebook 2
    on them costs ~17 s of CPU here: the other notebooks read the same settings)."""
    monkeypatch.setenv("NNGK_DATASET", "fashion")
    monkeypatch.setenv("NNGK_RUNS", str(notebook_env / "fashion-runs"))
    _, text = _execute(NOTEBOOKS[1])
    assert "Dataset: fashion" in text and "fast mode" in text
    assert "bank: 480 centres" in text  # 4/5 of the five trained classes' 120 photos each
    assert (notebook_env / "fashion-runs" / "fashion-fast" / "checkpoint.pt").is_file()
    assert (notebook_env / "data" / "fashion" / "9_ankle-boot").is_dir()
