"""A query's nearest centres, the worst failures and least confident queries, and the
rows of a neighbour gallery. Everything returns plain tensors, arrays or dataclasses; ``viz`` draws them
and ``widgets`` wires them to sliders."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.folders import load_rgb
from ..kernel.loss import neighbour_logits
from ..kernel.search import nearest_neighbours
from .embeddings import Embeddings
from .sweeps import classify

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
    return least_confident_order(emb, sigma, k)[:n]


def sigma_sensitive_query(emb: Embeddings, k: int, sigmas) -> int:
    """The test image whose true class's probability changes most over ``sigmas`` (ties:
    the first): where a sigma slider visibly moves the bars."""
    true_p = torch.stack([classify(emb, float(s), k).gather(1, emb.test_labels.unsqueeze(1)).squeeze(1)
                          for s in sigmas])
    spread = true_p.max(0).values - true_p.min(0).values
    return int(torch.argmax(spread))  # argmax returns the first of equal maxima


def least_confident_order(emb: Embeddings, sigma: float, k: int) -> list[int]:
    """Every test image, least confident first: by the probability of its true class."""
    probs = classify(emb, sigma, k)
    return torch.argsort(probs.gather(1, emb.test_labels.unsqueeze(1)).squeeze(1), stable=True).tolist()


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


GALLERY_SOURCES = ("test", "heldout", "heldout_classified")


def gallery_row(emb: Embeddings, source: str, index: int, sigma: float, k: int = 8) -> GalleryRow:
    """Query ``index`` of ``source`` and its ``k`` nearest centres, nearest first.

    ``"test"``: a test image of a trained class against the bank (the centres the
    classifier uses, with their kernel weights); the title gives the classifier's
    prediction with the run's K, and captions give each centre's kernel value. ``"heldout"``:
    an image of a class never trained on against the other held-out images (retrieval by
    distance; no kernel values). ``"heldout_classified"``: a held-out image classified
    against the bank, as ``"test"`` (its true class has no centre there, so the
    prediction is always wrong).
    """
    if source in ("test", "heldout_classified"):
        queries, labels, paths = (emb.test, emb.test_labels, emb.test_paths) if source == "test" \
            else (emb.heldout, emb.heldout_labels, emb.heldout_paths)
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
    classified = source != "heldout"
    if classified:
        probs = classify(emb, sigma, emb.num_neighbours)[index] if source == "test" \
            else classify(emb, sigma, emb.num_neighbours, queries=queries[index:index + 1])[0]
        predicted = int(probs.argmax())
        # Three short lines: one long line ran past the image's width and was clipped.
        title += f"\npredicted {emb.class_names[predicted]}\n(p={float(probs[predicted]):.2f})"
    # Held-out retrieval ranks by distance alone: a kernel value would mean nothing there.
    captions = [f"{emb.class_names[int(c)]}\nd\u00b2={float(d):.3g}"
                + (f"\nk={float(kv):.2g}" if classified else "")
                for c, d, kv in zip(nb.labels, nb.sq_dists, nb.kernels)]
    return GalleryRow(load_image(paths[index]), title, [load_image(centre_paths[int(i)]) for i in nb.indices],
                      captions, [int(c) == label for c in nb.labels])
