"""The classifier's certainty against naive float64 references, and the limitation it
teaches: queries far from the data, and images of classes the bank lacks, still get a
confident label."""

import pytest
import torch

from nngk_lab import explore
from notebook_fixtures import make_embeddings, naive_kernel_probs


@pytest.fixture
def emb(tmp_path, seed):
    return make_embeddings(tmp_path, seed=seed)


@pytest.mark.parametrize("sigma, k", [(0.3, 1), (0.5, 10), (2.0, 45)])
def test_confidence_along_ray_matches_naive(sigma, k, seed):
    centres, labels = explore.toy_problem(seed=seed)
    direction = torch.randn(2, dtype=torch.float64)
    distances = torch.linspace(0, 8, 9)
    ray = explore.confidence_along_ray(centres, labels, sigma, k, tuple(direction.tolist()), distances)
    origin = centres.mean(0)
    for d, p, c in zip(distances, ray.confidence, ray.predicted):
        naive = naive_kernel_probs(origin + d * direction / direction.norm(), centres, labels,
                                   torch.zeros(len(centres)), sigma, k, 3)
        assert float(p) == pytest.approx(float(naive.max()), abs=1e-9)
        assert int(c) == int(naive.argmax())


def test_far_queries_are_more_confident_not_less(seed):
    """The ratio of two kernels depends on differences of squared distances, which grow
    linearly with the query's distance: far away, one class takes all the probability."""
    centres, labels = explore.toy_problem(seed=seed)
    direction = torch.randn(2, dtype=torch.float64)
    ray = explore.confidence_along_ray(centres, labels, 0.5, 10, tuple(direction.tolist()), [0.0, 20.0, 40.0, 80.0])
    far = ray.confidence[1:]
    assert float(far[-1]) > 0.999
    assert (far[1:] >= far[:-1] - 1e-12).all(), ray.confidence


def test_confidence_along_ray_rejects_a_zero_direction():
    centres, labels = explore.toy_problem()
    with pytest.raises(ValueError, match="non-zero"):
        explore.confidence_along_ray(centres, labels, 0.5, 10, (0.0, 0.0), [1.0])


def test_heldout_confidence_matches_naive(emb):
    conf = explore.heldout_confidence(emb, sigma=0.8, k=7)
    for queries, labels, values in ((emb.test, emb.test_labels, conf.test), (emb.heldout, None, conf.heldout)):
        naive = torch.stack([naive_kernel_probs(q, emb.train, emb.train_labels, emb.log_weights, 0.8, 7,
                                                emb.num_trained) for q in queries])
        torch.testing.assert_close(values.double(), naive.max(1).values, atol=1e-5, rtol=1e-4)
        if labels is not None:
            assert torch.equal(conf.test_correct, naive.argmax(1) == labels)
        else:
            assert torch.equal(conf.heldout_predicted, naive.argmax(1))
    assert (conf.heldout_predicted < emb.num_trained).all()  # a held-out image always gets a trained class
    test_share, heldout_share = conf.share_at_least(0.5)
    assert test_share == pytest.approx(sum(float(v) >= 0.5 for v in conf.test) / len(emb.test))
    assert heldout_share == pytest.approx(sum(float(v) >= 0.5 for v in conf.heldout) / len(emb.heldout))
    assert f"{heldout_share:.0%} of the {len(emb.heldout)} held-out images" in conf.text(0.5)


def test_heldout_confidence_defaults_to_the_runs_sigma_and_k(emb):
    conf = explore.heldout_confidence(emb)
    assert (conf.sigma, conf.k) == (emb.sigma, emb.num_neighbours)


def test_most_confident_orders_largest_first():
    values = torch.tensor([0.2, 0.9, 0.5, 0.9, 0.1])
    assert explore.most_confident(values, 3) == [1, 3, 2]


def test_heldout_classified_gallery_row(emb):
    index = 3
    row = explore.gallery_row(emb, "heldout_classified", index, emb.sigma, k=5)
    probs = naive_kernel_probs(emb.heldout[index], emb.train, emb.train_labels, emb.log_weights, emb.sigma,
                               emb.num_neighbours, emb.num_trained)
    predicted = int(probs.argmax())
    assert f"predicted {emb.class_names[predicted]}\n(p={float(probs[predicted]):.2f})" in row.query_title
    assert row.correct == [False] * 5  # the bank holds no image of a held-out class
    assert all("k=" in caption for caption in row.captions)
