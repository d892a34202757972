"""The class-balanced sampler (``--sampler m_per_class``): batches made of groups of
``m`` images of one class, as pytorch-metric-learning's ``MPerClassSampler`` makes them,
but a pure function of (seed, epoch) like :class:`nngk_lab.training.loaders.EpochOrder`, so that
a run resumed mid-epoch sees exactly the batches it would have seen.

The order is a stream of passes over the classes. Each pass visits every trained class
once, in a random order, and takes ``m`` images of it; consecutive runs of
``batch_size`` images form the batches (PML's sampler without a batch size does the
same), so with fewer than ``batch_size / m`` classes a class fills several groups of a
batch. Within a class, images are taken in a random order, cycling, so over an epoch
every image of a class is used equally often (give or take one) and the ``m`` images of
a group are always distinct. An epoch has as many images as the training set, rounded up
to whole groups: with a batch size that is a multiple of ``m`` (the config requires it),
every batch, the last one too, is made of whole groups, so with ``m >= 2`` every image
of a batch has another of its class there. Rounding up leaves the number of batches of
an epoch as it is.
"""

from __future__ import annotations

from collections import Counter
from typing import Sequence

import torch

from ..errors import ConfigError
from .seeds import mix_seed

SAMPLERS = ("random", "m_per_class")


def check_m_per_class(m: int, labels: Sequence[int], classes: Sequence[str]) -> None:
    """Refuse an ``m`` that the smallest trained class cannot fill with distinct images."""
    counts = Counter(int(label) for label in labels)
    smallest, size = min(counts.items(), key=lambda item: (item[1], item[0]))
    if m > size:
        raise ConfigError(f"--m_per_class {m} is larger than the smallest trained class ({classes[smallest]} has "
                          f"{size} training images); pass --m_per_class {size} or less")


class ClassBalancedOrder:
    """The sample indices of one epoch, ``m`` per class at a time (see the module's
    docstring), after the first ``skip`` (done before an interruption)."""

    def __init__(self, labels: Sequence[int], m: int, seed: int, epoch: int, skip: int):
        g = torch.Generator().manual_seed(mix_seed(seed, epoch))
        members: dict[int, list[int]] = {}
        for index, label in enumerate(int(label) for label in labels):
            members.setdefault(label, []).append(index)
        classes = sorted(members)
        queues = {c: [] for c in classes}
        size = -(-len(labels) // m) * m
        order: list[int] = []
        while len(order) < size:
            for c in (classes[i] for i in torch.randperm(len(classes), generator=g).tolist()):
                order.extend(self._take(queues, c, members[c], m, g))
                if len(order) >= size:
                    break
        self.order = order[skip:]

    @staticmethod
    def _take(queues: dict[int, list[int]], c: int, members: list[int], m: int, g: torch.Generator) -> list[int]:
        """The next ``m`` images of class ``c``, refilling its queue with a new random
        cycle of the class when it runs short; the images left over from the old cycle are
        put last in the new one, so a group never repeats an image."""
        queue = queues[c]
        if len(queue) < m:
            cycle = [members[i] for i in torch.randperm(len(members), generator=g).tolist()]
            left = set(queue)
            queue.extend(sorted(cycle, key=lambda i: i in left))  # stable: the rest keep their random order
        taken, queues[c] = queue[:m], queue[m:]
        return taken

    def __iter__(self):
        return iter(self.order)

    def __len__(self):
        return len(self.order)
