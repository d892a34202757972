"""The sigma explorer: a thin shell around :func:`sigma_view`, which computes what to
show for one (sigma, K, query); the widget only copies it into an HTML text and a PNG
image, so the logic is tested without a browser. Display it by making it a cell's last
expression (or ``display(explorer)``)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import ipywidgets as widgets
import torch

from ..explore.embeddings import SORTED_NEIGHBOURS, Embeddings
from ..explore.neighbours import load_image, sigma_sensitive_query
from ..explore.sweeps import classify
from ..kernel.classify import accuracy
from ..viz.kernel import query_probabilities
from .display import show_png


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


def k_choices(k_max: int, include: tuple[int, ...] = (), per_decade: int = 10) -> list[int]:
    """Integers from 1 to ``k_max``, about evenly spaced on a log scale (every integer
    where the spacing would be below 1), ending at ``k_max``, plus the values of
    ``include`` that lie in that range."""
    steps = max(1, round(per_decade * math.log10(max(k_max, 1))))
    grid = {max(1, min(k_max, round(k_max ** (i / steps)))) for i in range(steps + 1)}
    return sorted(grid | {1, k_max} | {k for k in include if 1 <= k <= k_max})


# The sigmas, as multiples of the starting one, over which the starting query's bars should move.
START_SIGMA_FACTORS = torch.logspace(-1, 1, 9, dtype=torch.float64)


class SigmaExplorer:
    """Sliders for sigma and K (both on log scales: their useful values span decades)
    and the query; shows the query image, its class probabilities as bars and the test
    accuracy as text, recomputed on every move from cached embeddings."""

    def __init__(self, emb: Embeddings, sigma: float | None = None, k: int | None = None, query: int | None = None,
                 sigma_range: tuple[float, float] | None = None):
        self.emb = emb
        sigma = emb.sigma if sigma is None else sigma
        low, high = sigma_range or (emb.sigma / 100, emb.sigma * 100)
        if query is None:  # start where moving sigma moves the bars (on many images it changes nothing)
            query = sigma_sensitive_query(emb, k or emb.num_neighbours, START_SIGMA_FACTORS * sigma)
        # Updates on release: a drag would queue a redraw per pixel on a slow machine.
        self.sigma = widgets.FloatLogSlider(value=sigma, min=math.log10(low), max=math.log10(high), step=0.05,
                                            description="sigma", readout_format=".3g", continuous_update=False)
        k_max = min(len(emb.train), SORTED_NEIGHBOURS)
        start_k = min(k or emb.num_neighbours, k_max)
        self.k = widgets.SelectionSlider(options=k_choices(k_max, include=(start_k,)), value=start_k,
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
        fig = query_probabilities(load_image(self.emb.test_paths[self.view.query]), self.view.probabilities,
                                  self.emb.class_names[:self.emb.num_trained], self.view.true_label,
                                  title=f"p(class | test image {self.view.query})")
        show_png(self.plot, fig)

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
