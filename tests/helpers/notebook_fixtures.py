"""Small synthetic inputs for the notebook helpers' tests: embeddings with image files
behind them, and naive float64 references for the kernel classifier."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from nngk_lab.explore.embeddings import Embeddings


def write_images(folder, n: int, seed: int) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"img_{i:03d}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(path)
        paths.append(str(path))
    return paths


def make_embeddings(tmp_path, seed: int = 0, dim: int = 5, num_trained: int = 3, num_heldout: int = 2,
                    n_train: int = 30, n_test: int = 12, n_heldout: int = 14) -> Embeddings:
    """Clustered random embeddings: class c's points scatter around a random mean."""
    g = torch.Generator().manual_seed(seed)
    means = 2.0 * torch.randn(num_trained + num_heldout, dim, generator=g)

    def draw(n, first, count):
        labels = first + torch.arange(n) % count
        return means[labels] + torch.randn(n, dim, generator=g), labels

    train, train_labels = draw(n_train, 0, num_trained)
    test, test_labels = draw(n_test, 0, num_trained)
    heldout, heldout_labels = draw(n_heldout, num_trained, num_heldout)
    return Embeddings(
        class_names=[f"class_{c:03d}" for c in range(num_trained + num_heldout)], num_trained=num_trained,
        sigma=1.0, num_neighbours=10, log_weights=0.3 * torch.randn(n_train, generator=g),
        train=train, train_labels=train_labels, test=test, test_labels=test_labels,
        heldout=heldout, heldout_labels=heldout_labels,
        train_paths=write_images(tmp_path / "train", n_train, seed),
        test_paths=write_images(tmp_path / "test", n_test, seed + 1),
        heldout_paths=write_images(tmp_path / "heldout", n_heldout, seed + 2))


def naive_kernel_probs(query, centres, labels, log_weights, sigma, k, num_classes) -> torch.Tensor:
    """p(c | x) written out for one query, in float64: sort all distances, keep the k
    nearest, sum w_i exp(-d_i / (2 sigma^2)) per class (shifted by the largest exponent
    so tiny sigmas do not underflow), divide by the total."""
    query, centres = query.double(), centres.double()
    sq = [float(((query - c) ** 2).sum()) for c in centres]
    order = sorted(range(len(sq)), key=lambda i: sq[i])[:k]
    exponents = [float(log_weights[i]) - sq[i] / (2 * sigma ** 2) for i in order]
    top = max(exponents)
    sums = [0.0] * num_classes
    for i, e in zip(order, exponents):
        sums[int(labels[i])] += np.exp(e - top)
    total = sum(sums)
    return torch.tensor([s / total for s in sums], dtype=torch.float64)
