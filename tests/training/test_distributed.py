"""Training with several processes (torchrun, gloo on the CPU) against one process.

Each launch starts 2 processes of tests/helpers/dist_worker.py on one thread each, on the tiny
image tree (32 training images, global batch 8: 4 steps per epoch). With BatchNorm frozen
and no dropout, 2 processes must train as 1 up to float reduction order; with the small
CNN's BatchNorm trained, each process normalises its own half of the batch, so the
losses only come close (the tolerance is stated in the test). Every launch and every
collective has a timeout, so a hang fails the test instead of stopping CI.
"""

from __future__ import annotations

import functools
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from nngk_lab.training import parts as parts_module
from nngk_lab.training import loop as train_module
from nngk_lab.kernel.bank import FeatureBank
from nngk_lab.files import safe_load
from nngk_lab.evaluate import main as evaluate_main
from nngk_lab.errors import ConfigError
from nngk_lab.evaluation.run import METRICS_NAME
from nngk_lab.training.loaders import RunImages, load_split
from nngk_lab.training.runs import CHECKPOINT_KIND, CHECKPOINT_NAME, load_run, run_lock
from nngk_lab.training.loop import train

from bench.bench_distributed import free_port, launch, torchrun_variables
from tiny_tree import make_tree, subprocess_env, tiny_argv, tiny_config

WORKER = str(Path(__file__).resolve().parents[1] / "helpers" / "dist_worker.py")
LAUNCH_TIMEOUT_S = 300  # a launch's processes are killed after this; they take 10-40 s on 2 shared cores
DIST_TIMEOUT_MIN = "1"  # each collective's timeout inside the processes
TOLERANCE = dict(rtol=1e-5, atol=1e-6)  # float reduction order: measured differences were ~2e-7


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("data") / "tree")


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as m:
        m.setattr(train_module, "available_cores", lambda: 1)
        yield
    torch.set_num_threads(threads)


@pytest.fixture
def frozen_bn(monkeypatch):
    """The small CNN with BatchNorm frozen, in this process (dist_worker.py: NNGK_TEST_FROZEN_BN)."""
    monkeypatch.setattr(parts_module, "build_model", functools.partial(parts_module.build_model, freeze_bn=True))


def _argv(tree, save_dir, *extra, max_epochs: int = 3) -> list[str]:
    return [*tiny_argv(tree, save_dir, max_epochs=max_epochs), "--dropout", "0", "--dist_timeout", DIST_TIMEOUT_MIN,
            *extra]


def _config(tree, save_dir, **settings):
    return tiny_config(tree, save_dir, dropout=0.0, **settings)


def _launch(argv: list[str], world: int = 2, **env) -> list[subprocess.CompletedProcess]:
    """Start ``world`` worker processes as torchrun would (its environment variables) and
    wait for all of them; return each one's exit status and output."""
    return launch([sys.executable, WORKER, *argv], world, {**subprocess_env(), **env}, LAUNCH_TIMEOUT_S)


def _losses(history: list[dict]) -> torch.Tensor:
    return torch.tensor([h["loss"] for h in history], dtype=torch.float64)


def _weights(model, kernel_weights) -> dict[str, torch.Tensor]:
    weights = {"model." + k: v for k, v in model.state_dict().items()}
    weights["log_weights"] = kernel_weights.log_weights.detach()
    return weights


def _assert_close_runs(result, save_dir) -> None:
    """``result`` (one process) and the run in ``save_dir`` trained alike."""
    other = load_run(save_dir)
    torch.testing.assert_close(_losses(other.history), _losses(result.history), **TOLERANCE)
    assert [h["train_accuracy"] for h in other.history] == [h["train_accuracy"] for h in result.history]
    expected = _weights(result.model, result.kernel_weights)
    got = _weights(other.model, other.kernel_weights)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], **TOLERANCE, msg=name)


