"""Every drawing function returns a Figure (no screen needed) that shows what it says."""

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.offsetbox import AnnotationBbox
from torchvision import transforms as T

from nngk_lab.kernel.classify import kernel_predict_log_probs
from nngk_lab import data, explore, viz
from nngk_lab.explore import distance_scale as scale
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
    fig = viz.augmentation_grid(images, train_tf, n=3, reference=eval_tf, reference_title="eval")
    assert fig.axes[0].get_title() == "eval"
    np.testing.assert_allclose(fig.axes[4].images[0].get_array(), viz.to_display(eval_tf(images[1]), (0.5,) * 3,
                                                                                  (0.5,) * 3))
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
    expected = viz.style.CORRECT_COLOUR if predicted_right else viz.style.WRONG_COLOUR
    assert bars[1].get_facecolor() == to_rgba(expected)
    assert [b.get_height() for b in bars] == pytest.approx(probs.tolist())


def test_toy_figures():
    centres, labels = explore.toy_problem(per_class=6)
    fig = viz.toy_kernel_figure(centres, labels, torch.tensor([0.0, 0.0], dtype=torch.float64), 0.5, 5,
                                resolution=20)
    bars = fig.axes[1].patches
    expected = kernel_predict_log_probs(torch.zeros(1, 2, dtype=torch.float64), centres, labels, 0.5, 5, 3).exp()[0]
    assert [b.get_height() for b in bars] == pytest.approx(expected.tolist())
    legend = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert "distance sigma from x" in legend and "distance 2 sigma from x" in legend
    assert not any("kernel weight" in t for t in legend)
    log_weights = torch.zeros(len(centres), dtype=torch.float64)
    log_weights[4] = 3.0
    fig = viz.toy_kernel_figure(centres, labels, torch.zeros(2, dtype=torch.float64), 0.5, 5, log_weights, 20)
    marked = [c for c in fig.axes[0].collections if "kernel weight" in str(c.get_label())]
    assert len(marked) == 1 and np.allclose(marked[0].get_offsets(), centres[4:5].numpy())
    assert len(viz.toy_sigma_maps(centres, labels, (0.1, 1.0), 5, resolution=15).axes) == 2


def test_training_curves():
    history = [{"epoch": 1, "loss": 1.0, "train_accuracy": 0.5},
               {"epoch": 2, "loss": 0.5, "train_accuracy": 0.7, "kernel_accuracy": 0.8}]
    fig = viz.training_curves(history)
    assert list(fig.axes[0].lines[0].get_ydata()) == [1.0, 0.5]
    assert len(fig.axes[1].lines) == 2  # nearest-neighbour accuracy absent: not drawn
    low, high = fig.axes[1].get_ylim()
    assert 0.3 < low < 0.5 and high > 0.8  # zoomed to the values, all of them visible
    with pytest.raises(ValueError):
        viz.training_curves([])


def test_sigma_sweep_figure(emb):
    sweep = explore.test_time_sweep(emb, (0.1, 1.0), (1, 5, 100))
    untrained = explore.test_time_sweep(explore.untrained_view(emb, {"train": emb.train * 0.01, "test": emb.test * 0.01,
                                                                     "heldout": emb.heldout}), (0.1, 1.0), (1, 5, 100))
    training = {"sigmas": [0.3, 3.0], "errors": [1, 2], "num_test": 12, "heldout_recall_at_1": [0.7, 0.6],
                "epochs": [1, 1]}
    fig = viz.sigma_sweep_figure(sweep, untrained, training)
    trained_ax, untrained_ax, training_ax, recall_ax = fig.axes
    for ax, s in ((trained_ax, sweep), (untrained_ax, untrained)):
        assert [list(line.get_ydata()) for line in ax.lines[:3]] == s["errors"]  # one line per K, in errors
        assert len(ax.lines) == 3 + 2  # and the training sigma and the nearest-centre distance
    labels = [t.get_text() for t in untrained_ax.get_legend().get_texts()]
    assert labels[:3] == ["K = 1", "K = 5", f"K = all {len(emb.train)}"]
    assert list(training_ax.lines[0].get_ydata()) == [1, 2]
    assert [line.get_ydata()[0] for line in recall_ax.lines[1:]] == [sweep["heldout_recall_at_1"],
                                                                     untrained["heldout_recall_at_1"]]
    assert "Recall@1" in recall_ax.get_ylabel() and "errors" in training_ax.get_ylabel()


