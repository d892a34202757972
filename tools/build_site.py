"""Build the rendered site (``make docs``): execute the seven notebooks on the digits, keep
their outputs and figures, and render them with the docs/ pages into ``site/``.

1. Each notebook is executed with nbclient in fast mode (``NNGK_FAST=1``; ``--full`` for the
   full mode a student runs), in reading order, sharing one fresh runs folder, so notebooks
   3-6 load the run notebook 2 trained. An executed copy is cached in ``build/site-notebooks/``
   under a hash of the notebook, the package's source and the mode: a rebuild with nothing
   changed executes nothing.
2. Each explorer widget (an ipywidgets tree, which a static page cannot run) becomes its
   picture at the default position, the widget's own HTML text and PNG image taken from the
   widget state nbclient saved, with a line naming the sliders and their values, what moving
   them does, and a link to the notebook on Binder. Each notebook gets a Binder link at the top.
3. The copies go to ``docs/notebooks/`` (generated, ignored by git), and ``mkdocs build
   --strict`` (mkdocs-material + mkdocs-jupyter, see mkdocs.yml) renders them and the
   docs/*.md pages into ``--site_dir``.

    python tools/build_site.py                 # site/ (what make docs runs)
    python tools/build_site.py --site_dir /tmp/site --no_build   # only the executed notebooks
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
CACHE = ROOT / "build" / "site-notebooks"
PAGES = ROOT / "docs" / "notebooks"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"

# What moving each notebook's explorer does; a notebook with a widget and no sentence here
# stops the build, so a new explorer cannot appear on the site unexplained.
WIDGET_SENTENCES = {
    "02_training": "Moving sigma, K, a centre's log-weight (log w) or the query's position redraws the "
                   "decision regions, the query's neighbours and its class probabilities; in the trainable "
                   "playground, \"train steps\" trains the toy embedding with the NNGK loss and \"refresh bank\" "
                   "re-embeds its bank, redrawing the loss, the embedding with its bank centres and its scale.",
    "03_sigma_sensitivity": "Moving sigma or K recomputes this test image's class probabilities and the test "
                            "accuracy from the cached embeddings; query picks another test image.",
    "05_neighbour_galleries": "Moving query (or switching the set between test images and held-out classes) "
                              "redraws the gallery of that image's nearest centres.",
}


def binder_url() -> str:
    """The repository's Binder address: the one constant in mkdocs.yml (``extra.binder``)."""
    return yaml.safe_load((ROOT / "mkdocs.yml").read_text())["extra"]["binder"]


def notebook_binder_link(path: Path) -> str:
    return f"{binder_url()}?urlpath=lab/tree/notebooks/{path.name}"


def cache_key(path: Path, fast: bool) -> str:
    """Changes when the notebook, any of the package's source files or the mode changes."""
    digest = hashlib.sha256(path.read_bytes())
    for source in sorted((ROOT / "nngk_lab").rglob("*.py")):
        digest.update(source.relative_to(ROOT).as_posix().encode())
        digest.update(source.read_bytes())
    digest.update(b"fast" if fast else b"full")
    return digest.hexdigest()[:16]


def execution_env(scratch: Path, fast: bool) -> dict[str, str]:
    """The kernels' environment: the digits (no NNGK_DATASET), fresh runs and data folders,
    and this checkout on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("NNGK_DATASET", "MPLBACKEND")}
    env.update(NNGK_FAST="1" if fast else "0", NNGK_RUNS=str(scratch / "runs"), NNGK_DATA=str(scratch / "data"),
               OMP_WAIT_POLICY="PASSIVE",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return env


def execute(path: Path, env: dict[str, str], timeout: int, log=print) -> nbformat.NotebookNode:
    """Run a notebook top to bottom in notebooks/ (as Jupyter does), keeping the widget state.

    A cell that passes ``timeout`` seconds (5 minutes in fast mode, where none needs one) is
    taken for a lost message between nbclient and the kernel, an intermittent hang seen
    here once with ipykernel 7 (kernel and client both idle): the notebook runs once more
    in a fresh kernel before the build gives up."""
    for attempt in (1, 2):
        notebook = nbformat.read(path, as_version=4)
        client = NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                                store_widget_state=True, resources={"metadata": {"path": str(path.parent)}})
        try:
            client.execute(env=env)  # env: the kernel's
            break
        except CellTimeoutError:
            if attempt == 2:
                raise
            log(f"{path.name}: a cell passed the time limit; running the notebook again in a new kernel")
    return notebook


def _model_id(ref: str) -> str:
    return ref.removeprefix("IPY_MODEL_")


def _control_value(state: dict) -> str | None:
    """A slider's or a drop-down's shown value, or None for anything that is not a control."""
    if "_options_labels" in state and state.get("index") is not None:
        return str(state["_options_labels"][state["index"]])
    if state.get("_model_name", "").endswith("SliderModel"):
        value = state["value"]
        if state["_model_name"] == "FloatLogSliderModel":
            return f"{value:.3g}"
        return f"{value:g}" if isinstance(value, float) else str(value)
    return None


def widget_outputs(models: dict, model_id: str, controls: list[str]) -> list[dict]:
    """The static outputs a widget tree shows (HTML texts, PNG images, Output widgets'
    outputs), depth first; the controls' "description = value" are appended to ``controls``."""
    model = models[model_id]
    state = model["state"]
    name = model["model_name"]
    if "children" in state:
        return [o for child in state["children"] for o in widget_outputs(models, _model_id(child), controls)]
    if name == "HTMLModel":
        return [nbformat.v4.new_output("display_data", data={"text/html": state["value"]})]
    if name == "ImageModel":
        buffers = {tuple(b["path"]): b["data"] for b in model.get("buffers", [])}
        if ("value",) not in buffers:
            raise ValueError(f"image widget {model_id} has no saved picture")
        return [nbformat.v4.new_output("display_data", data={"image/png": buffers[("value",)]})]
    if name == "OutputModel":
        return [nbformat.from_dict(o) for o in state.get("outputs", [])]
    value = _control_value(state)
    if value is not None:
        controls.append(f"{state.get('description') or 'value'} = {value}")
    return []


