"""A trained run's embeddings for the notebooks (and the untrained network's, for
comparison), cached to disk. Everything returns plain tensors, arrays or dataclasses; ``viz`` draws them
and ``widgets`` wires them to sliders."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..data.split import DataSplit
from ..evaluation.embeddings import run_data, trained_bank
from ..kernel.bank import FeatureBank, embed
from ..kernel.search import nearest_neighbours
from ..progress import transient_progress
from ..training.config import TrainConfig
from ..training.loaders import eval_loaders
from ..training.parts import build_initial_parts
from ..training.runs import LoadedRun, load_run
from .cache import cached, run_fingerprint

EMBED_BATCH = 256


UNTRAINED_PARTS = ("train", "test", "heldout")


SORTED_NEIGHBOURS = 1000  # test-image neighbour lists kept per Embeddings (memory: Q x this)


# --------------------------------------------------------------------------- embeddings

@dataclass
class Embeddings:
    """A trained run's view of the data: the bank's centres (train images), the test
    images of the trained classes and the images of the held-out classes, each with
    labels and image paths, plus what the kernel classifier needs (log-weights, sigma, K).
    Labels index ``class_names``; held-out labels are ``>= num_trained``."""

    class_names: list[str]
    num_trained: int
    sigma: float
    num_neighbours: int
    log_weights: torch.Tensor
    train: torch.Tensor
    train_labels: torch.Tensor
    test: torch.Tensor
    test_labels: torch.Tensor
    heldout: torch.Tensor
    heldout_labels: torch.Tensor
    train_paths: list[str] = field(repr=False)
    test_paths: list[str] = field(repr=False)
    heldout_paths: list[str] = field(repr=False)

    _sorted_test: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, init=False, repr=False)

    @property
    def bank(self) -> FeatureBank:
        return FeatureBank(self.train, self.train_labels)

    def sorted_test_neighbours(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Each test image's nearest centres, ``(sq_dists, indices)``, each (Q, min(N,
        SORTED_NEIGHBOURS)), found once: any (sigma, K) with K up to that width is then a
        slice, which keeps the explorer's sliders instant."""
        if self._sorted_test is None:
            width = min(len(self.train), SORTED_NEIGHBOURS)
            self._sorted_test = nearest_neighbours(self.test, self.train, width) if len(self.test) \
                else (torch.empty(0, width), torch.empty(0, width, dtype=torch.long))
        return self._sorted_test


def _embedding_loaders(config: TrainConfig, split: DataSplit, device,
                       parts: tuple[str, ...]) -> dict[str, DataLoader]:
    # A notebook embeds in its own process, with no loader workers to start, and in
    # larger batches than training's.
    return eval_loaders(dataclasses.replace(config, batch_size=EMBED_BATCH, workers=0), split, torch.device(device),
                        parts)


def _embed_run(run: LoadedRun, device) -> dict:
    config, split = run_data(run)
    loaders = _embedding_loaders(config, split, device, ("train", "test", "heldout"))
    bank = trained_bank(run, loaders["train"], device)  # evaluate_run's rule: a stopped run's bank may be stale
    empty = (torch.empty(0, bank.features.shape[1]), torch.empty(0, dtype=torch.long))
    test = embed(run.model, loaders["test"], device, desc="embedding test images") if split.test else empty
    heldout = embed(run.model, loaders["heldout"], device, desc="embedding held-out images") \
        if split.heldout else empty
    log_weights = run.kernel_weights.log_weights.detach() if run.kernel_weights is not None \
        else torch.zeros(len(bank))
    return dict(class_names=list(split.classes), num_trained=split.num_trained, sigma=float(run.config.sigma),
                num_neighbours=int(run.config.num_neighbours), log_weights=log_weights.cpu(),
                train=bank.features.cpu(), train_labels=bank.labels.cpu(),
                test=test[0].cpu(), test_labels=test[1].cpu(), heldout=heldout[0].cpu(),
                heldout_labels=heldout[1].cpu(), train_paths=[p for p, _ in split.train],
                test_paths=[p for p, _ in split.test], heldout_paths=[p for p, _ in split.heldout])


def run_embeddings(run_dir, device="cpu", run: LoadedRun | None = None) -> Embeddings:
    """Embeddings of the run in ``run_dir``, cached in ``run_dir/embeddings.pt`` and
    recomputed only when the run's checkpoint changes."""
    run_dir = Path(run_dir)

    def compute() -> dict:
        with transient_progress():
            return _embed_run(run if run is not None else load_run(run_dir, device), device)

    return Embeddings(**cached(run_dir / "embeddings.pt", compute, run_fingerprint(run_dir)))


def untrained_embeddings(run_dir, device="cpu", run: LoadedRun | None = None) -> dict[str, torch.Tensor]:
    """"Before training": the training images (``"train"``), test images (``"test"``) and
    held-out images (``"heldout"``) embedded by the network the run started from (rebuilt as
    :func:`nngk_lab.evaluate.evaluate_run` rebuilds its untrained baseline, without
    touching torch's global generator). Cached next to the run."""
    run_dir = Path(run_dir)

    def compute() -> dict:
        loaded = run if run is not None else load_run(run_dir, device)
        c, split = run_data(loaded)
        with torch.random.fork_rng(devices=[]):
            model = build_initial_parts(c, loaded.num_trained, len(split.train), torch.device(device)).model
        out = {}
        with transient_progress():
            for name, loader in _embedding_loaders(c, split, device, UNTRAINED_PARTS).items():
                out[name] = embed(model, loader, device, desc=f"untrained network: {name}")[0].cpu() \
                    if len(loader.dataset) else torch.empty(0, model.embedding_dim)
        return out

    return cached(run_dir / "untrained_embeddings.pt", compute, {**run_fingerprint(run_dir), "parts": UNTRAINED_PARTS})


def untrained_view(emb: Embeddings, untrained: dict[str, torch.Tensor]) -> Embeddings:
    """``emb`` with the untrained network's embeddings (:func:`untrained_embeddings`) as
    centres, test and held-out images, and all kernel weights 1: the same classifier on
    the embedding training started from."""
    return dataclasses.replace(emb, train=untrained["train"], test=untrained["test"], heldout=untrained["heldout"],
                               log_weights=torch.zeros(len(untrained["train"])))
