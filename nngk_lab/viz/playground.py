"""The 2-D playground's figure (see :mod:`nngk_lab.explore.playground`). Like every figure of
the kit it is built without pyplot and returned."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Circle

from .kernel import probability_bars
from .style import class_colours, region_shades

if TYPE_CHECKING:
    from ..explore.playground import PlaygroundView


def playground_figure(view: PlaygroundView) -> Figure:
    """Left: the plane, shaded by the predicted class (paler where less sure), the centres
    by class, the query (star), its K nearest centres (rings sized by their share of the
    kernel sum), circles at 1 and 2 sigma around it and the weighted centre (square).
    Right: the query's class probabilities."""
    colours = class_colours(view.num_classes)
    centres, labels = view.centres.numpy(), view.labels.numpy()
    query = view.query.numpy()
    # Fixed axes positions instead of a layout engine: the layout pass cost more than
    # all the drawing.
    fig = Figure(figsize=(8.6, 4.4))
    ax = fig.add_axes((0.08, 0.11, 0.47, 0.81))
    bar_ax = fig.add_axes((0.64, 0.50, 0.34, 0.40))
    extent = view.regions.extent
    ax.imshow(region_shades(view.regions.probabilities.numpy(), colours), origin="lower", extent=extent,
              interpolation="bilinear", aspect="equal")
    ax.scatter(centres[:, 0], centres[:, 1], c=colours[labels], s=22, edgecolors="white", linewidths=0.5)
    nb = view.neighbours
    share = (nb.kernels / nb.kernels.sum()).numpy()
    idx = nb.indices.numpy()
    ax.scatter(centres[idx, 0], centres[idx, 1], s=60 + 400 * share, facecolors="none", edgecolors="black",
               linewidths=1.2)
    for radius, style in ((view.sigma, "-"), (2 * view.sigma, ":")):
        ax.add_patch(Circle(tuple(query), radius, fill=False, linestyle=style, color="black"))
    weight = float(view.log_weights[view.centre].exp())
    c = centres[view.centre]
    ax.scatter([c[0]], [c[1]], marker="s", s=150, facecolors="none", edgecolors="magenta", linewidths=2, zorder=4)
    ax.scatter([query[0]], [query[1]], marker="*", s=260, c="gold", edgecolors="black", zorder=5)
    # The view holds the whole 2-sigma circle, however large sigma gets.
    reach = 2 * view.sigma
    ax.set_xlim(min(extent[0], query[0] - reach), max(extent[1], query[0] + reach))
    ax.set_ylim(min(extent[2], query[1] - reach), max(extent[3], query[1] + reach))
    ax.tick_params(labelsize=7)
    ax.set_xlabel("embedding dimension 1", fontsize=8)
    ax.set_ylabel("embedding dimension 2", fontsize=8)
    ax.set_title(f"sigma = {view.sigma:.3g}, K = {view.k}", fontsize=10)
    legend = [
        Line2D([], [], marker="*", color="gold", markeredgecolor="black", markersize=13, linestyle="", label="query"),
        Line2D([], [], marker="o", markerfacecolor="none", markeredgecolor="black", markersize=9, linestyle="",
               label=f"its K = {len(idx)} nearest centres\n(ring size: share of kernel sum)"),
        Line2D([], [], color="black", label="1 sigma around the query"),
        Line2D([], [], color="black", linestyle=":", label="2 sigma"),
        Line2D([], [], marker="s", markerfacecolor="none", markeredgecolor="magenta", markeredgewidth=2,
               markersize=10, linestyle="", label=f"weighted centre ({view.centre_name}):\nweight {weight:.3g}"),
    ]
    fig.legend(handles=legend, loc="lower left", bbox_to_anchor=(0.58, 0.0), fontsize=8, frameon=False)
    probability_bars(view.probabilities, [f"class {c}" for c in range(view.num_classes)],
                     title="p(class | query)", ax=bar_ax)
    for patch, colour in zip(bar_ax.patches, colours):
        patch.set_facecolor(colour)
    return fig
