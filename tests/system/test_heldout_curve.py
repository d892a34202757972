"""tools/heldout_curve.py: per-epoch held-out retrieval on a subset of the classes."""

import json
import random
from pathlib import Path

import pytest
import torch

from nngk_lab.data.subsets import class_subset
from nngk_lab.evaluation.embeddings import split_embeddings
from nngk_lab.evaluation.run import evaluate_run
from nngk_lab.training.config import make_config
from nngk_lab.training.loop import train

from tiny_runs import TINY, write_tree
from tool_scripts import load_tool


def naive_recall_at_1(features, labels):
    d = torch.cdist(features.double(), features.double())
    d.fill_diagonal_(float("inf"))
    return float((labels[d.argmin(1)] == labels).double().mean())


def test_curve_starts_untrained_and_sees_only_the_first_classes(tmp_path):
    tool = load_tool("heldout_curve")
    data = write_tree(tmp_path / "data", num_classes=5, per_class=10)
    subset = class_subset(data, 4, tmp_path / "subset")
    assert sorted(p.name for p in subset.iterdir()) == ["class_000", "class_001", "class_002", "class_003"]
    assert all(p.is_symlink() for p in subset.iterdir())  # nothing copied
    settings = {**TINY, "data_dir": str(subset), "num_classes": 2, "save_dir": str(tmp_path / "run")}
    rows = tool.curve(settings, 2)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["classes"], metrics["trained_classes"], metrics["heldout_images"]) == (4, 2, 20)
    assert metrics["epochs"] == 2 and len(rows) == 3
    assert rows[0] == metrics["untrained"] and rows[2] == metrics["trained"]
    # The last row is the held-out retrieval of the trained network: classes 2 and 3 only.
    heldout = split_embeddings(tmp_path / "run", "heldout")
    assert sorted(set(heldout.labels.tolist())) == [2, 3]
    assert rows[2]["recall@1"] == pytest.approx(naive_recall_at_1(heldout.features, heldout.labels), abs=1e-12)
    # The middle row is the run after one epoch: what a run of one epoch measures.
    train(make_config(**{**settings, "save_dir": str(tmp_path / "one"), "max_epochs": 1}))
    assert rows[1] == evaluate_run(tmp_path / "one", progress=False)["trained"]


def test_command_prints_each_seeds_rows_in_its_columns(tmp_path, capsys, monkeypatch):
    tool = load_tool("heldout_curve")
    data = write_tree(tmp_path / "data", num_classes=5, per_class=10)
    rng = random.Random()
    seen, curves = {}, {}

    def fake_curve(settings, epochs):
        seen[settings["seed"]] = settings
        curves[settings["seed"]] = [{"recall@1": rng.random(), "map@r": rng.random()} for _ in range(epochs + 1)]
        classes = sorted(p.name for p in Path(settings["data_dir"]).iterdir())
        assert classes == ["class_000", "class_001", "class_002", "class_003"]  # --first_classes 4
        return curves[settings["seed"]]

    monkeypatch.setattr(tool, "curve", fake_curve)
    flags = ["--model", "small_cnn", "--pretrained", "none", "--input_size", "8", "--hflip", "false",
             "--num_neighbours", "5", "--batch_size", "8", "--workers", "0"]
    assert tool.main(["--first_classes", "4", "--epochs", "2", "--seeds", "3", "7", "--data_dir", str(data),
                      "--num_classes", "2", *flags]) == 0
    assert sorted(seen) == [3, 7] and seen[3]["save_dir"] != seen[7]["save_dir"]
    assert (seen[3]["num_classes"], seen[3]["batch_size"], seen[3]["progress"]) == (2, 8, False)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["epoch", "R@1", "s3", "MAP@R", "s3", "R@1", "s7", "MAP@R", "s7"]
    for epoch, line in enumerate(lines[1:]):
        expected = [epoch] + [round(curves[s][epoch][key], 4) for s in (3, 7) for key in ("recall@1", "map@r")]
        assert [float(v) for v in line.split()] == pytest.approx(expected, abs=1e-9), line
    assert len(lines) == 1 + 3
