"""The trainable playground: buttons that train a 2-D embedding of toy data with the NNGK
loss and refresh its bank. The state and every number live in
:class:`nngk_lab.explore.toy_training.ToyTraining`; the widget only calls it and copies its
view into an HTML text and a PNG (:func:`nngk_lab.viz.toy_training.toy_training_figure`)."""

from __future__ import annotations

import ipywidgets as widgets

from ..explore.toy_training import EMBEDDINGS, TOY_DATASETS, ToyTraining, ToyView
from ..viz.toy_training import toy_training_figure
from .display import show_png


class TrainablePlayground:
    """Drop-downs for the data and the embedding, a unit-length checkbox (each change
    starts afresh from the same seed), a steps slider, how often training refreshes the bank, and buttons "train steps",
    "refresh bank" and "restart"."""

    def __init__(self, dataset: str = "xor", kind: str = "mlp", unit_length: bool = True, steps: int = 50,
                 seed: int = 0, **training):
        self.seed, self.training = seed, training
        self.dataset = widgets.Dropdown(options=TOY_DATASETS, value=dataset, description="data")
        self.kind = widgets.Dropdown(options=EMBEDDINGS, value=kind, description="embedding")
        self.unit_length = widgets.Checkbox(value=unit_length, description="unit length", indent=False)
        self.steps = widgets.IntSlider(value=steps, min=1, max=200, description="steps", continuous_update=False)
        self.refresh_every = widgets.Dropdown(options=[("never", 0), ("every step", 1), ("every 5 steps", 5),
                                                       ("every 20 steps", 20)], value=5, description="bank refresh")
        self.train_button = widgets.Button(description="train steps", button_style="primary")
        self.refresh_button = widgets.Button(description="refresh bank")
        self.restart_button = widgets.Button(description="restart")
        self.text = widgets.HTML()
        self.plot = widgets.Image(format="png")
        for control in (self.dataset, self.kind, self.unit_length):
            control.observe(self._restart, names="value")
        self.train_button.on_click(lambda _: self.train())
        self.refresh_button.on_click(lambda _: self.refresh())
        self.restart_button.on_click(self._restart)
        self.widget = widgets.VBox([
            widgets.HBox([self.dataset, self.kind, self.unit_length]),
            widgets.HBox([self.steps, self.refresh_every]),
            widgets.HBox([self.train_button, self.refresh_button, self.restart_button]),
            self.text, self.plot])
        self.state: ToyTraining
        self.view: ToyView | None = None
        self._restart()

    def _restart(self, *_) -> None:
        self.state = ToyTraining(self.dataset.value, self.kind.value, self.unit_length.value, seed=self.seed,
                                 **self.training)
        self.show()

    def train(self) -> None:
        self.state.train(self.steps.value, self.refresh_every.value)
        self.show()

    def refresh(self) -> None:
        self.state.refresh()
        self.show()

    def show(self) -> None:
        self.view = self.state.view()
        self.text.value = self.view.html()
        show_png(self.plot, toy_training_figure(self.view))

    def _repr_mimebundle_(self, **kwargs):
        return self.widget._repr_mimebundle_(**kwargs)
