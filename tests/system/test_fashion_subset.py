"""tools/fashion_subset.py: the bundled sample made from Fashion-MNIST's t10k IDX files."""

import gzip

import numpy as np
import pytest
from tool_scripts import load_tool


def write_idx(folder, images, labels):
    """Gzipped IDX files as Fashion-MNIST ships them: a 16-byte header before the pixels, 8 before the labels."""
    folder.mkdir(parents=True)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\0" * 16 + images.tobytes()))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"\0" * 8 + labels.tobytes()))


def test_the_sample_is_the_first_photos_of_each_class_in_file_order(tmp_path):
    rng = np.random.default_rng()
    labels = rng.integers(0, 10, 400).astype(np.uint8)
    images = rng.integers(0, 256, (400, 28, 28), dtype=np.uint8)
    write_idx(tmp_path / "idx", images, labels)
    load_tool("fashion_subset").main([str(tmp_path / "idx"), "--per_class", "3", "--out", str(tmp_path / "s.npz")])
    expected = []  # naive: walk the file, keep a photo while its class has fewer than 3
    for c in range(10):
        expected += [i for i in range(400) if labels[i] == c][:3]
    with np.load(tmp_path / "s.npz") as f:
        assert f["t10k_index"].tolist() == expected
        assert np.array_equal(f["images"], images[expected]) and np.array_equal(f["labels"], labels[expected])


def test_a_folder_without_the_files_says_what_to_pass(tmp_path):
    with pytest.raises(SystemExit, match="t10k-\\*-ubyte.gz"):
        load_tool("fashion_subset").main([str(tmp_path), "--out", str(tmp_path / "s.npz")])
