"""The standard protocol's split of a class-folder tree: the first classes trained (their
images into training and test images), the rest held out for retrieval."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Sequence

from ..errors import DataError
from .folders import Sample


@dataclass
class DataSplit:
    """The standard protocol's split of a class-folder tree.

    ``train`` and ``test`` hold images of the trained classes (the first ``num_trained``
    in sorted order); ``heldout`` holds every image of the remaining classes, used only to
    test how the embedding generalises. Labels are indices into ``classes``.
    """

    classes: list[str]
    num_trained: int
    train: list[Sample]
    test: list[Sample]
    heldout: list[Sample]

    @property
    def trained_classes(self) -> list[str]:
        return self.classes[: self.num_trained]

    @property
    def heldout_classes(self) -> list[str]:
        return self.classes[self.num_trained:]


def split_samples(classes: Sequence[str], samples: Sequence[Sample], num_trained: int | None = None,
                  test_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """Split classes into trained / held-out and trained-class images into train / test.

    ``num_trained`` defaults to the first half of the classes (the standard deep metric
    learning protocol), but at least two: one class alone cannot be trained. The image
    split is stratified: each trained class gives ``round(test_fraction * n)`` images to
    the test set, at least one when ``test_fraction > 0`` and the class has two or more
    images, and always keeps at least one for training (a class of one image is all
    training), so that no trained class is trained on nothing. Raises :class:`DataError`
    when a trained class has no images at all.
    """
    classes = list(classes)
    if num_trained is None:
        num_trained = min(len(classes), max(2, len(classes) // 2))
    if not 1 <= num_trained <= len(classes):
        raise DataError(f"cannot train on {num_trained} classes: the data has {len(classes)}")
    if not 0.0 <= test_fraction < 1.0:
        raise DataError(f"test fraction must be in [0, 1), got {test_fraction}")
    rng = random.Random(seed)
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s[1], []).append(s)
    empty = [classes[label] for label in range(num_trained) if label not in by_class]
    if empty:
        raise DataError(f"trained class {empty[0]} has no images, so it cannot be trained; add images to it or "
                        "remove its folder")
    train, test, heldout = [], [], []
    for label in sorted(by_class):
        items = by_class[label]
        if label >= num_trained:
            heldout.extend(items)
            continue
        items = items[:]
        rng.shuffle(items)
        n_test = int(round(test_fraction * len(items)))
        if test_fraction > 0:
            n_test = max(n_test, 1)
        n_test = min(n_test, len(items) - 1)  # a trained class keeps a training image
        test.extend(sorted(items[:n_test]))
        train.extend(sorted(items[n_test:]))
    return DataSplit(classes, num_trained, train, test, heldout)