@pytest.fixture(scope="module")
def single(tree, tmp_path_factory):
    """The reference: one process, BatchNorm frozen, 3 epochs."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(train_module, "available_cores", lambda: 1)
        m.setattr(parts_module, "build_model", functools.partial(parts_module.build_model, freeze_bn=True))
        return train(_config(tree, tmp_path_factory.mktemp("single") / "run"))


@pytest.fixture(scope="module")
def two(tree, tmp_path_factory):
    """The same run by torchrun with 2 processes; each also saves its final weights."""
    save_dir = tmp_path_factory.mktemp("two") / "run"
    save_dir.mkdir()
    env = {**subprocess_env(), "NNGK_TEST_FROZEN_BN": "1", "NNGK_TEST_WEIGHTS": str(save_dir)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           WORKER, *_argv(tree, save_dir)], env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=LAUNCH_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:]
    return save_dir, done.stdout


def test_two_processes_train_as_one(single, two):
    save_dir, output = two
    _assert_close_runs(single, save_dir)
    rank0, rank1 = (torch.load(save_dir / f"rank{r}.pt") for r in (0, 1))
    assert all(torch.equal(rank0[k], rank1[k]) for k in rank0)  # kernel weights and network identical everywhere
    assert output.count("Finished (max_epochs) after 3 epochs") == 1  # process 0 reports for both
    evaluation = safe_load(save_dir / CHECKPOINT_NAME, CHECKPOINT_KIND)["history"][-1]
    assert evaluation["kernel_accuracy"] == single.history[-1]["kernel_accuracy"]


def test_sharded_refresh_and_search_give_the_single_process_bank(two):
    """The bank the 2 processes built together (each embedding half the batches and
    searching half the rows) is bitwise the one a single process builds from the same
    weights."""
    save_dir, _ = two
    run = load_run(save_dir)
    loader = RunImages(run.config, load_split(run.config), torch.device("cpu")).eval_batches("train")
    bank = FeatureBank.build(run.model, loader, "cpu", run.bank.num_neighbours, progress=False)
    assert torch.equal(run.bank.features, bank.features)
    assert torch.equal(run.bank.neighbours, bank.neighbours)


def _interrupt_at_step(monkeypatch, step: int) -> None:
    """Ctrl-C in this process during its training step ``step`` (1-based)."""
    real, calls = parts_module.build_parts, {"n": 0}

    def hook(module, args):
        if module.training:
            calls["n"] += 1
            if calls["n"] == step:
                signal.raise_signal(signal.SIGINT)

    def build_parts(*args, **kwargs):
        built = real(*args, **kwargs)
        built.model.register_forward_pre_hook(hook)
        return built

    monkeypatch.setattr(parts_module, "build_parts", build_parts)


def test_resume_one_to_two_to_one_with_sigterm_to_one_process(tree, tmp_path, single, frozen_bn, monkeypatch):
    """1 process stops in epoch 2 (step 6 of 12); 2 processes resume it until SIGTERM
    reaches process 1 in its third step (step 9, epoch 3); both stop after it, one
    checkpoint is saved; 1 process finishes the run as the uninterrupted one."""
    save_dir = tmp_path / "run"
    with monkeypatch.context() as m:
        _interrupt_at_step(m, 6)
        assert train(_config(tree, save_dir)).stop_reason == "interrupted"

    done = _launch([*_argv(tree, save_dir), "--resume"], NNGK_TEST_FROZEN_BN="1", NNGK_TEST_SIGNAL="1:3:TERM")
    assert [d.returncode for d in done] == [130, 130], done[0].stdout[-2000:] + done[1].stdout[-2000:]
    assert sum(d.stdout.count("Interrupted: checkpoint saved") for d in done) == 1
    state = safe_load(save_dir / CHECKPOINT_NAME, CHECKPOINT_KIND)
    assert (state["epoch"], state["step"]) == (2, 1)

    result = train(_config(tree, save_dir), resume=True)
    assert result.stop_reason == "max_epochs"
    _assert_close_runs(single, save_dir)


def test_a_killed_process_makes_the_others_stop(tree, tmp_path):
    """SIGKILL to process 1 in its third step: process 0 stops with a clear error (gloo
    sees the closed connection at once; a hung process would take --dist_timeout), and
    the checkpoint written before is intact."""
    save_dir = tmp_path / "run"
    done = _launch(_argv(tree, save_dir, max_epochs=1), NNGK_TEST_SIGNAL="1:3:KILL")
    assert done[1].returncode == -signal.SIGKILL
    assert done[0].returncode == 2, done[0].stdout[-3000:]
    assert "error (process 0 of 2): lost contact with another process of the run" in done[0].stdout
    assert "Traceback" not in done[0].stdout
    assert safe_load(save_dir / CHECKPOINT_NAME, CHECKPOINT_KIND)["step"] == 0


# The first epoch's loss with BatchNorm trained, 2 processes against 1: 0.0031926 against
# 0.0031982 (0.2%) on this tree. Later epochs drift further apart (epoch 2: 0.29 against
# 0.023), as two differently normalised trainings do: no tolerance bounds them.
BATCHNORM_RTOL = 0.02


def test_trained_batchnorm_trains_close_to_one_process(tree, tmp_path):
    """The small CNN as it is (BatchNorm trained, not synchronised on the CPU): each
    process normalises its half of the batch, so the first epoch's loss differs from one
    process's, but within BATCHNORM_RTOL."""
    reference = train(_config(tree, tmp_path / "one", max_epochs=1))
    done = _launch(_argv(tree, tmp_path / "two", max_epochs=1))
    assert [d.returncode for d in done] == [0, 0], done[0].stdout[-3000:]
    losses = _losses(load_run(tmp_path / "two").history)
    torch.testing.assert_close(losses, _losses(reference.history), rtol=BATCHNORM_RTOL, atol=0)
    assert not torch.allclose(losses, _losses(reference.history), **TOLERANCE)  # the difference is real


