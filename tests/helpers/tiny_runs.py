"""A tiny class-folder tree and training settings that train in a second, for tests
that need a real saved run."""

import numpy as np
from PIL import Image


def write_tree(root, num_classes=4, per_class=12, seed=0):
    """Tiny class-folder tree of 8x8 greyscale images; each class has its own bright row."""
    rng = np.random.default_rng(seed)
    for c in range(num_classes):
        folder = root / f"class_{c:03d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            image = rng.integers(0, 60, (8, 8))
            image[2 * c % 8] += 180
            Image.fromarray(image.astype(np.uint8), mode="L").save(folder / f"im_{i:02d}.png")
    return root


TINY = dict(model="small_cnn", pretrained="none", input_size=8, hflip=False, sigma=1.0, num_neighbours=5,
            batch_size=8, learning_rate=1e-3, update_interval=1, workers=0, progress=False)