def static_widgets(notebook: nbformat.NotebookNode, path: Path) -> int:
    """Replace every widget output by its picture at the default position and a line saying
    what moving it does; drop the widget state. Returns the number of widgets replaced."""
    models = notebook.metadata.get("widgets", {}).get(WIDGET_STATE, {}).get("state", {})
    replaced = 0
    for cell in notebook.cells:
        outputs = []
        for output in cell.get("outputs", []):
            view = output.get("data", {}).get(WIDGET_VIEW)
            if view is None:
                outputs.append(output)
                continue
            if path.stem not in WIDGET_SENTENCES:
                raise ValueError(f"{path.name} shows a widget: add what moving it does to WIDGET_SENTENCES")
            controls: list[str] = []
            shown = widget_outputs(models, view["model_id"], controls)
            note = (f"<p class=\"nngk-static-widget\"><em>A static picture of the explorer at its default position "
                    f"({', '.join(controls)}).</em> {WIDGET_SENTENCES[path.stem]} "
                    f"<a href=\"{notebook_binder_link(path)}\">Move the sliders on Binder</a>, "
                    f"or open the notebook in Jupyter.</p>")
            outputs += [nbformat.v4.new_output("display_data", data={"text/html": note})] + shown
            replaced += 1
        if "outputs" in cell:
            cell.outputs = outputs
    notebook.metadata.pop("widgets", None)  # nothing left to render: no widget scripts on the page
    return replaced


def with_binder_link(notebook: nbformat.NotebookNode, path: Path, fast: bool) -> nbformat.NotebookNode:
    """A copy with a line under the title: open this notebook on Binder, or locally."""
    mode = "in fast mode (`NNGK_FAST=1`)" if fast else "in full mode"
    page = copy.deepcopy(notebook)
    link = nbformat.v4.new_markdown_cell(
        f"[Open this notebook on Binder]({notebook_binder_link(path)}) to run it and move its sliders, or locally: "
        f"`make setup && .venv/bin/jupyter lab notebooks/{path.name}`. This page was executed {mode} "
        f"on the embedded digits by `make docs`.")
    at = 1 if page.cells and page.cells[0].cell_type == "markdown" and page.cells[0].source.startswith("#") else 0
    page.cells.insert(at, link)
    return page


def executed_pages(fast: bool = True, log=print) -> list[Path]:
    """Execute (or take from the cache) every notebook and write its page to docs/notebooks/."""
    CACHE.mkdir(parents=True, exist_ok=True)
    PAGES.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory(prefix="nngk-site-") as scratch:
        env = execution_env(Path(scratch), fast)
        for path in NOTEBOOKS:
            cached = CACHE / f"{path.stem}-{cache_key(path, fast)}.ipynb"
            if cached.is_file():
                log(f"{path.name}: cached ({cached.relative_to(ROOT)})")
                notebook = nbformat.read(cached, as_version=4)
            else:
                start = time.monotonic()
                notebook = execute(path, env, 300 if fast else 3600, log)
                for stale in CACHE.glob(f"{path.stem}-*.ipynb"):
                    stale.unlink()
                nbformat.write(notebook, cached)  # as executed, widget state included
                log(f"{path.name}: executed in {time.monotonic() - start:.0f} s")
            page = with_binder_link(notebook, path, fast)
            static_widgets(page, path)  # here, not before caching: a new sentence needs no new execution
            nbformat.write(page, PAGES / path.name)
            written.append(PAGES / path.name)
    for old in PAGES.glob("*.ipynb"):
        if old not in written:
            old.unlink()
    return written


def build(site_dir: Path) -> None:
    subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--clean", "--site-dir", str(site_dir)],
                   cwd=ROOT, check=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--site_dir", type=Path, default=ROOT / "site", help="where the site goes (default: site/)")
    parser.add_argument("--full", action="store_true", help="execute in full mode instead of fast mode")
    parser.add_argument("--no_build", action="store_true", help="only write the executed notebooks to docs/notebooks/")
    args = parser.parse_args(argv)
    executed_pages(fast=not args.full)
    if not args.no_build:
        build(args.site_dir.resolve())
        print(f"site written to {args.site_dir}")


if __name__ == "__main__":
    main()
