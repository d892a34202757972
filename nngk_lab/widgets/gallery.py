"""The neighbour-gallery explorer: a thin shell around :func:`gallery_view`, which
computes what to show (the drawn gallery and a summary line); the widget only copies it
into an HTML text and a PNG image, so the logic is tested without a browser."""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as widgets

from ..explore.embeddings import Embeddings
from ..explore.neighbours import GALLERY_SOURCES, gallery_row
from ..viz.gallery import neighbour_gallery
from ..viz.style import figure_png
from .display import GALLERY_DPI


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
    fig = neighbour_gallery([row])
    return GalleryView(figure_png(fig, dpi=GALLERY_DPI), summary, int(fig.get_figwidth() * GALLERY_DPI))


class GalleryExplorer:
    """Pick a query (test image of a trained class, or held-out-class image) and see its
    nearest neighbours redrawn."""

    SOURCE_LABELS = {"test": "test image (trained class)", "heldout": "held-out image, retrieval",
                     "heldout_classified": "held-out image, classified"}

    def __init__(self, emb: Embeddings, sigma: float | None = None, k: int = 8, source: str = "test",
                 query: int = 0):
        self.emb, self.k = emb, k
        self.sigma_value = emb.sigma if sigma is None else sigma
        options = [(self.SOURCE_LABELS[s], s) for s in GALLERY_SOURCES if self._size(s) > 0]
        self.source = widgets.Dropdown(options=options, value=source, description="set")
        self.query = widgets.IntSlider(value=query, min=0, max=self._size(source) - 1, description="query",
                                       continuous_update=False)
        self.text = widgets.HTML()
        self.plot = widgets.Image(format="png")
        self.source.observe(self._source_changed, names="value")
        self.query.observe(self._changed, names="value")
        self.widget = widgets.VBox([widgets.HBox([self.source, self.query]), self.text, self.plot])
        self.view: GalleryView | None = None
        self.refresh()

    def _size(self, source: str) -> int:
        return (self.emb.test if source == "test" else self.emb.heldout).shape[0]  # both held-out sets

    def _source_changed(self, change) -> None:
        size = self._size(change["new"])
        if self.query.value == 0:
            self.query.max = size - 1
            self.refresh()
        else:
            self.query.value = 0  # redraws through _changed, already with the new source
            self.query.max = size - 1

    def _changed(self, change) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.view = gallery_view(self.emb, self.source.value, self.query.value, self.sigma_value, self.k)
        self.text.value = self.view.summary
        self.plot.value = self.view.png
        self.plot.layout.width = f"{self.view.width}px"

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
