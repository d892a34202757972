"""The figures' common base: class colours, images for display, a figure as PNG bytes.

Every figure of :mod:`nngk_lab.viz` is a :class:`matplotlib.figure.Figure` built without
pyplot, so nothing is shown twice in Jupyter, nothing needs a screen, and figures are
freed when dropped. Show one by making it a cell's last expression."""

from __future__ import annotations

import io
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

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


def show_image(ax, image, title: str | None = None, colour=None, fontsize: int = 8) -> None:
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


# --------------------------------------------------------------------------- 2-D toy


def region_shades(probabilities: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """RGBA image (R, R, 4) of a probability grid (R, R, C): the predicted class's colour,
    more opaque the surer the classifier (transparent where all classes tie)."""
    num_classes = probabilities.shape[-1]
    best = probabilities.argmax(-1)
    sure = (probabilities.max(-1) - 1 / num_classes) / (1 - 1 / num_classes)
    shade = colours[best].copy()
    shade[..., 3] = 0.12 + 0.5 * sure.clip(0, 1)
    return shade
