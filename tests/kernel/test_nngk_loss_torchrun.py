"""NNGKLoss in a user's own loop under torchrun (2 processes, gloo on the CPU) trains as
one process: no wrapper is needed for the loss, as each image's loss needs only its own
embedding and the bank, which every process holds whole (tests/helpers/own_loop_worker.py)."""

import subprocess
import sys
from pathlib import Path

import torch

from bench.bench_distributed import launch
from tiny_tree import subprocess_env

WORKER = str(Path(__file__).resolve().parents[1] / "helpers" / "own_loop_worker.py")
TOLERANCE = {"rtol": 1e-5, "atol": 1e-6}  # float reduction order, as tests/training/test_distributed.py


def test_two_processes_of_a_plain_loop_train_as_one(tmp_path):
    single = subprocess.run([sys.executable, WORKER, str(tmp_path / "one.pt")], env=subprocess_env(),
                            capture_output=True, text=True, timeout=300, check=False)
    assert single.returncode == 0, single.stderr[-3000:]
    runs = launch([sys.executable, WORKER, str(tmp_path / "two.pt")], 2, subprocess_env(), 300)
    assert all(run.returncode == 0 for run in runs), runs[0].stdout[-3000:] + runs[1].stdout[-3000:]
    one, two = torch.load(tmp_path / "one.pt"), torch.load(tmp_path / "two.pt")
    for name in one["model"]:
        torch.testing.assert_close(two["model"][name], one["model"][name], **TOLERANCE)
    torch.testing.assert_close(two["loss"]["kernel_weights.log_weights"], one["loss"]["kernel_weights.log_weights"],
                               **TOLERANCE)
    assert one["loss"]["kernel_weights.log_weights"].abs().max() > 0  # the weights did train
    bank_one, bank_two = one["loss"]["_extra_state"]["bank"], two["loss"]["_extra_state"]["bank"]
    torch.testing.assert_close(bank_two["features"], bank_one["features"], **TOLERANCE)
    assert torch.equal(bank_two["neighbours"], bank_one["neighbours"])
