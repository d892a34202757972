"""bench/bench_tune.py: the search never reads a held-out class, every loss gets the same
number of trials, a killed search continues where it stopped, and its table says what its
JSON says. One tiny search (killed once, then resumed) serves the system tests."""

import json
from pathlib import Path

import pytest
from tiny_runs import write_tree

from bench import bench_tune, tune_report, tune_space
from nngk_lab.errors import ConfigError
from nngk_lab.models.baselines import BaselineLoss
from nngk_lab.training.config import make_config
from nngk_lab.training.loaders import load_split

LOSSES = ("nngk", "multi_similarity")
TRIALS, FOLDS, SEEDS = 2, 2, 2
FLAGS = ["--model", "small_cnn", "--input_size", "8", "--hflip", "false", "--num_neighbours", "5",
         "--batch_size", "8", "--workers", "0"]
KILL_AT = 4  # the 4th run: multi-similarity's first trial (the default), second fold, after training, before evaluation


class Killed(BaseException):
    """What a SIGKILL does to the search: it stops at once, nothing runs its handlers."""


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """A search killed during a run, then run again to the end with the same command; the
    real classes (resolved links) of every run it trained, per invocation."""
    tmp = tmp_path_factory.mktemp("tune")
    data = write_tree(tmp / "data", num_classes=8, per_class=16)
    argv = ["--data_dir", str(data), "--num_classes", "4", "--losses", *LOSSES, "--trials", str(TRIALS),
            "--folds", str(FOLDS), "--epochs", "1", "--seeds", str(SEEDS), "--out_dir", str(tmp / "out"),
            "--no_progress", *FLAGS]
    calls = {"first": [], "second": [], "defaults": []}
    real_train = bench_tune.train
    with pytest.MonkeyPatch.context() as mp:
        def spy(invocation, kill_at=None):
            def train(config, resume=False):
                classes = [(Path(config.data_dir) / c).resolve().name for c in load_split(config).classes]
                calls[invocation].append({"loss": config.loss, "save_dir": Path(config.save_dir).name,
                                          "classes": classes, "trained": classes[:config.num_classes]})
                result = real_train(config, resume)
                if len(calls[invocation]) == kill_at:
                    raise Killed
                return result
            return train

        mp.setattr(bench_tune, "train", spy("first", KILL_AT))
        with pytest.raises(Killed):
            bench_tune.main(argv)
        mp.setattr(bench_tune, "train", spy("second"))
        assert bench_tune.main(argv) == 0
        summary = json.loads((tmp / "out" / "bench_tune.json").read_text())
        mp.setattr(bench_tune, "train", spy("defaults"))
        assert bench_tune.main([*argv, "--defaults"]) == 0
    with_defaults = json.loads((tmp / "out" / "bench_tune.json").read_text())
    return {"data": data, "out": tmp / "out", "calls": calls, "summary": summary, "with_defaults": with_defaults}


def test_held_out_classes_are_never_read_by_the_search(search):
    summary, heldout = search["summary"], {f"class_{c:03d}" for c in range(4, 8)}
    assert set(summary["heldout_classes"]) == heldout
    runs = search["calls"]["first"] + search["calls"]["second"]
    searched = [r for r in runs if r["save_dir"].startswith("fold")]
    final = [r for r in runs if r["save_dir"].startswith("final")]
    # the killed run was trained twice
    assert len(searched) == len(LOSSES) * TRIALS * FOLDS + 1 and len(final) == len(LOSSES) * SEEDS
    for run in searched:  # the folder the run read holds trained classes only, two of them validation
        assert not set(run["classes"]) & heldout and len(run["classes"]) == 4 and len(run["trained"]) == 2
    for run in final:  # the final runs train on the trained classes and retrieve among the held-out ones
        assert set(run["trained"]) == set(summary["trained_classes"]) and set(run["classes"]) - set(run["trained"]) == heldout
    for trial in summary["trials"]:
        for fold in trial["folds"]:
            assert not (set(fold["train_classes"]) | set(fold["val_classes"])) & heldout
    # every fold validates on classes it does not train on, and the folds differ
    assert {tuple(f["val_classes"]) for f in summary["folds"]} == {("class_002", "class_003"), ("class_000", "class_001")}


