"""The time-to-accuracy benchmark: its statistics against a naive reference, its table,
figure and files, a real (tiny) benchmark of two losses, one run in a fresh process, and
its refusals."""

from __future__ import annotations

import json
import random
import statistics

import pytest
from matplotlib.figure import Figure

from bench import bench_quality
from nngk_lab.errors import ConfigError
from nngk_lab.evaluation.time_to_accuracy import (QUALITY_KEYS, benchmark, run_dir, summary_rows, summary_table,
    train_one)
from nngk_lab.viz.compare import quality_figure

from tiny_tree import make_tree, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
# The tiny tree's runs: a small CNN on 8x8 images, a few seconds each.
TINY_FLAGS = ["--model", "small_cnn", "--input_size", "8", "--batch_size", "8", "--num_neighbours", "10",
              "--workers", "0"]


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("data") / "tree")


def _records(rng: random.Random) -> list[dict]:
    def metrics():
        return {key: rng.random() for key in QUALITY_KEYS}

    return [{"loss": loss, "seed": seed, "sampler": "random", "epochs": rng.uniform(1, 9),
             "images_per_second": rng.uniform(10, 900), "trained": metrics(), "untrained": metrics(),
             "normalised": loss == "contrastive"}
            for seed in range(3) for loss in ("nngk", "contrastive")]


def test_rows_are_mean_and_sample_std_over_seeds(seed):
    records = _records(random.Random(seed))
    rows = {row["name"]: row for row in summary_rows(records)}
    assert list(rows) == ["nngk", "contrastive", "untrained", "untrained, L2-normalised"]
    for loss in ("nngk", "contrastive"):
        runs = [r for r in records if r["loss"] == loss]
        for key in QUALITY_KEYS:
            values = [r["trained"][key] for r in runs]
            assert rows[loss][key]["mean"] == pytest.approx(statistics.mean(values), rel=1e-12)
            assert rows[loss][key]["std"] == pytest.approx(statistics.stdev(values), rel=1e-12)
        assert rows[loss]["epochs"]["mean"] == pytest.approx(statistics.mean(r["epochs"] for r in runs))
    # Untrained: the raw network from the NNGK runs, the normalised one from the PML runs.
    raw = [r["untrained"]["recall@1"] for r in records if r["loss"] == "nngk"]
    assert rows["untrained"]["recall@1"]["mean"] == pytest.approx(statistics.mean(raw))
    normalised = [r["untrained"]["map@r"] for r in records if r["loss"] == "contrastive"]
    assert rows["untrained, L2-normalised"]["map@r"]["mean"] == pytest.approx(statistics.mean(normalised))
    table = summary_table({"rows": list(rows.values())})
    assert table.count("\n") == 5 and f"{rows['nngk']['recall@1']['mean']:.4f} ± " in table


def test_untrained_rows_follow_whether_each_run_normalises(seed):
    """NNGK with --normalise starts from the L2-normalised network, as the PML losses do;
    the raw row then comes from the runs that do not normalise (here softmax)."""
    records = _records(random.Random(seed))
    for r in records:
        r["loss"], r["normalised"] = ("nngk", True) if r["loss"] == "nngk" else ("softmax", False)
    rows = {row["name"]: row for row in summary_rows(records)}
    for name, loss in (("untrained", "softmax"), ("untrained, L2-normalised", "nngk")):
        values = [r["untrained"]["recall@1"] for r in records if r["loss"] == loss]
        assert rows[name]["recall@1"]["mean"] == pytest.approx(statistics.mean(values))
    # With no unnormalised run there is no raw row.
    only = [r for r in records if r["normalised"]]
    assert [row["name"] for row in summary_rows(only)] == ["nngk", "untrained, L2-normalised"]


def test_a_tiny_benchmark_trains_evaluates_and_writes_its_table(tree, tmp_path):
    out = tmp_path / "bench"
    summary = benchmark(["nngk", "contrastive"], seeds=2, minutes=0.005, data_dir=str(tree), out_dir=out,
                        fresh_process=False, progress=False, extra_args=TINY_FLAGS)
    assert [row["name"] for row in summary["rows"]] == ["nngk", "contrastive", "untrained",
                                                        "untrained, L2-normalised"]
    assert all(row["recall@1"]["n"] == 2 for row in summary["rows"])
    assert all(r["images_per_second"] > 0 and r["epochs"] > 0 for r in summary["runs"])
    assert [r["normalised"] for r in summary["runs"] if r["seed"] == 0] == [False, True]  # nngk, contrastive
    saved = json.loads((out / "bench_quality.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(summary["rows"]))
    assert summary_table(summary) in (out / "bench_quality.md").read_text()
    fig = quality_figure(summary)
    assert isinstance(fig, Figure) and len(fig.axes) == 4
    assert [len(ax.patches) for ax in fig.axes] == [2, 2, 2, 2]
    # Finished runs are reused, and a budget that differs from theirs is refused.
    before = (run_dir(out, "nngk", 0) / "checkpoint.pt").stat().st_mtime_ns
    benchmark(["nngk"], seeds=1, minutes=0.005, data_dir=str(tree), out_dir=out, fresh_process=False,
              progress=False, extra_args=TINY_FLAGS)
    assert (run_dir(out, "nngk", 0) / "checkpoint.pt").stat().st_mtime_ns == before
    with pytest.raises(ConfigError, match="holds a run of 0.005 minutes, not 0.01"):
        benchmark(["nngk"], seeds=1, minutes=0.01, data_dir=str(tree), out_dir=out, fresh_process=False,
                  progress=False, extra_args=TINY_FLAGS)


def test_a_run_trains_in_a_fresh_process(tree, tmp_path):
    save_dir = train_one("proxy_nca", 1, 0.005, str(tree), tmp_path, extra_args=TINY_FLAGS)
    config = json.loads((save_dir / "config.json").read_text())
    assert (config["loss"], config["seed"], config["max_time"]) == ("proxy_nca", 1, 0.005)
    assert json.loads((save_dir / "eval.json").read_text())["stop_reason"] in ("max_time", "max_epochs")


def test_bad_input_is_one_line(tree, tmp_path, capsys):
    with pytest.raises(SystemExit):
        bench_quality.main(["--losses", "triplet", "--out_dir", str(tmp_path)])
    assert capsys.readouterr().err.startswith("error: argument --losses: invalid choice: 'triplet'")
    assert bench_quality.main(["--losses", "nca", "--data_dir", str(tree), "--out_dir", str(tmp_path),
                               "--minutes", "0.01", "--seeds", "1", "--no_progress", *TINY_FLAGS,
                               "--m_per_class", "24", "--batch_size", "24"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: training nca (seed 0) in ") and err.endswith(
        "failed: error: --m_per_class 24 is larger than the smallest trained class (class_000 has 16 training "
        "images); pass --m_per_class 16 or less\n")
