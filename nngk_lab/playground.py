"""The 2-D playground: the kernel classifier on the toy problem, with sliders for sigma,
K, the query's position and one centre's kernel weight.

:func:`playground_view` is the callback: it computes everything the explorer shows for
one setting of the sliders (a :class:`PlaygroundView`); :func:`decision_regions` is the
expensive part (every point of a grid over the plane) and depends only on sigma, K and
the weights, so :class:`Playground` keeps the last one and a move of the query alone
only redraws. The figure is :func:`nngk_lab.viz_playground.playground_figure`.
"""

from __future__ import annotations

from dataclasses import dataclass

import ipywidgets as widgets
import torch

from .explore import QueryNeighbours, kernel_probabilities, query_neighbours
from .viz import _plane_grid
from .viz_playground import playground_figure
from .widgets import show_png

RESOLUTION = 80  # grid points per side: 6,400 points keep a sigma or K move well under a second


@dataclass(frozen=True)
class Regions:
    """The classifier's class probabilities over a grid of the plane: ``probabilities``
    (R, R, C), rows from the bottom, covering ``extent`` (left, right, bottom, top)."""

    probabilities: torch.Tensor
    extent: tuple[float, float, float, float]


@dataclass
class PlaygroundView:
    """What the playground shows for one (sigma, K, query, weighted centre)."""

    centres: torch.Tensor          # (N, 2)
    labels: torch.Tensor           # (N,)
    log_weights: torch.Tensor      # (N,) all 0 except the weighted centre's
    query: torch.Tensor            # (2,)
    sigma: float
    k: int
    centre: int                    # the centre whose weight the slider sets
    regions: Regions
    neighbours: QueryNeighbours    # the query's K nearest centres, nearest first
    probabilities: torch.Tensor    # (C,) the query's class probabilities

    @property
    def num_classes(self) -> int:
        return self.probabilities.shape[0]

    def html(self) -> str:
        predicted = int(self.probabilities.argmax())
        probs = ", ".join(f"class {c}: {float(p):.3f}" for c, p in enumerate(self.probabilities))
        w = float(self.log_weights[self.centre].exp())
        position = (self.neighbours.indices == self.centre).nonzero()
        if len(position):
            share = float(self.neighbours.kernels[position[0, 0]] / self.neighbours.kernels.sum())
            among = f"neighbour {int(position[0, 0]) + 1} of {self.k}, {share:.0%} of the kernel sum"
        else:
            among = "not among the K nearest: its weight changes nothing here"
        return (f"<b>predicted class {predicted}</b> (sigma = {self.sigma:.3g}, K = {self.k}); "
                f"p(class | query): {probs}<br>centre {self.centre} (class {int(self.labels[self.centre])}): "
                f"weight w = {w:.3g}, {among}")


def boosted_log_weights(num_centres: int, centre: int, log_weight: float) -> torch.Tensor:
    """Log-weights (float64) that are 0 (weight 1) except ``centre``'s, ``log_weight``."""
    log_weights = torch.zeros(num_centres, dtype=torch.float64)
    log_weights[centre] = log_weight
    return log_weights


def decision_regions(centres: torch.Tensor, labels: torch.Tensor, sigma: float, k: int,
                     log_weights: torch.Tensor, resolution: int = RESOLUTION) -> Regions:
    """The kernel classifier's class probabilities at every point of a grid covering the
    centres with a margin."""
    grid, extent = _plane_grid(centres, resolution)
    probs = kernel_probabilities(grid, centres.double(), labels, sigma, k, int(labels.max()) + 1, log_weights)
    return Regions(probs.reshape(resolution, resolution, -1), extent)


