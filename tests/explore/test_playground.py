"""The 2-D playground: its callback against a naive float64 reference, the decision
regions, the widget's sliders and its figure."""

import ipywidgets
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from bench import widget_latency
from nngk_lab.widgets import playground as widget
from nngk_lab.explore import playground as explore
from nngk_lab.viz import playground as viz_playground
from nngk_lab.viz import style as viz_style
from notebook_fixtures import naive_kernel_probs


@pytest.fixture
def toy(seed):
    return explore.toy_problem(num_classes=3, per_class=6, seed=seed)


def test_boosted_log_weights():
    w = explore.boosted_log_weights(5, 2, 1.5)
    assert w.dtype == torch.float64 and w.tolist() == [0, 0, 1.5, 0, 0]


@pytest.mark.parametrize("sigma, k, log_weight", [(0.05, 1, 0.0), (0.5, 5, 3.0), (2.0, 18, -2.0)])
def test_view_matches_naive(toy, seed, sigma, k, log_weight):
    centres, labels = toy
    g = torch.Generator().manual_seed(seed)
    x, y = (torch.rand(2, generator=g, dtype=torch.float64) * 4 - 2).tolist()
    centre = int(torch.randint(len(centres), (1,), generator=g))
    view = explore.playground_view(centres, labels, sigma, k, x, y, centre, log_weight)
    weights = torch.zeros(len(centres), dtype=torch.float64)
    weights[centre] = log_weight
    expected = naive_kernel_probs(torch.tensor([x, y], dtype=torch.float64), centres, labels, weights, sigma, k, 3)
    torch.testing.assert_close(view.probabilities, expected, atol=1e-10, rtol=1e-9)
    sq = ((centres - torch.tensor([x, y], dtype=torch.float64)) ** 2).sum(1)
    torch.testing.assert_close(view.neighbours.sq_dists, sq.sort().values[:k], atol=1e-10, rtol=1e-9)
    kernels = (weights - sq / (2 * sigma ** 2)).exp()[view.neighbours.indices]
    torch.testing.assert_close(view.neighbours.kernels, kernels, atol=1e-12, rtol=1e-9)
    assert view.k == k and view.centre == centre and f"predicted class {int(expected.argmax())}" in view.html()


def test_regions_match_naive_at_grid_points(toy):
    centres, labels = toy
    weights = explore.boosted_log_weights(len(centres), 4, 2.0)
    regions = explore.decision_regions(centres, labels, 0.6, 4, weights, resolution=7)
    assert regions.probabilities.shape == (7, 7, 3)
    left, right, bottom, top = regions.extent
    for row, col in ((0, 0), (3, 5), (6, 2)):  # row from the bottom, column from the left
        point = torch.tensor([left + (right - left) * col / 6, bottom + (top - bottom) * row / 6], dtype=torch.float64)
        expected = naive_kernel_probs(point, centres, labels, weights, 0.6, 4, 3)
        torch.testing.assert_close(regions.probabilities[row, col], expected, atol=1e-9, rtol=1e-8)


def test_view_reports_whether_the_weighted_centre_counts(toy):
    centres, labels = toy
    far = int(((centres - centres[0]) ** 2).sum(1).argmax())
    x, y = centres[0].tolist()
    assert "not among the K nearest" in explore.playground_view(centres, labels, 0.5, 1, x, y, far, 2.0).html()
    assert "neighbour 1 of 1" in explore.playground_view(centres, labels, 0.5, 1, x, y, 0, 2.0).html()
    with pytest.raises(IndexError):
        explore.playground_view(centres, labels, 0.5, 1, x, y, len(centres))


def test_raising_a_weight_raises_its_class(toy):
    centres, labels = toy
    x, y = (centres[0] + 0.1).tolist()
    plain = explore.playground_view(centres, labels, 1.0, 8, x, y, 0, 0.0)
    raised = explore.playground_view(centres, labels, 1.0, 8, x, y, 0, 3.0)
    c = int(labels[0])
    assert raised.probabilities[c] >= plain.probabilities[c]


