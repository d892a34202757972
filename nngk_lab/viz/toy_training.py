"""The trainable playground's figure (see :mod:`nngk_lab.explore.toy_training`), built
without pyplot and returned."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from .style import class_colours, region_shades

if TYPE_CHECKING:
    from ..explore.toy_training import ToyView


def _mark_refreshes(ax, refresh_steps: list[int]) -> None:
    for step in refresh_steps:
        ax.axvline(step, color="grey", linestyle=":", linewidth=1)


def toy_training_figure(view: ToyView) -> Figure:
    """Top left: the input plane, the examples by class (an MLP's plane shaded by the
    kernel classifier's prediction against the bank). Top right: the embedding, every
    example now (dots) and its bank centre (rings), joined by a grey line: the staleness.
    Bottom: each step's loss and the mean embedding length, refreshes dotted."""
    labels = view.labels.numpy()
    colours = class_colours(int(labels.max()) + 1)
    # Fixed axes positions instead of a layout engine: the layout pass cost more than the drawing.
    fig = Figure(figsize=(8.6, 6.6))
    plane = fig.add_axes((0.07, 0.47, 0.38, 0.47))
    emb_ax = fig.add_axes((0.57, 0.47, 0.38, 0.47))
    loss_ax = fig.add_axes((0.07, 0.07, 0.38, 0.28))
    norm_ax = fig.add_axes((0.57, 0.07, 0.38, 0.28))

    if view.regions is not None:
        plane.imshow(region_shades(view.regions.numpy(), colours), origin="lower", extent=view.extent,
                     interpolation="bilinear", aspect="equal")
    points = view.points.numpy()
    plane.scatter(points[:, 0], points[:, 1], c=colours[labels], s=14, edgecolors="white", linewidths=0.4)
    plane.set_xlim(view.extent[:2])
    plane.set_ylim(view.extent[2:])
    plane.set_title(f"{view.dataset}: the inputs" + (", shaded by the classifier" if view.regions is not None else ""),
                    fontsize=9)

    emb, centres = view.embeddings.numpy(), view.centres.numpy()
    segments = np.stack([centres, emb], 1)
    for seg in segments:
        emb_ax.plot(seg[:, 0], seg[:, 1], color="grey", linewidth=0.5, zorder=1)
    emb_ax.scatter(centres[:, 0], centres[:, 1], s=30, facecolors="none", edgecolors=colours[labels],
                   linewidths=0.8, zorder=2)
    emb_ax.scatter(emb[:, 0], emb[:, 1], c=colours[labels], s=12, zorder=3)
    if view.unit_length:
        emb_ax.add_patch(Circle((0, 0), 1, fill=False, color="lightgrey", zorder=0))
    reach = float(np.abs(np.concatenate([emb, centres])).max()) * 1.1 + 1e-6
    emb_ax.set_xlim(-reach, reach)
    emb_ax.set_ylim(-reach, reach)
    emb_ax.set_aspect("equal")
    emb_ax.set_title(f"{view.kind} embedding{' (unit length)' if view.unit_length else ''}, sigma = {view.sigma:g}",
                     fontsize=9)
    emb_ax.legend(handles=[
        Line2D([], [], marker="o", color="black", markersize=4, linestyle="", label="example now"),
        Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor="black", markersize=6, linestyle="",
               label="its bank centre (last refresh)")], fontsize=7, loc="upper right", framealpha=0.7)

    loss_ax.plot(np.arange(1, view.step + 1), view.losses, color="black", linewidth=1)
    loss_ax.set_xlim(0, max(view.step, 1))
    loss_ax.set_ylim(bottom=0)
    loss_ax.set_title("loss against the bank (refreshes dotted)", fontsize=9)
    norm_ax.plot(np.arange(view.step + 1), view.norms, color="tab:purple", linewidth=1)
    norm_ax.set_xlim(0, max(view.step, 1))
    norm_ax.set_ylim(bottom=0)
    norm_ax.set_title("mean embedding length", fontsize=9)
    for ax in (loss_ax, norm_ax):
        _mark_refreshes(ax, view.refresh_steps)
        ax.set_xlabel("step", fontsize=8)
    for ax in (plane, emb_ax, loss_ax, norm_ax):
        ax.tick_params(labelsize=7)
    return fig
