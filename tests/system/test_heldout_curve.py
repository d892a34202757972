"""tools/heldout_curve.py: per-epoch held-out retrieval on a subset of the classes."""

import json

from tiny_runs import TINY, write_tree
from tool_scripts import load_tool


def test_curve_starts_untrained_and_sees_only_the_first_classes(tmp_path):
    tool = load_tool("heldout_curve")
    data = write_tree(tmp_path / "data", num_classes=5, per_class=10)
    subset = tool.class_subset(data, 4, tmp_path / "subset")
    assert sorted(p.name for p in subset.iterdir()) == ["class_000", "class_001", "class_002", "class_003"]
    assert all(p.is_symlink() for p in subset.iterdir())  # nothing copied
    settings = {**TINY, "data_dir": str(subset), "num_classes": 2, "save_dir": str(tmp_path / "run")}
    rows = tool.curve(settings, 2)
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["classes"], metrics["trained_classes"], metrics["heldout_images"]) == (4, 2, 20)
    assert metrics["epochs"] == 2 and len(rows) == 3
    assert rows[0] == metrics["untrained"] and rows[2] == metrics["trained"]


def test_command_prints_one_row_per_epoch_and_seed_columns(tmp_path, capsys):
    data = write_tree(tmp_path / "data", num_classes=4, per_class=10)
    flags = ["--model", "small_cnn", "--pretrained", "none", "--input_size", "8", "--hflip", "false",
             "--num_neighbours", "5", "--batch_size", "8", "--workers", "0"]
    assert load_tool("heldout_curve").main(["--first_classes", "4", "--epochs", "1", "--seeds", "0", "1",
                              "--data_dir", str(data), "--num_classes", "2", *flags]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split() == ["epoch", "R@1", "s0", "MAP@R", "s0", "R@1", "s1", "MAP@R", "s1"]
    rows = [line.split() for line in lines[1:]]
    assert [r[0] for r in rows] == ["0", "1"]
    assert all(0 <= float(v) <= 1 for r in rows for v in r[1:]) and all(len(r) == 5 for r in rows)
