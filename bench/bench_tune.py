"""A fair hyperparameter search for every loss, as in "A Metric Learning Reality Check"
(Musgrave et al., 2020): the same number of trials and the same training budget per run
for each loss, scored on validation classes carved out of the trained ones, never on the
held-out classes; then each loss's best setting trained with several seeds and measured
once on the held-out classes.

    taskset -c 0 nice -n 10 python -m bench.bench_tune --trials 10 --folds 2 --epochs 10 --seeds 3

Validation folds: of the trained classes (the first ``--num_classes``, default the first
half, as in training), fold f moves ``--val_classes`` of them (default a third, at least
2) out of training and retrieves among them; on the digits fold 0 trains on 0-2 and
validates on 3-4, fold 1 trains on 2-4 and validates on 0-1. A trial trains one run per
fold and scores the mean validation MAP@R (``--objective``). The held-out classes are in
no fold's folder: the search cannot read them.

Each loss has its own Optuna study (TPE sampler) in ``OUT/search.db``; the loss's first
trial is the kit's default setting, so the search starts from it. Losses take turns trial
by trial, so slow spells of a shared machine hit each alike. Every run is kept under
``OUT/runs`` by a hash of its settings: a killed search continues (the interrupted trial is
tried again with the same parameters, reusing its finished folds), and a finished one
only rewrites its tables. Budget per run: ``--epochs`` and/or ``--minutes`` (wall clock),
the same for every loss, in the search and the final runs alike.

Other flags go to every run as ``python -m nngk_lab.train`` flags (e.g. ``--data_dir DIR
--model small_cnn --input_size 32``). Writes ``OUT/bench_tune.md`` and ``.json``.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import time
from pathlib import Path

from tqdm.auto import tqdm

from bench.common import guarded, machine_summary
from bench.tune_report import write_report
from bench.tune_space import split_params, suggest
from nngk_lab.data.digits import export_digits
from nngk_lab.errors import ConfigError, NNGKError
from nngk_lab.evaluation.run import evaluate_run
from nngk_lab.training.config import LOSS_DEFAULTS, LOSSES, digits_defaults, make_config
from nngk_lab.training.flags import Parser, build_train_parser
from nngk_lab.training.loaders import load_split
from nngk_lab.training.loop import train

# Settings the search owns; the rest of the training flags pass through to every run.
OWN_FLAGS = ("save_dir", "resume", "no_progress", "max_epochs", "max_time", "seed", "loss", "num_classes",
             "data_dir")
# The PML losses' own defaults (the library's), so that each loss's first trial is what the kit runs.
PML_DEFAULTS = {"nca": {"loss.softmax_scale": 1.0}, "proxy_nca": {"loss.softmax_scale": 1.0},
                "multi_similarity": {"loss.alpha": 2.0, "loss.beta": 50.0, "loss.base": 0.5, "miner.epsilon": 0.1},
                "contrastive": {"loss.pos_margin": 0.0, "loss.neg_margin": 1.0, "miner.pos_margin": 0.2,
                                "miner.neg_margin": 0.8}}


def make_folds(trained: list[str], folds: int, val_classes: int) -> list[dict]:
    """Fold f validates on ``val_classes`` consecutive trained classes, counted from the
    last ones backwards by f * val_classes (wrapping round), and trains on the rest."""
    n = len(trained)
    if not 2 <= val_classes <= n - 2:
        raise ConfigError(f"--val_classes must leave at least 2 classes on each side of the {n} trained classes, "
                          f"got {val_classes}")
    result = []
    for f in range(folds):
        start = (n - val_classes + f * val_classes) % n
        val = [trained[(start + j) % n] for j in range(val_classes)]
        result.append({"train_classes": [c for c in trained if c not in val], "val_classes": val})
    return result


def fold_tree(data_dir: Path, fold: dict, into: Path) -> Path:
    """A folder of links to the fold's class folders, named so that sorted order puts its
    training classes first (a run trains on the first ``len(train_classes)``)."""
    into.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(fold["train_classes"] + fold["val_classes"]):
        link = into / f"{i:03d}-{name}"
        if not link.exists():
            link.symlink_to((data_dir / name).resolve(), target_is_directory=True)
    return into


def run_key(settings: dict) -> str:
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def whole_groups(settings: dict) -> dict:
    """``settings`` with, for a loss whose batches are groups of m images of a class, the
    batch size rounded down to a multiple of m (at least m): the kit refuses a batch that
    would cut a group, and the search draws m."""
    m = settings.get("m_per_class", LOSS_DEFAULTS.get(settings.get("loss"), {}).get("m_per_class"))
    if m is None:
        return settings
    batch = settings.get("batch_size")
    if batch is None:  # the loss's own default batch, which holds whole groups of its own m
        batch = make_config(**{k: v for k, v in settings.items() if k != "m_per_class"}, save_dir="unused").batch_size
    return {**settings, "batch_size": max(m, batch // m * m)}


def train_measured(settings: dict, params: dict, runs_dir: Path, name: str) -> dict:
    """Train one run of ``settings`` with a trial's ``params`` and return its metrics
    (``evaluate_run``'s). A finished run with the same settings is reused; a folder left
    by a killed run is trained again from the start, so every run has the whole budget."""
    settings = whole_groups({**settings, **split_params(params)})
    save_dir = runs_dir / f"{name}-{run_key(settings)}"
    done = save_dir / "metrics.json"
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(save_dir, ignore_errors=True)
    # Training's reports (e.g. batches without pairs) would bury the progress bar; the run's
    # history keeps them.
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        result = train(make_config(**settings, save_dir=str(save_dir), progress=False))
    if result.stop_reason == "interrupted":  # Ctrl-C or SIGTERM: never score a half-trained run
        raise KeyboardInterrupt(f"interrupted while training {save_dir}; the same command continues the search")
    return evaluate_run(save_dir, progress=False)


def default_params(loss: str, settings: dict) -> dict:
    """The parameters of the kit's own setting for ``loss`` (a run of ``settings``), by the
    names the search uses."""
    config = make_config(**{**whole_groups(settings), "save_dir": "unused"})
    params = {"learning_rate": config.learning_rate, **PML_DEFAULTS.get(loss, {})}
    weight_lr = config.weight_learning_rate or config.learning_rate
    if loss == "nngk":
        params.update(normalise=config.normalise, num_neighbours=config.num_neighbours, centres=config.centres,
                      batch_kernels=config.batch_kernels, weight_learning_rate=weight_lr)
        params["sigma_unit" if config.normalise else "sigma_raw"] = config.sigma
        if config.centres == "online":
            params["centre_momentum"] = config.centre_momentum
    if loss == "proxy_nca":
        params["weight_learning_rate"] = weight_lr
    if loss in ("nca", "multi_similarity", "contrastive"):
        params["m_per_class"] = config.m_per_class
    return params


class Tuner:
    """The search and final runs of one ``bench_tune`` call (see the module's doc)."""

    def __init__(self, args, base: dict, data_dir: Path, trained: list[str], heldout: list[str]):
        import optuna

        self.args, self.base, self.data_dir = args, base, data_dir
        self.out = Path(args.out_dir)
        self.folds = make_folds(trained, args.folds, args.val_classes or max(2, len(trained) // 3))
        self.trees = [fold_tree(data_dir, fold, self.out / "folds" / f"fold{f}") for f, fold in enumerate(self.folds)]
        self.trained, self.heldout = trained, heldout
        storage = f"sqlite:///{(self.out / 'search.db').resolve()}"
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.studies = {}
        for i, loss in enumerate(args.losses):
            sampler = optuna.samplers.TPESampler(seed=args.search_seed + i,
                                                 n_startup_trials=max(2, args.trials // 3))
            study = optuna.create_study(study_name=loss, storage=storage, direction="maximize",
                                        sampler=sampler, load_if_exists=True)
            if not study.trials:
                study.enqueue_trial(default_params(loss, self.settings(loss, data_dir=str(data_dir))))
            self._recover(study)
            self.studies[loss] = study

    @staticmethod
    def _recover(study) -> None:
        """A trial a killed search left running is closed as failed and queued again with
        the same parameters, so the budget is spent on it once."""
        import optuna
        from optuna.trial import TrialState

        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            optuna.trial.Trial(study, frozen._trial_id).set_user_attr("killed", True)
            study.tell(frozen.number, state=TrialState.FAIL)
            study.enqueue_trial(frozen.params)

    def settings(self, loss: str, **more) -> dict:
        digits = digits_defaults(loss) if self.args.digits else {}
        return {**digits, **self.base, "loss": loss, "max_epochs": self.args.epochs, "max_time": self.args.minutes,
                **more}

    def finished(self, loss: str) -> int:
        """Trials that spent their budget (complete, or failed by their own setting)."""
        return sum(1 for t in self.studies[loss].trials
                   if t.state.name == "COMPLETE" or (t.state.name == "FAIL" and not t.user_attrs.get("killed")))

    def run_trial(self, loss: str, bar) -> None:
        from optuna.trial import TrialState

        study = self.studies[loss]
        trial = study.ask()
        params = suggest(trial, loss, self.max_neighbours())
        scores = []
        try:
            for f, (fold, tree) in enumerate(zip(self.folds, self.trees)):
                settings = self.settings(loss, data_dir=str(tree), num_classes=len(fold["train_classes"]), seed=0)
                metrics = train_measured(settings, params, self.out / "runs" / loss, f"fold{f}")
                scores.append({**fold, "recall@1": metrics["trained"]["recall@1"],
                               "map@r": metrics["trained"]["map@r"], "accuracy": metrics["trained"]["accuracy"],
                               "data_dir": settings["data_dir"]})
                bar.update()
        except NNGKError as e:  # this setting cannot train (e.g. it diverged): it spent its budget
            trial.set_user_attr("error", str(e))
            trial.set_user_attr("folds", scores)
            study.tell(trial, state=TrialState.FAIL)
            bar.update(len(self.folds) - len(scores))
            return
        trial.set_user_attr("folds", scores)
        trial.set_user_attr("params", params)
        study.tell(trial, sum(s[self.args.objective] for s in scores) / len(scores))

    def max_neighbours(self) -> int:
        """The largest K every fold's bank allows (a run needs K below its training images)."""
        sizes = []
        for fold, tree in zip(self.folds, self.trees):
            config = make_config(**self.settings("nngk", data_dir=str(tree), num_classes=len(fold["train_classes"]),
                                                 seed=0), save_dir="unused")
            sizes.append(len(load_split(config).train))
        return min(sizes) - 1

    def search(self, bar) -> None:
        for _ in range(self.args.trials):
            for loss in self.args.losses:
                if self.finished(loss) < self.args.trials:
                    self.run_trial(loss, bar)

    def final(self, loss: str, bar) -> list[dict]:
        """Rows of the table for ``loss``: its best trial's setting (and with ``--defaults``
        the kit's default setting) trained on all trained classes with each seed and
        measured on the held-out classes; none when no trial of ``loss`` completed."""
        study = self.studies[loss]
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        if not complete:
            return []
        # The first trial is the kit's default; a kill may have moved it to a later number.
        default = next((t for t in complete if t.params == study.trials[0].params), None)
        chosen = [("best", study.best_trial)] + ([("default", default)] if self.args.defaults and default else [])
        rows = []
        for which, trial in chosen:
            runs = []
            for seed in range(self.args.seeds):
                settings = self.settings(loss, data_dir=str(self.data_dir), num_classes=len(self.trained), seed=seed)
                metrics = train_measured(settings, trial.user_attrs["params"], self.out / "runs" / loss,
                                         f"final-seed{seed}")
                runs.append({"seed": seed, **{k: metrics["trained"][k] for k in ("recall@1", "map@r", "accuracy")}})
                bar.update()
            rows.append({"loss": loss, "setting": which, "trial": trial.number, "params": trial.user_attrs["params"],
                         "validation": trial.value, "validation_folds": trial.user_attrs["folds"],
                         "default_validation": default.value if default else None, "trials": self.finished(loss),
                         "runs": runs})
        return rows

    def trials_record(self) -> list[dict]:
        return [{"loss": loss, "number": t.number, "state": t.state.name, "value": t.value, "params": t.params,
                 "killed": bool(t.user_attrs.get("killed")), "error": t.user_attrs.get("error"),
                 "folds": t.user_attrs.get("folds", [])}
                for loss, study in self.studies.items() for t in study.trials]


def parse(argv):
    p = Parser(prog="python -m bench.bench_tune", description=__doc__.split("\n\n")[0])
    p.add_argument("--losses", nargs="+", default=list(LOSSES), choices=LOSSES, help="losses to search (default: all)")
    p.add_argument("--trials", type=int, default=10, help="trials per loss (default 10)")
    p.add_argument("--folds", type=int, default=2, help="validation folds per trial (default 2)")
    p.add_argument("--val_classes", type=int, help="validation classes per fold (default a third of the trained "
                                                   "classes, at least 2)")
    p.add_argument("--epochs", type=int, default=10, help="epochs per run (default 10)")
    p.add_argument("--minutes", type=float, help="wall-clock minutes per run (default: no limit)")
    p.add_argument("--seeds", type=int, default=3, help="seeds of each loss's final runs (default 3)")
    p.add_argument("--defaults", action="store_true", help="also train the kit's default setting of each loss "
                                                           "with the same seeds: what the search bought")
    p.add_argument("--objective", default="map@r", choices=("map@r", "recall@1"),
                   help="validation score to maximise (default map@r)")
    p.add_argument("--search_seed", type=int, default=0, help="seed of the samplers (default 0)")
    p.add_argument("--out_dir", default="runs/bench_tune", help="where the search, runs and tables go")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    args, rest = p.parse_known_args(argv)
    given = vars(build_train_parser().parse_args([*rest, "--save_dir", "unused"]))
    if args.trials < 1 or args.folds < 1 or args.seeds < 1 or args.epochs < 1:
        raise ConfigError("--trials, --folds, --seeds and --epochs must be at least 1")
    if args.minutes is not None and not args.minutes > 0:
        raise ConfigError(f"--minutes must be positive, got {args.minutes}")
    args.digits = given["data_dir"] is None
    args.data_dir, args.num_classes = given["data_dir"], given["num_classes"]
    base = {k: v for k, v in given.items() if k not in OWN_FLAGS and v is not None}
    return args, base


def _load() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def _main(argv) -> int:
    command = "python -m bench.bench_tune " + " ".join(sys.argv[1:] if argv is None else argv)
    start, load_before = time.monotonic(), _load()
    args, base = parse(argv)
    data_dir = Path(args.data_dir) if args.data_dir else export_digits()
    probe = make_config(**{**(digits_defaults() if args.digits else {}), **base}, data_dir=str(data_dir),
                        num_classes=args.num_classes, save_dir="unused")
    split = load_split(probe)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    tuner = Tuner(args, base, data_dir, split.trained_classes, split.heldout_classes)
    n_losses = len(args.losses)
    done = sum(min(tuner.finished(loss), args.trials) for loss in args.losses) * args.folds
    finals = args.seeds * (2 if args.defaults else 1)
    with tqdm(total=n_losses * (args.trials * args.folds + finals), initial=done, desc="runs",
              disable=args.no_progress) as bar:
        tuner.search(bar)
        rows = [row for loss in args.losses for row in tuner.final(loss, bar)]
    summary = {"command": command, "machine": machine_summary(), "load_before": load_before, "load_after": _load(),
               "wall_minutes": (time.monotonic() - start) / 60, "data_dir": args.data_dir,
               "budget": {k: getattr(args, k) for k in ("trials", "folds", "epochs", "minutes", "seeds", "objective",
                                                        "defaults")},
               "train_flags": base, "trained_classes": tuner.trained, "heldout_classes": tuner.heldout,
               "folds": tuner.folds, "rows": rows, "trials": tuner.trials_record()}
    print(write_report(summary, Path(args.out_dir)))
    return 0


def main(argv=None) -> int:
    return guarded(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
