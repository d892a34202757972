"""nngk_lab.train: the command line end to end on a tiny generated tree, resuming, reloading a
run, and reproducibility. Everything runs on the CPU and takes seconds."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from nngk_lab.kernel.bank import embed
from nngk_lab.files import safe_load
from nngk_lab.data.folders import ImageSamples, scan_image_folder
from nngk_lab.data.transforms import build_transforms
from nngk_lab.data.split import split_samples
from nngk_lab.training.flags import build_train_parser as build_parser
from nngk_lab.train import main
from nngk_lab.errors import ConfigError
from nngk_lab.training.config import make_config
from nngk_lab.training.parts import kernel_sigma
from nngk_lab.training.runs import CHECKPOINT_KIND, load_run
from nngk_lab.training.loop import train

REPO_ROOT = Path(__file__).resolve().parents[2]
NUM_CLASSES, IMAGES_PER_CLASS, MAX_EPOCHS = 4, 12, 2
# Tiny settings shared by the command-line and the Python runs (first 2 classes trained).
TINY_FLAGS = ["--model", "small_cnn", "--input_size", "16", "--max_epochs", str(MAX_EPOCHS),
              "--num_neighbours", "5", "--batch_size", "8", "--update_interval", "1", "--workers", "0",
              "--no_progress"]
TINY_SETTINGS = dict(model="small_cnn", input_size=16, max_epochs=MAX_EPOCHS, num_neighbours=5, batch_size=8,
                     update_interval=1, workers=0, progress=False, sigma=2.0, learning_rate=1e-3)
ORIGINAL_FLAGS = ["--data_dir", "--save_dir", "--gpu_id", "--num_classes", "--sigma", "--batch_size",
                  "--learning_rate", "--update_interval", "--max_epochs", "--max_time", "--im_ext"]
NEW_FLAGS = ["--num_neighbours", "--input_size", "--model", "--seed", "--device"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """4 classes x 12 small PNGs: a class colour plus random-pattern noise."""
    root = tmp_path_factory.mktemp("data") / "tree"
    rng = np.random.default_rng()
    for label in range(NUM_CLASSES):
        folder = root / f"class_{label:03d}"
        folder.mkdir(parents=True)
        colour = rng.integers(0, 256, 3)
        for j in range(IMAGES_PER_CLASS):
            noise = rng.integers(-60, 60, (12, 12, 3))
            pixels = np.clip(colour + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"img_{j:02d}.png")
    return root


def run_cli(args, cwd):
    """``python -m nngk_lab.train ARGS`` in a fresh process that can download nothing."""
    python_path = [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(python_path),
               NNGK_DATA=str(cwd / "nngk_data"), TORCH_HOME=str(cwd / "torch_home"))
    return subprocess.run([sys.executable, "-m", "nngk_lab.train", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def cli_run(tree, tmp_path_factory):
    """One finished command-line run, with float-valued --sigma and --learning_rate."""
    work = tmp_path_factory.mktemp("cli")
    save_dir = work / "run"
    proc = run_cli(["--data_dir", str(tree), "--save_dir", str(save_dir), "--sigma", "0.5",
                    "--learning_rate", "3e-4", *TINY_FLAGS], work)
    return save_dir, proc


def test_cli_trains_end_to_end(cli_run, tree):
    save_dir, proc = cli_run
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "kernel_accuracy" in proc.stdout
    for name in ["checkpoint.pt", "config.json", "history.json", "eval.json"]:
        assert (save_dir / name).is_file(), name
    state = safe_load(save_dir / "checkpoint.pt", CHECKPOINT_KIND)
    assert state["finished"] and state["epoch"] == MAX_EPOCHS
    assert state["classes"] == [f"class_{i:03d}" for i in range(NUM_CLASSES)]
    history = json.loads((save_dir / "history.json").read_text())
    assert len(history) == MAX_EPOCHS and [h["epoch"] for h in history] == list(range(1, MAX_EPOCHS + 1))
    assert all(math.isfinite(h["loss"]) and 0 <= h["train_accuracy"] <= 1 for h in history)
    evaluation = json.loads((save_dir / "eval.json").read_text())
    assert evaluation["epochs"] == MAX_EPOCHS and evaluation["stop_reason"] == "max_epochs"
    assert 0 <= evaluation["kernel_accuracy"] <= 1 and 0 <= evaluation["nearest_neighbour_accuracy"] <= 1
    classes, samples = scan_image_folder(tree)
    split = split_samples(classes, samples, None, 0.2, 0)
    assert evaluation["num_test_images"] == len(split.test) > 0


def test_cli_parses_sigma_and_learning_rate_as_floats(cli_run):
    config = json.loads((cli_run[0] / "config.json").read_text())
    assert config["sigma"] == 0.5 and isinstance(config["sigma"], float)
    assert config["learning_rate"] == 3e-4 and isinstance(config["learning_rate"], float)
    args = build_parser().parse_args(["--save_dir", "x", "--sigma", "0.5", "--learning_rate", "3e-4",
                                      "--max_time", "0.5"])
    assert (args.sigma, args.learning_rate, args.max_time) == (0.5, 3e-4, 0.5)


def test_cli_help_lists_the_original_flags_and_the_new_ones(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for flag in ORIGINAL_FLAGS + NEW_FLAGS:
        assert flag in text, flag


def test_cli_missing_gpu_is_a_one_line_error(tree, tmp_path):
    # A GPU id this machine does not have: 0 without a GPU (as here), one past the last with GPUs.
    missing_gpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    proc = run_cli(["--data_dir", str(tree), "--save_dir", str(tmp_path / "run"), "--gpu_id", str(missing_gpu),
                    *TINY_FLAGS], tmp_path)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "GPU" in lines[0], proc.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_cli_bad_pretrained_file_is_a_one_line_error(tree, tmp_path, capsys):
    code = main(["--data_dir", str(tree), "--save_dir", str(tmp_path / "run"), *TINY_FLAGS, "--model", "resnet18",
                 "--pretrained", str(tmp_path / "weights.pth")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "weights.pth does not exist" in err[0]


def test_cli_refuses_to_overwrite_a_run(cli_run, tree, capsys):
    save_dir, _ = cli_run
    before = (save_dir / "checkpoint.pt").stat().st_mtime_ns
    code = main(["--data_dir", str(tree), "--save_dir", str(save_dir), *TINY_FLAGS])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--resume" in err[0]
    assert (save_dir / "checkpoint.pt").stat().st_mtime_ns == before


def test_cli_resume_of_a_finished_run(cli_run, tree, tmp_path, capsys):
    save_dir = tmp_path / "run"
    shutil.copytree(cli_run[0], save_dir)
    first = json.loads((save_dir / "history.json").read_text())
    files = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in save_dir.iterdir() if p.is_file()}
    assert main(["--data_dir", str(tree), "--save_dir", str(save_dir), *TINY_FLAGS, "--resume"]) == 0
    # Nothing left to train: the saved evaluation is printed and no file is rewritten.
    assert json.loads((save_dir / "eval.json").read_text())["kernel_accuracy"] is not None
    assert f"{json.loads((save_dir / 'eval.json').read_text())['kernel_accuracy']:.4f}" in capsys.readouterr().out
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in save_dir.iterdir() if p.is_file()
            if p.name in files} == files
    assert json.loads((save_dir / "history.json").read_text()) == first
    # Asking for one more epoch continues from the checkpoint rather than starting again.
    assert main(["--data_dir", str(tree), "--save_dir", str(save_dir), *TINY_FLAGS,
                 "--max_epochs", str(MAX_EPOCHS + 1), "--resume"]) == 0
    longer = json.loads((save_dir / "history.json").read_text())
    assert len(longer) == MAX_EPOCHS + 1
    assert [h["loss"] for h in longer[:MAX_EPOCHS]] == [h["loss"] for h in first]
    assert json.loads((save_dir / "config.json").read_text())["sigma"] == 0.5  # the run's own settings
    assert json.loads((save_dir / "eval.json").read_text())["epochs"] == MAX_EPOCHS + 1


def test_load_run_reproduces_the_bank_centres(cli_run, tree):
    save_dir, _ = cli_run
    run = load_run(save_dir)
    assert run.finished and len(run.history) == MAX_EPOCHS
    assert not run.model.training
    config = run.config
    classes, samples = scan_image_folder(config.data_dir, extensions=config.im_ext)
    split = split_samples(classes, samples, config.num_classes, config.test_fraction, config.seed)
    assert run.classes == classes and run.num_trained == split.num_trained == NUM_CLASSES // 2
    _, eval_tf = build_transforms(config.input_size, config.resize_size, config.hflip, config.mean, config.std)
    loader = DataLoader(ImageSamples(split.train, eval_tf), batch_size=7, shuffle=True)
    features, labels = embed(run.model, loader, "cpu", progress=False)
    torch.testing.assert_close(features, run.bank.features, rtol=1e-4, atol=1e-5)
    assert torch.equal(labels, run.bank.labels)
    assert run.kernel_weights.log_weights.shape == (len(split.train),)
    assert run.bank.num_neighbours == 5


def _comparable(history):
    return [{k: v for k, v in h.items() if k != "minutes"} for h in history]


def test_train_from_python_is_reproducible_on_the_cpu(tree, tmp_path, seed):
    results = [train(make_config(data_dir=str(tree), save_dir=str(tmp_path / name), seed=seed % 1000,
                                 **TINY_SETTINGS))
               for name in ("a", "b")]
    for result in results:
        assert isinstance(result.history, list) and len(result.history) == MAX_EPOCHS
        assert all(math.isfinite(h["loss"]) for h in result.history)
        assert result.stop_reason == "max_epochs"
    assert _comparable(results[0].history) == _comparable(results[1].history), f"seed={seed}"
    assert torch.equal(results[0].bank.features, results[1].bank.features)
    assert results[0].evaluation["kernel_accuracy"] == results[1].evaluation["kernel_accuracy"]


def test_a_run_learns_sigma_records_its_diagnostics_and_classifies_with_the_learnt_sigma(tree, tmp_path, seed):
    save_dir = tmp_path / "learnt"
    result = train(make_config(data_dir=str(tree), save_dir=str(save_dir), seed=seed % 1000,
                               **{**TINY_SETTINGS, "sigma_learning_rate": 0.05, "num_neighbours": 15}))
    sigmas = [h["sigma"] for h in result.history]
    # K = 15 of the ~19 training images: every image has kernels of the other class, so a gradient.
    assert all(s != TINY_SETTINGS["sigma"] for s in sigmas) and sigmas[0] != sigmas[-1]
    assert all(h["grad_norm"] > 0 and h["centre_staleness"] > 0 for h in result.history)
    run = load_run(save_dir)
    assert run.kernel_weights.learnt_sigma == pytest.approx(sigmas[-1], rel=1e-6)
    assert kernel_sigma(run.config, run.kernel_weights) == run.kernel_weights.learnt_sigma
    fixed = train(make_config(data_dir=str(tree), save_dir=str(tmp_path / "fixed"), seed=seed % 1000,
                              loss="softmax", **TINY_SETTINGS))
    assert "sigma" not in fixed.history[-1] and fixed.history[-1]["grad_norm"] > 0
    with pytest.raises(ConfigError, match="--sigma_learning_rate learns NNGK's kernel width; --loss softmax"):
        make_config(loss="softmax", sigma_learning_rate=0.01)
    with pytest.raises(ConfigError, match="--sigma_learning_rate must be a positive number"):
        make_config(sigma_learning_rate=-1.0)