def test_every_loss_gets_the_same_number_of_trials(search):
    summary = search["summary"]
    spent = {loss: sum(t["loss"] == loss and t["state"] in ("COMPLETE", "FAIL") and not t["killed"]
                       for t in summary["trials"]) for loss in LOSSES}
    assert spent == dict.fromkeys(LOSSES, TRIALS)
    assert [row["trials"] for row in summary["rows"]] == [TRIALS] * len(LOSSES)
    for row in summary["rows"]:
        assert len(row["runs"]) == SEEDS and sorted(r["seed"] for r in row["runs"]) == list(range(SEEDS))
        assert all(len(t["folds"]) == FOLDS for t in summary["trials"] if t["state"] == "COMPLETE")


def test_a_killed_search_continues_instead_of_starting_again(search):
    first, second, summary = search["calls"]["first"], search["calls"]["second"], search["summary"]
    assert len(first) == KILL_AT
    # Trained again: only the killed run (its trial's first fold is reused); then what the
    # first call never reached.
    assert [(r["loss"], r["save_dir"].split("-")[0]) for r in second] == [
        ("nngk", "fold0"), ("nngk", "fold1"), ("multi_similarity", "fold1"),
        ("multi_similarity", "fold0"), ("multi_similarity", "fold1"),
        *((loss, "final") for loss in LOSSES for _ in range(SEEDS))]
    assert second[2]["save_dir"] == first[-1]["save_dir"]  # the same parameters, so the same run
    killed = [t for t in summary["trials"] if t["loss"] == "multi_similarity"]
    assert [t["state"] for t in killed] == ["FAIL", "COMPLETE", "COMPLETE"] and killed[0]["killed"]
    assert killed[1]["params"] == killed[0]["params"]
    # the killed trial was the kit's default setting: its score is the retried trial's
    row = next(r for r in summary["rows"] if r["loss"] == "multi_similarity")
    assert row["default_validation"] == killed[1]["value"] is not None
    assert killed[0]["params"]["m_per_class"] == 5 and killed[0]["params"]["loss.alpha"] == 2


def test_defaults_are_measured_with_the_same_seeds_reusing_runs_they_share(search):
    summary, again = search["summary"], search["with_defaults"]
    assert [(r["loss"], r["setting"]) for r in again["rows"]] == [(loss, s) for loss in LOSSES for s in ("best", "default")]
    assert [r for r in again["rows"] if r["setting"] == "best"] == summary["rows"]
    for row in again["rows"]:
        assert row["validation"] == row["default_validation"] or row["setting"] == "best"
        assert [r["seed"] for r in row["runs"]] == list(range(SEEDS))
    # nothing searched again; a default that was also the best trial is not trained again
    differ = [r for r in summary["rows"] if r["trial"] != min(t["number"] for t in summary["trials"]
                                                               if t["loss"] == r["loss"] and t["state"] == "COMPLETE")]
    assert [c["save_dir"].split("-")[0] for c in search["calls"]["defaults"]] == ["final"] * SEEDS * len(differ)


def test_the_table_says_what_the_json_says(search):
    summary = search["with_defaults"]
    markdown = (search["out"] / "bench_tune.md").read_text()
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    assert lines[0] == "| " + " | ".join(tune_report.HEADER) + " |"
    body = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[1:]]
    assert [cells[0] for cells in body] == [name for loss in LOSSES for name in (loss, f"{loss} (default)")]
    for cells, row in zip(body, summary["rows"]):
        assert int(cells[1]) == row["trials"] and float(cells[3]) == pytest.approx(row["validation"], abs=5e-5)
        for cell, key in zip(cells[5:], tune_report.FINAL_KEYS):
            values = [run[key] for run in row["runs"]]
            mean = sum(values) / len(values)
            std = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
            shown_mean, shown_std = (float(x) for x in cell.split("±"))
            assert shown_mean == pytest.approx(mean, abs=5e-5) and shown_std == pytest.approx(std, abs=5e-5)
        trial = next(t for t in summary["trials"] if t["loss"] == row["loss"] and t["number"] == row["trial"])
        assert row["validation"] == trial["value"]
        if row["setting"] == "best":
            assert row["validation"] == max(t["value"] for t in summary["trials"]
                                            if t["loss"] == row["loss"] and t["value"] is not None)
        assert cells[2] == tune_report.setting_text(row["params"])


