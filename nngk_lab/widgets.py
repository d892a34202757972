"""ipywidgets explorers on cached embeddings. Each is a thin shell around a plain
function (``sigma_view``, ``gallery_view``) that computes what to show; the widgets only
copy its result into an HTML text and a PNG image, so the logic is tested without a browser.

Display an explorer by making it a cell's last expression (or ``display(explorer)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as widgets
import torch

from .classify import accuracy
from .explore import GALLERY_SOURCES, SORTED_NEIGHBOURS, Embeddings, classify, gallery_row, worst_failures
from .viz import figure_png, neighbour_gallery, probability_bars


PLOT_DPI = 80
GALLERY_DPI = 90


def show_png(image: widgets.Image, fig) -> None:
    """Put a figure into an Image widget at its natural size (not stretched to the cell)."""
    image.value = figure_png(fig, dpi=PLOT_DPI)
    image.layout.width = f"{int(fig.get_figwidth() * PLOT_DPI)}px"


@dataclass
class SigmaView:
    """What the sigma explorer shows for one (sigma, K, query)."""

    sigma: float
    k: int
    query: int
    probabilities: torch.Tensor   # (num_trained,) the query's class probabilities
    true_label: int
    predicted: int
    accuracy: float               # on all test images, with this sigma and K

    def html(self, class_names) -> str:
        verdict = "right" if self.predicted == self.true_label else "wrong"
        top = ", ".join(f"{class_names[c]}: {float(self.probabilities[c]):.3f}"
                        for c in torch.argsort(self.probabilities, descending=True)[:3].tolist())
        return (f"<b>test accuracy: {self.accuracy:.3f}</b> (sigma = {self.sigma:.3g}, K = {self.k})<br>"
                f"query {self.query}: true class {class_names[self.true_label]}, predicted "
                f"{class_names[self.predicted]} ({verdict})<br>top probabilities: {top}")


def sigma_view(emb: Embeddings, sigma: float, k: int, query: int) -> SigmaView:
    """The sigma explorer's callback: one test query's class probabilities and the test
    accuracy of the kernel classifier with this sigma and K (embeddings stay fixed)."""
    if not 0 <= query < emb.test.shape[0]:
        raise IndexError(f"query {query} is out of range: there are {emb.test.shape[0]} test images")
    probs = classify(emb, sigma, k)  # every test image: the accuracy needs them all
    return SigmaView(float(sigma), int(k), int(query), probs[query], int(emb.test_labels[query]),
                     int(probs[query].argmax()), accuracy(probs.argmax(1), emb.test_labels))


class SigmaExplorer:
    """Sliders for sigma, K and the query; shows the query's class probabilities as bars
    and the test accuracy as text, recomputed on every move from cached embeddings."""

    def __init__(self, emb: Embeddings, sigma: float | None = None, k: int | None = None, query: int | None = None,
                 sigma_range: tuple[float, float] | None = None):
        self.emb = emb
        sigma = emb.sigma if sigma is None else sigma
        if query is None:  # start on the hardest test image: its bars move the most
            query = worst_failures(emb, sigma, k or emb.num_neighbours, n=1)[0]
        low, high = sigma_range or (emb.sigma / 20, emb.sigma * 50)
        # Updates on release: a drag would queue a redraw per pixel on a slow machine.
        self.sigma = widgets.FloatSlider(value=sigma, min=low, max=high, step=low, description="sigma",
                                         readout_format=".2f", continuous_update=False)
        k_max = min(len(emb.train), SORTED_NEIGHBOURS)
        self.k = widgets.IntSlider(value=min(k or emb.num_neighbours, k_max), min=1, max=k_max,
                                   description="K", continuous_update=False)
        self.query = widgets.IntSlider(value=query, min=0, max=emb.test.shape[0] - 1, description="query",
                                       continuous_update=False)
        self.text = widgets.HTML()
        self.plot = widgets.Image(format="png")
        for control in (self.sigma, self.k, self.query):
            control.observe(self._changed, names="value")
        self.widget = widgets.VBox([widgets.HBox([widgets.VBox([self.sigma, self.k, self.query]), self.text]),
                                    self.plot])
        self.view: SigmaView | None = None
        self.refresh()

    def _changed(self, change) -> None:
        self.refresh()

    def refresh(self) -> None:
        self.view = sigma_view(self.emb, self.sigma.value, self.k.value, self.query.value)
        self.text.value = self.view.html(self.emb.class_names)
        fig = probability_bars(self.view.probabilities, self.emb.class_names[:self.emb.num_trained],
                               self.view.true_label, title=f"p(class | query {self.view.query})")
        show_png(self.plot, fig)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)


@dataclass
class GalleryView:
    """What the gallery explorer shows: the drawn gallery and a one-line summary."""

    png: bytes
    summary: str
    width: int  # pixels


def gallery_view(emb: Embeddings, source: str, query: int, sigma: float, k: int = 8) -> GalleryView:
    """The gallery explorer's callback: query ``query`` of ``source`` ("test" or
    "heldout") and its ``k`` nearest centres, drawn."""
    row = gallery_row(emb, source, query, sigma, k)
    right = sum(row.correct)
    summary = (f"{source} query {query}: {right} of {len(row.correct)} nearest "
               f"{'centres' if source == 'test' else 'held-out images'} share its class")
    fig = neighbour_gallery([row])
    return GalleryView(figure_png(fig, dpi=GALLERY_DPI), summary, int(fig.get_figwidth() * GALLERY_DPI))


class GalleryExplorer:
    """Pick a query (test image of a trained class, or held-out-class image) and see its
    nearest neighbours redrawn."""

    SOURCE_LABELS = {"test": "test image (trained class)", "heldout": "held-out class image"}

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
        return (self.emb.test if source == "test" else self.emb.heldout).shape[0]

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
