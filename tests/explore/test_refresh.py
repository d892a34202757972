"""The refresh study: its measures against naive references, and its loop on a tiny tree."""

import math

import pytest
import torch

from nngk_lab import explore
from nngk_lab.explore.refresh import centre_drift, neighbour_overlap
from tiny_tree import make_tree


def test_neighbour_overlap_matches_sets(seed):
    g = torch.Generator().manual_seed(seed)
    old = torch.stack([torch.randperm(12, generator=g)[:4] for _ in range(7)])
    new = torch.stack([torch.randperm(12, generator=g)[:4] for _ in range(7)])
    naive = sum(len(set(a.tolist()) & set(b.tolist())) / 4 for a, b in zip(old, new)) / 7
    assert neighbour_overlap(old, new) == pytest.approx(naive)
    assert neighbour_overlap(old, old.flip(1)) == 1.0  # order within a list does not matter
    with pytest.raises(ValueError, match="same shape"):
        neighbour_overlap(old, new[:, :3])


def test_centre_drift_matches_naive(seed):
    g = torch.Generator().manual_seed(seed)
    old = torch.randn(9, 3, generator=g, dtype=torch.float64)
    new = old + 0.1 * torch.randn(9, 3, generator=g, dtype=torch.float64)
    nearest = [min(math.dist(old[i].tolist(), old[j].tolist()) for j in range(9) if j != i) for i in range(9)]
    scale = sorted(nearest)[4]
    moved = sum(math.dist(a.tolist(), b.tolist()) for a, b in zip(old, new)) / 9
    assert centre_drift(old, new) == pytest.approx(moved / scale, rel=1e-6)
    assert centre_drift(old, old) == 0.0


def test_refresh_study_records_steps_refreshes_and_changes(tmp_path):
    tree = make_tree(tmp_path / "tree", num_classes=4, per_class=10)
    settings = dict(data_dir=str(tree), num_classes=3, model="small_cnn", input_size=16, batch_size=6,
                    num_neighbours=8, sigma=1.0, learning_rate=1e-3, normalise=False)
    runs = explore.refresh_study((1, 2), epochs=4, cache_dir=tmp_path / "cache", **settings)
    one, two = runs[1], runs[2]
    assert one.steps_per_epoch == two.steps_per_epoch == 4  # 24 training images (80% of 3 x 10), batch 6
    assert len(one.losses) == len(two.losses) == 16 and all(math.isfinite(x) for x in one.losses)
    assert one.refresh_steps == [0, 4, 8, 12] and two.refresh_steps == [0, 8]
    assert len(one.drift) == len(one.overlap) == 3 and len(two.drift) == 1
    assert all(0.0 <= o <= 1.0 for o in one.overlap + two.overlap) and all(d > 0 for d in one.drift)
    # the same start and the same batches: until the first refresh that differs, the runs agree
    assert one.losses[:4] == pytest.approx(two.losses[:4])
    again = explore.refresh_study((1,), epochs=4, cache_dir=tmp_path / "cache", **settings)
    assert again[1] == one  # read back from the cache


def test_refresh_study_rejects_a_zero_interval():
    with pytest.raises(ValueError, match="at least 1"):
        explore.refresh_study((0,), epochs=2)
