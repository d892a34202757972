"""A photo-like stand-in for small greyscale object photos, made offline from the digits.

The kit's real-photo measurements (issue 13: 10 classes of 28x28 greyscale photos, 1,250
images in each of classes 0-4 and 1,000 in each of 5-9) are of data that is not in this
repository. This writes a tree of the same shape and file format from scikit-learn's
bundled digits: each image is a digit drawn at a random size, angle, shear and place on a
28x28 canvas, over a random smooth background, with random contrast and noise. It is
harder than the 8x8 digits and as slow to decode as real PNGs, but it is not a photo set:
use it to measure throughput and to compare recipes, and say so next to its numbers.

    python tools/proxy_photos.py OUT [--per_class 1250 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits

SIZE = 28


def _warp(digits: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Each (8, 8) digit in ``digits`` (N, 1, 8, 8) drawn on a SIZE x SIZE canvas by a
    random affine map (scale, rotation, shear, shift)."""
    n = digits.shape[0]
    scale = 1.0 + 0.45 * torch.rand(n, generator=g)  # the digit fills 55-80% of the canvas
    angle = (torch.rand(n, generator=g) - 0.5) * 0.7
    shear = (torch.rand(n, generator=g) - 0.5) * 0.5
    shift = (torch.rand(n, 2, generator=g) - 0.5) * 0.5
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * scale, (-sin + shear) * scale, shift[:, 0]], 1),
                         torch.stack([sin * scale, cos * scale, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, (n, 1, SIZE, SIZE), align_corners=False)
    return F.grid_sample(digits, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def render(images: np.ndarray, count: int, seed: int) -> np.ndarray:
    """``count`` uint8 SIZE x SIZE images made from the 8x8 ``images`` (values 0-16)."""
    g = torch.Generator().manual_seed(seed)
    source = torch.from_numpy(images).float().div(16).unsqueeze(1)
    picks = torch.randint(len(images), (count,), generator=g)
    shape = _warp(source[picks], g)
    background = F.interpolate(torch.rand(count, 1, 4, 4, generator=g), size=(SIZE, SIZE), mode="bicubic",
                               align_corners=False)
    contrast = 0.35 + 0.5 * torch.rand(count, 1, 1, 1, generator=g)
    polarity = torch.where(torch.rand(count, 1, 1, 1, generator=g) < 0.5, 1.0, -1.0)
    image = 0.5 * background + 0.25 + polarity * contrast * shape
    image = image + 0.08 * torch.randn(image.shape, generator=g)
    return (image.clamp(0, 1) * 255).round().to(torch.uint8).squeeze(1).numpy()


def write_tree(out: Path, per_class: tuple[int, int] = (1250, 1000), seed: int = 0) -> Path:
    """Classes 0-4 get ``per_class[0]`` images, 5-9 ``per_class[1]``, as PNG files in
    ``out/class_00N/``."""
    digits = load_digits()
    for label in range(10):
        count = per_class[0] if label < 5 else per_class[1]
        folder = out / f"class_{label:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i, pixels in enumerate(render(digits.images[digits.target == label], count, seed * 100 + label)):
            Image.fromarray(pixels, "L").save(folder / f"im_{i:05d}.png")
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python tools/proxy_photos.py", description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="folder to write the class folders into")
    p.add_argument("--per_class", type=int, nargs=2, default=(1250, 1000),
                   help="images per class for classes 0-4 and 5-9 (default 1250 1000)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    write_tree(args.out, tuple(args.per_class), args.seed)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
