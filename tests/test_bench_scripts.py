"""The benchmark scripts run (at tiny sizes) and print their tables; the GPU check's
dry run passes its own correctness checks on the CPU."""

import json

from bench import bench_loss, bench_search, bench_step, gpu_check


def test_gpu_check_dry_run_passes_and_writes_its_table(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("OUT", str(tmp_path))
    assert gpu_check.main(["--dry-run"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "gpu_check.jsonl").read_text().splitlines()]
    parts = {r["part"] for r in rows}
    assert {"correct", "loss", "step", "refresh", "search", "loader", "train"} <= parts
    checks = [r["check"] for r in rows if r["check"]]
    assert checks and all(c.startswith("ok") for c in checks), checks
    table = (tmp_path / "gpu_check.txt").read_text()
    assert "nngk step" in table and "matmul alone" in table
    assert table in capsys.readouterr().out


def test_loss_bench_prints_its_table_and_agrees_with_the_loop(capsys):
    rows = bench_loss.main(["--quick", "--repeat", "1"])
    out = capsys.readouterr().out
    assert "loop/ours" in out and "gather ms" in out
    assert len(rows) == 2 and all(r["|loss diff|"] < 1e-5 for r in rows)
    assert {r["path"] for r in rows} == {"matmul", "gather"}


def test_search_bench_runs_every_method_in_its_own_process(capsys):
    bench_search.main(["--quick", "--sizes", "600"])
    out = capsys.readouterr().out
    assert "nngk_lab" in out and "full_matrix" in out
    assert "DIFFERENT RESULT" not in out and out.count("same distances") >= 2


def test_step_bench_prints_both_tables(capsys):
    bench_step.main(["--quick"])
    out = capsys.readouterr().out
    assert "images/s serial" in out and "vs softmax (every 5)" in out
    assert "softmax" in out and "nngk" in out