def test_sliders_redraw_and_reuse_regions(toy):
    centres, labels = toy
    pg = widget.Playground(centres, labels, sigma=0.5, k=5)
    assert isinstance(pg.sigma, ipywidgets.FloatLogSlider) and pg.sigma.description == "sigma"
    assert bytes(pg.plot.value).startswith(b"\x89PNG") and "predicted class" in pg.text.value
    regions, png = pg.view.regions, pg.plot.value
    pg.x.value = pg.x.value + 0.5
    assert pg.view.regions is regions, "moving the query alone recomputed the decision regions"
    assert pg.plot.value != png
    pg.sigma.value = 2.0
    assert pg.view.sigma == pytest.approx(2.0) and pg.view.regions is not regions
    pg.k.value, pg.centre.value, pg.log_weight.value = 3, 2, 2.5
    assert (pg.view.k, pg.view.centre) == (3, 2)
    assert float(pg.view.log_weights[2]) == 2.5 and pg.view.log_weights.abs().sum() == 2.5
    assert pg.text.value == pg.view.html()


def test_default_centre_is_the_querys_nearest(toy):
    centres, labels = toy
    pg = widget.Playground(centres, labels, query=tuple(centres[3].tolist()))
    assert pg.centre.value == 3


def test_figure_and_region_shades(toy):
    centres, labels = toy
    view = explore.playground_view(centres, labels, 0.5, 5, 0.0, 0.0, 1, 2.0)
    fig = viz_playground.playground_figure(view)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert fig.axes[0].get_xlabel() == "embedding dimension 1"
    wide = viz_playground.playground_figure(explore.playground_view(centres, labels, 4.0, 5, 0.0, 0.0))
    left, right = wide.axes[0].get_xlim()
    bottom, top = wide.axes[0].get_ylim()
    assert left <= -8.0 and right >= 8.0 and bottom <= -8.0 and top >= 8.0  # the 2-sigma circle fits
    probs = np.array([[[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]]])
    colours = np.eye(3, 4) + np.array([0, 0, 0, 1.0])
    shades = viz_style.region_shades(probs, colours)
    assert shades[0, 0, 3] == pytest.approx(0.12) and shades[0, 1, 3] == pytest.approx(0.62)
    assert shades[0, 1, :3].tolist() == [1, 0, 0]


def test_latency_script_measures_the_playground():
    rows = widget_latency.playground_rows(moves=2)
    assert [name for name, _ in rows][-3:] == ["playground sigma move (all of it)",
                                               "playground query x move (all of it)",
                                               "playground weight move (all of it)"]
    assert all(ms > 0 for _, ms in rows)


@pytest.mark.parametrize("n, text", [(1, "1st"), (2, "2nd"), (3, "3rd"), (4, "4th"), (11, "11th"), (12, "12th"),
                                     (13, "13th"), (21, "21st"), (22, "22nd"), (23, "23rd"), (111, "111th")])
def test_ordinal(n, text):
    assert explore.ordinal(n) == text


def test_centre_choices_name_every_centre_by_class_and_rank_nearest_first(toy):
    centres, labels = toy
    query = torch.randn(2, dtype=torch.float64)
    centres = torch.cat([centres, centres[:1]])  # a tie: the lower index comes first
    labels = torch.cat([labels, labels[:1]])
    choices = explore.centre_choices(centres, labels, query)
    naive = sorted(range(len(centres)), key=lambda i: (sum((float(centres[i, d]) - float(query[d])) ** 2
                                                           for d in range(2)), i))
    assert [i for _, i in choices] == naive
    names = [name for name, _ in choices]
    assert names[0] == f"class {int(labels[naive[0]])}, nearest"
    assert names[1] == f"class {int(labels[naive[1]])}, 2nd nearest"
    assert names[-1] == f"class {int(labels[naive[-1]])}, {len(centres)}th nearest"
    assert len(set(names)) == len(names)
