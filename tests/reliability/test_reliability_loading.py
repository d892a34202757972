"""Loading checkpoints: truncated, foreign, newer, incomplete or code-carrying files give a
CheckpointError naming the file (one line on the command line), never a torch traceback."""

from __future__ import annotations

import os
import shutil

import pytest
import torch

from nngk_lab.training import loop as train_module
from nngk_lab.kernel.bank import FeatureBank
from nngk_lab.files import FORMAT_VERSION, atomic_save, safe_load
from nngk_lab.errors import CheckpointError, ConfigError
from nngk_lab.train import main
from nngk_lab.training.runs import CHECKPOINT_KIND, CHECKPOINT_NAME, load_run
from nngk_lab.training.loop import train

from tiny_tree import make_tree, tiny_argv, tiny_config


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A finished tiny run: (data tree, save dir). Tests copy it before changing it."""
    root = tmp_path_factory.mktemp("finished")
    tree = make_tree(root / "tree")
    with pytest.MonkeyPatch.context() as m:
        m.setattr(train_module, "available_cores", lambda: 1)  # as the one_thread fixture
        threads = torch.get_num_threads()
        train(tiny_config(tree, root / "run", max_epochs=1))
        torch.set_num_threads(threads)
    return tree, root / "run"


@pytest.fixture
def run_copy(finished_run, tmp_path):
    tree, run = finished_run
    shutil.copytree(run, tmp_path / "run")
    return tree, tmp_path / "run"


class _RunsCode:
    """Unpickling this would create a file: a checkpoint must never be able to do that."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_truncated_checkpoint(run_copy, capsys):
    tree, run = run_copy
    path = run / CHECKPOINT_NAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError, match=f"checkpoint {path} cannot be read .truncated, corrupt"):
        load_run(run)
    assert main(tiny_argv(tree, run, "--resume")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: checkpoint {path} cannot be read") and err.count("\n") == 1


def test_empty_and_text_files(tmp_path):
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "notes.pt").write_text("hello")
    for name in ("empty.pt", "notes.pt"):
        with pytest.raises(CheckpointError, match=f"{tmp_path / name} cannot be read"):
            safe_load(tmp_path / name)


def test_a_checkpoint_cannot_run_code(tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"format_version": 1, "payload": _RunsCode(str(marker))}, tmp_path / "evil.pt")
    with pytest.raises(CheckpointError, match="holds Python objects .* never loads files that could run code"):
        load_run(tmp_path / "evil.pt")
    assert not marker.exists()


def test_newer_format_version(run_copy):
    _, run = run_copy
    state = safe_load(run / CHECKPOINT_NAME)
    atomic_save({**state, "format_version": FORMAT_VERSION + 1}, run / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match=f"format version {FORMAT_VERSION + 1}, newer .* upgrade nngk_lab"):
        load_run(run)


def test_other_kinds_of_file(run_copy, tmp_path):
    _, run = run_copy
    bank_file = tmp_path / "bank.pt"
    load_run(run).bank.save(bank_file)
    with pytest.raises(CheckpointError, match="holds a 'nngk_lab.FeatureBank', not a 'nngk_lab.TrainState'"):
        load_run(bank_file)
    with pytest.raises(CheckpointError, match="holds a 'nngk_lab.TrainState', not a 'nngk_lab.FeatureBank'"):
        FeatureBank.load(run / CHECKPOINT_NAME)
    torch.save(load_run(run).model.state_dict(), tmp_path / "model.pt")  # e.g. the original code's model.pt
    with pytest.raises(CheckpointError, match="model.pt is not a nngk_lab checkpoint"):
        load_run(tmp_path / "model.pt")


def test_incomplete_checkpoint(tmp_path):
    atomic_save({"kind": CHECKPOINT_KIND, "config": {}}, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match="is incomplete: it lacks classes, num_trained"):
        load_run(tmp_path)


def test_weights_of_another_model(run_copy):
    _, run = run_copy
    state = safe_load(run / CHECKPOINT_NAME)
    state["config"]["embedding_dim"] = 16  # the weights no longer fit the model the config names
    atomic_save(state, run / CHECKPOINT_NAME)
    with pytest.raises(CheckpointError, match="does not match the model it names"):
        load_run(run)


def test_missing_checkpoint_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match=f"checkpoint {tmp_path / 'nope' / CHECKPOINT_NAME} does not exist"):
        load_run(tmp_path / "nope")
    (tmp_path / "dir.pt").mkdir()
    with pytest.raises(CheckpointError, match="is a folder, not a file"):
        safe_load(tmp_path / "dir.pt")


def test_load_run_takes_a_folder_or_a_file(finished_run):
    _, run = finished_run
    a, b = load_run(run), load_run(run / CHECKPOINT_NAME)
    assert a.finished and a.classes == b.classes and torch.equal(a.bank.features, b.bank.features)


def test_load_on_a_missing_gpu_is_a_clear_error(finished_run, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no usable CUDA GPU"):
        load_run(finished_run[1], device="cuda")


def test_resume_into_a_folder_of_another_dataset(run_copy, tmp_path, capsys):
    _, run = run_copy
    other = make_tree(tmp_path / "other", num_classes=4, per_class=20)
    os.rename(other / "class_000", other / "cat")
    assert main(tiny_argv(other, run, "--resume")) == 2
    err = capsys.readouterr().err
    assert "was trained on classes ['class_000', 'class_001'" in err and err.count("\n") == 1


def test_interrupted_write_leaves_the_old_checkpoint(run_copy, monkeypatch):
    _, run = run_copy
    before = (run / CHECKPOINT_NAME).read_bytes()

    def failing_save(obj, f):
        f.write(b"half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(CheckpointError, match="cannot write .*No space left on device; the previous file was kept"):
        atomic_save({"kind": "x"}, run / CHECKPOINT_NAME)
    assert (run / CHECKPOINT_NAME).read_bytes() == before
    assert not list(run.glob(".*.tmp"))
