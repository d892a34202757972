"""What the notebooks compute before they draw: embeddings of a trained run (cached),
sigma/K sweeps, a query's nearest centres, worst failures, the 2-D toy problem and UMAP
coordinates. Everything returns plain tensors, arrays or dataclasses; ``viz`` draws them
and ``widgets`` wires them to sliders.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from .bank import FeatureBank, embed
from .classify import accuracy, kernel_predict_log_probs, nearest_neighbour_predict
from .config import TrainConfig
from .data import DataSplit, load_rgb
from .evaluate import recall_at_k
from .loaders import eval_loaders, load_split
from .loss import class_log_probs, kernel_log_probs, neighbour_logits
from .notebook import cached, fingerprint, run_fingerprint, train_or_load
from .parts import build_initial_parts
from .progress import transient_progress
from .runs import LoadedRun, load_run
from .search import nearest_neighbours
from .scale import neighbour_distances

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


def _run_split(run: LoadedRun) -> DataSplit:
    # The run's own number of trained classes: classes added to the folder since would
    # change the default (the first half).
    return load_split(dataclasses.replace(run.config, num_classes=run.num_trained))


def _embedding_loaders(config: TrainConfig, split: DataSplit, device,
                       parts: tuple[str, ...]) -> dict[str, DataLoader]:
    # A notebook embeds in its own process, with no loader workers to start, and in
    # larger batches than training's.
    return eval_loaders(dataclasses.replace(config, batch_size=EMBED_BATCH, workers=0), split, torch.device(device),
                        parts)


def _embed_run(run: LoadedRun, device) -> dict:
    split = _run_split(run)
    if len(split.train) != len(run.bank):
        raise ValueError(f"the run's bank holds {len(run.bank)} centres but its data split has "
                         f"{len(split.train)} training images: was the data folder changed?")
    empty = (torch.empty(0, run.bank.features.shape[1]), torch.empty(0, dtype=torch.long))
    loaders = _embedding_loaders(run.config, split, device, ("test", "heldout"))
    test = embed(run.model, loaders["test"], device, desc="embedding test images") if split.test else empty
    heldout = embed(run.model, loaders["heldout"], device, desc="embedding held-out images") \
        if split.heldout else empty
    log_weights = run.kernel_weights.log_weights.detach() if run.kernel_weights is not None \
        else torch.zeros(len(run.bank))
    return dict(class_names=list(split.classes), num_trained=split.num_trained, sigma=float(run.config.sigma),
                num_neighbours=int(run.config.num_neighbours), log_weights=log_weights.cpu(),
                train=run.bank.features.cpu(), train_labels=run.bank.labels.cpu(),
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
        c = loaded.config
        split = _run_split(loaded)
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


# --------------------------------------------------------------------------- classifier

def classify(emb: Embeddings, sigma: float, k: int, queries: torch.Tensor | None = None) -> torch.Tensor:
    """Class probabilities (Q, num_trained) of the kernel classifier with this sigma and K,
    for ``queries`` (default: the test images), against the run's bank and kernel weights.

    For the test images the neighbour lists found once by
    :meth:`Embeddings.sorted_test_neighbours` are reused; other queries (or a K beyond
    those lists) go through :func:`nngk_lab.classify.kernel_predict_log_probs`.
    """
    k = min(int(k), len(emb.train))
    if queries is None:
        sq_dists, idx = emb.sorted_test_neighbours()
        if k <= idx.shape[1]:
            logits = emb.log_weights[idx[:, :k]] - sq_dists[:, :k] / (2.0 * float(sigma) ** 2)
            return class_log_probs(logits, emb.train_labels[idx[:, :k]], emb.num_trained).exp()
        queries = emb.test
    if queries.shape[0] == 0:
        return torch.empty(0, emb.num_trained)
    log_probs = kernel_predict_log_probs(queries, emb.bank, emb.log_weights, float(sigma), k, emb.num_trained)
    return log_probs.exp()


def test_accuracy(emb: Embeddings, sigma: float, k: int) -> float:
    """Kernel-classifier accuracy on the trained classes' test images."""
    return accuracy(classify(emb, sigma, k).argmax(1), emb.test_labels)


