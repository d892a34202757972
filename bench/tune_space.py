"""What ``bench/bench_tune.py`` searches for each loss: the parameters that matter to it,
their ranges, and how a pytorch-metric-learning (PML) loss gets settings the kit's
command line does not have (its margins, scales and miner).

Every loss searches its learning rate. NNGK adds the method's own levers (kernel width,
K, unit-length embeddings, the centre scheme and its momentum, kernels on the batch's own
images, the kernel weights' learning rate); softmax has nothing else of its own; each PML
loss adds its scales, margins and miner settings and, for the in-batch losses, how many
images of a class a batch holds. The ranges bracket the libraries' defaults and the
values the kit's docs report, each by about an order of magnitude where the parameter is
a scale.

A trial's parameters are named as Optuna stores them: a :class:`~nngk_lab.training.config.TrainConfig`
field by its own name (``learning_rate``), a PML loss argument as ``loss.NAME`` and a
miner argument as ``miner.NAME``; :func:`split_params` sorts them into run settings and
PML options.
"""

from __future__ import annotations

import contextlib

from nngk_lab.models import baselines

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


def split_params(params: dict) -> tuple[dict, dict, dict]:
    """(run settings, PML loss arguments, PML miner arguments) of a trial's parameters."""
    settings, loss, miner = {}, {}, {}
    for name, value in params.items():
        kind, _, key = name.partition(".")
        if key:
            {"loss": loss, "miner": miner}[kind][key] = value
        else:
            settings[name] = value
    return settings, loss, miner


@contextlib.contextmanager
def pml_options(loss_args: dict, miner_args: dict):
    """While open, every PML loss and miner the kit builds gets these arguments over the
    library's defaults. The kit runs PML at its defaults and has no flags for them, so the
    search sets them here for the runs it trains, in this process only."""
    if not loss_args and not miner_args:
        yield
        return
    original = baselines._pml_parts

    def parts(name, num_classes, embedding_dim):
        loss, miner = original(name, num_classes, embedding_dim)
        loss = type(loss)(*((num_classes, embedding_dim) if name == "proxy_nca" else ()), **loss_args)
        if miner is not None:
            miner = type(miner)(**miner_args)
        return loss, miner

    baselines._pml_parts = parts
    try:
        yield
    finally:
        baselines._pml_parts = original
