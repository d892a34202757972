"""The benchmark scripts run (at tiny sizes) and print their tables; the GPU check's
dry run passes its own correctness checks on the CPU."""

import json

import pytest

from nngk_lab.device import available_cores
from bench import bench_distributed, bench_loss, bench_search, bench_step, gpu_check


def test_gpu_check_dry_run_passes_and_writes_its_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # the fused loss's rows run on the CPU too
    assert gpu_check.main(["--dry-run"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    parts = {r["part"] for r in rows}
    assert {"correct", "loss", "step", "refresh", "search", "loader", "train", "ddp"} <= parts
    checks = [r["check"] for r in rows if r["check"]]
    assert checks and all(c.startswith("ok") for c in checks), checks
    table = (tmp_path / "gpu_check.txt").read_text()
    assert "nngk step" in table and "matmul alone" in table
    assert "fused loss tiny-gather" in table
    assert any(r["part"] == "loss" and "plain" in r["ratio"] for r in rows if r["case"].startswith("fused"))
    assert table in capsys.readouterr().out


def test_loss_bench_prints_its_table_and_agrees_with_the_loop(capsys):
    rows = bench_loss.main(["--quick", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "loop/ours" in out and "gather ms" in out
    assert len(rows) == 2 and all(r["|loss diff|"] < 1e-5 for r in rows)
    assert {r["path"] for r in rows} == {"matmul", "gather"}


def test_search_bench_runs_in_a_fresh_process_and_its_methods_agree(capsys):
    bench_search.main(["--quick", "--sizes", "600", "--methods", "nngk_lab", "torch"])
    out = capsys.readouterr().out
    assert "nngk_lab" in out and "same distances" in out and "DIFFERENT RESULT" not in out
    assert "auto -> torch" in out and "vector extensions (/proc/cpuinfo)" in out
    assert "distances s" in out and "top-k s" in out and "copies s" in out and "by groups ms" in out
    # The other methods' children, run here to save starting more processes.
    results = {m: bench_search.child(m, 500, 500, 7, 8, split=True) for m in ("nngk_lab", "torch", "full_matrix")}
    assert set(results["torch"]["stages"]) == {"distances", "top-k", "copies"}
    if bench_search.faiss_installed():
        results["faiss"] = bench_search.child("faiss", 500, 500, 7, 8, split=True)
        assert set(results["faiss"]["stages"]) == {"distances", "top-k"}
    sums = [r["dist_sum"] for r in results.values()]
    assert all(r["first_ok"] for r in results.values())
    assert max(sums) - min(sums) <= 1e-5 * max(sums)


def test_search_bench_compares_only_with_a_reference():
    same, other = {"dist_sum": 10.0, "first_ok": True}, {"dist_sum": 11.0, "first_ok": True}
    returns_itself = {"dist_sum": 10.0, "first_ok": False}
    assert bench_search.comparison_note(same, same) == "same distances"
    assert bench_search.comparison_note(other, same) == "DIFFERENT RESULT"
    assert bench_search.comparison_note(returns_itself, same) == "DIFFERENT RESULT"
    assert bench_search.comparison_note(other, None) == "no reference"  # nngk_lab not among --methods
    assert bench_search.comparison_note(returns_itself, None) == "SELF NOT EXCLUDED"


def test_step_bench_prints_both_tables(capsys):
    bench_step.main(["--quick"])
    out = capsys.readouterr().out
    assert "images/s serial" in out and "vs softmax (every 5)" in out
    assert "softmax" in out and "nngk" in out


def test_step_bench_numbers_follow_from_its_timings(tmp_path):
    """The derived columns are the arithmetic the table's footnote states, on the
    measured timings: a refresh embeds N images at the measured rate, refreshing every
    epoch costs five times refreshing every fifth, and softmax against itself is 1."""
    bank_size, batch = 300, 8
    refresh, (softmax, nngk) = bench_step.measure("small_cnn", 16, batch, 8, "png", bank_size, 10, 10, 10.0, 1, 16,
                                                  tmp_path)
    assert (softmax["loss"], nngk["loss"]) == ("softmax", "nngk")
    with_workers = next(v for key, v in refresh.items() if key.endswith(" workers"))  # None without workers
    rate = with_workers if with_workers is not None else refresh["images/s serial"]
    assert refresh["refresh s"] == pytest.approx(bank_size / rate, rel=1e-9)
    steps_per_epoch = -(-bank_size // batch)
    every = {i: (refresh["refresh s"] + refresh["search s"]) / (i * steps_per_epoch) for i in (1, 5)}
    for interval in (1, 5):
        assert softmax[f"refresh+search/step ms (every {interval})"] == 0.0
        assert softmax[f"vs softmax (every {interval})"] == pytest.approx(1.0, rel=1e-12)
        assert nngk[f"refresh+search/step ms (every {interval})"] == pytest.approx(1e3 * every[interval], rel=1e-9)
        assert nngk[f"vs softmax (every {interval})"] == pytest.approx(
            (nngk["step ms"] / 1e3 + every[interval]) / (softmax["step ms"] / 1e3), rel=1e-9)
    assert nngk["refresh+search/step ms (every 1)"] == pytest.approx(5 * nngk["refresh+search/step ms (every 5)"])


def test_distributed_bench_times_two_processes(capsys):
    rows = bench_distributed.main(["--quick", "--worlds", "2"])
    assert [r["processes"] for r in rows] == [2]
    row = rows[0]
    assert row["threads each"] == max(1, available_cores() // 2)
    # images/s is the global batch (both processes' shares) over the time of one step.
    assert row["images/s"] == pytest.approx(bench_distributed.QUICK["batch"] / (row["step ms"] / 1e3), rel=1e-9)
    assert row["speed-up"] == "1.00x" and 0 < row["refresh s"] < 60
    out = capsys.readouterr().out
    assert "refresh s" in out and f"{bench_distributed.QUICK['images']} images of" in out
