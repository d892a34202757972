"""Killed runs: SIGKILL at any moment (even mid-write) never leaves an unreadable
checkpoint, and Ctrl-C in a terminal (reaching the loader workers too) stops cleanly."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import torch

from nngk_lab.files import safe_load
from nngk_lab.train import main
from nngk_lab.training.runs import CHECKPOINT_KIND, CHECKPOINT_NAME, load_run
from nngk_lab.training.loop import train

from tiny_tree import make_tree, one_thread, pin_to_one_core, tiny_argv, tiny_config  # noqa: F401
from tool_scripts import load_tool

pytestmark = pytest.mark.usefixtures("one_thread")
FORK = multiprocessing.get_context("fork")


def test_sigkill_at_random_moments_never_loses_the_run(tmp_path):
    # The full version (20+ kills, a new python each time): python tools/sigkill_resume.py
    failures = load_tool("sigkill_resume").run_trials(kills=6, work=tmp_path, seed=1, fork=True, log=lambda line: None)
    assert failures == []


def _killed_mid_write(argv, save_dir: Path, nth_save: int) -> None:
    """Child: train, and SIGKILL itself half-way through writing its ``nth_save`` checkpoint."""
    real_save, count = torch.save, {"n": 0}

    def half_save(obj, f):
        count["n"] += 1
        real_save(obj, f)
        if count["n"] == nth_save:
            f.flush()
            f.truncate(f.tell() // 2)
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

    torch.save = half_save
    pin_to_one_core()
    os._exit(main(argv))


def test_kill_during_checkpoint_write_keeps_the_previous_checkpoint(tmp_path):
    tree, save_dir = make_tree(tmp_path / "tree"), tmp_path / "run"
    # Saves: 1 bank refresh, 2 end of epoch 1, 3 refresh of epoch 2 (killed), ...
    child = FORK.Process(target=_killed_mid_write, args=(tiny_argv(tree, save_dir), save_dir, 3))
    child.start()
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    leftovers = list(save_dir.glob(".checkpoint.pt.*.tmp"))
    assert len(leftovers) == 1  # the half-written file: proof that the kill came mid-write
    state = safe_load(save_dir / CHECKPOINT_NAME, CHECKPOINT_KIND)
    assert (state["epoch"], state["step"], state["finished"]) == (1, 0, False)
    assert load_run(save_dir).history == state["history"]

    result = train(tiny_config(tree, save_dir), resume=True)
    assert result.stop_reason == "max_epochs" and len(result.history) == 3
    assert not leftovers[0].exists()  # the next run cleans it up


def _ctrl_c_child(argv, stderr_path: str) -> None:
    os.setsid()  # its own process group, as a terminal's foreground job
    sys.stderr = open(stderr_path, "w", buffering=1)
    pin_to_one_core()
    code = main(argv)
    sys.stderr.flush()
    os._exit(code)


def test_ctrl_c_with_loader_workers_saves_and_exits_cleanly(tmp_path):
    tree, save_dir, stderr = make_tree(tmp_path / "tree"), tmp_path / "run", tmp_path / "stderr.txt"
    argv = tiny_argv(tree, save_dir, max_epochs=10_000) + ["--workers", "1"]
    child = FORK.Process(target=_ctrl_c_child, args=(argv, str(stderr)))
    child.start()
    deadline = time.monotonic() + 120
    while not (save_dir / CHECKPOINT_NAME).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(child.pid, signal.SIGINT)  # what Ctrl-C does: the whole group, workers included
    child.join(120)
    message = stderr.read_text()
    assert child.exitcode == 130, message
    assert "Interrupted: checkpoint saved" in message and "Traceback" not in message
    state = safe_load(save_dir / CHECKPOINT_NAME, CHECKPOINT_KIND)
    result = train(tiny_config(tree, save_dir, max_epochs=state["epoch"] + 1, workers=1), resume=True)
    assert result.stop_reason == "max_epochs" and len(result.history) == state["epoch"] + 1
