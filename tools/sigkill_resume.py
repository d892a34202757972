"""Kill a training run with SIGKILL at random moments and check that nothing is lost.

Each trial starts ``python -m nngk_lab.train --resume`` on a tiny image tree and kills it
(SIGKILL, which cannot be caught) either after a random delay or the moment a checkpoint
write is seen in progress (its temporary file appears). After every kill it checks that
``checkpoint.pt``, if there is one, loads with ``safe_load`` and ``load_run``, that the
JSON files parse, and that training never went backwards; the next trial's ``--resume``
must start cleanly. At the end the run is resumed to completion.

    python tools/sigkill_resume.py --kills 20

Prints one row per kill and a summary; exits 1 if any check failed. The test suite runs
a shorter version (tests/reliability/test_reliability_kill.py).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from nngk_lab.files import safe_load
from nngk_lab.errors import CheckpointError
from nngk_lab.train import main as train_main
from nngk_lab.training.runs import CHECKPOINT_KIND, CHECKPOINT_NAME, load_run
from tiny_tree import make_tree, pin_to_one_core, subprocess_env, tiny_argv  # noqa: E402

MAX_EPOCHS = 10_000  # never reached: every trial ends in a kill


class _Training:
    """``python -m nngk_lab.train --resume ...`` on one core, as a new process (``fork=False``)
    or forked from this one, which saves importing torch again (``fork=True``, for tests)."""

    def __init__(self, tree: Path, save_dir: Path, fork: bool, max_epochs: int = MAX_EPOCHS):
        argv = tiny_argv(tree, save_dir, "--resume", max_epochs=max_epochs)
        if fork:
            self._proc = multiprocessing.get_context("fork").Process(target=_forked_main, args=(argv,))
            self._proc.start()
        else:
            self._proc = subprocess.Popen([sys.executable, "-m", "nngk_lab.train", *argv], env=subprocess_env(),
                                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                          preexec_fn=pin_to_one_core)
        self.fork = fork

    def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if the process has ended."""
        if self.fork:
            self._proc.join(timeout)
            return self._proc.exitcode is not None
        try:
            self._proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False

    def running(self) -> bool:
        return self._proc.is_alive() if self.fork else self._proc.poll() is None

    def kill(self) -> None:
        self._proc.kill()
        self.wait(60)

    @property
    def returncode(self) -> int | None:
        return self._proc.exitcode if self.fork else self._proc.returncode

    def errors(self) -> str:
        return "" if self.fork else self._proc.stderr.read().decode(errors="replace").strip()[-300:]


def _forked_main(argv: list[str]) -> None:
    pin_to_one_core()
    os._exit(train_main(argv))


def _temp_files(save_dir: Path) -> set[str]:
    return {p.name for p in save_dir.glob(".*.tmp")} if save_dir.exists() else set()


def _kill_when_writing(proc: _Training, save_dir: Path, writes_to_skip: int, timeout: float) -> None:
    """SIGKILL ``proc`` as soon as a checkpoint write is in progress (after skipping some)."""
    seen, deadline = _temp_files(save_dir), time.monotonic() + timeout
    skipped = 0
    while time.monotonic() < deadline and proc.running():
        new = _temp_files(save_dir) - seen
        if new and skipped >= writes_to_skip:
            break
        skipped += len(new)
        seen |= new
        time.sleep(0.0005)
    proc.kill()


def check_run_folder(save_dir: Path) -> tuple[int, int] | None:
    """Everything a killed run left must be readable; return its (epoch, step) or None."""
    for name in ("config.json", "history.json"):
        if (save_dir / name).exists():
            json.loads((save_dir / name).read_text())
    if not (save_dir / CHECKPOINT_NAME).exists():
        return None
    state = safe_load(save_dir / CHECKPOINT_NAME, CHECKPOINT_KIND)
    if state["bank"] is not None:
        load_run(save_dir)
    return state["epoch"], state["step"]


def run_trials(kills: int, work: Path, seed: int = 0, fork: bool = False, log=print) -> list[str]:
    """Run ``kills`` kill-and-check trials in ``work``; return the failures (empty if none)."""
    rng = random.Random(seed)
    tree, save_dir = make_tree(work / "tree"), work / "run"
    failures, progress, caught_writing = [], None, 0
    log(f"{'kill':>4} {'mode':>12} {'alive s':>7} {'new .tmp':>8} {'epoch':>5} {'step':>4}  result")
    for trial in range(1, kills + 1):
        before = _temp_files(save_dir)
        proc, started = _Training(tree, save_dir, fork), time.monotonic()
        mode = "during write" if trial % 2 == 0 else "random"
        if mode == "random":
            if not proc.wait(rng.uniform(0.2, 3.0) if fork else rng.uniform(2.0, 20.0)):
                proc.kill()
        else:
            _kill_when_writing(proc, save_dir, rng.randrange(3), timeout=120)
        alive = time.monotonic() - started
        left = len(_temp_files(save_dir) - before)  # a kill mid-write leaves its temporary file
        caught_writing += left > 0
        result = "ok"
        if proc.returncode != -signal.SIGKILL:
            result = f"exited by itself with status {proc.returncode}: {proc.errors()}"
        else:
            try:
                now = check_run_folder(save_dir)
                if progress is not None and (now is None or now < progress):
                    result = f"went backwards from {progress} to {now}"
                progress = now or progress
            except Exception as e:  # any failure to read back is what this script looks for
                result = f"{type(e).__name__}: {e}"
        if result != "ok":
            failures.append(f"kill {trial}: {result}")
        epoch, step = progress or ("-", "-")
        log(f"{trial:>4} {mode:>12} {alive:>7.1f} {left:>8} {epoch:>5} {step:>4}  {result}")
    # Finally the run must resume and finish: one more epoch than the checkpoint holds.
    last_epoch = progress[0] if progress else 0
    proc = _Training(tree, save_dir, fork, max_epochs=last_epoch + 1)
    if not proc.wait(600):
        proc.kill()  # never leave it training while its folder is deleted
    try:
        finished = proc.returncode == 0 and load_run(save_dir).finished and not _temp_files(save_dir)
    except CheckpointError:
        finished = False
    if not finished:
        failures.append(f"final resume: status {proc.returncode}: {proc.errors()}")
    log(f"{kills} kills, {caught_writing} of them mid-write (a temporary file was left); final resume to "
        f"epoch {last_epoch + 1}: {'finished' if finished else 'FAILED'}; {len(failures)} failure(s)")
    return failures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fork", action="store_true", help="fork training from this process instead of "
                                                            "starting python each time (faster start)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        failures = run_trials(args.kills, Path(work), args.seed, args.fork)
    for failure in failures:
        print(failure)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
