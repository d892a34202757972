"""Interruption and resumption: Ctrl-C / SIGTERM save a checkpoint, a resumed run is
bit-for-bit the uninterrupted one on the CPU, and same-seed runs agree."""

from __future__ import annotations

import json
import signal

import pytest
import torch

from signals import signal_at_steps
from nngk_lab.training import loop as train_module
from nngk_lab.kernel.bank import embed
from nngk_lab.data.folders import ImageSamples
from nngk_lab.data.transforms import build_transforms
from nngk_lab.training.loaders import make_loader
from nngk_lab.files import safe_load
from nngk_lab.train import main
from nngk_lab.training.runs import CHECKPOINT_KIND, CHECKPOINT_NAME, load_run
from nngk_lab.training.loop import train

from tiny_tree import history_without_time, make_tree, one_thread, same_tensors, tiny_argv, tiny_config  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("data") / "tree")


def _state(result) -> dict:
    parts = {"model." + k: v for k, v in result.model.state_dict().items()}
    if result.kernel_weights is not None:
        parts["log_weights"] = result.kernel_weights.log_weights.detach()
    if result.head is not None:
        parts.update({"head." + k: v for k, v in result.head.state_dict().items()})
    parts["bank"] = result.bank.features
    return parts


def _optimiser_state(save_dir) -> dict:
    opt = safe_load(save_dir / CHECKPOINT_NAME, CHECKPOINT_KIND)["optimiser"]["state"]
    return {f"{i}.{k}": v for i, s in opt.items() for k, v in s.items()}


def test_same_seed_gives_the_same_history_and_weights(tree, tmp_path):
    a = train(tiny_config(tree, tmp_path / "a"))
    b = train(tiny_config(tree, tmp_path / "b"))
    c = train(tiny_config(tree, tmp_path / "c", seed=1))
    assert history_without_time(a.history) == history_without_time(b.history)
    assert same_tensors(_state(a), _state(b))
    assert same_tensors(_optimiser_state(tmp_path / "a"), _optimiser_state(tmp_path / "b"))
    assert not same_tensors(_state(a), _state(c))  # the seed matters, so the check above means something


@pytest.mark.parametrize("loss, interrupts, workers, in_memory", [
    ("nngk", [{2}], 0, None),            # mid-epoch
    ("nngk", [{4}], 0, None),            # on the last batch of an epoch (4 batches per epoch)
    ("nngk", [{3}, {6}], 0, None),       # twice: mid-epoch, then again after resuming
    ("softmax", [{6}], 0, None),
    ("nngk", [{3}], 0, False),           # images read from their files
    ("nngk", [{3}], 1, False),           # a loader worker process: augmentation does not depend on it
    ("nngk_online", [{3}], 0, None),     # centres moved at every step
])
def test_interrupted_run_resumes_exactly(tree, tmp_path, monkeypatch, loss, interrupts, workers, in_memory):
    settings = dict(loss="nngk", centres="online") if loss == "nngk_online" else dict(loss=loss, centres="paper")
    settings.update(workers=workers, in_memory=in_memory)
    reference = train(tiny_config(tree, tmp_path / "reference", **settings))
    assert load_run(tmp_path / "reference").config.in_memory is (in_memory is None)  # None: small enough
    save_dir = tmp_path / "interrupted"
    resume = False
    for steps in interrupts:
        with monkeypatch.context() as m:
            signal_at_steps(m, steps)
            result = train(tiny_config(tree, save_dir, **settings), resume=resume)
        assert result.stop_reason == "interrupted"
        assert not safe_load(save_dir / CHECKPOINT_NAME, CHECKPOINT_KIND)["finished"]
        resume = True
    resumed = train(tiny_config(tree, save_dir, **settings), resume=True)
    assert resumed.stop_reason == "max_epochs"
    assert history_without_time(resumed.history) == history_without_time(reference.history)
    assert same_tensors(_state(resumed), _state(reference))
    assert same_tensors(_optimiser_state(save_dir), _optimiser_state(tmp_path / "reference"))
    assert load_run(save_dir).finished


def test_sigterm_saves_and_resumes_like_ctrl_c(tree, tmp_path, monkeypatch):
    reference = train(tiny_config(tree, tmp_path / "reference"))
    with monkeypatch.context() as m:
        signal_at_steps(m, {5}, signal.SIGTERM)
        assert train(tiny_config(tree, tmp_path / "run")).stop_reason == "interrupted"
    resumed = train(tiny_config(tree, tmp_path / "run"), resume=True)
    assert history_without_time(resumed.history) == history_without_time(reference.history)
    assert same_tensors(_state(resumed), _state(reference))


def test_a_second_ctrl_c_stops_at_once_and_keeps_the_last_checkpoint(tree, tmp_path, monkeypatch, capsys):
    save_dir = tmp_path / "run"
    train(tiny_config(tree, save_dir, max_epochs=1))
    kept = (save_dir / CHECKPOINT_NAME).read_bytes()
    signal_at_steps(monkeypatch, {2})
    real_raise = signal.raise_signal
    monkeypatch.setattr(signal, "raise_signal", lambda s: (real_raise(s), real_raise(s)))  # pressed twice
    assert main(tiny_argv(tree, save_dir, "--resume", max_epochs=3)) == 130
    err = capsys.readouterr().err
    assert err == f"error: stopped at once by a second Ctrl-C; the last checkpoint in {save_dir} was kept\n"
    assert (save_dir / CHECKPOINT_NAME).read_bytes() == kept


