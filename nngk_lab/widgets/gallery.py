"""The neighbour-gallery explorer: a thin shell around :func:`gallery_view`, which
computes what to show (the drawn gallery and a summary line); the widget only copies it
into an HTML text and a PNG image, so the logic is tested without a browser."""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as widgets

from ..explore.confidence import heldout_confidence, most_confident
from ..explore.embeddings import Embeddings
from ..explore.neighbours import GALLERY_SOURCES, gallery_row, least_confident_order
from ..viz.gallery import neighbour_gallery
from ..viz.style import figure_png
from .display import GALLERY_DPI

# Neighbours per line: eight in one line made a figure wider than a notebook cell, which the
# browser shrank until the captions were unreadable.
GALLERY_PER_LINE = 4


@dataclass
class GalleryView:
    """What the gallery explorer shows: the drawn gallery and a one-line summary."""

    png: bytes
    summary: str
    width: int  # pixels


def gallery_view(emb: Embeddings, source: str, query: int, sigma: float, k: int = 8) -> GalleryView:
    """The gallery explorer's callback: query ``query`` of ``source`` (one of
    :data:`~nngk_lab.explore.neighbours.GALLERY_SOURCES`) and its ``k`` nearest centres, drawn."""
    row = gallery_row(emb, source, query, sigma, k)
    right = sum(row.correct)
    summary = (f"{source} query {query}: {right} of {len(row.correct)} nearest "
               f"{'held-out images' if source == 'heldout' else 'centres'} share its class")
    fig = neighbour_gallery([row], per_line=GALLERY_PER_LINE)
    return GalleryView(figure_png(fig, dpi=GALLERY_DPI), summary, int(fig.get_figwidth() * GALLERY_DPI))


def query_order(emb: Embeddings, source: str, order: str, sigma: float) -> list[int]:
    """The images of ``source`` in the order the query slider walks them: ``"stored"`` (as
    the split lists them: class by class), or ``"doubt"``: test images least confident
    first, held-out images classified most confidently (so most confidently wrong) first;
    held-out retrieval has no classifier, so it keeps the stored order."""
    size = (emb.test if source == "test" else emb.heldout).shape[0]
    if order == "stored" or source == "heldout":
        return list(range(size))
    if source == "test":
        return least_confident_order(emb, sigma, emb.num_neighbours)
    return most_confident(heldout_confidence(emb, sigma).heldout, size)


class GalleryExplorer:
    """Pick a set (test images of trained classes, or held-out-class images), an order and
    a query, and see its nearest neighbours redrawn."""

    SOURCE_LABELS = {"test": "test image (trained class)", "heldout": "held-out image, retrieval",
                     "heldout_classified": "held-out image, classified"}
    ORDERS = (("least sure / surest wrong first", "doubt"), ("as stored, class by class", "stored"))

    def __init__(self, emb: Embeddings, sigma: float | None = None, k: int = 8, source: str = "test",
                 query: int = 0, order: str = "doubt"):
        self.emb, self.k = emb, k
        self.sigma_value = emb.sigma if sigma is None else sigma
        options = [(self.SOURCE_LABELS[s], s) for s in GALLERY_SOURCES if self._size(s) > 0]
        self.source = widgets.Dropdown(options=options, value=source, description="set")
        self.order = widgets.Dropdown(options=self.ORDERS, value=order, description="order")
        self.query = widgets.IntSlider(value=query, min=0, max=self._size(source) - 1, description="query",
                                       continuous_update=False)
        self.text = widgets.HTML()
        self.plot = widgets.Image(format="png")
        self.source.observe(self._set_changed, names="value")
        self.order.observe(self._set_changed, names="value")
        self.query.observe(self._changed, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.source, self.order, self.query]), self.text, self.plot])
        self.view: GalleryView | None = None
        self._order = query_order(emb, source, order, self.sigma_value)
        self.refresh()

    def _size(self, source: str) -> int:
        return (self.emb.test if source == "test" else self.emb.heldout).shape[0]  # both held-out sets

    @property
    def image(self) -> int:
        """The index, in its set, of the image the query slider points at."""
        return self._order[self.query.value]

    def _set_changed(self, change) -> None:
        self._order = query_order(self.emb, self.source.value, self.order.value, self.sigma_value)
        size = self._size(self.source.value)
        if self.query.value == 0:
            self.query.max = size - 1
            self.refresh()
        else:
            self.query.value = 0  # redraws through _changed, already with the new set and order
            self.query.max = size - 1

    def _changed(self, change) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.view = gallery_view(self.emb, self.source.value, self.image, self.sigma_value, self.k)
        self.text.value = f"{self.view.summary} (position {self.query.value + 1} of {len(self._order)})"
        self.plot.value = self.view.png
        self.plot.layout.width = f"{self.view.width}px"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
