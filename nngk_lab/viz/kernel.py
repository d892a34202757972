"""The kernel classifier drawn: class-probability bars for a query, and the 2-D toy
problem (kernels, sigma maps, training steps). Every function returns a :class:`matplotlib.figure.Figure`
built without pyplot (see :mod:`nngk_lab.viz.style`)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Patch

from ..explore.gradient import TrainingSteps
from ..explore.neighbours import query_neighbours
from ..explore.playground import plane_grid
from ..kernel.classify import kernel_predict_log_probs
from .style import CORRECT_COLOUR, WRONG_COLOUR, class_colours, show_image


def query_probabilities(image, probs, class_names: Sequence[str], true_label: int | None = None,
                        title: str | None = None) -> Figure:
    """The query image beside :func:`probability_bars` of its class probabilities."""
    fig = Figure(figsize=(6.5, 2.8), layout="constrained")
    image_ax, bar_ax = fig.subplots(1, 2, width_ratios=[1, 3.2])
    show_image(image_ax, image, None if true_label is None else f"true class:\n{class_names[true_label]}", fontsize=9)
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
        key = [Patch(facecolor="white", edgecolor="black", linewidth=2, label="true class"),
               Patch(facecolor=CORRECT_COLOUR, label="predicted, right"),
               Patch(facecolor=WRONG_COLOUR, label="predicted, wrong")]
        ax.legend(handles=key, fontsize=7, loc="upper right", framealpha=0.9)
    ax.set_xticks(np.arange(len(probs)), list(class_names)[:len(probs)], rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("p(class | x)")
    if title:
        ax.set_title(title, fontsize=10)
    return fig


def toy_kernel_figure(centres: torch.Tensor, labels: torch.Tensor, query: torch.Tensor, sigma: float, k: int,
                      log_weights: torch.Tensor | None = None, resolution: int = 120) -> Figure:
    """The kernel classifier in 2-D: left, the centres coloured by class, the query, its K
    nearest centres (ringed, sized by kernel value), circles at 1 and 2 sigma, and the
    predicted class of every point of the plane (shade = its probability); right, the
    query's class probabilities."""
    num_classes = int(labels.max()) + 1
    colours = class_colours(num_classes)
    grid, extent = plane_grid(centres, resolution)
    probs = kernel_predict_log_probs(grid, centres, labels, sigma, k, num_classes, log_weights).exp()
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
    query_probs = kernel_predict_log_probs(query.double().unsqueeze(0), centres, labels, sigma, k, num_classes,
                                       log_weights).exp()[0]
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
    grid, extent = plane_grid(centres, resolution)
    fig = Figure(figsize=(3.2 * len(sigmas), 3.3), layout="constrained")
    for ax, sigma in zip(np.atleast_1d(fig.subplots(1, len(sigmas))), sigmas):
        probs = kernel_predict_log_probs(grid, centres, labels, sigma, k, num_classes).exp()
        rgb = (probs.numpy() @ colours[:, :3]).reshape(resolution, resolution, 3)
        ax.imshow((0.45 + 0.55 * rgb).clip(0, 1), origin="lower", extent=extent, aspect="auto")
        ax.scatter(centres[:, 0], centres[:, 1], c=colours[labels.numpy()], s=12, edgecolors="black",
                   linewidths=0.4)
        ax.set_title(f"sigma = {sigma:g}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"class probabilities mixed as colours (K = {k})", fontsize=10)
    return fig


def toy_steps_figure(steps: TrainingSteps, labels: torch.Tensor) -> Figure:
    """Every centre of the 2-D toy with an arrow along the step its own loss takes it
    (minus the gradient, against its K nearest other centres): towards the kernel-weighted
    mean of its own class's neighbours, away from that of all of them."""
    num_classes = int(labels.max()) + 1
    colours = class_colours(num_classes)
    points, moves = steps.points.numpy(), steps.steps.numpy()
    fig = Figure(figsize=(5.5, 5), layout="constrained")
    ax = fig.subplots()
    ax.scatter(points[:, 0], points[:, 1], c=colours[labels.numpy()], s=22, edgecolors="black", linewidths=0.4)
    ax.quiver(points[:, 0], points[:, 1], moves[:, 0], moves[:, 1], color=colours[labels.numpy()],
              angles="xy", width=0.005)
    ax.set_aspect("equal")
    ax.set_xlabel("embedding dimension 1")
    ax.set_ylabel("embedding dimension 2")
    ax.set_title(f"one gradient step of each point's loss (sigma = {steps.sigma:g}, K = {steps.k});\n"
                 "arrow length: the step's size, scaled to fit", fontsize=10)
    return fig