@pytest.fixture
def torchrun_env(monkeypatch):
    """This process as torchrun's only process (world size 1)."""
    for name, value in torchrun_variables(0, 1, free_port()).items():
        monkeypatch.setenv(name, value)


def test_the_ddp_path_with_one_process_is_the_plain_run(tree, tmp_path, single, frozen_bn, torchrun_env):
    """Under torchrun with one process the run goes through DistributedDataParallel and
    the loss share, and gives bitwise the plain run's history and weights."""
    result = train(_config(tree, tmp_path / "run"))
    assert not torch.distributed.is_initialized()  # the run left its process group
    assert [h["loss"] for h in result.history] == [h["loss"] for h in single.history]
    expected, got = _weights(single.model, single.kernel_weights), _weights(result.model, result.kernel_weights)
    assert all(torch.equal(got[k], expected[k]) for k in expected)


def test_softmax_through_ddp_with_one_process_is_the_plain_run(tree, tmp_path, monkeypatch):
    """The softmax head is averaged with the network too (and its loss shared)."""
    plain = train(_config(tree, tmp_path / "plain", loss="softmax", max_epochs=1))
    for name, value in torchrun_variables(0, 1, free_port()).items():
        monkeypatch.setenv(name, value)
    ddp = train(_config(tree, tmp_path / "ddp", loss="softmax", max_epochs=1))
    assert [h["loss"] for h in ddp.history] == [h["loss"] for h in plain.history]
    assert all(torch.equal(a, b) for a, b in zip(ddp.head.state_dict().values(), plain.head.state_dict().values()))


def test_sync_bn_on_the_cpu_is_refused(tree, tmp_path, torchrun_env):
    with pytest.raises(ConfigError, match="--sync_bn needs GPUs"):
        train(_config(tree, tmp_path / "run", sync_bn=True))
    assert not torch.distributed.is_initialized()


def test_an_error_of_process_0_stops_every_process_with_one_line(tree, tmp_path, single):
    """Process 0 checks the save folder; its refusal (a run is there, no --resume) reaches
    the other process, and both exit at once with the same error line."""
    save_dir = Path(single.config.save_dir)
    done = _launch(_argv(tree, save_dir))
    assert [d.returncode for d in done] == [2, 2], done[0].stdout[-2000:] + done[1].stdout[-2000:]
    for rank, d in enumerate(done):
        assert f"error (process {rank} of 2): {save_dir} already holds a run; pass --resume" in d.stdout
        assert "Traceback" not in d.stdout


def test_the_run_lock_holds_under_torchrun(tree, tmp_path, torchrun_env):
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    with run_lock(save_dir), pytest.raises(ConfigError, match="another process is training"):
        train(_config(tree, save_dir))
    assert not torch.distributed.is_initialized()


def test_evaluate_runs_on_process_0_only(single, monkeypatch, capsys):
    for name, value in torchrun_variables(1, 2, free_port()).items():
        monkeypatch.setenv(name, value)
    assert evaluate_main(["--save_dir", single.config.save_dir, "--no_progress"]) == 0
    assert capsys.readouterr().out == ""
    assert not (Path(single.config.save_dir) / METRICS_NAME).exists()
