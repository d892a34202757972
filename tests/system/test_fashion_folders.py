"""tools/fashion_folders.py: the npm package's JSON files of photos as class folders."""

import json

import numpy as np
import pytest
from PIL import Image

from tool_scripts import load_tool


def fake_package(root, photos_per_class):
    """A miniature of the npm package's layout: src/clothes/<label>.json holding {"data": rows},
    each row a photo's 784 pixels, and two empty rows at the end as in the real files."""
    clothes = root / "src" / "clothes"
    clothes.mkdir(parents=True)
    rng = np.random.default_rng(0)
    photos = {}
    for label, n in enumerate(photos_per_class):
        photos[label] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        rows = [p.ravel().tolist() for p in photos[label]] + [[], []]
        (clothes / f"{label}.json").write_text(json.dumps({"data": rows}))
    return photos


def test_folders_hold_the_asked_photos_of_each_class_in_the_asked_order(tmp_path):
    tool = load_tool("fashion_folders")
    photos = fake_package(tmp_path / "package", [5, 4, 6])
    tool.main([str(tmp_path / "package"), str(tmp_path / "out"), "--classes", "2", "0", "--per_class", "3", "5"])
    folders = sorted((tmp_path / "out").iterdir())
    assert [f.name for f in folders] == ["class_000", "class_001"]
    for folder, label, count in zip(folders, [2, 0], [3, 5]):
        written = [np.asarray(Image.open(f)) for f in sorted(folder.iterdir())]
        assert len(written) == count
        originals = {p.tobytes() for p in photos[label]}
        assert all(w.shape == (28, 28) and w.tobytes() in originals for w in written)
        assert len({w.tobytes() for w in written}) == count  # drawn without replacement


def test_bad_requests_stop_with_one_sentence(tmp_path):
    tool = load_tool("fashion_folders")
    fake_package(tmp_path / "package", [3])
    with pytest.raises(SystemExit, match="fewer than the 4"):
        tool.main([str(tmp_path / "package"), str(tmp_path / "a"), "--classes", "0", "--per_class", "4"])
    with pytest.raises(SystemExit, match="one count per class"):
        tool.main([str(tmp_path / "package"), str(tmp_path / "b"), "--classes", "0", "--per_class", "1", "1"])
    with pytest.raises(SystemExit, match="tar xzf"):
        tool.main([str(tmp_path / "nowhere"), str(tmp_path / "c"), "--classes", "0", "--per_class", "1"])
