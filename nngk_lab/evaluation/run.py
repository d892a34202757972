"""Evaluating a saved run: :func:`evaluate_run` measures the trained network and, for
comparison, the untrained one it started from, with the metrics of
:mod:`nngk_lab.evaluation.metrics` (classification of the trained classes' test images,
retrieval on the held-out classes), and writes ``metrics.json``;
``python -m nngk_lab.evaluate`` does the same from the command line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..files import atomic_write_text
from ..kernel.bank import FeatureBank, embed
from ..kernel.classify import classification_metrics
from ..training.loaders import eval_loaders
from ..training.parts import build_initial_parts, kernel_sigma
from ..training.runs import load_run
from .embeddings import run_data, trained_bank
from .metrics import RECALL_KS, retrieval_metrics

METRICS_NAME = "metrics.json"


# ---------------------------------------------------------------------------------------
# A saved run


def _network_metrics(config, split, model, bank, kernel_weights, head, loaders, device, progress: bool,
                     name: str, ks: Sequence[int], with_nmi: bool) -> dict[str, float]:
    """Classification on the test images and retrieval on the held-out images for one
    network (``bank`` must hold its embeddings of the training images)."""
    result = {}
    if split.test:
        queries, labels = embed(model, loaders["test"], device, progress, desc=f"{name}: test images")
        log_weights = kernel_weights.log_weights.detach() if kernel_weights is not None else None
        result = classification_metrics(queries, labels, bank, log_weights, kernel_sigma(config, kernel_weights),
                                        config.num_neighbours, split.num_trained, head)
        # The method's own classifier: the kernel sums for NNGK, the head for softmax, and
        # 1-NN on the embedding for the pytorch-metric-learning losses.
        own = "softmax_accuracy" if head is not None else \
            "kernel_accuracy" if config.loss == "nngk" else "nearest_neighbour_accuracy"
        result = {"accuracy": result[own], **result}
    if len(split.heldout) >= 2:
        features, labels = embed(model, loaders["heldout"], device, progress, desc=f"{name}: held-out images")
        result.update(retrieval_metrics(features, labels, ks=ks, seed=config.seed, progress=progress,
                                        with_nmi=with_nmi))
    return result


def evaluate_run(save_dir, data_dir=None, device="cpu", progress: bool = True, ks: Sequence[int] = RECALL_KS,
                 with_nmi: bool = True) -> dict:
    """Measure a saved run and the untrained network it started from; write
    ``save_dir/metrics.json`` and return the same dict.

    The data are the run's own (``data_dir`` overrides the folder, e.g. when the run was
    trained on another machine; None uses the run's, and a run without one used the
    embedded digits), split exactly as in training; a folder whose images are not those
    the run was trained on is refused (:func:`nngk_lab.evaluation.embeddings.run_data`)
    before anything is measured or written. The untrained network is rebuilt
    with the run's seed by :func:`nngk_lab.training.parts.build_initial_parts`, as training
    started; its bank is computed from the training images, with all kernel weights 1.
    ``ks``: the K of Recall@K (those below the number of held-out images are kept);
    ``with_nmi=False`` skips NMI, whose k-means takes long on many classes.
    """
    save_dir = Path(save_dir)
    device = torch.device(device)
    run = load_run(save_dir, device)
    config, split = run_data(run, data_dir)
    config = dataclasses.replace(config, progress=progress)
    loaders = eval_loaders(config, split, device)

    def embed_bank(model: nn.Module, name: str) -> FeatureBank:  # classification needs no neighbour lists
        return FeatureBank(*embed(model, loaders["train"], device, progress, desc=f"{name}: training images"))

    trained = _network_metrics(config, split, run.model, trained_bank(run, loaders["train"], device, progress),
                               run.kernel_weights, run.head, loaders, device, progress, "trained", ks, with_nmi)

    # The initial weights are drawn on the CPU; fork_rng leaves the caller's generator as it was.
    with torch.random.fork_rng(devices=[]):
        initial = build_initial_parts(config, split.num_trained, len(split.train), device)
    untrained = _network_metrics(config, split, initial.model, embed_bank(initial.model, "untrained"),
                                 initial.kernel_weights, initial.head, loaders, device, progress, "untrained", ks,
                                 with_nmi)

    metrics = {
        "save_dir": str(save_dir), "loss": config.loss, "model": config.model,
        "data_dir": config.data_dir, "classes": len(split.classes), "trained_classes": split.num_trained,
        "train_images": len(split.train), "test_images": len(split.test), "heldout_images": len(split.heldout),
        "epochs": len(run.history), "finished": run.finished,
        "trained": trained, "untrained": untrained,
    }
    atomic_write_text(json.dumps(metrics, indent=2), save_dir / METRICS_NAME)
    return metrics


def format_metrics(metrics: dict) -> str:
    """The trained and untrained networks' numbers side by side, as a text table."""
    trained, untrained = metrics["trained"], metrics["untrained"]
    names = list(dict.fromkeys([*trained, *untrained]))
    lines = [f"{metrics['loss']} run in {metrics['save_dir']}: {metrics['classes']} classes, "
             f"trained on {metrics['trained_classes']} ({metrics['train_images']} images); "
             f"{metrics['test_images']} test images, {metrics['heldout_images']} held-out images",
             f"  {'metric':28s} {'trained':>9s} {'untrained':>9s} {'gain':>8s}"]
    for name in names:
        a, b = trained.get(name), untrained.get(name)
        gain = f"{a - b:+8.4f}" if a is not None and b is not None else f"{'-':>8s}"
        lines.append(f"  {name:28s} {_cell(a):>9s} {_cell(b):>9s} {gain}")
    return "\n".join(lines)


def _cell(value) -> str:
    return "-" if value is None else f"{value:.4f}"