def test_folds_rotate_through_the_trained_classes_and_refuse_too_few():
    trained = [f"c{i}" for i in range(5)]
    folds = bench_tune.make_folds(trained, 3, 2)
    assert [f["val_classes"] for f in folds] == [["c3", "c4"], ["c0", "c1"], ["c2", "c3"]]
    for fold in folds:
        assert sorted(fold["train_classes"] + fold["val_classes"]) == trained
        assert not set(fold["train_classes"]) & set(fold["val_classes"])
    for bad in (1, 4):
        with pytest.raises(ConfigError, match="--val_classes"):
            bench_tune.make_folds(trained, 1, bad)


def test_a_trials_pml_arguments_become_the_runs_options():
    settings = tune_space.split_params({"learning_rate": 1e-3, "loss.alpha": 7.5, "miner.epsilon": 0.3})
    assert settings == {"learning_rate": 1e-3, "loss_options": '{"alpha": 7.5}', "miner_options": '{"epsilon": 0.3}'}
    config = make_config(loss="multi_similarity", save_dir="unused", **settings)
    tuned = BaselineLoss("multi_similarity", 3, 4, *config.pml_options())
    assert tuned.loss.alpha == 7.5 and tuned.miner.epsilon == 0.3 and tuned.loss.beta == 50
    assert tune_space.split_params({"learning_rate": 1e-3}) == {"learning_rate": 1e-3}


@pytest.mark.parametrize("settings, batch", [
    (dict(loss="multi_similarity", batch_size=8), 5),          # its own m, 5
    (dict(loss="multi_similarity", batch_size=64, m_per_class=8), 64),
    (dict(loss="nca", batch_size=64, m_per_class=5), 60),
    (dict(loss="nca", m_per_class=5), 60),                      # the digits' default batch, 64
    (dict(loss="multi_similarity"), 80),
])
def test_in_batch_losses_get_batches_of_whole_groups(settings, batch):
    fitted = bench_tune.whole_groups(settings)
    assert fitted["batch_size"] == batch
    make_config(**fitted, save_dir="unused")  # the kit accepts it
    assert bench_tune.whole_groups(dict(loss="nngk", batch_size=8)) == dict(loss="nngk", batch_size=8)


def test_merge_puts_several_searches_in_one_table(search, tmp_path):
    path = search["out"] / "bench_tune.json"
    markdown = tune_report.merge([path, path], tmp_path / "merged.json")
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert [s["command"] for s in merged["searches"]] == [search["with_defaults"]["command"]] * 2
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| loss")]
    assert len(rows) == 2 * len(search["with_defaults"]["rows"])
    assert markdown.count(search["with_defaults"]["command"]) == 2


def test_an_interrupted_run_is_never_scored(tmp_path, monkeypatch, capsys):
    """Ctrl-C or SIGTERM stops the trainer after its step with a checkpoint; the search
    must stop too, not evaluate the half-trained run as a finished one."""
    data = write_tree(tmp_path / "data", num_classes=8, per_class=16)
    real_train = bench_tune.train

    def interrupted(config, resume=False):
        result = real_train(config, resume)
        return type(result)(**{**vars(result), "stop_reason": "interrupted"})

    monkeypatch.setattr(bench_tune, "train", interrupted)
    argv = ["--data_dir", str(data), "--num_classes", "4", "--losses", "nngk", "--trials", "1", "--folds", "1",
            "--epochs", "1", "--seeds", "1", "--out_dir", str(tmp_path / "out"), "--no_progress", *FLAGS]
    assert bench_tune.main(argv) == 130
    assert "the same command continues the search" in capsys.readouterr().err
    assert not list((tmp_path / "out").rglob("metrics.json"))
