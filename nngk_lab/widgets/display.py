"""ipywidgets explorers on cached embeddings. Each is a thin shell around a plain
function (``sigma_view``, ``gallery_view``) that computes what to show; the widgets only
copy its result into an HTML text and a PNG image, so the logic is tested without a browser.

Display an explorer by making it a cell's last expression (or ``display(explorer)``)."""

from __future__ import annotations

import ipywidgets as widgets

from ..viz.style import figure_png

PLOT_DPI = 80


GALLERY_DPI = 90


def show_png(image: widgets.Image, fig) -> None:
    """Put a figure into an Image widget at its natural size (not stretched to the cell)."""
    image.value = figure_png(fig, dpi=PLOT_DPI)
    image.layout.width = f"{int(fig.get_figwidth() * PLOT_DPI)}px"
