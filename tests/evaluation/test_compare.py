"""Comparing runs: table, figure and command line, on hand-written metrics files, and once
from saved runs that have not been evaluated yet."""

import json
import os
import random

import pytest
from matplotlib.figure import Figure

from nngk_lab.evaluation import compare
from nngk_lab.viz.compare import comparison_figure
from nngk_lab.compare import main as compare_main
from nngk_lab.errors import CheckpointError
from nngk_lab.evaluation.run import METRICS_NAME
from nngk_lab.training.config import make_config
from nngk_lab.training.loop import train

from tiny_runs import TINY, write_tree

KEYS = [key for key, _ in compare.COLUMNS]


def fake_metrics(save_dir, loss, rng):
    """A metrics dict as evaluate_run writes it, with random values drawn fresh."""
    def network():
        return {key: round(rng.random(), 4) for key in KEYS}

    return {"save_dir": str(save_dir), "loss": loss, "trained": network(), "untrained": network()}


@pytest.fixture
def saved(tmp_path):
    rng = random.Random()
    runs = []
    for name, loss in (("nngk", "nngk"), ("softmax", "softmax")):
        metrics = fake_metrics(tmp_path / name, loss, rng)
        (tmp_path / name).mkdir()
        (tmp_path / name / METRICS_NAME).write_text(json.dumps(metrics))
        runs.append(metrics)
    return runs


def test_rows_hold_every_network_in_order(saved):
    rows = compare.comparison_rows(saved)
    assert [r[:2] for r in rows] == [["nngk", "nngk"], ["nngk (untrained)", "nngk"],
                                     ["softmax", "softmax"], ["softmax (untrained)", "softmax"]]
    for row, (metrics, network) in zip(rows, [(m, n) for m in saved for n in ("trained", "untrained")]):
        assert row[2:] == [metrics[network][key] for key in KEYS]


def test_tables_show_every_value(saved):
    text = compare.comparison_table(saved)
    markdown = compare.comparison_table(saved, markdown=True)
    for metrics in saved:
        for network in ("trained", "untrained"):
            for value in metrics[network].values():
                assert f"{value:.4f}" in text and f"{value:.4f}" in markdown
    lines = markdown.splitlines()
    assert lines[0].startswith("| run | loss | accuracy | R@1 |") and len(lines) == 2 + 4
    assert all(line.count("|") == len(KEYS) + 3 for line in lines)


def test_missing_metric_is_a_dash_and_no_bar(saved):
    del saved[1]["trained"]["nmi"]
    assert compare.comparison_rows(saved)[2][-1] is None
    assert compare.comparison_table(saved, markdown=True).splitlines()[4].endswith("| - |")
    comparison_figure(saved)  # draws without the value


def test_clashing_folder_names_use_whole_paths(saved, tmp_path):
    twin = fake_metrics(tmp_path / "elsewhere" / "nngk", "nngk", random.Random())
    assert compare.run_names([saved[0], twin]) == [saved[0]["save_dir"], twin["save_dir"]]


def test_figure_has_a_bar_per_run_and_metric(saved):
    fig = comparison_figure(saved)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert len(ax.patches) == len(saved) * len(KEYS)
    heights = sorted(p.get_height() for p in ax.patches)
    assert heights == pytest.approx(sorted(m["trained"][k] for m in saved for k in KEYS))
    assert [t.get_text() for t in ax.get_xticklabels()] == [title for _, title in compare.COLUMNS]


def test_command_line_prints_table_and_saves_figure(saved, tmp_path, capsys):
    out = tmp_path / "cmp.png"
    dirs = [m["save_dir"] for m in saved]
    assert compare_main([*dirs, "--out", str(out), "--markdown", "--no_progress"]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| run |") and "softmax (untrained)" in printed
    assert out.read_bytes().startswith(b"\x89PNG")
    # a metrics.json path works as well as its folder
    assert compare_main([str(tmp_path / "nngk" / METRICS_NAME), "--no_progress"]) == 0


def test_unusable_paths_are_clear_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="neither"):
        compare.load_metrics(tmp_path / "empty")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(CheckpointError, match="not a metrics file"):
        compare.load_metrics(tmp_path / "bad.json")
    assert compare_main([str(tmp_path / "empty")]) == 2
    assert "error:" in capsys.readouterr().err


