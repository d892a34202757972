"""The image transforms of training (random crop, optional flip) and evaluation (centre
crop), both normalised."""

from __future__ import annotations

from typing import Sequence

from torchvision import transforms as T

from ..errors import DataError


def default_resize_size(input_size: int) -> int:
    """The side images are resized to before a crop of ``input_size``: 9/8 of it."""
    return int(round(input_size * 9 / 8))


def build_transforms(input_size: int, resize_size: int | None = None, hflip: bool = True,
                     mean: Sequence[float] = (0.5, 0.5, 0.5), std: Sequence[float] = (0.5, 0.5, 0.5)):
    """Return ``(train_transform, eval_transform)`` as in the original.

    Training: resize to ``resize_size`` (default ``input_size * 9/8``), random crop of
    ``input_size``, optional horizontal flip. Evaluation: resize and centre crop.
    Both normalise with ``mean`` and ``std`` (the original used 0.5 / 0.5).
    """
    if resize_size is None:
        resize_size = default_resize_size(input_size)
    if resize_size < input_size:
        raise DataError(f"resize size {resize_size} is smaller than the input size {input_size}")
    normalise = [T.ToTensor(), T.Normalize(mean, std)]
    train = [T.Resize((resize_size, resize_size)), T.RandomCrop(input_size)]
    if hflip:
        train.append(T.RandomHorizontalFlip())
    evaluation = [T.Resize((resize_size, resize_size)), T.CenterCrop(input_size)]
    return T.Compose(train + normalise), T.Compose(evaluation + normalise)
