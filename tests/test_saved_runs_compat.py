"""A run saved by the code before training was split into modules (config, runs,
loaders, parts, step, cli, train) still loads, evaluates and resumes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from nngk_lab.train import main as train_main
from nngk_lab.evaluation.run import evaluate_run
from nngk_lab.training.runs import load_run

from tiny_tree import one_thread  # noqa: F401

# Written by commit 741e42b: `python -m nngk_lab.train --save_dir R --max_epochs 1 --input_size 16`
# on the embedded digits (a small CNN; its config.json holds final_relu None and
# pretrained "auto", which meant the model's defaults then).
OLD_RUN = Path(__file__).parent / "fixtures" / "run_before_split"


def _copy(tmp_path: Path) -> Path:
    return Path(shutil.copytree(OLD_RUN, tmp_path / "run"))


def test_an_old_run_loads_and_evaluates(tmp_path, one_thread):
    run = load_run(_copy(tmp_path))
    assert run.finished and len(run.history) == 1 and run.config.final_relu is False
    metrics = evaluate_run(tmp_path / "run", progress=False)
    # The saved kernel accuracy is reproduced by the new evaluation of the saved model.
    saved = json.loads((OLD_RUN / "eval.json").read_text())
    assert metrics["trained"]["kernel_accuracy"] == saved["kernel_accuracy"]


def test_an_old_run_resumes_with_its_own_flags(tmp_path, capsys, one_thread):
    save_dir = _copy(tmp_path)
    argv = ["--save_dir", str(save_dir), "--resume", "--no_progress"]
    assert train_main([*argv, "--final_relu", "false", "--max_epochs", "2"]) == 0
    history = json.loads((save_dir / "history.json").read_text())
    assert [entry["epoch"] for entry in history] == [1, 2]
    assert history[0] == json.loads((OLD_RUN / "history.json").read_text())[0]
