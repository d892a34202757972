"""nngk_lab.data: scanning class-folder trees, splits, the exported digits, transforms, image loading."""

import random
import re

import numpy as np
import pytest
import torch
from PIL import Image

from nngk_lab.data.folders import ImageSamples, load_rgb, scan_image_folder
from nngk_lab.data.transforms import build_transforms
from nngk_lab.data.digits import export_digits
from nngk_lab.data.split import split_samples
from nngk_lab.errors import DataError


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


@pytest.fixture
def messy_tree(tmp_path):
    """Class folders created out of order, plus everything the scan must ignore."""
    root = tmp_path / "tree"
    for name, files in {"zebra": ["z1.png", "z0.JPG"], "ant": ["a.png", "b.jpg", "c.jpeg"],
                        "class_10": ["x.png"], "class_2": ["y.bmp"]}.items():
        for f in files:
            _touch(root / name / f)
    _touch(root / "ant" / ".hidden.png")
    _touch(root / "ant" / "notes.txt")
    _touch(root / "ant" / "sub" / "deeper.png")  # a folder inside a class is not an image
    _touch(root / ".git" / "objects.png")
    _touch(root / "README.png")  # a file at the top level is not a class
    return root


def test_scan_sorts_classes_and_ignores_hidden_and_other_files(messy_tree):
    classes, samples = scan_image_folder(messy_tree)
    assert classes == ["ant", "class_10", "class_2", "zebra"]  # sorted names: class_10 before class_2
    by_name = sorted((p.split("/")[-2], p.split("/")[-1], label) for p, label in samples)
    assert by_name == [("ant", "a.png", 0), ("ant", "b.jpg", 0), ("ant", "c.jpeg", 0), ("class_10", "x.png", 1),
                       ("class_2", "y.bmp", 2), ("zebra", "z0.JPG", 3), ("zebra", "z1.png", 3)]
    assert [label for _, label in samples] == sorted(label for _, label in samples)


def test_scan_keeps_the_first_n_classes(messy_tree):
    (messy_tree / "zzz_empty").mkdir()  # beyond the first N, so it does not matter
    classes, samples = scan_image_folder(messy_tree, num_classes=2)
    assert classes == ["ant", "class_10"]
    assert sorted((p.split("/")[-2], label) for p, label in samples) == [("ant", 0)] * 3 + [("class_10", 1)]
    assert scan_image_folder(messy_tree, num_classes=4)[0] == ["ant", "class_10", "class_2", "zebra"]
    with pytest.raises(DataError, match="zzz_empty"):
        scan_image_folder(messy_tree, num_classes=5)


@pytest.mark.parametrize("ext", ["jpg", ".jpg", "JPG", ["jpg"]])
def test_scan_extension_filter(tmp_path, ext):
    root = tmp_path / "tree"
    for name in ["a", "b"]:
        _touch(root / name / "one.jpg")
        _touch(root / name / "two.png")
    _touch(root / "b" / "three.JPG")
    classes, samples = scan_image_folder(root, extensions=ext)
    assert classes == ["a", "b"]
    assert sorted(p.split("/")[-1] for p, _ in samples) == ["one.jpg", "one.jpg", "three.JPG"]


def test_scan_errors(tmp_path, messy_tree):
    with pytest.raises(DataError, match="does not exist"):
        scan_image_folder(tmp_path / "nowhere")
    _touch(tmp_path / "file.png")
    with pytest.raises(DataError, match="is a file"):
        scan_image_folder(tmp_path / "file.png")
    only_files = tmp_path / "flat"
    _touch(only_files / "img.png")
    (only_files / ".hidden_dir").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        scan_image_folder(only_files)
    with pytest.raises(DataError, match="only 4 class folders"):
        scan_image_folder(messy_tree, num_classes=5)
    with pytest.raises(DataError, match="at least 1"):
        scan_image_folder(messy_tree, num_classes=0)
    (messy_tree / "empty_class").mkdir()
    _touch(messy_tree / "empty_class" / "readme.txt")
    with pytest.raises(DataError, match="empty_class"):
        scan_image_folder(messy_tree)
    with pytest.raises(DataError, match="hold no images"):
        scan_image_folder(messy_tree, extensions="gif")


def _random_samples(rng):
    counts = [rng.randint(1, 25) for _ in range(rng.randint(2, 8))]
    samples = [(f"c{label}/img_{j:03d}.png", label) for label, n in enumerate(counts) for j in range(n)]
    rng.shuffle(samples)
    return [f"c{i}" for i in range(len(counts))], samples, counts


