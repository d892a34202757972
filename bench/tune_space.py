"""What ``bench/bench_tune.py`` searches for each loss: the parameters that matter to it,
their ranges, and how a pytorch-metric-learning (PML) loss gets settings the kit's
command line takes as JSON (``--loss_options``, ``--miner_options``: its margins, scales and miner).

Every loss searches its learning rate. NNGK adds the method's own levers (kernel width,
K, unit-length embeddings, the centre scheme and its momentum, kernels on the batch's own
images, the kernel weights' learning rate); softmax has nothing else of its own; each PML
loss adds its scales, margins and miner settings and, for the in-batch losses, how many
images of a class a batch holds. The ranges bracket the libraries' defaults and the
values the kit's docs report, each by about an order of magnitude where the parameter is
a scale.

A trial's parameters are named as Optuna stores them: a :class:`~nngk_lab.training.config.TrainConfig`
field by its own name (``learning_rate``), a PML loss argument as ``loss.NAME`` and a
miner argument as ``miner.NAME``; :func:`split_params` turns them into run settings.
"""

from __future__ import annotations

import json

# K is drawn from these, below the smallest bank of the search (a run needs K < its images).
NEIGHBOUR_CHOICES = (5, 10, 20, 50, 100)
M_PER_CLASS_CHOICES = (2, 4, 5, 8)  # 4 and 5: the kit's defaults


def suggest(trial, loss: str, max_neighbours: int) -> dict:
    """Draw one setting of ``loss`` from ``trial`` (an Optuna trial); return the
    parameters by their stored names. ``max_neighbours``: the largest K a run can take."""
    params = {"learning_rate": trial.suggest_float("learning_rate", 1e-5, 3e-3, log=True)}
    if loss == "nngk":
        params.update(_nngk(trial, max_neighbours))
    elif loss in ("nca", "proxy_nca"):
        params["loss.softmax_scale"] = trial.suggest_float("loss.softmax_scale", 1.0, 64.0, log=True)
    elif loss == "multi_similarity":
        params.update({"loss.alpha": trial.suggest_float("loss.alpha", 0.2, 20.0, log=True),
                       "loss.beta": trial.suggest_float("loss.beta", 5.0, 80.0, log=True),
                       "loss.base": trial.suggest_float("loss.base", 0.0, 1.0),
                       "miner.epsilon": trial.suggest_float("miner.epsilon", 0.0, 0.5)})
    elif loss == "contrastive":
        params.update({"loss.pos_margin": trial.suggest_float("loss.pos_margin", 0.0, 0.5),
                       "loss.neg_margin": trial.suggest_float("loss.neg_margin", 0.5, 1.5),
                       "miner.pos_margin": trial.suggest_float("miner.pos_margin", 0.0, 0.5),
                       "miner.neg_margin": trial.suggest_float("miner.neg_margin", 0.5, 1.5)})
    if loss == "proxy_nca":  # the proxies' own learning rate
        params["weight_learning_rate"] = trial.suggest_float("weight_learning_rate", 1e-4, 1e-1, log=True)
    if loss in ("nca", "multi_similarity", "contrastive"):
        params["m_per_class"] = trial.suggest_categorical("m_per_class", M_PER_CLASS_CHOICES)
    return params


def _nngk(trial, max_neighbours: int) -> dict:
    choices = [k for k in NEIGHBOUR_CHOICES if k <= max_neighbours] or [max_neighbours]
    params = {"normalise": trial.suggest_categorical("normalise", (True, False)),
              "num_neighbours": trial.suggest_categorical("num_neighbours", choices),
              "centres": trial.suggest_categorical("centres", ("paper", "online")),
              "batch_kernels": trial.suggest_categorical("batch_kernels", (True, False)),
              "weight_learning_rate": trial.suggest_float("weight_learning_rate", 1e-5, 1e-1, log=True)}
    # On unit vectors squared distances lie in [0, 4] and sigma is a temperature; without
    # them distances have the network's own scale. Two names, so each keeps one range.
    if params["normalise"]:
        params["sigma"] = trial.suggest_float("sigma_unit", 0.03, 1.0, log=True)
    else:
        params["sigma"] = trial.suggest_float("sigma_raw", 0.1, 30.0, log=True)
    if params["centres"] == "online":
        params["centre_momentum"] = trial.suggest_float("centre_momentum", 0.0, 0.95)
    return params


def split_params(params: dict) -> dict:
    """A trial's parameters as run settings: the PML loss's and miner's arguments go into
    ``loss_options`` and ``miner_options`` (JSON, as ``--loss_options`` takes them)."""
    settings, options = {}, {"loss": {}, "miner": {}}
    for name, value in params.items():
        kind, _, key = name.partition(".")
        if key:
            options[kind][key] = value
        else:
            settings[name] = value
    for kind, values in options.items():
        if values:
            settings[f"{kind}_options"] = json.dumps(values, sort_keys=True)
    return settings
