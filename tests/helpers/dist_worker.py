"""One training process for tests/training/test_distributed.py, started by torchrun or by the tests
with torchrun's environment variables: ``python tests/helpers/dist_worker.py [train flags]`` runs
``python -m nngk_lab.train`` on one thread, with test hooks chosen by variables:

- ``NNGK_TEST_FROZEN_BN=1``: the small CNN's BatchNorm frozen (statistics fixed), so that
  each process normalises its share of a batch as one process normalises the whole;
- ``NNGK_TEST_SIGNAL=RANK:STEP:NAME``: process RANK sends itself signal NAME (TERM,
  KILL) in its training step STEP (1-based), as a scheduler or a crash would;
- ``NNGK_TEST_WEIGHTS=DIR``: each process writes its final weights to ``DIR/rank<r>.pt``.
"""

from __future__ import annotations

import functools
import os
import signal
import sys

import torch

from nngk_lab.training import loop as train
from nngk_lab import train as cli
from nngk_lab.training import parts


def _signal_hook(rank: int, step: int, name: str):
    calls = {"n": 0}

    def hook(module, args):
        if module.training and int(os.environ["RANK"]) == rank:  # training steps only, not refreshes
            calls["n"] += 1
            if calls["n"] == step:
                os.kill(os.getpid(), getattr(signal, f"SIG{name}"))
    return hook


def main() -> int:
    train.available_cores = lambda: 1  # as the tests' single-process runs
    if os.environ.get("NNGK_TEST_FROZEN_BN"):
        parts.build_model = functools.partial(parts.build_model, freeze_bn=True)
    if os.environ.get("NNGK_TEST_SIGNAL"):
        rank, step, name = os.environ["NNGK_TEST_SIGNAL"].split(":")
        build = parts.build_parts

        def build_parts(*args, **kwargs):
            built = build(*args, **kwargs)
            built.model.register_forward_pre_hook(_signal_hook(int(rank), int(step), name))
            return built
        parts.build_parts = build_parts
    out = os.environ.get("NNGK_TEST_WEIGHTS")
    if out:
        run = cli.train

        def train_and_keep(*args, **kwargs):
            result = run(*args, **kwargs)
            weights = {"model." + k: v for k, v in result.model.state_dict().items()}
            weights["log_weights"] = result.kernel_weights.log_weights.detach()
            torch.save(weights, os.path.join(out, f"rank{os.environ['RANK']}.pt"))
            return result
        cli.train = train_and_keep
    return cli.main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
