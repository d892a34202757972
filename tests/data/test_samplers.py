"""The class-balanced sampler: groups of m distinct images of one class, every class once
per pass, balanced use of each class's images, and a pure function of (seed, epoch), so
that skipping a prefix gives exactly the rest (what resuming mid-epoch relies on)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from nngk_lab.errors import ConfigError
from nngk_lab.data.decoded import in_batches
from nngk_lab.data.samplers import ClassBalancedOrder, check_m_per_class
from nngk_lab.models.backbones import MODEL_NAMES
from nngk_lab.training.config import LOSSES, make_config
from nngk_lab.training.loaders import load_split


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
    assert len(order) == -(-len(labels) // m) * m  # the training set, rounded up to whole groups
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
    assert len(ClassBalancedOrder(labels, m, seed, 3, skip)) == len(full) - skip
    # The order depends on the epoch and on the seed (what makes the checks above mean something).
    assert ClassBalancedOrder(labels, m, seed, 4, 0).order != full
    assert ClassBalancedOrder(labels, m, seed + 1, 3, 0).order != full


def test_m_larger_than_the_smallest_class_is_one_clear_sentence():
    labels = [0] * 10 + [1] * 3 + [2] * 8
    check_m_per_class(3, labels, ["a", "b", "c"])
    with pytest.raises(ConfigError, match=r"^--m_per_class 4 is larger than the smallest trained class \(b has 3 "
                                          r"training images\); pass --m_per_class 3 or less$"):
        check_m_per_class(4, labels, ["a", "b", "c"])


def _alone(labels, order, batch_size) -> int:
    """How many images of the epoch ``order`` have no other image of their class in their
    batch (counted naively, image by image)."""
    alone = 0
    for batch in in_batches(order, batch_size):
        for position, i in enumerate(batch):
            alone += not any(labels[j] == labels[i] for other, j in enumerate(batch) if other != position)
    return alone


@pytest.mark.parametrize("trial", range(6))
def test_every_image_of_every_batch_has_another_of_its_class(seed, trial):
    rng = random.Random(seed + trial)
    labels, smallest = _random_labels(rng)
    m = rng.randint(2, max(2, smallest))
    while len(labels) % m != 1:  # one image more than whole groups: the last group was cut to one
        largest = Counter(labels).most_common(1)[0][0]
        labels.remove(largest)
    batch_size = m * rng.randint(1, 6)
    for epoch in range(3):
        order = ClassBalancedOrder(labels, m, seed, epoch, 0).order
        assert _alone(labels, order, batch_size) == 0, (m, batch_size, epoch, len(labels))
        # No more batches than the training set needs.
        assert len(in_batches(order, batch_size)) == -(-len(labels) // batch_size)


def test_batch_size_must_be_whole_groups_of_m():
    with pytest.raises(ConfigError, match=r"^--batch_size 64 is not a multiple of --m_per_class 5, so batches would "
                                          r"cut groups of a class .*a multiple of 5, e\.g\. 65$"):
        make_config(sampler="m_per_class", m_per_class=5, batch_size=64)
    assert make_config(sampler="m_per_class", m_per_class=5, batch_size=60).batch_size == 60
    assert make_config(batch_size=63).batch_size == 63  # the random sampler has no groups


@pytest.mark.parametrize("loss", LOSSES)
def test_every_default_recipe_has_whole_groups(loss):
    for model in MODEL_NAMES:
        for data_dir in (None, "photos"):
            config = make_config(loss=loss, model=model, data_dir=data_dir, save_dir="r")
            if config.sampler == "m_per_class":
                assert config.batch_size % config.m_per_class == 0, (loss, model, data_dir)


def test_the_digits_multi_similarity_recipe_leaves_no_image_alone():
    # The review's case: batch 64 with m = 5 left images without a positive in every epoch.
    config = make_config(loss="multi_similarity", save_dir="r", progress=False)
    labels = [label for _, label in load_split(config).train]
    check_m_per_class(config.m_per_class, labels, [str(c) for c in range(10)])
    for epoch in range(3):
        order = ClassBalancedOrder(labels, config.m_per_class, config.seed, epoch, 0).order
        assert _alone(labels, order, config.batch_size) == 0
        assert _alone(labels, order, 64) > 0  # what the old default did
