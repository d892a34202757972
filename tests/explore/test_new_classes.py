"""Adding classes to the bank against naive references."""

import pytest
import torch

from nngk_lab import explore
from notebook_fixtures import make_embeddings, naive_kernel_probs


@pytest.fixture
def emb(tmp_path, seed):
    return make_embeddings(tmp_path, seed=seed, n_heldout=30)


def test_pick_shots_takes_that_many_of_each_label(seed):
    labels = torch.tensor([3, 3, 3, 4, 4, 5, 5, 5, 5, 5])
    mask = explore.pick_shots(labels, 2, seed)
    assert [int(mask[labels == c].sum()) for c in (3, 4, 5)] == [2, 2, 2]
    assert explore.pick_shots(labels, 2, seed).equal(mask)  # the seed decides
    assert int(explore.pick_shots(labels, 4, seed)[labels == 4].sum()) == 2  # a label with fewer: all of it


def test_kernel_accuracies_match_naive(emb):
    result = explore.few_shot(emb, shots=3, seed=1, head_steps=5)
    chosen = explore.pick_shots(emb.heldout_labels, 3, 1)
    shots, shot_labels = emb.heldout[chosen], emb.heldout_labels[chosen]
    banks = {"new": (shots, shot_labels, torch.zeros(len(shots))),
             "all": (torch.cat([emb.train, shots]), torch.cat([emb.train_labels, shot_labels]),
                     torch.cat([emb.log_weights, torch.zeros(len(shots))]))}
    for name, (centres, labels, log_w) in banks.items():
        k = min(emb.num_neighbours, len(centres))
        right = [int(naive_kernel_probs(q, centres, labels, log_w, emb.sigma, k, len(emb.class_names)).argmax()) == int(y)
                 for q, y in zip(emb.heldout[~chosen], emb.heldout_labels[~chosen])]
        assert getattr(result, f"kernel_{name}") == pytest.approx(sum(right) / len(right)), name
    assert result.num_queries == int((~chosen).sum())
    assert "among the held-out classes only" in result.text() and "among all classes" in result.text()


def test_a_head_among_the_new_classes_never_names_a_trained_class(emb):
    chosen = explore.pick_shots(emb.heldout_labels, 3, 0)
    head = explore.train_head(emb.heldout[chosen], emb.heldout_labels[chosen], len(emb.class_names), steps=50)
    predicted = explore.predict_among(head, emb.heldout, emb.heldout_labels.unique())
    logits = head(emb.heldout.double()).detach()
    logits[:, :emb.num_trained] = -float("inf")
    assert torch.equal(predicted, logits.argmax(1)) and (predicted >= emb.num_trained).all()


def test_a_new_head_separates_separable_classes(seed):
    g = torch.Generator().manual_seed(seed)
    means = 10 * torch.eye(3, 4, dtype=torch.float64)
    labels = torch.arange(30) % 3
    features = means[labels] + 0.1 * torch.randn(30, 4, generator=g, dtype=torch.float64)
    head = explore.train_head(features, labels, 3, steps=200, seed=seed)
    assert torch.equal(head(features).argmax(1), labels)


def test_few_shot_rejects_bad_shot_counts(emb):
    with pytest.raises(ValueError, match="at least 1"):
        explore.few_shot(emb, shots=0)
    with pytest.raises(ValueError, match="none would be left"):
        explore.few_shot(emb, shots=1000)
