"""Images decoded once and kept in memory as uint8 tensors, with the run's augmentation
applied to whole batches: the fast path for datasets that fit in memory.

It gives the same pixels as the file path (:class:`nngk_lab.data.ImageSamples` with
:func:`nngk_lab.data.build_transforms`): each image is decoded and resized once, exactly as
there, and a crop of it is a slice. Only the random stream differs: an epoch's crops and
flips are drawn at once from a generator seeded by (seed, epoch), so they stay a pure
function of (seed, epoch, index) and a resumed run sees the same augmented images.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .folders import Sample, load_rgb
from .seeds import mix_seed

# Decoded datasets up to this size are kept in memory (the digits: 0.6 MB at 36 px; 6,250
# photos at 32 px: 19 MB; CUB-200's 6,000 training images at 288 px: 1.5 GB).
MEMORY_BUDGET_BYTES = 2 * 1024**3


def decoded_bytes(num_images: int, resize_size: int) -> int:
    """Memory that :class:`DecodedImages` needs for ``num_images`` RGB images."""
    return num_images * 3 * resize_size * resize_size


def _decode(path: str, resize_size: int) -> torch.Tensor:
    # The same resize as torchvision's T.Resize((s, s)) on a PIL image (bilinear, antialiased).
    image = load_rgb(path).resize((resize_size, resize_size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


class DecodedImages:
    """The images of ``samples`` decoded and resized to ``resize_size`` (N, 3, R, R) uint8,
    with their labels; batches come out normalised with ``mean`` and ``std``."""

    def __init__(self, samples: Sequence[Sample], resize_size: int, input_size: int, mean: Sequence[float],
                 std: Sequence[float], progress: bool = True, desc: str = "decoding images"):
        self.resize_size, self.input_size = resize_size, input_size
        self.labels = torch.tensor([label for _, label in samples], dtype=torch.long)
        self.images = torch.empty(len(samples), 3, resize_size, resize_size, dtype=torch.uint8)
        for i, (path, _) in enumerate(tqdm(samples, desc=desc, disable=not progress, leave=False)):
            self.images[i] = _decode(path, resize_size)
        self._mean = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1) * 255
        self._scale = 1 / (torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1) * 255)

    def __len__(self) -> int:
        return self.images.shape[0]

    def rows(self, rows: Sequence[int]) -> "DecodedImages":
        """The images ``rows`` (numbered from 0 in that order), sharing this one's settings."""
        part = object.__new__(DecodedImages)
        part.__dict__.update(self.__dict__)
        part.images, part.labels = self.images[list(rows)], self.labels[list(rows)]
        return part

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 images as the network's float input ((x / 255 - mean) / std)."""
        return (images.float() - self._mean) * self._scale

    def centre_crops(self, index: torch.Tensor) -> torch.Tensor:
        """The evaluation view of images ``index``: the centre ``input_size`` square, as
        torchvision's CenterCrop takes it."""
        top = int(round((self.resize_size - self.input_size) / 2.0))
        return self.images[index, :, top:top + self.input_size, top:top + self.input_size]

    def random_crops(self, index: torch.Tensor, offsets: torch.Tensor, flips: torch.Tensor) -> torch.Tensor:
        """Images ``index`` cropped at ``offsets`` (B, 2: top, left) and mirrored where
        ``flips`` (B,) is true."""
        steps = torch.arange(self.input_size)
        rows = (offsets[:, 0, None] + steps)[:, None, :, None]
        cols = (offsets[:, 1, None] + steps)[:, None, None, :]
        cols = torch.where(flips[:, None, None, None], offsets[:, 1, None, None, None] + self.input_size - 1 -
                           steps[None, None, None, :], cols)
        return self.images[index[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]


class EpochAugmentation:
    """One epoch's random crop offsets and flips for every image: a pure function of
    (seed, epoch), drawn at once."""

    def __init__(self, num_images: int, resize_size: int, input_size: int, hflip: bool, seed: int, epoch: int):
        g = torch.Generator().manual_seed(mix_seed(seed, epoch, 7))
        self.offsets = torch.randint(resize_size - input_size + 1, (num_images, 2), generator=g)
        self.flips = torch.rand(num_images, generator=g) < 0.5 if hflip else torch.zeros(num_images, dtype=torch.bool)


def in_batches(order: Sequence[int], batch_size: int) -> list[list[int]]:
    """``order`` cut into consecutive batches of ``batch_size`` (the last may be smaller)."""
    order = list(order)
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


class MemoryBatches:
    """The ``batches`` (lists of indices) of ``images`` as ``(images, labels, index)``:
    augmented (training) when ``augmentation`` is given, centre crops (evaluation)
    otherwise. Iterates like a DataLoader over an :class:`~nngk_lab.data.ImageSamples`,
    without per-image work."""

    def __init__(self, images: DecodedImages, batches: Sequence[Sequence[int]],
                 augmentation: EpochAugmentation | None = None):
        self.images, self.augmentation = images, augmentation
        self.dataset = images  # as a DataLoader has it: embed() reads its length
        self.batches = [torch.as_tensor(list(b), dtype=torch.long) for b in batches]

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        for index in self.batches:
            a = self.augmentation
            pixels = self.images.centre_crops(index) if a is None else \
                self.images.random_crops(index, a.offsets[index], a.flips[index])
            yield self.images.normalise(pixels), self.images.labels[index], index