def test_compares_two_saved_runs_evaluating_them_first(tmp_path, capsys):
    tree = write_tree(tmp_path / "tree")
    dirs = []
    for loss in ("nngk", "softmax"):
        dirs.append(tmp_path / loss)
        train(make_config(data_dir=str(tree), save_dir=str(dirs[-1]), loss=loss, max_epochs=1, **TINY))
    assert compare_main([*map(str, dirs), "--out", str(tmp_path / "cmp.png"), "--no_progress"]) == 0
    assert all((d / METRICS_NAME).is_file() for d in dirs)
    first = (dirs[0] / METRICS_NAME).read_text()
    # up to date: read back, not evaluated again; older than the checkpoint: evaluated again
    assert compare.load_metrics(dirs[0]) == json.loads(first)
    stamp = (dirs[0] / "checkpoint.pt").stat().st_mtime
    os.utime(dirs[0] / METRICS_NAME, (stamp - 10, stamp - 10))
    assert compare.load_metrics(dirs[0], progress=False) == json.loads(first)
    assert (dirs[0] / METRICS_NAME).stat().st_mtime > stamp
    table = capsys.readouterr().out
    assert "nngk (untrained)" in table and "softmax (untrained)" in table


def test_training_on_every_class_warns_once_and_compare_says_why(tmp_path, capsys):
    tree = write_tree(tmp_path / "tree")
    capsys.readouterr()
    train(make_config(data_dir=str(tree), save_dir=str(tmp_path / "all"), num_classes=4, max_epochs=1, **TINY))
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert warnings == ["warning: training on all 4 classes holds none out, so the retrieval metrics (Recall@K, "
                        "MAP@R, NMI) will be empty, shown as - by python -m nngk_lab.compare; pass --num_classes 3 "
                        "or fewer to hold classes out"]
    train(make_config(data_dir=str(tree), save_dir=str(tmp_path / "half"), num_classes=2, max_epochs=1, **TINY))
    assert "warning:" not in capsys.readouterr().err
    two = write_tree(tmp_path / "two", num_classes=2)  # --num_classes 1 cannot train: say what can
    train(make_config(data_dir=str(two), save_dir=str(tmp_path / "two_run"), max_epochs=1, **TINY))
    assert capsys.readouterr().err.splitlines()[-1].endswith(
        "shown as - by python -m nngk_lab.compare; add class folders to hold some out (training needs two)")
    assert compare_main([str(tmp_path / "all"), str(tmp_path / "half"), "--no_progress"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header, rows, notes = lines[0].split(), lines[1:5], lines[6:]
    cells = dict(zip(header[2:], rows[0].split()[-len(compare.COLUMNS):]))
    assert [cells[title] for _, title in compare.COLUMNS[1:]] == ["-"] * (len(compare.COLUMNS) - 1)
    assert cells["accuracy"] != "-" and "-" not in rows[2].split()
    assert notes == ["- all: it was trained on every class, so no class was held out for retrieval (R@K, MAP@R, "
                     "NMI); train with a smaller --num_classes to measure them"]


def test_other_ks_get_columns_and_a_skipped_nmi_a_note(saved):
    for network in ("trained", "untrained"):
        saved[1][network].update({"recall@10": 0.5, "recall@100": 0.75})
        del saved[1][network]["nmi"]
    assert [title for _, title in compare.metric_columns(saved)] == \
        ["accuracy", "R@1", "R@2", "R@4", "R@8", "R@10", "R@100", "MAP@R", "NMI"]
    rows = compare.comparison_rows(saved)
    assert rows[0][7:9] == [None, None] and rows[2][7:9] == [0.5, 0.75]
    notes = compare.missing_notes(saved)
    assert notes == ["- nngk: R@10, R@100 not measured (python -m nngk_lab.evaluate --ks chooses the K; a K must "
                     "be below the number of held-out images)",
                     "- softmax: NMI skipped (python -m nngk_lab.evaluate --no_nmi)"]
    assert compare.comparison_table(saved).splitlines()[-2:] == notes