def test_split_is_stratified_disjoint_and_complete(seed):
    rng = random.Random(seed)
    for trial in range(20):
        classes, samples, counts = _random_samples(rng)
        num_trained = rng.randint(1, len(classes))
        fraction = rng.choice([0.0, 0.1, 0.2, 0.5, 0.6, 0.9])
        split = split_samples(classes, samples, num_trained, fraction, seed=rng.randrange(1000))
        where = f"seed={seed} trial={trial} counts={counts} trained={num_trained} fraction={fraction}"
        parts = [split.train, split.test, split.heldout]
        assert sorted(s for part in parts for s in part) == sorted(samples), where
        assert sum(len(part) for part in parts) == len(samples), where
        assert split.trained_classes == classes[:num_trained] and split.heldout_classes == classes[num_trained:]
        assert all(label < num_trained for _, label in split.train + split.test), where
        assert all(label >= num_trained for _, label in split.heldout), where
        for label in range(num_trained):
            n = counts[label]
            n_test = sum(1 for _, y in split.test if y == label)
            expected = int(round(fraction * n))
            if fraction > 0:
                expected = max(expected, 1)
            expected = min(expected, n - 1)
            assert n_test == expected, f"{where} class={label}"
            assert sum(1 for _, y in split.train if y == label) == n - n_test >= 1, where


# (images in the class, test fraction) -> test images, worked by hand: round(fraction * n),
# at least one test image when the fraction is above 0, and at least one training image.
HAND_WORKED_TEST_COUNTS = {(1, 0.6): 0, (1, 0.0): 0, (1, 0.99): 0, (1, 0.2): 0, (2, 0.6): 1, (2, 0.1): 1,
                           (2, 0.0): 0, (3, 0.6): 2, (3, 0.99): 2, (4, 0.6): 2, (5, 0.6): 3, (10, 0.6): 6,
                           (10, 0.2): 2, (10, 0.99): 9}


def test_every_trained_class_keeps_a_training_image(seed):
    for (n, fraction), n_test in HAND_WORKED_TEST_COUNTS.items():
        # The class under test between two others, trained, and one held out.
        counts = [3, n, 4, 2]
        samples = [(f"c{label}/{j:02d}.png", label) for label, size in enumerate(counts) for j in range(size)]
        split = split_samples(["c0", "c1", "c2", "c3"], samples, 3, fraction, seed=seed)
        train = [s for s in split.train if s[1] == 1]
        test = [s for s in split.test if s[1] == 1]
        assert (len(test), len(train)) == (n_test, n - n_test), (n, fraction)
        assert {label for _, label in split.train} == {0, 1, 2}, (n, fraction)


def test_a_trained_class_without_images_is_one_sentence():
    samples = [("a/1.png", 0), ("a/2.png", 0), ("c/1.png", 2)]
    with pytest.raises(DataError, match=r"^trained class b has no images, so it cannot be trained"):
        split_samples(["a", "b", "c"], samples, 2)
    assert len(split_samples(["a", "b", "c"], samples, 1).heldout) == 1  # a held-out class may be empty


def test_split_defaults_to_half_the_classes_and_is_deterministic_per_seed(seed):
    classes = [f"c{i}" for i in range(6)]
    samples = [(f"c{label}/{j:02d}.png", label) for label in range(6) for j in range(20)]
    split = split_samples(classes, samples, seed=seed)
    assert split.num_trained == 3 and len(split.heldout) == 60 and len(split.test) == 12
    again = split_samples(classes, list(samples), seed=seed)
    assert (again.train, again.test, again.heldout) == (split.train, split.test, split.heldout)
    other = split_samples(classes, samples, seed=seed + 1)
    assert other.test != split.test  # 4 of 20 per class: equal by chance with probability ~1e-11


def test_split_errors():
    classes, samples = ["a", "b"], [("a/1.png", 0), ("b/1.png", 1)]
    for num_trained in [0, 3]:
        with pytest.raises(DataError, match="classes"):
            split_samples(classes, samples, num_trained)
    for fraction in [-0.1, 1.0]:
        with pytest.raises(DataError, match="fraction"):
            split_samples(classes, samples, 1, fraction)


@pytest.fixture(scope="module")
def digits_root(tmp_path_factory):
    return export_digits(tmp_path_factory.mktemp("digits") / "digits")


