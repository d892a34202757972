"""The 2-D playground: the kernel classifier on the toy problem, with sliders for sigma,
K, the query's position and one centre's kernel weight, the centre picked by its class and
its rank of distance to the query.

:func:`playground_view` is the callback: it computes everything the explorer shows for
one setting of the sliders (a :class:`PlaygroundView`); :func:`decision_regions` is the
expensive part (every point of a grid over the plane) and depends only on sigma, K and
the weights, so :class:`Playground` keeps the last one and a move of the query alone
only redraws. The figure is :func:`nngk_lab.viz.playground.playground_figure`."""

from __future__ import annotations

import ipywidgets as widgets
import torch

from ..explore.neighbours import query_neighbours
from ..explore.playground import (
    PlaygroundView,
    Regions,
    boosted_log_weights,
    centre_choices,
    decision_regions,
    plane_grid,
    playground_view,
)
from ..viz.playground import playground_figure
from .display import show_png


class Playground:
    """Sliders for sigma (log scale), K, the query's x and y and one centre's log-weight,
    and a list to pick that centre from ("class 1, nearest", "class 0, 2nd nearest", ...,
    renamed when the query moves; the pick stays the same centre); redraws the decision
    regions, the query's neighbours and its class probabilities on every move."""

    def __init__(self, centres: torch.Tensor, labels: torch.Tensor, sigma: float = 0.5, k: int = 10,
                 query: tuple[float, float] = (0.2, 0.7), centre: int | None = None, log_weight: float = 0.0):
        self.centres, self.labels = centres.double(), labels
        _, (left, right, bottom, top) = plane_grid(self.centres, 2)
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
        self.centre = widgets.Dropdown(options=centre_choices(self.centres, labels, query), value=centre,
                                       description="centre", style=slider["style"],
                                       layout=widgets.Layout(width="280px"))
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
        self._renaming = False
        self.refresh()

    def _changed(self, change) -> None:
        if self._renaming:
            return
        if change["owner"] in (self.x, self.y):
            self._rename_centres()
        self.refresh()

    def _rename_centres(self) -> None:
        # New options select their first entry; the pick is put back, and neither change redraws.
        chosen, self._renaming = self.centre.value, True
        try:
            self.centre.options = centre_choices(self.centres, self.labels, (self.x.value, self.y.value))
            self.centre.value = chosen
        finally:
            self._renaming = False

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
