"""The worked retrieval example gives the library's Recall@1 and MAP@R, and the numbers
a student computes by hand."""

import pytest
import torch

from nngk_lab import explore

# Six points on a line (the example notebook 1 works through) and their labels.
POINTS = torch.tensor([[0.0], [1.0], [1.5], [4.0], [5.0], [5.2]])
LABELS = torch.tensor([0, 0, 1, 1, 1, 0])


def test_hand_computed_example():
    items = explore.worked_retrieval(POINTS, LABELS)
    assert items[0].ranking == [0, 1, 1, 1, 0] and items[0].hit_at_1 and items[0].ap_at_r == 0.5
    assert items[1].ranking == [1, 0, 1, 1, 0] and not items[1].hit_at_1 and items[1].ap_at_r == 0.25
    assert [item.ap_at_r for item in items] == [0.5, 0.25, 0.0, 0.5, 0.25, 0.0]
    text = explore.worked_retrieval_text(items)
    assert "Recall@1 = 2 hits / 6 queries = 0.333" in text
    assert "MAP@R = mean of the AP@R column = 0.250" in text


@pytest.mark.parametrize("n, classes", [(7, 2), (12, 3), (20, 5)])
def test_worked_example_agrees_with_the_library(n, classes, seed):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, 3, generator=g, dtype=torch.float64)
    labels = torch.randint(0, classes, (n,), generator=g)
    items = explore.worked_retrieval(features, labels)
    recall = sum(item.hit_at_1 for item in items) / n
    assert recall == pytest.approx(explore.recall_at_k(features, labels, ks=(1,))[1])
    aps = [item.ap_at_r for item in items if item.ap_at_r is not None]
    if aps:
        assert sum(aps) / len(aps) == pytest.approx(explore.map_at_r(features, labels))
    for item in items:  # R counts the query's class among the others
        assert item.r == int((labels == item.label).sum()) - 1


def test_worked_retrieval_rejects_bad_shapes():
    with pytest.raises(ValueError, match="must be"):
        explore.worked_retrieval(POINTS, LABELS[:3])