def test_export_digits_writes_the_sklearn_digits_once(digits_root):
    from sklearn.datasets import load_digits

    digits = load_digits()
    classes, samples = scan_image_folder(digits_root)
    assert classes == [f"digit_{i}" for i in range(10)]
    assert len(samples) == 1797 == len(list(digits_root.rglob("*.png")))
    by_index = {int(p.rsplit("_", 1)[1][:4]): (p, label) for p, label in samples}
    assert sorted(by_index) == list(range(1797))
    for i in random.Random(0).sample(range(1797), 25) + [0, 1796]:
        path, label = by_index[i]
        assert label == digits.target[i]
        pixels = np.asarray(Image.open(path))
        assert pixels.shape == (8, 8) and pixels.dtype == np.uint8
        assert np.array_equal(pixels, np.round(digits.images[i] * 255 / 16).astype(np.uint8))
    before = {p: p.stat().st_mtime_ns for p in digits_root.rglob("*.png")}
    assert export_digits(digits_root) == digits_root
    assert {p: p.stat().st_mtime_ns for p in digits_root.rglob("*.png")} == before


@pytest.mark.parametrize("input_size,resize_size", [(16, None), (32, 40), (8, 8)])
def test_build_transforms_output_shapes(input_size, resize_size, seed):
    train_tf, eval_tf = build_transforms(input_size, resize_size)
    rng = np.random.default_rng(seed)
    for height, width in [(8, 8), (37, 13), (5, 90)]:
        image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
        for tf in (train_tf, eval_tf):
            out = tf(image)
            assert out.shape == (3, input_size, input_size) and out.dtype == torch.float32
            assert out.min() >= -1.0 and out.max() <= 1.0  # mean 0.5, std 0.5 maps [0, 1] to [-1, 1]
    uniform = Image.new("RGB", (12, 12), (255, 0, 0))
    assert torch.equal(eval_tf(uniform)[0], torch.ones(input_size, input_size))
    assert torch.equal(eval_tf(uniform)[1], -torch.ones(input_size, input_size))


def test_build_transforms_eval_is_deterministic_and_bad_resize_raises(seed):
    _, eval_tf = build_transforms(16)
    image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (20, 30, 3), dtype=np.uint8))
    assert torch.equal(eval_tf(image), eval_tf(image))
    with pytest.raises(DataError, match="smaller than the input size"):
        build_transforms(32, 16)


def test_load_rgb_converts_grey_rgba_and_palette(tmp_path):
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    Image.fromarray(grey, mode="L").save(tmp_path / "grey.png")
    out = np.asarray(load_rgb(str(tmp_path / "grey.png")))
    assert out.shape == (4, 4, 3) and all(np.array_equal(out[..., c], grey) for c in range(3))

    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)   # opaque: kept
    rgba[0, 1] = (10, 20, 30, 0)     # transparent: white background
    rgba[1, 0] = (0, 0, 0, 0)
    rgba[1, 1] = (200, 100, 0, 255)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "rgba.png")
    out = np.asarray(load_rgb(str(tmp_path / "rgba.png")))
    assert out[0, 0].tolist() == [10, 20, 30] and out[1, 1].tolist() == [200, 100, 0]
    assert out[0, 1].tolist() == [255, 255, 255] and out[1, 0].tolist() == [255, 255, 255]

    palette = Image.new("P", (3, 1))
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    palette.putdata([0, 1, 2])
    palette.save(tmp_path / "palette.png")
    out = np.asarray(load_rgb(str(tmp_path / "palette.png")))
    assert out.reshape(3, 3).tolist() == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    assert load_rgb(str(tmp_path / "palette.png")).mode == "RGB"


def test_load_rgb_errors_and_image_samples(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png"):
        load_rgb(str(tmp_path / "broken.png"))
    with pytest.raises(DataError, match="missing.png"):
        load_rgb(str(tmp_path / "missing.png"))
    Image.new("L", (5, 7), 3).save(tmp_path / "ok.png")
    dataset = ImageSamples([(str(tmp_path / "ok.png"), 4)] * 3)
    image, label, index = dataset[2]
    assert image.mode == "RGB" and image.size == (5, 7) and label == 4 and index == 2
    assert torch.equal(dataset.labels, torch.tensor([4, 4, 4]))


def test_data_command_line_info_and_error(messy_tree, tmp_path, capsys):
    from nngk_lab.datasets import main

    assert main(["info", str(messy_tree)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == ["ant\t3", "class_10\t1", "class_2\t1", "zebra\t2", "4 classes, 7 images"]
    assert main(["info", str(tmp_path / "nowhere")]) == 2
    assert re.fullmatch(r"error: data folder .* does not exist\n", capsys.readouterr().err)
