"""Figures for the notebooks. Every function returns a :class:`matplotlib.figure.Figure`
built without pyplot, so nothing is shown twice in Jupyter, nothing needs a screen, and
figures are freed when dropped. Show one by making it a cell's last expression.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage
from matplotlib.patches import Circle

from .explore import GalleryRow, kernel_probabilities, query_neighbours
from .viz_runs import distance_histograms, sigma_sweep_figure, training_curves  # noqa: F401 (re-exported)

CORRECT_COLOUR = "tab:green"
WRONG_COLOUR = "tab:red"
TRAIN_COLOUR, TEST_COLOUR, HELDOUT_COLOUR = "tab:blue", "tab:orange", "tab:grey"


# Up to ten classes: hues picked so that no two are easy to confuse in small markers
# (tab10's blue/cyan, green/olive and red/brown are: the digits' 0/9, 2/8 and 3/5).
DISTINCT_COLOURS = ("#1f4e9c", "#ff7f00", "#2ca02c", "#e31a1c", "#8e44ad",
                    "#00c2d1", "#7b4a12", "#f06bc4", "#a6a600", "#555555")


def class_colours(num_classes: int) -> np.ndarray:
    """One RGBA colour per class (:data:`DISTINCT_COLOURS`, or tab20 beyond ten classes)."""
    from matplotlib import colormaps
    from matplotlib.colors import to_rgba

    if num_classes <= len(DISTINCT_COLOURS):
        return np.array([to_rgba(c) for c in DISTINCT_COLOURS[:num_classes]])
    cmap = colormaps["tab20"]
    return np.array([cmap(i % cmap.N) for i in range(num_classes)])


def figure_png(fig: Figure, dpi: int = 80) -> bytes:
    """A figure as PNG bytes (for an ipywidgets Image)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def to_display(image, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> np.ndarray:
    """An image as an (H, W) or (H, W, 3) float array in [0, 1].

    Accepts a PIL image, an (H, W[, 3]) array (uint8 or float) or a (C, H, W) tensor; with
    ``mean`` and ``std`` the tensor's normalisation is undone first.
    """
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().double()
        if mean is not None and std is not None:
            shape = (-1, 1, 1)
            image = image * torch.tensor(std, dtype=torch.float64).view(shape) + \
                torch.tensor(mean, dtype=torch.float64).view(shape)
        array = image.permute(1, 2, 0).numpy() if image.dim() == 3 else image.numpy()
    else:
        array = np.asarray(image)
        if array.dtype == np.uint8:
            array = array / 255.0
    array = np.clip(array.astype(np.float64), 0.0, 1.0)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return array


def _show(ax, image, title: str | None = None, colour=None, fontsize: int = 8) -> None:
    array = to_display(image)
    ax.imshow(array, cmap="gray" if array.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title is not None:
        ax.set_title(title, fontsize=fontsize, color=colour or "black")
    if colour is not None:
        for spine in ax.spines.values():
            spine.set_edgecolor(colour)
            spine.set_linewidth(3)


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
            _show(ax, images[i], titles[i] if titles is not None else None)
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
            _show(axes[r, c], shown, (first_title if c == 0 else f"draw {c}") if r == 0 else None)
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


def query_probabilities(image, probs, class_names: Sequence[str], true_label: int | None = None,
                        title: str | None = None) -> Figure:
    """The query image beside :func:`probability_bars` of its class probabilities."""
    fig = Figure(figsize=(6.5, 2.8), layout="constrained")
    image_ax, bar_ax = fig.subplots(1, 2, width_ratios=[1, 3.2])
    _show(image_ax, image, None if true_label is None else f"true class:\n{class_names[true_label]}", fontsize=9)
    return probability_bars(probs, class_names, true_label, title, ax=bar_ax)


def probability_bars(probs, class_names: Sequence[str], true_label: int | None = None,
                     title: str | None = None, ax=None) -> Figure:
    """Bar plot of class probabilities; the true class's bar is outlined in black, the
    predicted one coloured by whether it is right."""
    probs = np.asarray(torch.as_tensor(probs, dtype=torch.float64))
    fig = ax.figure if ax is not None else Figure(figsize=(5, 2.8), layout="constrained")
    ax = ax if ax is not None else fig.subplots()
    predicted = int(np.argmax(probs))
    colours = ["lightgrey"] * len(probs)
    colours[predicted] = CORRECT_COLOUR if true_label is None or predicted == true_label else WRONG_COLOUR
    bars = ax.bar(np.arange(len(probs)), probs, color=colours)
    if true_label is not None and 0 <= true_label < len(probs):
        bars[true_label].set_edgecolor("black")
        bars[true_label].set_linewidth(2)
    ax.set_xticks(np.arange(len(probs)), list(class_names)[:len(probs)], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("p(class | x)")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


# --------------------------------------------------------------------------- 2-D toy

def _plane_grid(centres: torch.Tensor, resolution: int) -> tuple[torch.Tensor, tuple[float, ...]]:
    """Points (resolution^2, 2) covering the centres with a margin, row by row from the
    bottom, and their extent (left, right, bottom, top) for imshow."""
    lo, hi = centres.min(0).values - 1.0, centres.max(0).values + 1.0
    xs = torch.linspace(float(lo[0]), float(hi[0]), resolution, dtype=torch.float64)
    ys = torch.linspace(float(lo[1]), float(hi[1]), resolution, dtype=torch.float64)
    gx, gy = torch.meshgrid(xs, ys, indexing="xy")
    return torch.stack([gx.reshape(-1), gy.reshape(-1)], 1), (float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1]))


def toy_kernel_figure(centres: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, sigma: float, k: int,
                      log_weights: torch.Tensor | None = None, resolution: int = 120) -> Figure:
    """The kernel classifier in 2-D: left, the centres coloured by class, the query, its K
    nearest centres (ringed, sized by kernel value), circles at 1 and 2 sigma, and the
    predicted class of every point of the plane (shade = its probability); right, the
    query's class probabilities."""
    num_classes = int(labels.max()) + 1
    colours = class_colours(num_classes)
    grid, extent = _plane_grid(centres, resolution)
    probs = kernel_probabilities(grid, centres, labels, sigma, k, num_classes, log_weights)
    best_p, best = probs.max(1)
    shade = colours[best.numpy()].copy()
    shade[:, 3] = 0.15 + 0.45 * ((best_p.numpy() - 1 / num_classes) / (1 - 1 / num_classes)).clip(0, 1)

    fig = Figure(figsize=(10, 5), layout="constrained")
    ax, bar_ax = fig.subplots(1, 2, width_ratios=[1.6, 1])
    ax.imshow(shade.reshape(resolution, resolution, 4), origin="lower", extent=extent,
              interpolation="bilinear", aspect="auto")
    ax.scatter(centres[:, 0], centres[:, 1], c=colours[labels.numpy()], s=22, edgecolors="white", linewidths=0.5)
    nb = query_neighbours(query.double(), centres, labels, k, sigma, log_weights)
    share = (nb.kernels / nb.kernels.sum()).numpy()
    ax.scatter(centres[nb.indices, 0], centres[nb.indices, 1], s=60 + 400 * share, facecolors="none",
               edgecolors="black", linewidths=1.2, label=f"the K={len(nb.indices)} nearest centres")
    # Dashed and grey, unlike the solid black neighbour rings, so they are not read as one.
    for multiple, name, style in ((1, "sigma", "--"), (2, "2 sigma", ":")):
        ax.add_patch(Circle((float(query[0]), float(query[1])), multiple * sigma, fill=False, linestyle=style,
                            color="dimgrey", linewidth=1.5))
        ax.plot([], [], linestyle=style, color="dimgrey", linewidth=1.5, label=f"distance {name} from x")
    if log_weights is not None:
        for i in (log_weights != 0).nonzero().squeeze(1).tolist():
            ax.scatter([centres[i, 0]], [centres[i, 1]], marker="s", s=150, facecolors="none", edgecolors="magenta",
                       linewidths=2, zorder=4, label=f"kernel weight w = e^{float(log_weights[i]):g} "
                       f"= {math.exp(float(log_weights[i])):.1f}")
    ax.scatter([query[0]], [query[1]], marker="*", s=260, c="gold", edgecolors="black", zorder=5, label="query x")
    ax.set_xlim(*extent[:2])
    ax.set_ylim(*extent[2:])
    ax.set_aspect("equal")
    ax.set_title(f"sigma = {sigma:g}, K = {k}", fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.02), ncols=2, fontsize=8)
    query_probs = kernel_probabilities(query.double().unsqueeze(0), centres, labels, sigma, k, num_classes,
                                       log_weights)[0]
    probability_bars(query_probs, [f"class {c}" for c in range(num_classes)], title="p(class | query)", ax=bar_ax)
    for patch, colour in zip(bar_ax.patches, colours):
        patch.set_facecolor(colour)
    return fig


