"""Time-to-accuracy: every loss trained for the same wall-clock budget on the same data
and model, for several seeds, then evaluated by the same code
(:func:`nngk_lab.evaluate.evaluate_run`) and summarised as mean ± std over seeds.

Each run is ``python -m nngk_lab.train`` in a fresh process (``--max_time`` minutes, no
epoch limit), so no loss inherits another's warm caches or memory. The runs take turns
seed by seed (every loss once, then every loss again), each seed's round starting one
loss later than the last, so slow spells of a shared machine hit every loss about
equally and no loss always runs first. ``bench/bench_quality.py`` is the command line;
notebook 7 draws it with :func:`nngk_lab.viz.quality_figure`."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from ..errors import ConfigError, NNGKError
from ..files import atomic_write_text
from ..progress import transient_progress
from ..training.config import LOSSES, config_from_dict
from ..training.flags import config_from_argv
from ..training.loop import train
from .compare import load_metrics

SUMMARY_NAME = "bench_quality"


NO_EPOCH_LIMIT = 1_000_000


# (key, column title): what the table shows per loss, each as mean ± std over seeds.
COLUMNS = (("epochs", "epochs"), ("images_per_second", "images/s"), ("kernel_accuracy", "kernel acc"),
           ("nearest_neighbour_accuracy", "1-NN acc"), ("recall@1", "held-out R@1"), ("map@r", "MAP@R"))


QUALITY_KEYS = ("kernel_accuracy", "nearest_neighbour_accuracy", "recall@1", "map@r")


def run_dir(out_dir, loss: str, seed: int) -> Path:
    return Path(out_dir) / f"{loss}-seed{seed}"


def _train_args(loss: str, seed: int, minutes: float, data_dir: str | None, save_dir: Path) -> list[str]:
    args = ["--save_dir", str(save_dir), "--loss", loss, "--seed", str(seed), "--max_time", str(minutes),
            "--max_epochs", str(NO_EPOCH_LIMIT), "--resume", "--no_progress"]
    return args + (["--data_dir", data_dir] if data_dir else [])


def _check_cached(save_dir: Path, minutes: float) -> bool:
    """Whether ``save_dir`` holds a finished run of this budget (which is then reused);
    refuse one of another budget rather than mix budgets in one table."""
    if not (save_dir / "eval.json").is_file():
        return False
    saved = json.loads((save_dir / "config.json").read_text()).get("max_time")
    if saved != minutes:
        raise ConfigError(f"{save_dir} holds a run of {saved} minutes, not {minutes}; choose another --out_dir "
                          "or the same --minutes")
    return True


def train_one(loss: str, seed: int, minutes: float, data_dir: str | None, out_dir, fresh_process: bool = True,
              extra_args: Sequence[str] = ()) -> Path:
    """Train one run of the benchmark with ``python -m nngk_lab.train`` (unless a finished
    one is there) and return its folder. ``extra_args``: more flags for the run.
    ``fresh_process`` False runs the command line in this process (quicker to start: tests
    and the notebooks' fast mode)."""
    save_dir = run_dir(out_dir, loss, seed)
    if _check_cached(save_dir, minutes):
        return save_dir
    argv = [*_train_args(loss, seed, minutes, data_dir, save_dir), *extra_args]
    if fresh_process:
        package_root = str(Path(__file__).resolve().parents[1])
        env = {**os.environ, "PYTHONPATH": package_root + os.pathsep + os.environ.get("PYTHONPATH", "")}
        done = subprocess.run([sys.executable, "-m", "nngk_lab.train", *argv], env=env, capture_output=True,
                              text=True)
        status, errors = done.returncode, done.stderr
    else:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            try:
                train(*config_from_argv(argv))
                status, errors = 0, ""
            except NNGKError as e:
                status, errors = 2, f"error: {e}"
    if status != 0:
        lines = errors.strip().splitlines() or [f"exit status {status}"]
        raise ConfigError(f"training {loss} (seed {seed}) in {save_dir} failed: {lines[-1]}")
    return save_dir


def run_record(save_dir: Path) -> dict:
    """One run's numbers for the table: epochs (fractional for a partial last epoch),
    images per second of training, the trained and untrained networks' metrics, and
    whether the network ends in an L2 normalisation (``--normalise``, or a PML loss)."""
    metrics = load_metrics(save_dir, progress=False)
    evaluation = json.loads((save_dir / "eval.json").read_text())
    config = json.loads((save_dir / "config.json").read_text())
    n, batch = metrics["train_images"], config["batch_size"]
    steps_per_epoch = math.ceil(n / batch)
    partial = evaluation.get("partial_epoch_steps", 0)
    images = evaluation["epochs"] * n + min(partial * batch, n)
    return {"loss": config["loss"], "seed": config["seed"], "sampler": config["sampler"],
            "normalised": config_from_dict(config).unit_embeddings,
            "epochs": evaluation["epochs"] + partial / steps_per_epoch,
            "images_per_second": images / max(evaluation["minutes"] * 60, 1e-9),
            "trained": metrics["trained"], "untrained": metrics["untrained"]}


def benchmark(losses: Sequence[str] = LOSSES, seeds: int = 3, minutes: float = 2.0, data_dir: str | None = None,
              out_dir="runs/bench_quality", fresh_process: bool = True, progress: bool = True,
              extra_args: Sequence[str] = ()) -> dict:
    """Train and evaluate every loss for every seed (0 .. seeds-1); return the summary
    (also written as ``out_dir/bench_quality.json`` and ``.md``). ``extra_args`` are
    more ``python -m nngk_lab.train`` flags for every run (e.g. ``--model small_cnn``)."""
    unknown = [loss for loss in losses if loss not in LOSSES]
    if unknown:
        raise ConfigError(f"unknown loss {unknown[0]!r}; choose from {', '.join(LOSSES)}")
    if seeds < 1 or not minutes > 0:
        raise ConfigError(f"--seeds must be at least 1 and --minutes positive, got {seeds} and {minutes}")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    records = []
    jobs = [(seed, losses[(i + seed) % len(losses)]) for seed in range(seeds) for i in range(len(losses))]
    for seed, loss in tqdm(jobs, desc="runs", disable=not progress, leave=False):
        save_dir = train_one(loss, seed, minutes, data_dir, out_dir, fresh_process, extra_args)
        records.append(run_record(save_dir))
    summary = {"minutes": minutes, "seeds": seeds, "data_dir": data_dir, "losses": list(losses),
               "train_flags": list(extra_args),
               "rows": summary_rows(records), "runs": records}
    write_summary(summary, out_dir)
    return summary


def mean_std(values: list[float]) -> dict:
    """Mean, sample standard deviation and count of the values that were measured
    (``None`` and NaN left out)."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1) if len(values) > 1 else 0.0
    return {"mean": mean, "std": math.sqrt(var), "n": len(values)}


def summary_rows(records: list[dict]) -> list[dict]:
    """One row per loss (mean and sample std over its seeds), then the untrained network:
    its raw embedding (what unnormalised runs start from, such as softmax's) and its
    L2-normalised one (what the PML losses, and NNGK with ``--normalise``, start from),
    each where such a run is among the records."""
    rows = []
    for loss in dict.fromkeys(r["loss"] for r in records):
        runs = [r for r in records if r["loss"] == loss]
        row = {"name": loss, "sampler": runs[0]["sampler"]}
        for key in ("epochs", "images_per_second"):
            row[key] = mean_std([r[key] for r in runs])
        row.update({key: mean_std([r["trained"].get(key) for r in runs]) for key in QUALITY_KEYS})
        rows.append(row)
    for name, normalised in (("untrained", False), ("untrained, L2-normalised", True)):
        runs = {r["seed"]: r for r in records if r["normalised"] == normalised}.values()
        if runs:
            rows.append({"name": name, "sampler": "-",
                         **{key: mean_std([r["untrained"].get(key) for r in runs]) for key in QUALITY_KEYS}})
    return rows


def stat_cell(stat: dict | None, digits: int) -> str:
    """A table cell for a :func:`mean_std` result: "mean ± std", the mean alone for one
    value, "-" for none."""
    if not stat or stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.{digits}f}" + (f" ± {stat['std']:.{digits}f}" if stat["n"] > 1 else "")


def summary_table(summary: dict) -> str:
    """The summary as a Markdown table."""
    digits = {"epochs": 1, "images_per_second": 0}
    header = ["loss", "sampler", *(title for _, title in COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|---|---|" + "--:|" * len(COLUMNS)]
    for row in summary["rows"]:
        cells = [row["name"], row["sampler"], *(stat_cell(row.get(key), digits.get(key, 4)) for key, _ in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_summary(summary: dict, out_dir) -> None:
    """``out_dir/bench_quality.json`` (everything) and ``.md`` (the table and its setting)."""
    out_dir = Path(out_dir)
    atomic_write_text(json.dumps(summary, indent=2), out_dir / f"{SUMMARY_NAME}.json")
    note = (f"{summary['minutes']} minutes of training per run, seeds 0..{summary['seeds'] - 1}, "
            f"data: {summary['data_dir'] or 'the embedded digits'}; mean ± std over seeds.")
    atomic_write_text(f"{note}\n\n{summary_table(summary)}\n", out_dir / f"{SUMMARY_NAME}.md")


def load_or_run(out_dir, recorded=None, fast: bool = False) -> dict:
    """Notebook 7's summary: the benchmark in ``out_dir`` if it has run there; else the
    ``recorded`` summary (a ``bench_quality.json`` kept with the docs), if given; else a
    benchmark run now: every loss, 1 seed, 1 second each, 16x16 inputs, in this process
    (``fast``, what the tests run), or the full one (3 seeds, 1 minute each, fresh
    processes: half an hour on 2 busy cores)."""
    for path, what in ((Path(out_dir) / f"{SUMMARY_NAME}.json", "the benchmark run in"),
                       (Path(recorded) if recorded else None, "the recorded benchmark")):
        if path is not None and path.is_file():
            print(f"Loaded {what} {path}; `python -m bench.bench_quality --out_dir DIR` measures it again.")
            return json.loads(path.read_text())
    with transient_progress():
        if fast:
            return benchmark(LOSSES, seeds=1, minutes=1 / 60, out_dir=out_dir, fresh_process=False,
                             extra_args=["--input_size", "16"])
        return benchmark(LOSSES, seeds=3, minutes=1.0, out_dir=out_dir)