def test_loader_workers_leave_ctrl_c_to_the_training_process(tree, tmp_path):
    class Handler(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, index):
            return signal.getsignal(signal.SIGINT) is signal.SIG_IGN

    loader = make_loader(Handler(), tiny_config(tree, tmp_path, workers=1, batch_size=1),
                         torch.device("cpu"))
    assert [bool(ignored) for ignored in loader] == [True, True]


def test_signal_handlers_are_restored_after_training(tree, tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    train(tiny_config(tree, tmp_path / "run", max_epochs=1))
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_a_run_stopped_by_max_time_keeps_a_bank_of_its_final_model(tree, tmp_path):
    save_dir = tmp_path / "run"
    result = train(tiny_config(tree, save_dir, max_time=1e-9))  # stops after its first step
    state = safe_load(save_dir / CHECKPOINT_NAME, CHECKPOINT_KIND)
    assert result.stop_reason == "max_time" and state["finished"] and (state["epoch"], state["step"]) == (0, 1)
    run = load_run(save_dir)
    features, _ = embed(run.model, make_loader(
        ImageSamples(result.split.train, build_transforms(8, hflip=True)[1]),
        run.config, torch.device("cpu")), "cpu", progress=False)
    assert torch.allclose(features, run.bank.features, atol=1e-5)
    # Resuming with the time already used up takes no further step.
    again = train(tiny_config(tree, save_dir, max_time=1e-9), resume=True)
    assert again.stop_reason == "max_time"
    assert safe_load(save_dir / CHECKPOINT_NAME, CHECKPOINT_KIND)["step"] == 1


def _stop_by_time_at(monkeypatch, epoch: int, step: int) -> None:
    """Make ``--max_time`` run out after training step ``step`` of epoch ``epoch`` (0-based
    epoch, 1-based step), as it would at any moment of a timed run."""
    monkeypatch.setattr(train_module._Run, "time_up",
                        lambda run: (run.progress.epoch, run.progress.step) == (epoch, step))


def _without_test_metrics(history: list[dict]) -> list[dict]:
    return [{k: entry[k] for k in ("epoch", "loss", "train_accuracy", "absent_fraction")} for entry in history]


def test_a_max_time_stop_mid_epoch_is_recorded_as_a_partial_epoch(tree, tmp_path, monkeypatch, capsys):
    reference = train(tiny_config(tree, tmp_path / "reference"))
    save_dir = tmp_path / "timed"
    with monkeypatch.context() as m:
        _stop_by_time_at(m, 1, 2)
        assert main(tiny_argv(tree, save_dir, "--max_time", "100")) == 0
    assert "Finished (max_time) after 1 epoch and 2 steps of epoch 2;" in capsys.readouterr().out
    history = json.loads((save_dir / "history.json").read_text())
    # Epoch 1's entry keeps the test accuracy measured at the refresh after it.
    assert history_without_time(history) == history_without_time(reference.history[:1])
    evaluation = json.loads((save_dir / "eval.json").read_text())
    assert (evaluation["epochs"], evaluation["partial_epoch_steps"]) == (1, 2)
    assert "kernel_accuracy" in evaluation


@pytest.mark.parametrize("centres", ["paper", "online"])
def test_resuming_a_max_time_stop_continues_the_uninterrupted_run(tree, tmp_path, monkeypatch, centres):
    reference = train(tiny_config(tree, tmp_path / "reference", centres=centres))
    save_dir = tmp_path / "timed"
    with monkeypatch.context() as m:
        _stop_by_time_at(m, 1, 2)
        stopped = train(tiny_config(tree, save_dir, max_time=100, centres=centres))
    assert stopped.stop_reason == "max_time"
    resumed = train(tiny_config(tree, save_dir, max_time=100, centres=centres), resume=True)
    assert resumed.stop_reason == "max_epochs"
    assert history_without_time(resumed.history) == history_without_time(reference.history)
    assert same_tensors(_state(resumed), _state(reference))
    assert same_tensors(_optimiser_state(save_dir), _optimiser_state(tmp_path / "reference"))


def test_extending_a_finished_run_between_refreshes_continues_the_uninterrupted_run(tree, tmp_path):
    reference = train(tiny_config(tree, tmp_path / "reference", update_interval=2, max_epochs=4))
    save_dir = tmp_path / "extended"
    train(tiny_config(tree, save_dir, update_interval=2, max_epochs=3))  # ends between two refreshes
    extended = train(tiny_config(tree, save_dir, update_interval=2, max_epochs=4), resume=True)
    # Epoch 3's entry also holds the test accuracy measured when the shorter run ended.
    assert _without_test_metrics(extended.history) == _without_test_metrics(reference.history)
    assert same_tensors(_state(extended), _state(reference))
    assert same_tensors(_optimiser_state(save_dir), _optimiser_state(tmp_path / "reference"))