def test_distance_histograms_count_every_pair(seed):
    labels = torch.arange(40) % 4
    features = torch.randn(40, 3)
    panels = [(scale.neighbour_distances(f, labels, 5), title)
              for f, title in ((features * 1e-3, "a"), (features, "b"))]
    fig = viz.distance_histograms(panels, sigma=0.5)
    for ax in fig.axes:
        same, other = ax.containers  # one bar container per histogram
        assert sum(p.get_height() for p in same) == 40 * 5 and sum(p.get_height() for p in other) == 40 * 5
        assert [line.get_xdata()[0] for line in ax.lines] == pytest.approx([0.25, 1.0])  # sigma^2, (2 sigma)^2
    assert fig.axes[0].get_xlim() == fig.axes[1].get_xlim()


def test_embedding_maps_add_thumbnails(emb):
    coords = np.random.default_rng(0).normal(size=(len(emb.train), 2))
    images = [explore.load_image(p) for p in emb.train_paths]
    labels = emb.train_labels.numpy()
    panel = viz.MapPanel(coords, labels, "t", images, heldout=labels == 2)
    fig = viz.embedding_maps([panel, panel], emb.class_names, thumbnails=3)
    boxes = [a for a in fig.axes[0].get_children() if isinstance(a, AnnotationBbox)]
    assert len(boxes) == 3 and len(fig.axes) == 2
    for box in boxes:  # in the margins, beside the points
        assert not coords[:, 0].min() <= box.xybox[0] <= coords[:, 0].max()
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert legend == ["class_000", "class_001", "class_002 (held out)"]


def test_class_colours_are_distinct():
    colours = viz.class_colours(10)[:, :3]
    gaps = [np.abs(a - b).sum() for i, a in enumerate(colours) for b in colours[i + 1:]]
    assert min(gaps) > 0.42  # tab10, used before, has two colours 0.39 apart
    assert len(viz.class_colours(15)) == 15


def test_neighbour_gallery_frames_follow_correctness(emb):
    row = explore.gallery_row(emb, "test", 0, 1.0, k=5)
    fig = viz.neighbour_gallery([row, explore.gallery_row(emb, "heldout", 1, 1.0, k=3)])
    assert len(fig.axes) == 2 * 6
    for ax, right in zip(fig.axes[1:6], row.correct):
        colour = viz.style.CORRECT_COLOUR if right else viz.style.WRONG_COLOUR
        assert ax.spines["top"].get_edgecolor() == to_rgba(colour)
    assert not fig.axes[-1].axison  # the shorter row's empty cells are hidden
    assert not any("k=" in caption for caption in explore.gallery_row(emb, "heldout", 1, 1.0, k=3).captions)


def test_neighbour_gallery_wraps_long_rows(emb):
    row = explore.gallery_row(emb, "test", 0, 1.0, k=7)
    fig = viz.neighbour_gallery([row], per_line=3)
    axes = np.array(fig.axes).reshape(3, 4)  # 7 neighbours on lines of 3, after the query column
    shown = [ax.get_title() for ax in axes[:, 1:].ravel() if ax.axison]
    assert shown == row.captions and not axes[1, 0].axison


def test_query_probabilities_show_the_image_and_the_bars():
    fig = viz.query_probabilities(np.ones((8, 8)), torch.tensor([0.2, 0.8]), ["a", "b"], true_label=1)
    image_ax, bar_ax = fig.axes
    assert image_ax.images and "b" in image_ax.get_title()
    assert [p.get_height() for p in bar_ax.patches] == pytest.approx([0.2, 0.8])


def test_figure_png():
    assert viz.figure_png(viz.image_grid([np.zeros((4, 4))])).startswith(b"\x89PNG")


