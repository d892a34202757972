"""Galleries of queries next to their nearest centres (distance, kernel value, right or
wrong label). Every function returns a :class:`matplotlib.figure.Figure`
built without pyplot (see :mod:`nngk_lab.viz.style`)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.figure import Figure

from ..explore.neighbours import GalleryRow
from .style import CORRECT_COLOUR, WRONG_COLOUR, show_image

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
    # Room under each image for a three-line caption at a readable 8 pt.
    fig = Figure(figsize=(size * (per_line + 1), (size + 0.75) * sum(lines) + (0.4 if suptitle else 0)),
                 layout="constrained")
    axes = np.atleast_2d(fig.subplots(sum(lines), per_line + 1))
    for ax in axes.ravel():
        ax.axis("off")
    first = 0
    for row, count in zip(rows, lines):
        axes[first, 0].axis("on")
        show_image(axes[first, 0], row.query_image, row.query_title, colour="black")
        for j, (image, caption, correct) in enumerate(zip(row.images, row.captions, row.correct)):
            ax = axes[first + j // per_line, 1 + j % per_line]
            ax.axis("on")
            show_image(ax, image, caption, colour=CORRECT_COLOUR if correct else WRONG_COLOUR, fontsize=8)
        first += count
    if suptitle:
        fig.suptitle(suptitle)
    return fig
