"""Images and the data: grids of images, augmentation grids, pixel histograms, split
counts. Every function returns a :class:`matplotlib.figure.Figure`
built without pyplot (see :mod:`nngk_lab.viz.style`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from .style import HELDOUT_COLOUR, TEST_COLOUR, TRAIN_COLOUR, show_image, to_display


def image_grid(images: Sequence, titles: Sequence[str] | None = None, ncols: int = 8,
               suptitle: str | None = None, size: float = 1.3) -> Figure:
    """Images in a grid, each with an optional title (see :func:`to_display` for types)."""
    if len(images) == 0:
        raise ValueError("image_grid needs at least one image")
    ncols = min(ncols, len(images))
    nrows = -(-len(images) // ncols)
    fig = Figure(figsize=(size * ncols, size * nrows + (0.4 if suptitle else 0)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols)).ravel()
    for i, ax in enumerate(axes):
        if i < len(images):
            show_image(ax, images[i], titles[i] if titles is not None else None)
        else:
            ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def augmentation_grid(images: Sequence, transform, n: int = 6, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                      suptitle: str | None = None, seed: int = 0, reference=None,
                      reference_title: str = "no augmentation") -> Figure:
    """One row per image: the original (or, with ``reference``, the original through that
    deterministic transform, e.g. the evaluation one, so that its resizing matches the
    draws'), then ``n`` draws of the (random) ``transform``, shown with the normalisation
    undone."""
    torch.manual_seed(seed)
    rows = [[image if reference is None else reference(image)] + [transform(image) for _ in range(n)]
            for image in images]
    first_title = "original" if reference is None else reference_title
    fig = Figure(figsize=(1.3 * (n + 1), 1.4 * len(rows) + 0.4), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(rows), n + 1))
    for r, row in enumerate(rows):
        for c, item in enumerate(row):
            shown = to_display(item, mean, std) if isinstance(item, torch.Tensor) else item
            show_image(axes[r, c], shown, (first_title if c == 0 else f"draw {c}") if r == 0 else None)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def pixel_histograms(raw: torch.Tensor, normalised: torch.Tensor) -> Figure:
    """Histograms of pixel values before (``ToTensor``: 0..1) and after normalisation."""
    fig = Figure(figsize=(8, 2.8), layout="constrained")
    for ax, values, title in zip(fig.subplots(1, 2), (raw, normalised),
                                 ("after ToTensor (0..1)", "after Normalize(mean, std)")):
        values = values.detach().flatten().double().numpy()
        ax.hist(values, bins=40, color="tab:blue")
        ax.set_title(f"{title}\nmean {values.mean():.2f}, std {values.std():.2f}", fontsize=9)
        ax.set_xlabel("pixel value")
    fig.axes[0].set_ylabel("pixels")
    return fig


def split_counts(split) -> Figure:
    """Images per class in a :class:`~nngk_lab.data.DataSplit`: train and test of the
    trained classes, and the held-out classes."""
    n = len(split.classes)
    counts = {name: np.bincount([label for _, label in samples], minlength=n)
              for name, samples in (("train", split.train), ("test", split.test), ("held-out", split.heldout))}
    fig = Figure(figsize=(max(5.0, 0.5 * n + 2), 3), layout="constrained")
    ax = fig.subplots()
    x = np.arange(n)
    ax.bar(x, counts["train"], color=TRAIN_COLOUR, label="train (centres)")
    ax.bar(x, counts["test"], bottom=counts["train"], color=TEST_COLOUR, label="test")
    ax.bar(x, counts["held-out"], color=HELDOUT_COLOUR, label="held-out class")
    ax.set_xticks(x, split.classes, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("images")
    ax.axvline(split.num_trained - 0.5, color="black", linestyle="--", linewidth=1)
    ax.set_title(f"{split.num_trained} trained classes | {n - split.num_trained} held-out classes")
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside the bars, not over them
    return fig
