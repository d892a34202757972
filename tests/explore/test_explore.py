"""nngk_lab.explore against naive references on small random inputs."""

import dataclasses

import pytest
import torch

from nngk_lab.kernel.classify import kernel_predict_log_probs
from nngk_lab import explore
from notebook_fixtures import make_embeddings, naive_kernel_probs


@pytest.fixture
def emb(tmp_path, seed):
    return make_embeddings(tmp_path, seed=seed)


@pytest.mark.parametrize("sigma", [1e-3, 0.3, 1.0, 50.0])
@pytest.mark.parametrize("k", [1, 4, 30])
def test_kernel_probabilities_match_naive(sigma, k, seed):
    g = torch.Generator().manual_seed(seed)
    centres = 3 * torch.randn(30, 2, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 3, (30,), generator=g)
    log_w = torch.randn(30, generator=g, dtype=torch.float64)
    points = 3 * torch.randn(6, 2, generator=g, dtype=torch.float64)
    got = kernel_predict_log_probs(points, centres, labels, sigma, k, 3, log_w).exp()
    for p, row in zip(points, got):
        torch.testing.assert_close(row, naive_kernel_probs(p, centres, labels, log_w, sigma, k, 3))
    assert torch.isfinite(got).all()


def test_classify_and_accuracy_match_naive(emb):
    for sigma, k in ((0.05, 3), (1.0, 10), (10.0, 30)):
        probs = explore.classify(emb, sigma, k)
        expected = torch.stack([naive_kernel_probs(q, emb.train, emb.train_labels, emb.log_weights, sigma, k,
                                                   emb.num_trained) for q in emb.test])
        torch.testing.assert_close(probs.double(), expected, atol=1e-5, rtol=1e-4)
        naive_acc = sum(int(p.argmax()) == int(y) for p, y in zip(expected, emb.test_labels)) / len(emb.test)
        assert explore.test_accuracy(emb, sigma, k) == pytest.approx(naive_acc)


def test_recall_at_1_matches_naive(emb):
    x, y = emb.heldout, emb.heldout_labels
    hits = 0
    for i in range(len(x)):
        d = [float(((x[i] - x[j]) ** 2).sum()) if j != i else float("inf") for j in range(len(x))]
        hits += int(y[min(range(len(x)), key=d.__getitem__)] == y[i])
    assert explore.recall_at_1(x, y) == pytest.approx(hits / len(x))


