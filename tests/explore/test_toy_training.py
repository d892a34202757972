"""The trainable playground's state: toy data, the stale bank, the loss and the scale."""

import math

import pytest
import torch

from nngk_lab import explore
from nngk_lab.errors import ConfigError


def test_toy_data_follows_its_rule_and_seed(seed):
    points, labels = explore.toy_data("xor", per_class=20, noise=0.0, seed=seed)
    assert points.shape == (40, 2) and labels.bincount().tolist() == [20, 20]
    assert torch.equal(labels, (points[:, 0] * points[:, 1] < 0).long())
    points, labels = explore.toy_data("rings", per_class=10, noise=0.0, seed=seed)
    torch.testing.assert_close(points.norm(dim=1), torch.tensor([0.3, 0.65, 1.0])[labels])
    a, b = explore.toy_data("spirals", seed=seed), explore.toy_data("spirals", seed=seed)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], explore.toy_data("spirals", seed=seed + 1)[0])
    with pytest.raises(ConfigError):
        explore.toy_data("moons")


def _naive_loss(x, labels, centres, log_weights, sigma, k):
    """Mean -log p(y|x) in float64, each example's K nearest *other* centres found by sorting."""
    x, centres, log_weights = x.double(), centres.double(), log_weights.double()
    total, counted = 0.0, 0
    for i in range(len(x)):
        d_centres = ((centres - centres[i]) ** 2).sum(1)
        d_centres[i] = math.inf
        nb = d_centres.argsort()[:k]
        kernels = torch.exp(log_weights[nb] - ((x[i] - centres[nb]) ** 2).sum(1) / (2 * sigma ** 2))
        own = kernels[labels[nb] == labels[i]].sum()
        if own > 0:
            total, counted = total - math.log(own / kernels.sum()), counted + 1
    return total / max(counted, 1)


def test_stale_bank_loss_uses_the_old_centres(seed):
    state = explore.ToyTraining("spirals", "mlp", unit_length=False, per_class=15, num_neighbours=5, seed=seed)
    with torch.no_grad():
        old = state.model(state.inputs).clone()
    state.train(10)
    assert torch.equal(state.centres, old) and state.refresh_steps == [0]
    now = state.embeddings()
    assert not torch.allclose(now, old)
    with torch.no_grad():
        library = float(state.loss_fn(now, state.labels, torch.arange(len(state.labels))))
    naive = _naive_loss(now, state.labels, old, state.loss_fn.log_weights.detach(), state.sigma, 5)
    assert library == pytest.approx(naive, rel=1e-4, abs=1e-5)
    state.refresh()
    assert torch.allclose(state.centres, now) and state.refresh_steps == [0, 10] and state.view().staleness == 0


def _fresh_loss(state):
    state.refresh()
    with torch.no_grad():
        return float(state.loss_fn(state.model(state.inputs), state.labels, torch.arange(len(state.labels))))


def test_training_reduces_the_loss_on_xor(seed):
    state = explore.ToyTraining("xor", "free", unit_length=True, seed=seed)
    start = _fresh_loss(state)
    state.train(150, refresh_every=5)
    assert _fresh_loss(state) < 0.5 * start
    assert state.refresh_steps[:4] == [0, 0, 5, 10]  # the start, _fresh_loss, then every 5 steps


def test_unnormalised_scale_grows_and_unit_length_stays_one(seed):
    free = explore.ToyTraining("xor", "mlp", unit_length=False, seed=seed)
    free.train(150, refresh_every=5)
    assert free.norms[-1] > 3 * free.norms[0]
    unit = explore.ToyTraining("xor", "mlp", unit_length=True, seed=seed)
    unit.train(50, refresh_every=5)
    assert torch.allclose(torch.tensor(unit.norms), torch.ones(len(unit.norms)), atol=1e-5)


def test_same_seed_same_run_and_bad_steps(seed):
    a, b = (explore.ToyTraining("rings", "mlp", seed=seed) for _ in range(2))
    a.train(12, 4)
    b.train(12, 4)
    assert a.losses == b.losses and "step 12" in a.view().html()
    with pytest.raises(ConfigError):
        a.train(-1)
