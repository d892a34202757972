"""Distances against sigma, and the kernel weights' movement against Adam's bound,
compared with naive float64 references."""

import math
from types import SimpleNamespace

import pytest
import torch

from nngk_lab.explore import embeddings as explore
from nngk_lab.explore import notebook as nb
from nngk_lab.explore import distance_scale as scale
from nngk_lab.kernel.loss import KernelWeights
from tiny_runs import TINY, write_tree


def naive_neighbour_distances(features, labels, k):
    """Every pair's squared distance written out; per row, the k smallest to same-class
    others and to other-class centres."""
    features = features.double()
    same, other = [], []
    for i in range(len(features)):
        d = [float(((features[i] - features[j]) ** 2).sum()) for j in range(len(features))]
        same.append(sorted(d[j] for j in range(len(features)) if j != i and labels[j] == labels[i])[:k])
        other.append(sorted(d[j] for j in range(len(features)) if labels[j] != labels[i])[:k])
    return torch.tensor(same, dtype=torch.float64), torch.tensor(other, dtype=torch.float64)


@pytest.mark.parametrize("spread", [1e-3, 1.0, 30.0])
def test_neighbour_distances_match_naive(seed, spread):
    labels = torch.randint(0, 3, (40,))
    labels[:3] = torch.arange(3)  # every class present
    labels[3:6] = torch.arange(3)  # and with a same-class neighbour
    features = spread * torch.randn(40, 6)
    k = int(torch.bincount(labels).min()) - 1
    got = scale.neighbour_distances(features, labels, k + 5)  # capped by the smallest class
    same, other = naive_neighbour_distances(features, labels, k)
    assert got.k == k
    torch.testing.assert_close(got.same.double(), same, rtol=1e-4, atol=1e-5 * spread ** 2)
    torch.testing.assert_close(got.other.double(), other, rtol=1e-4, atol=1e-5 * spread ** 2)
    everything = torch.cat([same, other], 1).sort(1).values[:, k - 1]
    torch.testing.assert_close(got.kth_nearest().double(), everything, rtol=1e-4, atol=1e-5 * spread ** 2)


def test_summary_gives_medians_and_their_kernels(seed):
    labels = torch.arange(30) % 2
    distances = scale.neighbour_distances(torch.randn(30, 4), labels, 5)
    sigma = 0.7
    summary = distances.summary(sigma)
    nearest_same = float(distances.same[:, 0].double().median())
    assert summary["nearest_same"] == pytest.approx(nearest_same)
    assert summary["nearest_same_kernel"] == pytest.approx(math.exp(-nearest_same / (2 * sigma ** 2)))
    assert summary["nearest_other"] == pytest.approx(float(distances.other[:, 0].double().median()))
    assert "5th nearest centre" in distances.describe(sigma)


def test_neighbour_distances_need_two_classes_with_neighbours():
    with pytest.raises(ValueError):
        scale.neighbour_distances(torch.randn(5, 2), torch.zeros(5, dtype=torch.long), 2)
    with pytest.raises(ValueError):
        scale.neighbour_distances(torch.randn(5, 2), torch.tensor([0, 1, 1, 1, 1]), 2)


def _fake_run(log_weights, epochs=3, num_centres=100, batch_size=32, lr=1e-3, weight_lr=None):
    kernel_weights = KernelWeights(num_centres)
    with torch.no_grad():
        kernel_weights.log_weights.copy_(log_weights)
    config = SimpleNamespace(batch_size=batch_size, learning_rate=lr, weight_learning_rate=weight_lr)
    return SimpleNamespace(config=config, history=[{}] * epochs, bank=[None] * num_centres,
                           kernel_weights=kernel_weights)


def test_weight_movement_counts_steps_and_bounds(seed):
    log_weights = 0.01 * torch.randn(100)
    movement = scale.weight_movement(_fake_run(log_weights, epochs=3, num_centres=100, batch_size=32, lr=1e-3))
    assert movement.steps == 3 * 4  # 100 centres in batches of 32: 4 steps per epoch
    assert movement.bound == pytest.approx(12 * 1e-3)
    assert movement.worst_case == pytest.approx(12 * 1e-3 * 0.1 / math.sqrt(0.001))
    assert movement.largest_move == pytest.approx(float(log_weights.abs().max()))
    torch.testing.assert_close(movement.weights, log_weights.exp())
    assert "12 steps" in movement.text()
    assert scale.weight_movement(_fake_run(log_weights, lr=1e-3, weight_lr=0.5)).learning_rate == 0.5


def test_adam_moves_a_parameter_by_at_most_about_lr_per_step(seed):
    """The bound the notebook quotes, checked on torch's Adam with wild gradients."""
    v = torch.zeros(50, requires_grad=True)
    optimiser = torch.optim.Adam([v], lr=1e-2)
    steps = 40
    for _ in range(steps):
        optimiser.zero_grad()
        v.grad = 1e3 * torch.randn(50) * (torch.rand(50) < 0.7)  # some steps without gradient
        optimiser.step()
    worst = steps * 1e-2 * 0.1 / math.sqrt(1 - 0.999)
    assert float(v.detach().abs().max()) <= worst


def test_weight_movement_refuses_softmax_runs():
    run = _fake_run(torch.zeros(100))
    run.kernel_weights = None
    with pytest.raises(ValueError):
        scale.weight_movement(run)


def test_a_real_run_stays_within_the_bound_and_its_untrained_view_has_every_part(tmp_path):
    # K = 12 is more than a class has, so every image has other-class neighbours and the
    # weights get gradients.
    settings = {**TINY, "data_dir": str(write_tree(tmp_path / "data")), "num_classes": 2, "max_epochs": 2,
                "weight_learning_rate": 0.05, "num_neighbours": 12}
    run = nb.train_or_load(tmp_path / "run", "cpu", **settings)
    movement = scale.weight_movement(run)
    assert movement.steps == 2 * math.ceil(len(run.bank) / TINY["batch_size"])
    assert movement.learning_rate == 0.05 and 0 < movement.largest_move <= movement.worst_case
    untrained = explore.untrained_embeddings(tmp_path / "run", "cpu", run)
    emb = explore.run_embeddings(tmp_path / "run", "cpu", run)
    assert {name: len(untrained[name]) for name in ("train", "test", "heldout")} == \
        {"train": len(emb.train), "test": len(emb.test), "heldout": len(emb.heldout)}
