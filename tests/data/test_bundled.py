"""The trees that ship with the kit: the digits under readable names, the Fashion-MNIST
sample, and how a tree written by an earlier version or an unwritable folder is handled."""

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from nngk_lab.data import folders
from nngk_lab.data.bundled import COMPLETE, write_class_tree
from nngk_lab.data.digits import DIGIT_FOLDERS, OLD_DIGIT_FOLDERS, export_digits, with_old_folder_names
from nngk_lab.data.fashion import FASHION_CLASSES, FASHION_FILE, FASHION_FOLDERS, export_fashion, load_fashion_small
from nngk_lab.errors import DataError
from nngk_lab.training.config import digits_defaults, make_config
from nngk_lab.training.loaders import load_split


def test_the_bundled_sample_is_120_photos_of_each_class_in_label_order():
    images, labels = load_fashion_small()
    assert images.shape == (1200, 28, 28) and images.dtype == np.uint8 and labels.dtype == np.uint8
    assert np.array_equal(labels, np.repeat(np.arange(10), 120))  # class by class
    with np.load(FASHION_FILE) as f:
        index = f["t10k_index"].astype(int)
    # the first 120 of each class in the test set: increasing, distinct positions per class
    assert all(np.all(np.diff(index[labels == c]) > 0) for c in range(10)) and len(set(index)) == 1200
    assert FASHION_FILE.stat().st_size < 600_000
    licence = FASHION_FILE.with_name("fashion_small.LICENSE").read_text()
    assert "Zalando SE" in licence and "Permission is hereby granted" in licence
    assert sorted(FASHION_FOLDERS) == list(FASHION_FOLDERS) and len(FASHION_CLASSES) == 10
    assert sorted(DIGIT_FOLDERS) == list(DIGIT_FOLDERS) == [f"digit_{d}" for d in range(10)]


def _pixels_by_file(root):
    classes, samples = folders.scan_image_folder(root)
    return classes, {p.rsplit("/", 1)[1]: (np.asarray(Image.open(p)), classes[label]) for p, label in samples}


def test_export_fashion_writes_exactly_the_bundled_photos_under_their_class_names(tmp_path):
    images, labels = load_fashion_small()
    root = export_fashion(tmp_path / "fashion")
    classes, written = _pixels_by_file(root)
    assert classes == list(FASHION_FOLDERS) and classes[0] == "0_t-shirt" and classes[9] == "9_ankle-boot"
    assert sorted(written) == [f"photo_{i:04d}.png" for i in range(1200)]
    for i in range(1200):
        pixels, folder = written[f"photo_{i:04d}.png"]
        assert folder == FASHION_FOLDERS[labels[i]] and np.array_equal(pixels, images[i])
    manifest = json.loads((root / ".nngk_dataset.json").read_text())
    assert manifest["trained_classes"] == 5 and manifest["trained_images"] == 600 and manifest["images"] == 1200


def test_a_complete_tree_is_kept_and_an_interrupted_one_finished(tmp_path):
    root = export_fashion(tmp_path / "fashion")
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*.png")}
    assert export_fashion(root) == root
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*.png")} == stamps
    (root / COMPLETE).unlink()  # as if killed before the marker: written again, in full
    for p in list(root.rglob("photo_1*.png")):
        p.unlink()
    export_fashion(root)
    assert len(list(root.rglob("*.png"))) == 1200 and (root / COMPLETE).is_file()


def _old_digits_tree(root):
    """The digits as versions before readable names wrote them: class_000 ... with an empty marker."""
    for c in range(10):
        (root / f"class_{c:03d}").mkdir(parents=True)
        Image.new("L", (8, 8)).save(root / f"class_{c:03d}" / f"digit_{c:04d}.png")
    (root / COMPLETE).touch()


def test_export_digits_writes_readable_names_and_replaces_an_old_tree(tmp_path):
    from sklearn.datasets import load_digits

    digits = load_digits()
    _old_digits_tree(tmp_path / "digits")
    root = export_digits(tmp_path / "digits")
    classes, written = _pixels_by_file(root)
    assert classes == [f"digit_{d}" for d in range(10)]  # no class_00N folder is left as an 11th class
    assert len(written) == 1797
    for i in random.Random(0).sample(range(1797), 25) + [0, 1796]:
        pixels, folder = written[f"digit_{i:04d}.png"]
        assert folder == f"digit_{digits.target[i]}"
        assert np.array_equal(pixels, np.round(digits.images[i] * 255 / 16).astype(np.uint8))


def test_a_folder_of_someone_elses_is_not_emptied(tmp_path):
    own = tmp_path / "mine" / "holiday"
    own.mkdir(parents=True)
    write_class_tree(tmp_path / "mine", np.zeros((2, 4, 4), np.uint8), np.array([0, 1]), ["a", "b"], "im", "test")
    assert own.is_dir()  # no marker before: nothing of the folder's is removed


@pytest.mark.parametrize("export", [export_fashion, export_digits])
def test_an_unwritable_folder_is_one_sentence(tmp_path, export):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DataError) as raised:
        export(tmp_path / "a_file" / "tree")
    message = str(raised.value)
    assert message.startswith("cannot write the ") and "set NNGK_DATA to a writable folder" in message
    assert "\n" not in message and message.count(". ") == 0


def test_the_digits_under_their_old_names_are_split_as_an_old_tree_was(tmp_path):
    new = export_digits(tmp_path / "new")
    for folder, old_name in zip(DIGIT_FOLDERS, OLD_DIGIT_FOLDERS):
        shutil.copytree(new / folder, tmp_path / "old" / old_name)

    def split(root):
        return load_split(make_config(**digits_defaults(), data_dir=str(root), save_dir="unused"))

    renamed, old = with_old_folder_names(split(new)), split(tmp_path / "old")
    assert renamed.classes == old.classes == list(OLD_DIGIT_FOLDERS) and renamed.num_trained == old.num_trained
    for part in ("train", "test", "heldout"):
        got = [(Path(p).relative_to(tmp_path / "new"), label) for p, label in getattr(renamed, part)]
        expected = [(Path(p).relative_to(tmp_path / "old"), label) for p, label in getattr(old, part)]
        assert got == expected and len(got) > 0
