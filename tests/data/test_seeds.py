"""mix_seed, the one rule for the seeds of a run's generators: it gives exactly the seeds
the six places that wrote the formula out gave (so saved runs resume, and results repeat,
as before), and each of those places uses it. Seeds too large for torch, which made
in-memory and torchrun training fail at large --seed, are reduced into its range."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from nngk_lab import distributed
from nngk_lab.data import samplers
from nngk_lab.data.decoded import EpochAugmentation
from nngk_lab.data.folders import ImageSamples
from nngk_lab.data.samplers import ClassBalancedOrder
from nngk_lab.data.seeds import mix_seed
from nngk_lab.training.config import make_config
from nngk_lab.training.loaders import EpochOrder, make_loader

# The formulas as the six places wrote them before mix_seed (commit fd08d53).
def old_epoch(seed, epoch):  # EpochOrder, make_loader, ClassBalancedOrder
    return seed * 1_000_003 + epoch


def old_image(seed, epoch, index):  # ImageSamples
    return ((seed * 1_000_003 + epoch) * 1_000_033 + index) % 2**63


def old_augmentation(seed, epoch):  # EpochAugmentation
    return (seed * 1_000_003 + epoch) * 1_000_033 + 7


def old_step(seed, epoch, step, rank):  # distributed.seed_step
    return ((seed * 1_000_003 + epoch) * 1_000_033 + step) * 4099 + rank


def _cases(seed, n=200):
    rng = random.Random(seed)
    small = [(rng.randrange(5000), rng.randrange(1000), rng.randrange(10**5), rng.randrange(8)) for _ in range(n)]
    large = [(rng.randrange(2**32), rng.randrange(1000), rng.randrange(10**5), rng.randrange(8)) for _ in range(n)]
    return small + large + [(0, 0, 0, 0), (2**32 - 1, 999, 10**5, 7)]


def _stream(value):
    return torch.rand(4, generator=torch.Generator().manual_seed(value))


def test_mix_seed_is_each_old_formula_wherever_torch_accepted_it(seed):
    for s, epoch, position, rank in _cases(seed):
        where = (s, epoch, position, rank)
        assert mix_seed(s, epoch) == old_epoch(s, epoch), where
        for new, old in [(mix_seed(s, epoch, 7), old_augmentation(s, epoch)),
                         (mix_seed(s, epoch, position, rank), old_step(s, epoch, position, rank))]:
            assert 0 <= new < 2**64, where
            if old < 2**64:  # larger ones made torch raise "Overflow when unpacking long"
                assert new == old, where
        # ImageSamples reduced mod 2**63: the same low bits, so the same CPU random stream.
        assert mix_seed(s, epoch, position) % 2**63 == old_image(s, epoch, position), where
        assert torch.equal(_stream(mix_seed(s, epoch, position)), _stream(old_image(s, epoch, position))), where


def test_mix_seed_refuses_more_positions_than_it_has_multipliers():
    with pytest.raises(ValueError, match="at most 3 positions"):
        mix_seed(1, 2, 3, 4, 5)


@pytest.mark.parametrize("big", [False, True])
def test_every_place_draws_from_the_seed_it_drew_from_before(seed, tmp_path, monkeypatch, big):
    rng = random.Random(seed)
    s = rng.randrange(2**32) if big else rng.randrange(1000)
    epoch = rng.randrange(50)
    # EpochOrder and the training loader's own generator.
    order = EpochOrder(30, s, epoch, 0).order
    assert order == torch.randperm(30, generator=torch.Generator().manual_seed(old_epoch(s, epoch))).tolist()
    config = make_config(seed=s, workers=0, progress=False)
    assert make_loader([0, 1], config, torch.device("cpu"), epoch=epoch).generator.initial_seed() == \
        old_epoch(s, epoch)
    # ClassBalancedOrder.
    used = []
    monkeypatch.setattr(samplers, "mix_seed", lambda *a: used.append(mix_seed(*a)) or used[-1])
    ClassBalancedOrder([0, 0, 1, 1, 2, 2], 2, s, epoch, 0)
    assert used == [old_epoch(s, epoch)]
    # EpochAugmentation (in-memory training): the same crops and flips, and no overflow.
    augmentation = EpochAugmentation(20, 12, 8, True, s, epoch)
    if old_augmentation(s, epoch) < 2**64:
        g = torch.Generator().manual_seed(old_augmentation(s, epoch))
        assert torch.equal(augmentation.offsets, torch.randint(5, (20, 2), generator=g))
        assert torch.equal(augmentation.flips, torch.rand(20, generator=g) < 0.5)
    # ImageSamples: the transform draws from the global generator, seeded per image.
    Image.fromarray(np.zeros((4, 4), np.uint8), mode="L").save(tmp_path / "a.png")
    dataset = ImageSamples([(str(tmp_path / "a.png"), 0)] * 3, transform=lambda image: torch.rand(2), seed=s)
    dataset.set_epoch(epoch)
    for index in range(3):
        drawn = dataset[index][0]
        assert torch.equal(drawn, torch.rand(2, generator=torch.Generator().manual_seed(
            old_image(s, epoch, index)))), index
    # distributed.seed_step, as process 3 of 4.
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    monkeypatch.setattr(distributed, "rank", lambda: 3)
    with torch.random.fork_rng(devices=[]):
        step = rng.randrange(100)
        distributed.seed_step(s, epoch, step)
        if old_step(s, epoch, step, 3) < 2**64:
            assert torch.initial_seed() == old_step(s, epoch, step, 3)
        else:
            assert torch.initial_seed() == old_step(s, epoch, step, 3) % 2**64