def recall_at_1(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Recall@1 of retrieval among ``features`` (e.g. the held-out classes' images): the
    share whose nearest other item has the same label (:func:`nngk_lab.evaluate.recall_at_k`)."""
    if features.shape[0] < 2:
        return float("nan")
    return recall_at_k(features, labels, ks=(1,))[1]


def test_time_sweep(emb: Embeddings, sigmas, ks, cache_path=None) -> dict:
    """Test accuracy of one trained embedding's classifier over a grid of sigma and K.

    Only the classifier changes (the embedding and the bank stay those of the run), so
    this is cheap. Returns ``sigmas``, ``ks``, ``accuracy`` and ``errors`` (each
    len(ks) x len(sigmas); errors are counts of the ``num_test`` test images), the number
    of centres ``num_centres`` (a K at least that large uses them all), the plain 1-NN
    accuracy, the median distance from a test image to its nearest centre (the scale a
    sigma is measured against), the held-out Recall@1 (independent of sigma and K:
    retrieval uses distances only) and the sigma the run was trained with. With
    ``cache_path`` the result is saved there and reused while the embeddings and the grid
    are unchanged.
    """
    sigmas, ks = [float(s) for s in sigmas], [int(k) for k in ks]
    num_test = int(emb.test.shape[0])

    def compute() -> dict:
        grid = [[test_accuracy(emb, s, k) for s in sigmas] for k in ks]
        nn_acc = accuracy(nearest_neighbour_predict(emb.test, emb.bank), emb.test_labels) \
            if num_test else float("nan")
        nearest = emb.sorted_test_neighbours()[0][:, 0]
        return {"sigmas": sigmas, "ks": ks, "accuracy": grid, "num_test": num_test, "num_centres": len(emb.train),
                "errors": [[round((1 - a) * num_test) for a in row] for row in grid],
                "nearest_neighbour_accuracy": nn_acc,
                "median_nearest_distance": float(nearest.double().median().sqrt()) if num_test else float("nan"),
                "heldout_recall_at_1": recall_at_1(emb.heldout, emb.heldout_labels), "train_sigma": emb.sigma}

    if cache_path is None:
        return compute()
    key = fingerprint(emb.train, emb.test, emb.heldout, emb.log_weights, emb.sigma, sigmas, ks)
    return cached(cache_path, compute, {"inputs": key, "version": 2})


def training_sigma_sweep(sigmas, sweep_dir, device="cpu", **config) -> dict:
    """Short trainings at several sigmas (one run folder each, reused when finished):
    for each, the test accuracy and error count (of ``num_test`` images) with the training
    sigma and K, the held-out Recall@1, and the kernel value ``exp(-d^2 / (2 sigma^2))`` at
    the median squared distance from a centre to its K-th nearest centre (near 1: all K
    neighbours vote alike).

    ``config`` holds the other :func:`nngk_lab.config.make_config` settings (e.g. ``max_epochs``).
    """
    sweep_dir = Path(sweep_dir)
    rows = []
    for sigma in sigmas:
        run_dir = sweep_dir / f"sigma_{float(sigma):g}"
        run = train_or_load(run_dir, device, **{**config, "sigma": float(sigma)})
        emb = run_embeddings(run_dir, device, run)
        acc = test_accuracy(emb, emb.sigma, emb.num_neighbours)
        distances = neighbour_distances(emb.train, emb.train_labels, emb.num_neighbours)
        rows.append({"sigma": float(sigma), "epochs": len(run.history), "accuracy": acc,
                     "errors": round((1 - acc) * len(emb.test)), "num_test": len(emb.test),
                     "heldout_recall_at_1": recall_at_1(emb.heldout, emb.heldout_labels),
                     "kth_neighbour_kernel": distances.summary(emb.sigma)["kth_nearest_kernel"]})
    return {"sigmas": [r["sigma"] for r in rows], "epochs": [r["epochs"] for r in rows],
            "accuracy": [r["accuracy"] for r in rows], "errors": [r["errors"] for r in rows],
            "heldout_recall_at_1": [r["heldout_recall_at_1"] for r in rows],
            "kth_neighbour_kernel": [r["kth_neighbour_kernel"] for r in rows],
            "num_test": rows[0]["num_test"] if rows else 0}


# --------------------------------------------------------------------------- neighbours

@dataclass
class QueryNeighbours:
    """A query's nearest centres, nearest first."""

    indices: torch.Tensor      # (K,) into the centres
    sq_dists: torch.Tensor     # (K,) squared Euclidean distances
    kernels: torch.Tensor      # (K,) kernel values w_i exp(-d^2 / (2 sigma^2))
    labels: torch.Tensor       # (K,) the centres' labels


def query_neighbours(query: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor, k: int,
                     sigma: float, log_weights: torch.Tensor | None = None,
                     exclude: int | None = None) -> QueryNeighbours:
    """The ``k`` nearest centres of one query (D,) with distances and kernel values.

    ``exclude`` leaves out one centre (the query itself when it is one of the centres).
    """
    keep = torch.ones(centres.shape[0], dtype=torch.bool)
    if exclude is not None:
        keep[exclude] = False
    candidates = keep.nonzero().squeeze(1)
    k = min(k, candidates.numel())
    d, i = nearest_neighbours(query.unsqueeze(0), centres[candidates], k)
    idx = candidates[i[0]]
    log_weights = torch.zeros(centres.shape[0]) if log_weights is None else log_weights
    kernels = neighbour_logits(query.unsqueeze(0), centres, idx.unsqueeze(0), log_weights, sigma)[0].exp()
    return QueryNeighbours(idx, d[0], kernels, labels[idx])


def worst_failures(emb: Embeddings, sigma: float, k: int, n: int = 5) -> list[int]:
    """Indices of the ``n`` test images whose true class gets the lowest probability."""
    probs = classify(emb, sigma, k)
    true_p = probs.gather(1, emb.test_labels.unsqueeze(1)).squeeze(1)
    return torch.argsort(true_p, stable=True)[:n].tolist()


def examples_per_class(labels, per_class: int = 1) -> list[int]:
    """Indices of the first ``per_class`` items of each label, in label order."""
    labels = torch.as_tensor(labels)
    return [int(i) for c in labels.unique().tolist() for i in (labels == c).nonzero().squeeze(1)[:per_class]]


def load_image(path: str) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 array, for drawing."""
    return np.asarray(load_rgb(path))


@dataclass
class GalleryRow:
    """A query and its nearest centres, ready to draw: images, a caption per neighbour
    and whether each neighbour has the query's class."""

    query_image: object
    query_title: str
    images: list
    captions: list[str]
    correct: list[bool]


GALLERY_SOURCES = ("test", "heldout")


def gallery_row(emb: Embeddings, source: str, index: int, sigma: float, k: int = 8) -> GalleryRow:
    """Query ``index`` of ``source`` and its ``k`` nearest centres, nearest first.

    ``"test"``: a test image of a trained class against the bank (the centres the
    classifier uses, with their kernel weights); the title gives the classifier's
    prediction with the run's K, and captions give each centre's kernel value. ``"heldout"``:
    an image of a class never trained on against the other held-out images (retrieval by
    distance; no kernel values).
    """
    if source == "test":
        queries, labels, paths = emb.test, emb.test_labels, emb.test_paths
        centres, centre_labels, centre_paths, log_w, exclude = emb.train, emb.train_labels, emb.train_paths, \
            emb.log_weights, None
    elif source == "heldout":
        queries, labels, paths = emb.heldout, emb.heldout_labels, emb.heldout_paths
        centres, centre_labels, centre_paths, log_w, exclude = queries, labels, paths, None, index
    else:
        raise ValueError(f"source must be one of {GALLERY_SOURCES}, got {source!r}")
    if not 0 <= index < queries.shape[0]:
        raise IndexError(f"query {index} is out of range: the {source} set has {queries.shape[0]} images")
    label = int(labels[index])
    nb = query_neighbours(queries[index], centres, centre_labels, k, sigma, log_w, exclude)
    title = f"query: {emb.class_names[label]}"
    if source == "test":
        probs = classify(emb, sigma, emb.num_neighbours)[index]
        predicted = int(probs.argmax())
        title += f"\npredicted {emb.class_names[predicted]} (p={float(probs[predicted]):.2f})"
    # Held-out retrieval ranks by distance alone: a kernel value would mean nothing there.
    captions = [f"{emb.class_names[int(c)]}\nd\u00b2={float(d):.2f}"
                + (f"\nk={float(kv):.2g}" if source == "test" else "")
                for c, d, kv in zip(nb.labels, nb.sq_dists, nb.kernels)]
    return GalleryRow(load_image(paths[index]), title, [load_image(centre_paths[int(i)]) for i in nb.indices],
                      captions, [int(c) == label for c in nb.labels])


# --------------------------------------------------------------------------- 2-D toy

def toy_problem(num_classes: int = 3, per_class: int = 15, spread: float = 0.9,
                seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """2-D centres of ``num_classes`` Gaussian blobs on a circle: ``(centres (N, 2), labels (N,))``."""
    g = torch.Generator().manual_seed(seed)
    angles = torch.arange(num_classes, dtype=torch.float64) * (2 * torch.pi / num_classes)
    means = torch.stack([angles.cos(), angles.sin()], 1) * 2.0
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    centres = means[labels] + spread * torch.randn(labels.numel(), 2, generator=g, dtype=torch.float64)
    return centres, labels


def kernel_probabilities(points: torch.Tensor, centres: torch.Tensor, labels: torch.Tensor, sigma: float,
                         k: int, num_classes: int, log_weights: torch.Tensor | None = None) -> torch.Tensor:
    """Kernel-classifier class probabilities (P, num_classes) of arbitrary points against
    arbitrary centres: the K nearest centres, then per-class kernel sums."""
    k = min(k, centres.shape[0])
    log_weights = torch.zeros(centres.shape[0], dtype=centres.dtype) if log_weights is None else log_weights
    _, idx = nearest_neighbours(points, centres, k)
    return kernel_log_probs(points, centres, labels, idx, log_weights, sigma, num_classes).exp()


# --------------------------------------------------------------------------- UMAP

def umap_coordinates(features, seed: int = 0, n_epochs: int | None = None, n_neighbors: int = 15,
                     cache_dir=None) -> np.ndarray:
    """2-D UMAP coordinates (N, 2) of the rows of ``features`` (umap-learn, seeded).

    With ``cache_dir`` the coordinates are kept there under a hash of the inputs, so the
    same features are mapped once.
    """
    features = torch.as_tensor(features).float().cpu()

    def compute() -> dict:
        import warnings

        import umap  # slow first import (numba): only when a map is asked for

        reducer = umap.UMAP(n_components=2, n_neighbors=min(n_neighbors, len(features) - 1),
                            random_state=seed, n_epochs=n_epochs)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*n_jobs value.*")  # seeding forces one thread
            return {"coords": torch.from_numpy(reducer.fit_transform(features.numpy()))}

    if cache_dir is None:
        return compute()["coords"].numpy()
    key = fingerprint(features, seed, n_epochs, n_neighbors)
    return cached(Path(cache_dir) / f"umap-{key}.pt", compute, {"inputs": key})["coords"].numpy()
