"""Bad flags and save directories: one line naming the flag or folder, exit status 2,
and a finished or running run is never overwritten."""

from __future__ import annotations

import fcntl
import json

import pytest

from nngk_lab import device as device_module
from nngk_lab.device import resolve_device
from nngk_lab.errors import ConfigError
from nngk_lab.train import main
from nngk_lab.training.config import make_config
from nngk_lab.training.runs import CHECKPOINT_NAME
from nngk_lab.training.loop import train

from tiny_tree import make_tree, one_thread, tiny_argv, tiny_config  # noqa: F401


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("data") / "tree")


def _fails(capsys, argv) -> str:
    """The command line must fail with status 2 and print exactly one line, no traceback."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own errors
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize("flags, expected", [
    (["--sigma", "0"], "--sigma must be a positive number, got 0.0"),
    (["--sigma", "-1"], "--sigma must be a positive number"),
    (["--sigma", "nan"], "--sigma must be a positive number, got nan"),
    (["--sigma", "inf"], "--sigma must be a positive number, got inf"),
    (["--sigma", "ten"], "argument --sigma: invalid float value: 'ten'"),
    (["--max_epochs", "-1"], "--max_epochs must not be negative"),
    (["--max_time", "-5"], "--max_time must be positive"),
    (["--max_time", "0"], "--max_time must be positive"),
    (["--learning_rate", "inf"], "--learning_rate must be a positive number"),
    (["--weight_learning_rate=-1e-3"], "--weight_learning_rate must be a positive number"),
    (["--num_neighbours", "0"], "--num_neighbours must be at least 1"),
    (["--num_neighbours", "500"], "--num_neighbours 500 is larger than the bank allows (32 training images, "
                                  "so at most 31 other centres); pass --num_neighbours 31 or less"),
    (["--batch_size", "0"], "--batch_size must be at least 1"),
    (["--batch_size", "33"], "--batch_size 33 is larger than the 32 training images"),
    (["--workers", "-2"], "--workers must not be negative"),
    (["--resize_size", "4"], "--resize_size 4 must be at least --input_size 8"),
    (["--embedding_dim", "0"], "--embedding_dim must be at least 1"),
    (["--seed", "-1"], "--seed must be in [0, 2**32)"),
    (["--test_fraction", "1"], "--test_fraction must be in [0, 1)"),
    (["--gpu_id", "-1"], "--gpu_id must be 0 or more, got -1"),
    (["--gpu_id", "99"], "--gpu_id 99 asks for"),
    (["--device", "tpu"], "--device 'tpu' is not"),
    (["--model", "vgg"], "argument --model: invalid choice: 'vgg'"),
    (["--epochs", "3"], "unrecognized arguments: --epochs 3"),
])
def test_bad_flags_are_one_line_naming_the_flag(tree, tmp_path, capsys, one_thread, flags, expected):
    err = _fails(capsys, tiny_argv(tree, tmp_path / "run") + flags)
    assert expected in err
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


def test_missing_required_flag_is_one_line(capsys):
    assert "the following arguments are required: --save_dir" in _fails(capsys, [])


def test_gpu_id_beyond_the_gpus_present(monkeypatch):
    monkeypatch.setattr(device_module.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(device_module.torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"--gpu_id 2 asks for GPU 2 but this machine has 2 \(ids 0..1\)"):
        resolve_device(gpu_id=2)
    monkeypatch.setattr(device_module.torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="--gpu_id 0 asks for a GPU but this machine has no usable CUDA GPU"):
        resolve_device(gpu_id=0)


def test_save_dir_that_cannot_be_written(tree, tmp_path, capsys, monkeypatch):
    (tmp_path / "a_file").write_text("")
    err = _fails(capsys, tiny_argv(tree, tmp_path / "a_file" / "run"))
    assert f"cannot write to --save_dir {tmp_path / 'a_file' / 'run'}" in err
    # A read-only folder (simulated: the tests may run as root, who may write anywhere).
    def touch(self, *args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(type(tmp_path), "touch", touch)
    assert "Permission denied" in _fails(capsys, tiny_argv(tree, tmp_path / "read_only"))


def test_existing_run_is_refused_without_resume_and_kept(tree, tmp_path, capsys, one_thread):
    save_dir = tmp_path / "run"
    assert main(tiny_argv(tree, save_dir, max_epochs=1)) == 0
    before = (save_dir / CHECKPOINT_NAME).read_bytes(), (save_dir / "eval.json").read_text()
    capsys.readouterr()
    err = _fails(capsys, tiny_argv(tree, save_dir, max_epochs=1))
    assert "already holds a run; pass --resume to continue it, or choose another --save_dir" in err
    assert ((save_dir / CHECKPOINT_NAME).read_bytes(), (save_dir / "eval.json").read_text()) == before


def test_resuming_a_finished_run_does_not_train_it_again(tree, tmp_path, one_thread):
    first = train(tiny_config(tree, tmp_path / "run", max_epochs=2))
    again = train(tiny_config(tree, tmp_path / "run", max_epochs=2), resume=True)
    assert again.history == first.history
    assert json.loads((tmp_path / "run" / "eval.json").read_text())["epochs"] == 2


def test_resume_refuses_flags_it_would_ignore(tree, tmp_path, capsys, one_thread):
    save_dir = tmp_path / "run"
    assert main(tiny_argv(tree, save_dir, max_epochs=1)) == 0
    capsys.readouterr()
    err = _fails(capsys, tiny_argv(tree, save_dir, "--resume", "--sigma", "5", max_epochs=2))
    assert "--sigma 5.0 differs from the run in" in err and "(sigma 1.0)" in err
    # The same settings, and those a resumed run may change, are accepted.
    assert main(tiny_argv(tree, save_dir, "--resume", max_epochs=2)) == 0


def test_a_folder_with_files_of_a_lost_run_is_not_overwritten(tree, tmp_path, capsys):
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    (save_dir / "eval.json").write_text('{"kernel_accuracy": 0.9}')
    err = _fails(capsys, tiny_argv(tree, save_dir, "--resume"))
    assert "holds eval.json but no checkpoint.pt" in err
    assert (save_dir / "eval.json").read_text() == '{"kernel_accuracy": 0.9}'


def test_two_processes_never_train_in_one_folder(tree, tmp_path, one_thread):
    save_dir = tmp_path / "run"
    save_dir.mkdir()
    with open(save_dir / ".lock", "a") as lock:  # as a running training process holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(ConfigError, match="another process is training in --save_dir"):
            train(tiny_config(tree, save_dir))
        fcntl.flock(lock, fcntl.LOCK_UN)
    assert train(tiny_config(tree, save_dir, max_epochs=1)).stop_reason == "max_epochs"


def test_make_config_rejects_non_numbers():
    with pytest.raises(ConfigError, match="--batch_size must be a number, got '8'"):
        tiny_config("data", "run", batch_size="8")


def test_plain_resume_keeps_the_planned_epochs_and_data(tree, tmp_path, one_thread):
    save_dir = tmp_path / "run"
    assert main(tiny_argv(tree, save_dir, max_epochs=1)) == 0
    # Only --save_dir: the data folder and the 1 planned epoch come from the run, not the defaults.
    assert main(["--save_dir", str(save_dir), "--resume", "--no_progress"]) == 0
    assert len(json.loads((save_dir / "history.json").read_text())) == 1
    assert main(["--save_dir", str(save_dir), "--resume", "--no_progress", "--max_epochs", "2"]) == 0
    assert len(json.loads((save_dir / "history.json").read_text())) == 2


def test_help_states_each_default_once_and_per_model(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and ") (default" not in text
    assert "(default: 5 for resnet18, 1 for small_cnn)" in text  # --update_interval
    assert "(default: 0 for the digits)" in text  # --workers
    assert "(default: true, false for the digits)" in text  # --hflip
    assert "(default: 10.0 for resnet18, 1.0 for small_cnn, 0.2 for nngk on the digits)" in text  # --sigma


def test_config_json_records_the_values_help_states(tmp_path, one_thread):
    digits = make_config(save_dir=str(tmp_path / "d"))
    assert (digits.update_interval, digits.workers, digits.final_relu, digits.pretrained) == (1, 0, False, "none")
    folder = make_config(data_dir="photos", save_dir="r")
    assert (folder.model, folder.update_interval, folder.final_relu, folder.sigma) == ("resnet18", 5, True, 10.0)
    # The small CNN keeps its own recipe on any folder.
    small = make_config(data_dir="photos", save_dir="r", model="small_cnn")
    assert (small.sigma, small.learning_rate, small.num_neighbours, small.input_size) == (1.0, 3e-4, 20, 32)
    assert (small.centres, small.monitor_test, folder.centres, folder.monitor_test) == ("online", False, "paper", True)
    assert small.hflip and small.workers is not None and not digits.monitor_test
    assert (digits.centres, digits.learning_rate) == ("paper", 1e-4)  # chosen on the digits' own classes
    # NNGK on the digits trains unit-length embeddings at sigma 0.2; the other losses keep
    # the small CNN's sigma, and no folder gets either.
    assert (digits.normalise, digits.sigma) == (True, 0.2)
    for loss in ("softmax", "multi_similarity"):
        other = make_config(save_dir="r", loss=loss)
        assert (other.normalise, other.sigma, other.centres) == (False, 1.0, "paper")
    assert not small.normalise and not folder.normalise
    assert make_config(save_dir="r", normalise=False).sigma == 0.2  # each default yields to a given value


def test_pretrained_weights_for_the_small_cnn_are_refused(tree, tmp_path, capsys):
    err = _fails(capsys, tiny_argv(tree, tmp_path / "run", "--pretrained", "/nonexistent.pth"))
    assert "--pretrained applies to resnet18 only" in err
    assert not (tmp_path / "run").exists()


def test_resume_accepts_flags_equal_to_the_runs_effective_values(tree, tmp_path, capsys, one_thread):
    save_dir = tmp_path / "run"
    assert main(tiny_argv(tree, save_dir, max_epochs=1)) == 0
    config = json.loads((save_dir / "config.json").read_text())
    config["final_relu"] = None  # as runs saved before the per-model defaults recorded it
    (save_dir / "config.json").write_text(json.dumps(config))
    assert main(tiny_argv(tree, save_dir, "--resume", "--final_relu", "false", max_epochs=1)) == 0
    err = _fails(capsys, tiny_argv(tree, save_dir, "--resume", "--final_relu", "true", max_epochs=1))
    assert "--final_relu True differs from the run" in err and "(final_relu False)" in err
