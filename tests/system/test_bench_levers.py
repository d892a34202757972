"""bench/bench_levers.py: each lever changes only what it names, runs read only the
trained classes of the fold (never a held-out one), a second call trains nothing, and
the table says what the JSON says, diagnostics included."""

import json
import math
from pathlib import Path

import pytest
import torch
from tiny_runs import write_tree

from bench import bench_levers, bench_tune
from nngk_lab.training.loaders import load_split
from nngk_lab.training.runs import load_run

LEVERS = ("nngk (default)", "learnt sigma", "multi_similarity (default)")
SEEDS = 2
FLAGS = ["--model", "small_cnn", "--input_size", "8", "--hflip", "false", "--num_neighbours", "5",
         "--batch_size", "8", "--workers", "0"]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("levers")
    data = write_tree(tmp / "data", num_classes=8, per_class=16)
    argv = ["--data_dir", str(data), "--num_classes", "4", "--levers", *LEVERS, "--epochs", "2",
            "--seeds", str(SEEDS), "--out_dir", str(tmp / "out"), "--no_progress", *FLAGS]
    calls = {"first": [], "second": []}
    real_train = bench_tune.train
    with pytest.MonkeyPatch.context() as mp:
        for invocation in calls:
            def train(config, resume=False, record=calls[invocation]):
                record.append({"config": config, "classes": [(Path(config.data_dir) / c).resolve().name
                                                             for c in load_split(config).classes]})
                return real_train(config, resume)
            mp.setattr(bench_tune, "train", train)
            assert bench_levers.main(argv) == 0
    summary = json.loads((tmp / "out" / "bench_levers.json").read_text())
    return {"calls": calls, "summary": summary, "markdown": (tmp / "out" / "bench_levers.md").read_text(),
            "out": tmp / "out"}


def test_each_lever_changes_only_what_it_names_and_never_reads_a_held_out_class(study):
    runs = study["calls"]["first"]
    assert len(runs) == len(LEVERS) * SEEDS and study["calls"]["second"] == []
    heldout = {f"class_{c:03d}" for c in range(4, 8)}
    reference = runs[0]["config"]
    for run in runs:
        assert not set(run["classes"]) & heldout and len(run["classes"]) == 4 and run["config"].num_classes == 2
    fields = ("sigma_learning_rate", "loss", "seed", "save_dir", "sampler", "m_per_class", "batch_size")
    for run in runs:  # apart from its own change, the seed and what its loss's defaults set, all alike
        config = run["config"]
        differ = {f for f in vars(config) if getattr(config, f) != getattr(reference, f)}
        assert differ <= set(fields), differ
    learnt = [r["config"] for r in runs[SEEDS:2 * SEEDS]]
    assert all(c.sigma_learning_rate == 0.01 and c.loss == "nngk" for c in learnt)
    assert all(r["config"].loss == "multi_similarity" for r in runs[2 * SEEDS:])
    assert [r["config"].seed for r in runs] == list(range(SEEDS)) * len(LEVERS)


def test_the_table_says_what_the_json_says_with_the_diagnostics(study):
    rows, markdown = study["summary"]["rows"], study["markdown"]
    assert [r["lever"] for r in rows] == list(LEVERS)
    for row in rows:
        assert len(row["runs"]) == SEEDS
        for key in ("map@r", "recall@1", "accuracy"):
            values = [r[key] for r in row["runs"]]
            assert math.isclose(row[key]["mean"], sum(values) / SEEDS)
        line = next(l for l in markdown.splitlines() if l.startswith(f"| {row['lever']} |"))
        assert f"{row['map@r']['mean']:.3f} ± {row['map@r']['std']:.3f}" in line
    nngk, learnt, peer = rows
    for row in (nngk, learnt):
        for run in row["runs"]:
            assert 0 < run["true_class_mass"] <= 1 and run["centre_staleness"] >= 0 and run["grad_norm"] >= 0
            assert run["fresh_spread"] > 0  # an augmented view in training mode is never exactly its centre
            assert 0 <= run["pure_neighbourhoods"] <= 1
    assert all(r["sigma"] == 1.0 for r in nngk["runs"]) and all(r["sigma"] != 1.0 for r in learnt["runs"])
    assert all("centre_staleness" not in r and "sigma" not in r and "fresh_spread" not in r and "pure_neighbourhoods" not in r
               for r in peer["runs"])
    assert "true_class_mass" not in peer and peer["train_accuracy"]["n"] == SEEDS


def test_pure_neighbourhoods_match_a_brute_force_count(study):
    nngk_runs = [p.parent for p in (study["out"] / "runs").glob("*/config.json")
                 if json.loads(p.read_text())["loss"] == "nngk"]
    assert len(nngk_runs) == 2 * SEEDS
    for save_dir in nngk_runs:
        run = load_run(save_dir)
        features, labels, k = run.bank.features.double(), run.bank.labels, run.config.num_neighbours
        distances = torch.cdist(features, features).fill_diagonal_(float("inf"))
        pure = sum(bool((labels[distances[i].topk(k, largest=False).indices] == labels[i]).all())
                   for i in range(len(labels))) / len(labels)
        assert bench_levers.final_bank_diagnostics(save_dir)["pure_neighbourhoods"] == pytest.approx(pure, abs=1e-6)
