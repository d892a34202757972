"""The explorers' callbacks are plain functions; the widgets copy their results."""

import ipywidgets
import pytest
import torch

from nngk_lab import explore, widgets
from notebook_fixtures import make_embeddings, naive_kernel_probs


@pytest.fixture
def emb(tmp_path, seed):
    return make_embeddings(tmp_path, seed=seed)


def test_sigma_view_matches_naive(emb):
    view = widgets.sigma_view(emb, sigma=0.4, k=7, query=3)
    expected = naive_kernel_probs(emb.test[3], emb.train, emb.train_labels, emb.log_weights, 0.4, 7, emb.num_trained)
    torch.testing.assert_close(view.probabilities.double(), expected, atol=1e-5, rtol=1e-4)
    assert view.predicted == int(expected.argmax()) and view.true_label == int(emb.test_labels[3])
    assert view.accuracy == explore.test_accuracy(emb, 0.4, 7)
    assert f"test accuracy: {view.accuracy:.3f}" in view.html(emb.class_names)
    with pytest.raises(IndexError):
        widgets.sigma_view(emb, 1.0, 5, len(emb.test))


def test_sigma_explorer_sliders_update_text_and_plot(emb):
    explorer = widgets.SigmaExplorer(emb)
    assert isinstance(explorer.sigma, ipywidgets.FloatLogSlider) and explorer.sigma.description == "sigma"
    assert isinstance(explorer.k, ipywidgets.SelectionSlider) and explorer.k.description == "K"
    assert explorer.k.value == emb.num_neighbours and explorer.k.options[-1] == len(emb.train)
    assert "test accuracy" in explorer.text.value and bytes(explorer.plot.value).startswith(b"\x89PNG")
    before = explorer.view
    explorer.sigma.value = 10 ** explorer.sigma.min
    assert explorer.view.sigma == pytest.approx(10 ** explorer.sigma.min)
    assert explorer.view.sigma != before.sigma  # the view was recomputed, with the slider's sigma:
    torch.testing.assert_close(explorer.view.probabilities, widgets.sigma_view(
        emb, explorer.sigma.value, explorer.k.value, explorer.query.value).probabilities, atol=1e-6, rtol=1e-5)
    assert explorer.text.value == explorer.view.html(emb.class_names)
    explorer.k.value = 1
    assert explorer.view.accuracy == explore.test_accuracy(emb, explorer.sigma.value, 1)
    new_query = 5 if explorer.query.value != 5 else 6
    explorer.query.value = new_query
    assert explorer.view.query == new_query and f"query {new_query}" in explorer.text.value
    assert explorer.plot.layout.width.endswith("px")


def test_sigma_explorer_starts_where_sigma_moves_the_bars(emb):
    explorer = widgets.SigmaExplorer(emb)
    sigmas = [emb.sigma * 10 ** (e / 4) for e in range(-4, 5)]
    # naive: the true class's probability over sigma / 10 .. sigma x 10
    true_p = torch.stack([torch.stack([naive_kernel_probs(q, emb.train, emb.train_labels, emb.log_weights, s,
                                                          emb.num_neighbours, emb.num_trained)[int(y)]
                                       for s in sigmas]) for q, y in zip(emb.test, emb.test_labels)])
    spread = true_p.max(1).values - true_p.min(1).values
    assert float(spread[explorer.query.value]) == pytest.approx(float(spread.max()), abs=1e-5)
    assert 10 ** explorer.sigma.min < emb.sigma < 10 ** explorer.sigma.max


def test_least_confident_order_sorts_by_the_true_class_probability(emb):
    order = explore.least_confident_order(emb, 0.7, 5)
    probs = explore.classify(emb, 0.7, 5)
    true_p = [float(probs[i, emb.test_labels[i]]) for i in order]
    assert sorted(order) == list(range(len(emb.test))) and true_p == sorted(true_p)
    assert explore.worst_failures(emb, 0.7, 5, n=3) == order[:3]


@pytest.mark.parametrize("k_max", [1, 7, 20, 721, 1000])
def test_k_choices_are_log_spaced_from_1_to_the_maximum(k_max):
    choices = widgets.k_choices(k_max, include=(13,))
    assert choices[0] == 1 and choices[-1] == k_max and choices == sorted(set(choices))
    assert (13 in choices) == (k_max >= 13)
    if k_max >= 20:  # every integer up to 10, then no gap wider than about 30% of its value
        assert choices[:5] == [1, 2, 3, 4, 5]
        assert all(b / a < 1.35 for a, b in zip(choices[9:], choices[10:]))
    assert len(choices) <= 31


def test_gallery_explorer_walks_least_sure_first_or_as_stored(emb):
    gallery = widgets.GalleryExplorer(emb, k=4)
    order = explore.least_confident_order(emb, emb.sigma, emb.num_neighbours)
    gallery.query.value = 1
    assert gallery.image == order[1] and gallery.text.value.startswith(f"test query {order[1]}:")
    gallery.order.value = "stored"
    assert gallery.query.value == 0 and gallery.image == 0
    gallery.source.value = "heldout_classified"
    gallery.order.value = "doubt"
    surest = explore.heldout_confidence(emb).heldout
    assert float(surest[gallery.image]) == pytest.approx(float(surest.max()))


def test_gallery_explorer_switches_sets(emb):
    gallery = widgets.GalleryExplorer(emb, k=4, order="stored")
    assert gallery.query.description == "query" and gallery.query.max == len(emb.test) - 1
    first = gallery.plot.value
    gallery.query.value = 2
    assert gallery.plot.value != first and gallery.text.value.startswith("test query 2")
    gallery.source.value = "heldout"
    assert gallery.query.value == 0 and gallery.query.max == len(emb.heldout) - 1
    assert gallery.text.value.startswith("heldout query 0")
    gallery.source.value = "heldout_classified"
    assert gallery.query.max == len(emb.heldout) - 1 and "nearest centres share its class" in gallery.text.value
    gallery.query.value = 1
    gallery.source.value = "test"
    assert gallery.text.value.startswith("test query 0")


def test_gallery_view_counts_matching_neighbours(emb):
    view = widgets.gallery_view(emb, "test", 0, sigma=1.0, k=5)
    assert view.width <= 800  # fits a notebook cell unscaled, so 8 pt captions stay 8 pt
    row = explore.gallery_row(emb, "test", 0, 1.0, k=5)
    assert view.summary.startswith(f"test query 0: {sum(row.correct)} of 5")
