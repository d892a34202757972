"""nngk_lab.data.decoded: images decoded once give the same pixels as the file path, and an
epoch's augmentation is a pure function of (seed, epoch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import Image

from nngk_lab.data.folders import ImageSamples, load_rgb
from nngk_lab.data.transforms import build_transforms
from nngk_lab.data.decoded import DecodedImages, EpochAugmentation, MemoryBatches, in_batches

MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.5)


@pytest.fixture
def samples(tmp_path, seed):
    """Images of several modes and sizes (resizing them must match torchvision's)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, (h, w, mode) in enumerate([(8, 8, "L"), (13, 9, "RGB"), (40, 31, "RGB"), (5, 17, "L")]):
        pixels = rng.integers(0, 256, (h, w, 3) if mode == "RGB" else (h, w), dtype=np.uint8)
        path = tmp_path / f"im{i}.png"
        Image.fromarray(pixels, mode).save(path)
        out.append((str(path), i % 2))
    return out


@pytest.mark.parametrize("input_size, resize", [(8, 9), (12, 16), (16, 16)])
def test_centre_crops_equal_the_eval_transform(samples, input_size, resize):
    _, eval_tf = build_transforms(input_size, resize, True, MEAN, STD)
    decoded = DecodedImages(samples, resize, input_size, MEAN, STD, progress=False)
    images, labels, index = next(iter(MemoryBatches(decoded, [range(len(samples))])))
    expected = torch.stack([eval_tf(load_rgb(path)) for path, _ in samples])
    assert torch.allclose(images, expected, atol=1e-5)
    assert labels.tolist() == [label for _, label in samples] and index.tolist() == list(range(len(samples)))


def test_random_crops_are_slices_of_the_resized_image_mirrored_where_asked(samples, seed):
    resize, size = 15, 11
    decoded = DecodedImages(samples, resize, size, MEAN, STD, progress=False)
    g = torch.Generator().manual_seed(seed)
    index = torch.tensor([2, 0, 3, 2, 1])
    offsets = torch.randint(resize - size + 1, (5, 2), generator=g)
    flips = torch.tensor([True, False, True, False, True])
    crops = decoded.random_crops(index, offsets, flips)
    for b, i in enumerate(index.tolist()):
        resized = load_rgb(samples[i][0]).resize((resize, resize), Image.BILINEAR)
        crop = TF.crop(resized, int(offsets[b, 0]), int(offsets[b, 1]), size, size)
        crop = TF.hflip(crop) if flips[b] else crop
        assert torch.equal(crops[b], torch.from_numpy(np.asarray(crop).copy()).permute(2, 0, 1)), b


def test_training_batches_follow_the_order_and_the_epochs_draws(samples):
    decoded = DecodedImages(samples, 12, 10, MEAN, STD, progress=False)
    a = EpochAugmentation(4, 12, 10, True, seed=3, epoch=1)
    b = EpochAugmentation(4, 12, 10, True, seed=3, epoch=1)
    c = EpochAugmentation(4, 12, 10, True, seed=3, epoch=2)
    assert torch.equal(a.offsets, b.offsets) and torch.equal(a.flips, b.flips)
    assert not (torch.equal(a.offsets, c.offsets) and torch.equal(a.flips, c.flips))
    assert not EpochAugmentation(4, 12, 10, False, seed=3, epoch=1).flips.any()
    batches = list(MemoryBatches(decoded, in_batches([3, 1, 0, 2], 3), augmentation=a))
    assert [len(x[2]) for x in batches] == [3, 1] and torch.cat([x[2] for x in batches]).tolist() == [3, 1, 0, 2]
    # A resumed epoch that skips the first batch sees the same rest.
    rest = list(MemoryBatches(decoded, [[2]], augmentation=b))
    assert torch.equal(rest[0][0], batches[1][0])


def test_memory_and_file_training_agree_on_the_pixels_of_an_unaugmented_run(samples):
    train_tf, _ = build_transforms(8, 8, False, MEAN, STD)  # no room to crop, no flips
    files = ImageSamples(samples, train_tf, seed=0)
    decoded = DecodedImages(samples, 8, 8, MEAN, STD, progress=False)
    memory = next(iter(MemoryBatches(decoded, [range(4)], EpochAugmentation(4, 8, 8, False, 0, 0))))[0]
    assert torch.allclose(memory, torch.stack([files[i][0] for i in range(4)]), atol=1e-5)
