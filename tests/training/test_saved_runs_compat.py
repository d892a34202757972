"""Runs saved by older code still load, evaluate and resume: one from before training was
split into modules (config, runs, loaders, parts, step, cli, train), one from before the
package was reshaped into subpackages (data, kernel, models, training, ...)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from nngk_lab.train import main as train_main
from nngk_lab.evaluation.run import evaluate_run
from nngk_lab.training.runs import load_run

from tiny_tree import one_thread  # noqa: F401

# Written by commit 741e42b: `python -m nngk_lab.train --save_dir R --max_epochs 1 --input_size 16`
# on the embedded digits (a small CNN; its config.json holds final_relu None and
# pretrained "auto", which meant the model's defaults then).
# Written by commit ec48547 (the last flat layout) with the same command.
FIXTURES = Path(__file__).resolve().parents[1] / "helpers" / "fixtures"
OLD_RUNS = pytest.mark.parametrize("old_run", [FIXTURES / "run_before_split", FIXTURES / "run_before_layout"],
                                   ids=lambda path: path.name)


def _copy(old_run: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(old_run, tmp_path / "run"))


@OLD_RUNS
def test_an_old_run_loads_and_evaluates(old_run, tmp_path, one_thread):
    run = load_run(_copy(old_run, tmp_path))
    assert run.finished and len(run.history) == 1 and run.config.final_relu is False
    metrics = evaluate_run(tmp_path / "run", progress=False)
    # The saved kernel accuracy is reproduced by the new evaluation of the saved model.
    saved = json.loads((old_run / "eval.json").read_text())
    assert metrics["trained"]["kernel_accuracy"] == saved["kernel_accuracy"]


@OLD_RUNS
def test_an_old_run_resumes_with_its_own_flags(old_run, tmp_path, capsys, one_thread):
    save_dir = _copy(old_run, tmp_path)
    argv = ["--save_dir", str(save_dir), "--resume", "--no_progress"]
    assert train_main([*argv, "--final_relu", "false", "--max_epochs", "2"]) == 0
    history = json.loads((save_dir / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert history[0] == json.loads((old_run / "history.json").read_text())[0]
