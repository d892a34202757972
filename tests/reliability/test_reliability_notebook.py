"""In a notebook, an nngk_lab error shows the same one sentence as the command line."""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]


def test_errors_in_a_notebook_are_the_same_sentence(tmp_path):
    (tmp_path / "broken.png").write_text("<html>not an image</html>")
    cells = [
        f"import sys; sys.path.insert(0, {str(ROOT)!r})",
        "from nngk_lab.data import scan_image_folder\nscan_image_folder('no_such_folder')",
        # The image is read inside a DataLoader worker process, as in training.
        "from torch.utils.data import DataLoader\nfrom nngk_lab.data import ImageSamples\n"
        f"next(iter(DataLoader(ImageSamples([({str(tmp_path / 'broken.png')!r}, 0)]), num_workers=1)))",
    ]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    NotebookClient(nb, timeout=300, kernel_name="python3", allow_errors=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [out for cell in nb.cells for out in cell.outputs if out.output_type == "error"]
    assert [(e.ename, e.evalue) for e in errors][0] == ("DataError", "data folder no_such_folder does not exist")
    assert errors[1].ename == "DataError"
    assert errors[1].evalue.startswith(f"cannot read image {tmp_path / 'broken.png'} (")
    assert "\n" not in errors[1].evalue and "Traceback" not in errors[1].evalue
