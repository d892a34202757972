"""Figures of the embedding forming (see :mod:`nngk_lab.explore.film`): snapshots of
the 2-D centres epoch by epoch and the same as an animation, one row or panel per loss."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from .style import class_colours

LOSS_TITLES = {"nngk": "kernel loss (NNGK)", "softmax": "softmax"}


def _draw_frame(ax, film: dict, epoch: int, colours: np.ndarray) -> None:
    centres = film["centres"][epoch].numpy()
    ax.clear()
    ax.scatter(centres[:, 0], centres[:, 1], c=colours[film["labels"].numpy()], s=6, linewidths=0)
    # Each frame gets its own limits: the untrained network's outputs span a thousandth
    # of the trained ones', so shared limits would show epoch 0 as a dot.
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_title(f"{LOSS_TITLES.get(film['loss'], film['loss'])}\nepoch {epoch}: test accuracy "
                 f"{film['accuracy'][epoch]:.2f}", fontsize=9)
    ax.tick_params(labelsize=7)


def _legend(fig: Figure, film: dict, colours: np.ndarray) -> None:
    handles = [fig.axes[0].scatter([], [], color=colours[c], s=20, label=film["classes"][c])
               for c in range(film["num_trained"])]
    fig.legend(handles=handles, loc="outside right center", fontsize=8, title="class")


def film_snapshots(films: dict[str, dict], epochs: Sequence[int] | None = None) -> Figure:
    """One row per loss, one column per epoch (default: up to six spread over the film):
    the training images' 2-D centres coloured by class. Axes are in embedding units, each
    panel with its own scale."""
    num_epochs = next(iter(films.values()))["centres"].shape[0]
    if epochs is None:
        epochs = sorted(set(np.linspace(0, num_epochs - 1, min(6, num_epochs)).round().astype(int).tolist()))
    colours = class_colours(next(iter(films.values()))["num_trained"])
    fig = Figure(figsize=(2.4 * len(epochs) + 1, 2.6 * len(films)), layout="constrained")
    axes = np.atleast_2d(fig.subplots(len(films), len(epochs)))
    for row, film in zip(axes, films.values()):
        for ax, epoch in zip(row, epochs):
            _draw_frame(ax, film, epoch, colours)
    _legend(fig, next(iter(films.values())), colours)
    return fig


def film_animation_html(films: dict[str, dict], interval_ms: int = 600) -> str:
    """The films side by side as an animation (matplotlib's ``FuncAnimation`` as
    JavaScript HTML, with play buttons and a frame slider): one frame per epoch."""
    from matplotlib.animation import FuncAnimation

    num_epochs = next(iter(films.values()))["centres"].shape[0]
    colours = class_colours(next(iter(films.values()))["num_trained"])
    fig = Figure(figsize=(3.6 * len(films) + 1, 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(films)))
    for ax, film in zip(axes, films.values()):
        _draw_frame(ax, film, 0, colours)
    _legend(fig, next(iter(films.values())), colours)

    def update(epoch: int):
        for ax, film in zip(axes, films.values()):
            _draw_frame(ax, film, epoch, colours)
        return []

    animation = FuncAnimation(fig, update, frames=num_epochs, interval=interval_ms, blit=False)
    return animation.to_jshtml(default_mode="once")
