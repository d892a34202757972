"""The playground's centre choice: picked by class and rank of distance to the query, not
by an index, renamed when the query moves, and highlighted on the map."""

import ipywidgets
import pytest
import torch

from nngk_lab import explore, viz, widgets


@pytest.fixture
def playground(seed):
    centres, labels = explore.toy_problem(num_classes=3, per_class=8, seed=seed)
    return widgets.Playground(centres, labels, sigma=0.5, k=6, query=(0.2, 0.7))


def square(pg):
    """Where the playground's figure draws the weighted centre's magenta square, and its
    legend (the widget shows a PNG, so the same view is drawn again to read its artists)."""
    fig = viz.playground_figure(pg.view)
    (marker,) = [c for c in fig.axes[0].collections if len(c.get_offsets()) == 1
                 and tuple(c.get_edgecolor()[0][:3]) == (1.0, 0.0, 1.0)]
    return tuple(marker.get_offsets()[0]), [t.get_text() for t in fig.legends[0].get_texts()]


def test_the_centre_is_chosen_from_names_by_class_and_rank(playground):
    pg = playground
    assert isinstance(pg.centre, ipywidgets.Dropdown) and pg.centre.description == "centre"
    assert list(pg.centre.options) == explore.centre_choices(pg.centres, pg.labels, (0.2, 0.7))
    assert pg.centre.label.endswith(", nearest")  # the default: the query's nearest centre
    second_name, second = pg.centre.options[1]
    pg.centre.value = second
    assert pg.view.centre == second and second_name in pg.text.value
    where, legend = square(pg)
    assert where == pytest.approx(pg.centres[second].tolist())  # highlighted on the map
    assert any(second_name in text for text in legend)


def test_moving_the_query_renames_the_choices_but_keeps_the_weighted_centre(playground):
    pg = playground
    name, chosen = pg.centre.options[2]
    pg.centre.value, pg.log_weight.value = chosen, 2.0
    redraws = []
    pg.plot.observe(lambda change: redraws.append(change), names="value")
    pg.x.value = pg.x.max  # far to the right: the order of the centres changes
    assert len(redraws) == 1, "renaming the choices redrew the playground again"
    assert pg.centre.value == chosen and pg.view.centre == chosen and float(pg.view.log_weights[chosen]) == 2.0
    assert list(pg.centre.options) == explore.centre_choices(pg.centres, pg.labels, (pg.x.value, pg.y.value))
    assert pg.centre.label == pg.view.centre_name and pg.centre.label.startswith(f"class {int(pg.labels[chosen])}, ")
    where, legend = square(pg)
    assert where == pytest.approx(pg.centres[chosen].tolist())
    assert any(pg.centre.label in text for text in legend)
    assert torch.equal(pg.view.query, torch.tensor([pg.x.value, pg.y.value], dtype=torch.float64))
