"""The class-balanced sampler: groups of m distinct images of one class, every class once
per pass, balanced use of each class's images, and a pure function of (seed, epoch), so
that skipping a prefix gives exactly the rest (what resuming mid-epoch relies on)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from nngk_lab.errors import ConfigError
from nngk_lab.data.samplers import ClassBalancedOrder, check_m_per_class


def _random_labels(rng: random.Random) -> tuple[list[int], int]:
    """Labels of 2-7 classes of uneven sizes, shuffled, and an m no larger than the smallest."""
    sizes = [rng.randint(3, 30) for _ in range(rng.randint(2, 7))]
    labels = [c for c, size in enumerate(sizes) for _ in range(size)]
    rng.shuffle(labels)
    return labels, rng.randint(1, min(sizes))


@pytest.mark.parametrize("trial", range(5))
def test_groups_passes_and_balance(seed, trial):
    rng = random.Random(seed + trial)
    labels, m = _random_labels(rng)
    order = ClassBalancedOrder(labels, m, seed=rng.randrange(2**31), epoch=rng.randrange(100), skip=0).order
    assert len(order) == len(labels)
    classes = sorted(set(labels))
    groups = [order[i:i + m] for i in range(0, len(order), m)]
    for group in groups:
        assert len({labels[i] for i in group}) == 1   # one class per group ...
        assert len(set(group)) == len(group)          # ... of distinct images
    # Every pass visits each class once: each run of len(classes) whole groups holds every class.
    whole = [labels[g[0]] for g in groups if len(g) == m]
    for start in range(0, len(whole) - len(classes) + 1, len(classes)):
        assert sorted(whole[start:start + len(classes)]) == classes
    # Within a class, images are used in cycles: counts differ by at most one.
    uses = Counter(order)
    for c in classes:
        counts = [uses[i] for i, label in enumerate(labels) if label == c]
        assert max(counts) - min(counts) <= 1


def test_a_pure_function_of_seed_and_epoch_and_skip_gives_the_rest(seed):
    rng = random.Random(seed)
    labels, m = _random_labels(rng)
    full = ClassBalancedOrder(labels, m, seed, 3, 0).order
    assert ClassBalancedOrder(labels, m, seed, 3, 0).order == full
    skip = rng.randrange(len(labels))
    assert ClassBalancedOrder(labels, m, seed, 3, skip).order == full[skip:]
    assert len(ClassBalancedOrder(labels, m, seed, 3, skip)) == len(labels) - skip
    # The order depends on the epoch and on the seed (what makes the checks above mean something).
    assert ClassBalancedOrder(labels, m, seed, 4, 0).order != full
    assert ClassBalancedOrder(labels, m, seed + 1, 3, 0).order != full


def test_m_larger_than_the_smallest_class_is_one_clear_sentence():
    labels = [0] * 10 + [1] * 3 + [2] * 8
    check_m_per_class(3, labels, ["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"^--m_per_class 4 is larger than the smallest trained class \(b has 3 "
                                          r"training images\); pass --m_per_class 3 or less$"):
        check_m_per_class(4, labels, ["a", "b", "c"])