def playground_view(centres: torch.Tensor, labels: torch.Tensor, sigma: float, k: int, x: float, y: float,
                    centre: int = 0, log_weight: float = 0.0, regions: Regions | None = None) -> PlaygroundView:
    """The playground's callback: the query at (x, y), its K nearest centres and class
    probabilities, with every kernel weight 1 except ``centre``'s, ``exp(log_weight)``.

    ``regions`` reuses decision regions computed for the same sigma, K and weights.
    """
    if not 0 <= centre < centres.shape[0]:
        raise IndexError(f"centre {centre} is out of range: there are {centres.shape[0]} centres")
    k = max(1, min(int(k), centres.shape[0]))
    centres = centres.double()
    log_weights = boosted_log_weights(centres.shape[0], centre, log_weight)
    query = torch.tensor([x, y], dtype=torch.float64)
    regions = regions if regions is not None else decision_regions(centres, labels, sigma, k, log_weights)
    neighbours = query_neighbours(query, centres, labels, k, sigma, log_weights)
    probs = kernel_probabilities(query.unsqueeze(0), centres, labels, sigma, k, int(labels.max()) + 1,
                                 log_weights)[0]
    return PlaygroundView(centres, labels, log_weights, query, float(sigma), k, int(centre), regions,
                          neighbours, probs)


class Playground:
    """Sliders for sigma (log scale), K, the query's x and y, a centre and its
    log-weight; redraws the decision regions, the query's neighbours and its class
    probabilities on every move."""

    def __init__(self, centres: torch.Tensor, labels: torch.Tensor, sigma: float = 0.5, k: int = 10,
                 query: tuple[float, float] = (0.2, 0.7), centre: int | None = None, log_weight: float = 0.0):
        self.centres, self.labels = centres.double(), labels
        _, (left, right, bottom, top) = _plane_grid(self.centres, 2)
        if centre is None:  # the query's nearest centre: raising its weight visibly moves the bars
            centre = int(query_neighbours(torch.tensor(query, dtype=torch.float64), self.centres, labels, 1,
                                          sigma).indices[0])
        # Values update on release: a drag would queue a redraw per pixel on a slow machine.
        slider = dict(continuous_update=False, style={"description_width": "70px"})
        self.sigma = widgets.FloatLogSlider(value=sigma, base=10, min=-1.5, max=0.7, step=0.05,
                                            description="sigma", readout_format=".3g", **slider)
        self.k = widgets.IntSlider(value=k, min=1, max=len(centres), description="K", **slider)
        self.x = widgets.FloatSlider(value=query[0], min=left, max=right, step=0.05, description="query x",
                                     **slider)
        self.y = widgets.FloatSlider(value=query[1], min=bottom, max=top, step=0.05, description="query y",
                                     **slider)
        self.centre = widgets.IntSlider(value=centre, min=0, max=len(centres) - 1, description="centre", **slider)
        self.log_weight = widgets.FloatSlider(value=log_weight, min=-4.0, max=4.0, step=0.25,
                                              description="log w", **slider)
        self.text = widgets.HTML()
        self.plot = widgets.Image(format="png")
        for control in (self.sigma, self.k, self.x, self.y, self.centre, self.log_weight):
            control.observe(self._changed, names="value")
        self.widget = widgets.VBox([
            widgets.HBox([widgets.VBox([self.sigma, self.k]), widgets.VBox([self.x, self.y]),
                          widgets.VBox([self.centre, self.log_weight])]),
            self.text, self.plot])
        self._regions: tuple[tuple, Regions] | None = None
        self.view: PlaygroundView | None = None
        self.refresh()

    def _changed(self, change) -> None:
        self.refresh()

    def _cached_regions(self) -> Regions:
        key = (self.sigma.value, self.k.value, self.centre.value, self.log_weight.value)
        if self._regions is None or self._regions[0] != key:
            log_weights = boosted_log_weights(len(self.centres), self.centre.value, self.log_weight.value)
            self._regions = key, decision_regions(self.centres, self.labels, self.sigma.value, self.k.value,
                                                  log_weights)
        return self._regions[1]

    def refresh(self) -> None:
        self.view = playground_view(self.centres, self.labels, self.sigma.value, self.k.value, self.x.value,
                                    self.y.value, self.centre.value, self.log_weight.value, self._cached_regions())
        self.text.value = self.view.html()
        show_png(self.plot, playground_figure(self.view))

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