def toy_sigma_maps(centres: torch.Tensor, labels: torch.Tensor, sigmas: Sequence[float], k: int,
                   resolution: int = 90) -> Figure:
    """The predicted class over the plane (shade = probability) for several sigmas:
    small sigma follows single centres, large sigma blurs towards the class majority."""
    num_classes = int(labels.max()) + 1
    colours = class_colours(num_classes)
    grid, extent = _plane_grid(centres, resolution)
    fig = Figure(figsize=(3.2 * len(sigmas), 3.3), layout="constrained")
    for ax, sigma in zip(np.atleast_1d(fig.subplots(1, len(sigmas))), sigmas):
        probs = kernel_probabilities(grid, centres, labels, sigma, k, num_classes)
        rgb = (probs.numpy() @ colours[:, :3]).reshape(resolution, resolution, 3)
        ax.imshow((0.45 + 0.55 * rgb).clip(0, 1), origin="lower", extent=extent, aspect="auto")
        ax.scatter(centres[:, 0], centres[:, 1], c=colours[labels.numpy()], s=12, edgecolors="black",
                   linewidths=0.4)
        ax.set_title(f"sigma = {sigma:g}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"class probabilities mixed as colours (K = {k})", fontsize=10)
    return fig


# --------------------------------------------------------------------------- embedding maps

@dataclass
class MapPanel:
    """One scatter of a 2-D map: coordinates (N, 2), labels (N,), a title, optionally
    the images (for thumbnails) and a held-out mask (drawn as crosses, and named in the
    legend)."""

    coords: np.ndarray
    labels: np.ndarray
    title: str
    images: Sequence | None = None
    heldout: np.ndarray | None = None


def _thumbnail_indices(coords: np.ndarray, labels: np.ndarray, n: int) -> list[int]:
    """Up to ``n`` points, one per class in turn, each its class's most central point."""
    chosen = []
    for c in np.unique(labels)[:n]:
        members = np.flatnonzero(labels == c)
        centre = np.median(coords[members], axis=0)
        chosen.append(int(members[np.argmin(((coords[members] - centre) ** 2).sum(1))]))
    return chosen


def _callout_slots(anchors: np.ndarray, low: np.ndarray, high: np.ndarray, margin: float) -> np.ndarray:
    """Where to put one thumbnail per anchor point so that none covers the points: in a
    column left or right of the data (whichever side the anchor is on), spread evenly
    over the height in the anchors' vertical order."""
    slots = np.zeros_like(anchors)
    left = anchors[:, 0] < np.median(anchors[:, 0])
    for side, x in ((left, low[0] - margin / 2), (~left, high[0] + margin / 2)):
        members = np.flatnonzero(side)
        order = members[np.argsort(anchors[members, 1])]
        heights = low[1] + (np.arange(len(order)) + 0.5) * (high[1] - low[1]) / max(len(order), 1)
        slots[order, 0], slots[order, 1] = x, heights
    return slots


def embedding_maps(panels: Sequence[MapPanel], class_names: Sequence[str], thumbnails: int = 10,
                   zoom: float = 2.5) -> Figure:
    """Side-by-side 2-D maps (e.g. UMAP) coloured by class, held-out points as crosses,
    and a few image thumbnails in the margins, each joined to the point it shows."""
    colours = class_colours(len(class_names))
    fig = Figure(figsize=(6.2 * len(panels), 5.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    heldout_classes: set[int] = set()
    for ax, panel in zip(axes, panels):
        coords, labels = np.asarray(panel.coords), np.asarray(panel.labels)
        heldout = np.zeros(len(labels), bool) if panel.heldout is None else np.asarray(panel.heldout, bool)
        heldout_classes.update(labels[heldout].tolist())
        for mask, marker, size in ((~heldout, "o", 8), (heldout, "x", 16)):
            if mask.any():
                ax.scatter(coords[mask, 0], coords[mask, 1], c=colours[labels[mask]], s=size, marker=marker,
                           linewidths=1.1 if marker == "x" else 0)
        low, high = coords.min(0), coords.max(0)
        margin = 0.3 * (high[0] - low[0])
        ax.set_xlim(low[0] - margin, high[0] + margin)
        if panel.images is not None and thumbnails:
            chosen = _thumbnail_indices(coords, labels, thumbnails)
            for i, slot in zip(chosen, _callout_slots(coords[chosen], low, high, margin)):
                box = OffsetImage(to_display(panel.images[i]), zoom=zoom, cmap="gray")
                ax.add_artist(AnnotationBbox(box, coords[i], xybox=tuple(slot), frameon=True, pad=0.1,
                                             bboxprops={"edgecolor": colours[labels[i]], "linewidth": 2},
                                             arrowprops={"arrowstyle": "-", "color": colours[labels[i]],
                                                         "linewidth": 0.8}))
        ax.set_title(panel.title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    present = sorted(set(np.concatenate([np.asarray(p.labels) for p in panels]).tolist()))
    handles = [axes[0].scatter([], [], color=colours[c], s=30 if c in heldout_classes else 20,
                               marker="x" if c in heldout_classes else "o",
                               label=f"{class_names[c]} (held out)" if c in heldout_classes else class_names[c])
               for c in present]
    fig.legend(handles=handles, loc="outside right center", fontsize=8, title="class")
    return fig


# --------------------------------------------------------------------------- galleries

def neighbour_gallery(rows: Sequence[GalleryRow], suptitle: str | None = None, size: float = 1.5,
                      per_line: int | None = None) -> Figure:
    """One row per query: the query, then its nearest centres framed in green (same
    class) or red (another class), captioned with label, distance and kernel value.
    With ``per_line``, a query's neighbours wrap onto further lines of that many."""
    if not rows:
        raise ValueError("neighbour_gallery needs at least one row")
    longest = max(len(r.images) for r in rows)
    per_line = min(per_line or longest, longest) or 1
    lines = [max(1, -(-len(r.images) // per_line)) for r in rows]
    fig = Figure(figsize=(size * (per_line + 1), (size + 0.55) * sum(lines) + (0.4 if suptitle else 0)),
                 layout="constrained")
    axes = np.atleast_2d(fig.subplots(sum(lines), per_line + 1))
    for ax in axes.ravel():
        ax.axis("off")
    first = 0
    for row, count in zip(rows, lines):
        axes[first, 0].axis("on")
        _show(axes[first, 0], row.query_image, row.query_title, colour="black")
        for j, (image, caption, correct) in enumerate(zip(row.images, row.captions, row.correct)):
            ax = axes[first + j // per_line, 1 + j % per_line]
            ax.axis("on")
            _show(ax, image, caption, colour=CORRECT_COLOUR if correct else WRONG_COLOUR, fontsize=7)
        first += count
    if suptitle:
        fig.suptitle(suptitle)
    return fig