def test_confidence_figures(emb):
    centres, labels = explore.toy_problem()
    ray = explore.confidence_along_ray(centres, labels, 0.5, 10, (1.0, 1.0), [0.0, 1.0, 5.0])
    fig = viz.confidence_ray_figure(ray)
    line = fig.axes[0].lines[0]
    np.testing.assert_allclose(line.get_ydata(), ray.confidence.numpy())
    conf = explore.heldout_confidence(emb)
    fig = viz.confidence_histograms(conf)
    labels_shown = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any(f"held-out images (always wrong) ({len(emb.heldout)})" == t for t in labels_shown)
    # each group is drawn as shares of itself: its bars add up to 1
    for patch in fig.axes[0].patches:
        heights = patch.get_path().vertices[1:40:2, 1]  # a step outline visits each of the 20 bins' tops
        assert heights.sum() == pytest.approx(1.0)


def test_toy_steps_figure_draws_one_arrow_per_centre():
    centres, labels = explore.toy_problem(per_class=5)
    steps = explore.training_steps(centres, labels, sigma=0.5, k=4)
    fig = viz.toy_steps_figure(steps, labels)
    quiver = fig.axes[0].collections[1]
    np.testing.assert_allclose(quiver.U, steps.steps[:, 0].numpy())
    np.testing.assert_allclose(quiver.V, steps.steps[:, 1].numpy())
    assert "K = 4" in fig.axes[0].get_title()


def test_refresh_figure_marks_every_refresh():
    from nngk_lab.explore.refresh import RefreshRun

    runs = {1: RefreshRun(1, 2, [1.0, 0.8, 0.7, 0.5, 0.4, 0.3], [0, 2, 4], [2.0, 1.0], [0.6, 0.9]),
            3: RefreshRun(3, 2, [1.0, 0.9, 0.9, 0.8, 0.6, 0.5], [0], [], [])}
    fig = viz.refresh_figure(runs)
    loss_ax, overlap_ax = fig.axes[0], fig.axes[1]
    refresh_lines = [line for line in loss_ax.lines if line.get_linestyle() == ":"]
    assert sorted(float(line.get_xdata()[0]) for line in refresh_lines) == [1.0, 2.0]
    np.testing.assert_allclose(loss_ax.lines[0].get_xdata(), np.arange(6) / 2)
    np.testing.assert_allclose(overlap_ax.lines[0].get_ydata(), [0.6, 0.9])


def test_sigma_sweep_figure_without_short_trainings(emb):
    sweep = explore.test_time_sweep(emb, (0.1, 1.0), (1, 5))
    fig = viz.sigma_sweep_figure(sweep, sweep)
    assert len(fig.axes) == 2
    assert [list(line.get_ydata()) for line in fig.axes[0].lines[:2]] == sweep["errors"]


def test_validation_figure_draws_every_seed_its_untrained_line_and_the_means():
    rng = np.random.default_rng()
    scores = {name: rng.random((2, 3)).tolist() for name in ("map@r", "recall@1")}
    start = rng.random((1, 3)).repeat(2, axis=0)  # the untrained network: one per seed, the same for each K
    sweep = {"setting": "num_neighbours", "values": [20, 200], "seeds": [0, 1, 2], "epochs": 4,
             "trained_classes": ["class_000", "class_001"], "validation_classes": ["class_002", "class_003"],
             **scores, "untrained": {"map@r": start.tolist(), "recall@1": (start / 2).tolist()}}
    fig = viz.validation_figure(sweep)
    for ax, name, divisor in zip(fig.axes, ("map@r", "recall@1"), (1, 2)):
        points = [line for line in ax.lines if line.get_linestyle() == "None"]
        assert [list(p.get_ydata()) for p in points] == [[row[j] for row in scores[name]] for j in range(3)]
        assert [list(p.get_xdata()) for p in points][1] == [0, 1]  # the middle seed sits on the value's tick
        dotted = [line.get_ydata()[0] for line in ax.lines if line.get_linestyle() == ":"]
        assert dotted == pytest.approx(start[0] / divisor)
        means = ax.collections[0].get_segments()
        assert [seg[0][1] for seg in means] == pytest.approx(np.mean(scores[name], axis=1))
        assert [t.get_text() for t in ax.get_xticklabels()] == ["20", "200"] and ax.get_xlabel() == "num_neighbours"
    assert "class_002" in fig.get_suptitle() and "4 epochs" in fig.get_suptitle()
    assert fig.axes[1].get_ylim()[0] <= 0.9  # Recall@1 is not zoomed into its ceiling
