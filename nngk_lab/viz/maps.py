"""Maps of the embedding space: UMAP (or 2-D) coordinates of centres by class, with
thumbnails. Every function returns a :class:`matplotlib.figure.Figure`
built without pyplot (see :mod:`nngk_lab.viz.style`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox, OffsetImage

from .style import class_colours, to_display

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
