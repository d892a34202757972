"""Write ``nngk_lab/data/fashion_small.npz``, the Fashion-MNIST sample the kit ships: the
first ``--per_class`` photos of each class in the test set's own order (t10k IDX files), as
uint8 arrays ``images`` (N x 28 x 28), ``labels`` (N) and ``t10k_index`` (N, each photo's
index in the t10k files), class by class.

    dpkg -x /var/cache/apt/archives/dataset-fashion-mnist_*.deb /tmp/fm/deb   # Debian's package
    python tools/fashion_subset.py /tmp/fm/deb/usr/share/datasets/fashion-mnist

Only the test set is read, so the sample shares no photo with Fashion-MNIST's training set.
"""

from __future__ import annotations

import argparse
import gzip
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "nngk_lab" / "data" / "fashion_small.npz"


def read_idx(path: Path, header: int) -> np.ndarray:
    """The uint8 payload of a gzipped IDX file after its ``header`` bytes."""
    if not path.is_file():
        raise SystemExit(f"{path} not found: pass the folder holding Fashion-MNIST's t10k-*-ubyte.gz files")
    return np.frombuffer(gzip.open(path).read(), np.uint8, offset=header)


def first_of_each_class(labels: np.ndarray, per_class: int) -> np.ndarray:
    """Indices of the first ``per_class`` images of each class, class by class."""
    return np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(int(labels.max()) + 1)])


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("idx_dir", type=Path, help="folder holding t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz")
    p.add_argument("--per_class", type=int, default=120)
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args(argv)
    images = read_idx(args.idx_dir / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    labels = read_idx(args.idx_dir / "t10k-labels-idx1-ubyte.gz", 8)
    keep = first_of_each_class(labels, args.per_class)
    np.savez_compressed(args.out, images=images[keep], labels=labels[keep], t10k_index=keep.astype(np.uint16))
    print(f"wrote {len(keep)} photos ({args.per_class} per class) to {args.out}: {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
