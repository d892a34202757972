"""Choosing a setting on validation classes: short trainings on the first few trained
classes, scored by retrieval among the remaining trained classes, for several values of
one setting (notebook 3: K = 20 against K = 200).

The held-out classes are never read: the runs see a folder of links to the first
``first_classes`` class folders only (:func:`nngk_lab.data.class_subset`), so whatever is
chosen here can still be measured honestly on the held-out classes afterwards. The same
protocol backs ``tools/heldout_curve.py``."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..data.digits import export_digits
from ..data.folders import list_classes
from ..data.subsets import class_subset
from ..errors import ConfigError
from ..evaluation.run import evaluate_run
from ..training.config import digits_defaults, make_config
from ..training.loop import train
from .cache import cached

SCORES = ("recall@1", "map@r")
MARKER = ".validation-sweep"  # marks a folder as a sweep's own, so its old runs may be deleted


def _claim(root: Path) -> None:
    """Make ``root`` a sweep's folder; refuse a folder that holds anything else, because a
    sweep deletes the runs and subset an earlier one left there."""
    if root.is_dir() and any(root.iterdir()) and not (root / MARKER).exists():
        raise ConfigError(f"{root} already holds other files; give the validation sweep a folder of its own "
                          "(it replaces its runs when the settings change)")
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).touch()


def subset_settings(config: dict, first_classes: int, into) -> dict:
    """``config`` (:func:`nngk_lab.training.config.make_config` settings) reading a new folder
    ``into`` of links to the first ``first_classes`` class folders of its ``data_dir``.

    Without a ``data_dir`` the tree is the embedded digits, and their defaults
    (:func:`nngk_lab.training.config.digits_defaults`) are written into the settings: the
    subset is a folder of its own, which ``make_config`` would otherwise treat as photos.
    Raises :class:`nngk_lab.errors.DataError` for a ``first_classes`` the tree cannot give."""
    given = {k: v for k, v in config.items() if v is not None}
    if given.get("data_dir"):
        data_dir = Path(given["data_dir"])
    else:
        data_dir = export_digits()
        given = {**digits_defaults(given.get("loss") or "nngk"), **given}
    return {**given, "data_dir": str(class_subset(data_dir, first_classes, into))}


def validation_sweep(setting: str, values, root, first_classes: int, num_classes: int, seeds=(0,),
                     device="cpu", **config) -> dict:
    """Train one run per value of ``setting`` and per seed on the first ``num_classes`` of
    the first ``first_classes`` class folders, and score retrieval (Recall@1, MAP@R) among
    the other ``first_classes - num_classes`` (the validation classes), next to the
    untrained network's.

    ``config``: the other :func:`nngk_lab.training.config.make_config` settings (e.g.
    ``max_epochs``; the digits when it names no ``data_dir``). The runs and the class subset
    live under ``root`` (a folder of the sweep's own: other settings replace them) and the
    result is cached in ``root/validation.pt``: while the setting, values, classes, seeds
    and ``config`` are unchanged nothing is trained again.
    Returns ``setting``, ``values``, ``seeds``, the ``trained_classes`` and
    ``validation_classes`` (folder names), ``epochs``, and per score (``recall@1``,
    ``map@r``) a list per value of one number per seed; ``untrained`` holds the same for
    the network each run started from (the same for every value unless the setting
    changes the network, e.g. ``embedding_dim``).
    """
    values, seeds = [v for v in values], [int(s) for s in seeds]
    if not values or not seeds:
        raise ConfigError("a validation sweep needs at least one value and one seed")
    if setting in ("seed", "save_dir", "data_dir", "num_classes"):
        raise ConfigError(f"{setting} is fixed by the validation protocol; sweep a training setting instead")
    if not 2 <= num_classes <= first_classes - 2:
        raise ConfigError(f"a validation sweep trains at least 2 classes and scores retrieval among at least 2 "
                          f"other validation classes, so num_classes must lie between 2 and first_classes - 2 = "
                          f"{first_classes - 2}; got {num_classes}")
    root = Path(root)
    key = {"setting": setting, "values": values, "seeds": seeds, "first_classes": first_classes,
           "num_classes": num_classes, "config": {k: v for k, v in sorted(config.items()) if k != "progress"},
           "version": 1}

    def compute() -> dict:
        _claim(root)
        for stale in (root / "data", root / "runs"):  # left by an earlier sweep with another key
            if stale.exists():
                shutil.rmtree(stale)
        settings = subset_settings({**config, "num_classes": num_classes, "progress": False}, first_classes,
                                   root / "data")
        classes = list_classes(settings["data_dir"])
        result = {"setting": setting, "values": values, "seeds": seeds, "trained_classes": classes[:num_classes],
                  "validation_classes": classes[num_classes:], "epochs": make_config(**settings).max_epochs,
                  **{name: [] for name in SCORES}, "untrained": {name: [] for name in SCORES}}
        for value in values:
            trained, untrained = {name: [] for name in SCORES}, {name: [] for name in SCORES}
            for seed in seeds:
                save_dir = root / "runs" / f"{setting}-{value}-seed{seed}"
                run = train(make_config(**{**settings, setting: value, "seed": seed, "save_dir": str(save_dir),
                                           "device": str(device)}))
                if run.stop_reason == "interrupted":
                    raise KeyboardInterrupt("training interrupted; run the cell again to start the sweep again")
                metrics = evaluate_run(save_dir, device=device, progress=False, ks=(1,), with_nmi=False)
                for name in SCORES:
                    trained[name].append(metrics["trained"][name])
                    untrained[name].append(metrics["untrained"][name])
            for name in SCORES:
                result[name].append(trained[name])
                result["untrained"][name].append(untrained[name])
        return result

    return cached(root / "validation.pt", compute, key)


def validation_text(sweep: dict) -> str:
    """A validation sweep (:func:`validation_sweep`) as lines of text: which classes, and
    per value Recall@1 and MAP@R of each seed next to the untrained network's MAP@R."""
    lines = [f"trained on {', '.join(sweep['trained_classes'])}; retrieval among "
             f"{', '.join(sweep['validation_classes'])}; {sweep['epochs']} epochs per run; one number per seed "
             f"{', '.join(map(str, sweep['seeds']))}"]
    for i, value in enumerate(sweep["values"]):
        cells = {name: " ".join(f"{v:.3f}" for v in row[i]) for name, row in
                 (("recall@1", sweep["recall@1"]), ("map@r", sweep["map@r"]), ("start", sweep["untrained"]["map@r"]))}
        lines.append(f"{sweep['setting']} = {value}: Recall@1 {cells['recall@1']}   MAP@R {cells['map@r']}   "
                     f"(untrained network: MAP@R {cells['start']})")
    return "\n".join(lines)
