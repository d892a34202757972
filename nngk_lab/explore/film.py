"""The embedding forming, epoch by epoch: train a dataset with a 2-D embedding (the
network's output *is* the plane, so no map such as UMAP is needed) and keep the centres
after every epoch, for the kernel loss and for softmax trained the same way.

A film is trained one epoch at a time through the public training API
(``train(make_config(..., max_epochs=e), resume=True)``, as ``tools/heldout_curve.py``
does) and each epoch's bank is cached next to the run, so an interrupted film resumes
and a finished one is only read back.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import CheckpointError
from ..training.config import MODEL_DEFAULTS, make_config
from ..training.loop import train
from ..training.runs import CHECKPOINT_NAME, load_run
from .cache import cached
from .notebook import set_aside_if_other_classes, settings

FILM_LOSSES = ("nngk", "softmax")


def film_dir(loss: str) -> Path:
    """Where the film of ``loss`` is trained and cached: next to notebook 2's run, named
    after it (one film per dataset and mode, see :func:`nngk_lab.explore.notebook.settings`)."""
    main_run = settings().main_run
    return main_run.with_name(f"{main_run.name}-film-{loss}")


def _train_to_epoch(run_dir: Path, epoch: int, device, config: dict) -> dict:
    resume = (run_dir / CHECKPOINT_NAME).exists()
    result = train(make_config(save_dir=str(run_dir), max_epochs=epoch, device=str(device), **config),
                   resume=resume)
    run = load_run(run_dir, device)
    if run.bank.refreshed_at_epoch != epoch:
        raise CheckpointError(f"{run_dir} holds a run past epoch {epoch} whose epoch-{epoch} centres were not "
                              "kept; delete that folder to train the film again")
    return {"centres": run.bank.features.cpu(), "labels": run.bank.labels.cpu(), "evaluation": result.evaluation,
            "classes": run.classes, "num_trained": run.num_trained}


def train_film(run_dir, max_epochs: int, device="cpu", **config) -> dict:
    """Train a run with a 2-D embedding for ``max_epochs`` epochs, one at a time, and
    return its centres after each: ``centres`` (max_epochs + 1, N, 2), epoch 0 being the
    untrained network; ``labels`` (N,); ``accuracy`` (max_epochs + 1,) on the test images (the kernel
    classifier for ``loss="nngk"``, the softmax head for ``"softmax"``); ``loss``,
    ``classes`` and ``num_trained``.

    ``config`` holds other :func:`nngk_lab.training.config.make_config` settings; ``embedding_dim``
    is 2. Each epoch's centres are cached in ``run_dir/centres-epoch-NNN.pt``.

    Unit-length 2-D embeddings would all lie on a circle, so ``normalise`` is False here,
    and on the digits sigma is the small CNN's unnormalised 1 (the digits' NNGK default,
    0.2, is a temperature for unit-length embeddings).

    With the digits' ``update_interval`` of 1 the film trains exactly as one uninterrupted
    run; with a longer interval it does not, because every stop refreshes the bank and the
    next epoch trains against that fresher one.
    """
    run_dir = Path(run_dir)
    set_aside_if_other_classes(run_dir, config)  # its cached epochs name the classes: none may be stale
    plane = {"normalise": False, **({} if config.get("data_dir") else {"sigma": MODEL_DEFAULTS["small_cnn"]["sigma"]})}
    config = {"progress": False, **plane, **config, "embedding_dim": 2}
    loss = config.get("loss", "nngk")
    key = {k: v for k, v in config.items() if k != "progress"}
    snapshots = [cached(run_dir / f"centres-epoch-{epoch:03d}.pt",
                        lambda epoch=epoch: _train_to_epoch(run_dir, epoch, device, config),
                        {"config": key, "epoch": epoch})
                 for epoch in range(max_epochs + 1)]
    metric = "softmax_accuracy" if loss == "softmax" else "kernel_accuracy"
    accuracy = [s["evaluation"].get(metric, float("nan")) for s in snapshots]
    last = snapshots[-1]
    return {"centres": torch.stack([s["centres"] for s in snapshots]), "labels": last["labels"],
            "accuracy": accuracy, "loss": loss, "classes": last["classes"], "num_trained": last["num_trained"]}


def train_films(max_epochs: int, device="cpu", **config) -> dict[str, dict]:
    """The films of the kernel loss and of softmax, trained the same way
    (:func:`train_film`) in :func:`film_dir`, keyed by loss."""
    return {loss: train_film(film_dir(loss), max_epochs, device, loss=loss, **config) for loss in FILM_LOSSES}