def test_query_neighbours_match_brute_force(emb):
    q = emb.test[0]
    nb = explore.query_neighbours(q, emb.train, emb.train_labels, 5, 0.7, emb.log_weights, exclude=None)
    d = ((emb.train - q) ** 2).sum(1)
    torch.testing.assert_close(nb.sq_dists, d.sort().values[:5], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(nb.kernels, (emb.log_weights[nb.indices] - nb.sq_dists / (2 * 0.7 ** 2)).exp(),
                               atol=1e-4, rtol=1e-3)
    assert torch.equal(nb.labels, emb.train_labels[nb.indices])
    # excluding a centre: the query itself is never returned
    self_nb = explore.query_neighbours(emb.train[3], emb.train, emb.train_labels, 4, 1.0, exclude=3)
    assert 3 not in self_nb.indices.tolist()
    assert float(self_nb.sq_dists[0]) > 0


def test_worst_failures_are_the_lowest_true_class_probabilities(emb):
    probs = explore.classify(emb, 1.0, 10)
    true_p = probs[torch.arange(len(emb.test)), emb.test_labels]
    got = explore.worst_failures(emb, 1.0, 10, n=4)
    assert [float(true_p[i]) for i in got] == sorted(true_p.tolist())[:4]


def test_test_time_sweep_grid_and_cache(emb, tmp_path, monkeypatch):
    sigmas, ks = (0.1, 1.0, 10.0), (1, 5)
    sweep = explore.test_time_sweep(emb, sigmas, ks, cache_path=tmp_path / "sweep.pt")
    assert sweep["accuracy"] == [[explore.test_accuracy(emb, s, k) for s in sigmas] for k in ks]
    assert sweep["heldout_recall_at_1"] == explore.recall_at_1(emb.heldout, emb.heldout_labels)
    n = len(emb.test)
    assert sweep["num_test"] == n and sweep["num_centres"] == len(emb.train)
    assert sweep["errors"] == [[sum(int(p != y) for p, y in zip(explore.classify(emb, s, k).argmax(1), emb.test_labels))
                                for s in sigmas] for k in ks]
    nearest = [min(float(((q - c) ** 2).sum()) for c in emb.train) for q in emb.test.double()]
    assert sweep["median_nearest_distance"] == pytest.approx(float(torch.tensor(nearest).median()) ** 0.5, rel=1e-4)
    # the second call reads the cache instead of computing
    monkeypatch.setattr(explore.sweeps, "test_accuracy", lambda *a: pytest.fail("recomputed despite the cache"))
    assert explore.test_time_sweep(emb, sigmas, ks, cache_path=tmp_path / "sweep.pt") == sweep


def test_examples_per_class():
    labels = [2, 0, 0, 1, 2, 0]
    assert explore.examples_per_class(labels, per_class=2) == [1, 2, 3, 0, 4]


def test_gallery_row(emb):
    row = explore.gallery_row(emb, "test", 2, sigma=1.0, k=6)
    nb = explore.query_neighbours(emb.test[2], emb.train, emb.train_labels, 6, 1.0, emb.log_weights)
    assert row.correct == [int(c) == int(emb.test_labels[2]) for c in nb.labels]
    assert len(row.images) == len(row.captions) == 6 and row.images[0].shape == (8, 8, 3)
    assert "predicted" in row.query_title
    held = explore.gallery_row(emb, "heldout", 0, sigma=1.0, k=len(emb.heldout))
    assert len(held.images) == len(emb.heldout) - 1  # the query itself is left out
    with pytest.raises(IndexError):
        explore.gallery_row(emb, "test", len(emb.test), 1.0)
    with pytest.raises(ValueError):
        explore.gallery_row(emb, "train", 0, 1.0)


def test_toy_problem_is_seeded():
    a, la = explore.toy_problem(num_classes=4, per_class=5, seed=3)
    b, lb = explore.toy_problem(num_classes=4, per_class=5, seed=3)
    assert a.shape == (20, 2) and torch.equal(a, b) and torch.equal(la, lb)
    assert torch.bincount(la).tolist() == [5] * 4


def test_classify_reuses_sorted_neighbours_and_falls_back_beyond_them(tmp_path, seed, monkeypatch):
    monkeypatch.setattr(explore.embeddings, "SORTED_NEIGHBOURS", 8)
    emb = make_embeddings(tmp_path, seed=seed)
    assert emb.sorted_test_neighbours()[1].shape == (len(emb.test), 8)
    for k in (3, 8, 20):  # 20 > 8: through kernel_predict_log_probs
        torch.testing.assert_close(explore.classify(emb, 0.6, k), explore.classify(emb, 0.6, k, emb.test),
                                   atol=1e-5, rtol=1e-4)


def test_untrained_view_swaps_the_embeddings_and_drops_the_weights(emb):
    untrained = {"train": emb.train * 2, "test": emb.test * 2, "heldout": emb.heldout * 2}
    view = explore.untrained_view(emb, untrained)
    assert torch.equal(view.train, untrained["train"]) and torch.equal(view.test, untrained["test"])
    assert torch.equal(view.heldout, untrained["heldout"]) and not view.log_weights.any()
    assert torch.equal(view.train_labels, emb.train_labels) and view.sigma == emb.sigma
    # its own neighbour lists, not the trained embedding's
    assert explore.test_accuracy(view, 2.0, 3) == explore.test_accuracy(
        dataclasses.replace(emb, log_weights=torch.zeros_like(emb.log_weights)), 1.0, 3)


def test_transient_progress_does_nothing_outside_a_notebook(capsys):
    from nngk_lab import progress

    assert not progress.in_notebook_kernel()
    with progress.transient_progress():
        with progress.transient_progress():
            print("inside")
    assert capsys.readouterr().out == "inside\n" and progress._depth == 0
