"""data.class_subset: a tree cut to its first class folders, by links."""

import os
import random

import pytest

from nngk_lab.data import class_subset, scan_image_folder
from nngk_lab.errors import DataError

from tiny_runs import write_tree


def naive_first_classes(root, n):
    """The first n class folders in sorted order, hidden ones skipped, by listing the folder."""
    return sorted(name for name in os.listdir(root) if (root / name).is_dir() and not name.startswith("."))[:n]


def test_subset_links_the_first_classes_and_reads_like_the_original_cut(tmp_path):
    rng = random.Random()
    num_classes = rng.randint(3, 7)
    data = write_tree(tmp_path / "data", num_classes=num_classes, per_class=rng.randint(2, 5), seed=rng.randrange(99))
    (data / ".hidden").mkdir()  # sorts first, but is no class
    (data / "notes.txt").write_text("not a class")
    n = rng.randint(2, num_classes)
    subset = class_subset(data, n, tmp_path / "sub" / "data")
    assert sorted(p.name for p in subset.iterdir()) == naive_first_classes(data, n)
    assert all(p.is_symlink() for p in subset.iterdir())  # nothing copied
    classes, samples = scan_image_folder(subset)
    full_classes, full_samples = scan_image_folder(data, num_classes=n)
    assert classes == full_classes
    assert [(os.path.realpath(p), y) for p, y in samples] == [(os.path.realpath(p), y) for p, y in full_samples]


@pytest.mark.parametrize("n", [1, 5])
def test_subset_refuses_a_class_count_outside_two_to_all(tmp_path, n):
    data = write_tree(tmp_path / "data", num_classes=4, per_class=2)
    with pytest.raises(DataError, match="2 to 4 classes"):
        class_subset(data, n, tmp_path / "sub")
    assert not (tmp_path / "sub").exists()


def test_subset_refuses_an_existing_folder(tmp_path):
    data = write_tree(tmp_path / "data", num_classes=3, per_class=2)
    (tmp_path / "sub").mkdir()
    with pytest.raises(DataError, match="already exists"):
        class_subset(data, 2, tmp_path / "sub")
