"""Every drawing function returns a Figure (no screen needed) that shows what it says."""

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox
from torchvision import transforms as T

from nngk_lab import data, explore, viz
from notebook_fixtures import make_embeddings


@pytest.fixture
def emb(tmp_path):
    return make_embeddings(tmp_path)


def test_to_display_undoes_normalisation():
    image = torch.rand(3, 5, 4, dtype=torch.float64)
    shown = viz.to_display(T.Normalize((0.2, 0.5, 0.7), (0.3, 0.5, 0.1))(image), (0.2, 0.5, 0.7), (0.3, 0.5, 0.1))
    np.testing.assert_allclose(shown, image.permute(1, 2, 0).numpy(), atol=1e-12)
    assert viz.to_display(np.full((2, 2), 255, np.uint8)).max() == 1.0


def test_image_grid():
    fig = viz.image_grid([np.zeros((8, 8))] * 5, [f"t{i}" for i in range(5)], ncols=3, suptitle="s")
    assert isinstance(fig, Figure) and len(fig.axes) == 6
    assert [ax.get_title() for ax in fig.axes[:5]] == [f"t{i}" for i in range(5)]
    with pytest.raises(ValueError):
        viz.image_grid([])


def test_augmentation_grid_and_histograms(tmp_path):
    from PIL import Image

    images = [Image.new("RGB", (8, 8), (i * 60, 0, 0)) for i in range(2)]
    train_tf, eval_tf = data.build_transforms(8)
    fig = viz.augmentation_grid(images, train_tf, n=3)
    assert len(fig.axes) == 2 * 4
    raw = torch.rand(4, 3, 8, 8)
    fig = viz.pixel_histograms(raw, T.Normalize((0.5,) * 3, (0.5,) * 3)(raw))
    assert "mean" in fig.axes[1].get_title()


def test_split_counts():
    classes = ["a", "b", "c", "d"]
    samples = [(f"{c}{i}", label) for label, c in enumerate(classes) for i in range(5)]
    split = data.split_samples(classes, samples, num_trained=2, test_fraction=0.4)
    fig = viz.split_counts(split)
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert sum(heights) == len(samples)


@pytest.mark.parametrize("predicted_right", [True, False])
def test_probability_bars_colour_the_prediction(predicted_right):
    probs = torch.tensor([0.1, 0.7, 0.2])
    fig = viz.probability_bars(probs, ["a", "b", "c"], true_label=1 if predicted_right else 2)
    bars = fig.axes[0].patches
    expected = viz.CORRECT_COLOUR if predicted_right else viz.WRONG_COLOUR
    assert bars[1].get_facecolor() == to_rgba(expected)
    assert [b.get_height() for b in bars] == pytest.approx(probs.tolist())


def test_toy_figures():
    centres, labels = explore.toy_problem(per_class=6)
    fig = viz.toy_kernel_figure(centres, labels, torch.tensor([0.0, 0.0], dtype=torch.float64), 0.5, 5,
                                resolution=20)
    bars = fig.axes[1].patches
    expected = explore.kernel_probabilities(torch.zeros(1, 2, dtype=torch.float64), centres, labels, 0.5, 5, 3)[0]
    assert [b.get_height() for b in bars] == pytest.approx(expected.tolist())
    assert len(viz.toy_sigma_maps(centres, labels, (0.1, 1.0), 5, resolution=15).axes) == 2


def test_training_curves():
    history = [{"epoch": 1, "loss": 1.0, "train_accuracy": 0.5},
               {"epoch": 2, "loss": 0.5, "train_accuracy": 0.7, "kernel_accuracy": 0.8}]
    fig = viz.training_curves(history)
    assert list(fig.axes[0].lines[0].get_ydata()) == [1.0, 0.5]
    assert len(fig.axes[1].lines) == 2  # nearest-neighbour accuracy absent: not drawn
    with pytest.raises(ValueError):
        viz.training_curves([])


def test_sigma_sweep_figure(emb):
    sweep = explore.test_time_sweep(emb, (0.1, 1.0), (1, 5, 10))
    fig = viz.sigma_sweep_figure(sweep)
    assert len(fig.axes[0].lines) == 3 + 2  # one per K, Recall@1 and the training sigma
    training = {"sigmas": [0.3, 3.0], "accuracy": [0.9, 0.8], "heldout_recall_at_1": [0.7, 0.6], "epochs": [1, 1]}
    assert len(viz.sigma_sweep_figure(sweep, training).axes) == 2


def test_embedding_maps_add_thumbnails(emb):
    coords = np.random.default_rng(0).normal(size=(len(emb.train), 2))
    images = [explore.load_image(p) for p in emb.train_paths]
    panel = viz.MapPanel(coords, emb.train_labels.numpy(), "t", images, heldout=np.arange(len(coords)) % 2 == 0)
    fig = viz.embedding_maps([panel, panel], emb.class_names, thumbnails=2)
    boxes = [a for a in fig.axes[0].get_children() if isinstance(a, AnnotationBbox)]
    assert len(boxes) == 2 and len(fig.axes) == 2


def test_neighbour_gallery_frames_follow_correctness(emb):
    row = explore.gallery_row(emb, "test", 0, 1.0, k=5)
    fig = viz.neighbour_gallery([row, explore.gallery_row(emb, "heldout", 1, 1.0, k=3)])
    assert len(fig.axes) == 2 * 6
    for ax, right in zip(fig.axes[1:6], row.correct):
        colour = viz.CORRECT_COLOUR if right else viz.WRONG_COLOUR
        assert ax.spines["top"].get_edgecolor() == to_rgba(colour)
    assert not fig.axes[-1].axison  # the shorter row's empty cells are hidden


def test_figure_png():
    assert viz.figure_png(viz.image_grid([np.zeros((4, 4))])).startswith(b"\x89PNG")
