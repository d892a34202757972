"""Messy data folders: every problem is a DataError naming the folder or file, and odd but
valid images (greyscale, RGBA, 16-bit, tiny, non-ASCII names) just work."""

from __future__ import annotations

import multiprocessing
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torch.utils.data import DataLoader

from nngk_lab import datasets as data_module
from nngk_lab.training.config import make_config
from nngk_lab.data.folders import ImageSamples, find_unreadable_images, load_rgb, scan_image_folder
from nngk_lab.data.transforms import build_transforms
from nngk_lab.errors import CheckpointError, ConfigError, DataError
from nngk_lab.train import main
from nngk_lab.training.runs import load_run
from nngk_lab.training.loop import train

from tiny_tree import make_tree, one_thread, tiny_argv, tiny_config  # noqa: F401


def _one_line_error(capsys, argv) -> str:
    """Run the command line; it must fail with status 2 and print exactly one line."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match=f"data folder {tmp_path / 'nope'} does not exist"):
        scan_image_folder(tmp_path / "nope")


def test_file_instead_of_folder(tmp_path):
    (tmp_path / "data.zip").write_bytes(b"PK")
    with pytest.raises(DataError, match="data.zip is a file, not a folder"):
        scan_image_folder(tmp_path / "data.zip")


def test_empty_folder_and_loose_images(tmp_path):
    with pytest.raises(DataError, match="has no class sub-folders"):
        scan_image_folder(tmp_path)
    Image.new("L", (8, 8)).save(tmp_path / "a.png")
    with pytest.raises(DataError, match="holds 1 images directly: move them into one sub-folder per class"):
        scan_image_folder(tmp_path)


def test_empty_class_folders_are_named(tmp_path):
    make_tree(tmp_path, num_classes=2, per_class=3)
    (tmp_path / "class_005").mkdir()
    (tmp_path / "class_005" / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match=r"class folder\(s\) class_005 in .* hold no images"):
        scan_image_folder(tmp_path)


def test_data_dir_one_level_too_high(tmp_path):
    make_tree(tmp_path / "train", num_classes=2, per_class=3)
    make_tree(tmp_path / "test", num_classes=2, per_class=3)
    with pytest.raises(DataError, match="sub-folders such as .*class_000: is --data_dir one level too high"):
        scan_image_folder(tmp_path)


def test_unlistable_folder(tmp_path, monkeypatch):
    make_tree(tmp_path, num_classes=2, per_class=3)
    real = Path.iterdir

    def iterdir(self):
        if self.name == "class_001":
            raise PermissionError(13, "Permission denied")
        return real(self)

    monkeypatch.setattr(Path, "iterdir", iterdir)
    with pytest.raises(DataError, match="cannot list folder .*class_001: Permission denied"):
        scan_image_folder(tmp_path)


def test_fewer_classes_than_num_classes(tmp_path, capsys):
    tree = make_tree(tmp_path / "tree", num_classes=3, per_class=4)
    err = _one_line_error(capsys, tiny_argv(tree, tmp_path / "run", "--num_classes", "5"))
    assert "--num_classes is 5 but" in err and "has only 3 classes" in err


def test_a_single_class_cannot_be_trained(tmp_path, capsys):
    tree = make_tree(tmp_path / "tree", num_classes=1, per_class=4)
    err = _one_line_error(capsys, tiny_argv(tree, tmp_path / "run"))
    assert "training would see only one class" in err and "--num_classes 2" in err
    err = _one_line_error(capsys, tiny_argv(tree, tmp_path / "run", "--num_classes", "1"))
    assert "--num_classes must be at least 2" in err


def test_mixed_extensions_hidden_and_other_files(tmp_path):
    root = tmp_path
    for c in ("a", "b"):
        (root / c).mkdir()
        Image.new("RGB", (8, 8)).save(root / c / "one.png")
        Image.new("RGB", (8, 8)).save(root / c / "two.JPG")          # upper-case extension
        Image.new("RGB", (8, 8)).save(root / c / "three.jpeg")
        (root / c / "readme.txt").write_text("not an image")
        (root / c / ".DS_Store").write_bytes(b"\0\1")                # hidden: ignored
        Image.new("RGB", (8, 8)).save(root / c / ".hidden.png")      # hidden image: ignored
    (root / ".git").mkdir()                                          # hidden folder: not a class
    classes, samples = scan_image_folder(root)
    assert classes == ["a", "b"]
    assert sorted(Path(p).name for p, label in samples if label == 0) == ["one.png", "three.jpeg", "two.JPG"]
    _, jpg_only = scan_image_folder(root, extensions="jpg")
    assert sorted(Path(p).name for p, _ in jpg_only) == ["two.JPG", "two.JPG"]
    with pytest.raises(DataError, match="hold no images with extension .bmp"):
        scan_image_folder(root, extensions="bmp")


def _write_broken_images(folder: Path) -> dict[str, str]:
    """Three kinds of unreadable file with an image extension."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 64), (10, 200, 30)).save(folder / "whole.png")
    good = (folder / "whole.png").read_bytes()
    (folder / "truncated.png").write_bytes(good[: len(good) // 2])
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "page.jpg").write_text("<html>404 Not Found</html>")
    return {name: str(folder / name) for name in ("truncated.png", "empty.jpg", "page.jpg")}


def test_unreadable_images_stop_with_the_file_name(tmp_path):
    for name, path in _write_broken_images(tmp_path).items():
        with pytest.raises(DataError, match=f"cannot read image {path} .*replace or delete it"):
            load_rgb(path)
    assert load_rgb(str(tmp_path / "whole.png")).size == (64, 64)


def test_check_lists_every_unreadable_image(tmp_path, capsys):
    tree = make_tree(tmp_path / "tree", num_classes=2, per_class=3)
    broken = _write_broken_images(tree / "class_001")
    _, samples = scan_image_folder(tree)
    assert sorted(p for p, _ in find_unreadable_images(samples, progress=False)) == sorted(broken.values())
    assert data_module.main(["check", str(tree)]) == 1
    assert "3 of 10 images cannot be read" in capsys.readouterr().out


@pytest.mark.parametrize("workers", [0, 1])
def test_unreadable_image_inside_a_loader_worker_is_one_sentence(tmp_path, workers):
    paths = _write_broken_images(tmp_path)
    dataset = ImageSamples([(paths["page.jpg"], 0)], build_transforms(8)[1])
    with pytest.raises(DataError) as info:
        next(iter(DataLoader(dataset, num_workers=workers)))
    message = str(info.value)
    assert message.startswith(f"cannot read image {paths['page.jpg']} (")
    assert "\n" not in message and "Traceback" not in message


def test_training_on_a_tree_with_a_broken_image_prints_one_line(tmp_path, capsys, one_thread):
    tree = make_tree(tmp_path / "tree")
    broken = _write_broken_images(tree / "class_000")["truncated.png"]
    (tree / "class_000" / "empty.jpg").unlink()
    (tree / "class_000" / "page.jpg").unlink()
    # An earlier test's loader may still be waiting for the garbage collector; only this run's workers count.
    before = set(multiprocessing.active_children())
    err = _one_line_error(capsys, tiny_argv(tree, tmp_path / "run", "--workers", "1"))
    assert f"cannot read image {broken}" in err
    assert set(multiprocessing.active_children()) <= before  # the failed run's loader workers are gone already


def test_greyscale_rgba_palette_16bit_and_cmyk_images_load_as_rgb(tmp_path):
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    Image.fromarray(grey, "L").save(tmp_path / "grey.png")
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[0, 0, 3] = 255   # one opaque red pixel, the rest fully transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "rgba.png")
    Image.new("P", (4, 4), 0).save(tmp_path / "palette.gif")
    sixteen = (grey.astype(np.uint16) * 256 + 255)
    Image.fromarray(sixteen).save(tmp_path / "sixteen.png")
    Image.new("CMYK", (4, 4), (0, 0, 0, 0)).save(tmp_path / "cmyk.jpg")
    Image.new("LA", (4, 4), (50, 255)).save(tmp_path / "la.png")
    for name in ("grey.png", "rgba.png", "palette.gif", "sixteen.png", "cmyk.jpg", "la.png"):
        assert load_rgb(str(tmp_path / name)).mode == "RGB", name
    assert (np.asarray(load_rgb(str(tmp_path / "grey.png")))[..., 1] == grey).all()
    rgb = np.asarray(load_rgb(str(tmp_path / "rgba.png")))
    assert tuple(rgb[0, 0]) == (200, 0, 0) and tuple(rgb[1, 1]) == (255, 255, 255)  # transparent -> white
    assert (np.asarray(load_rgb(str(tmp_path / "sixteen.png")))[..., 0] == grey).all()  # not clipped to 255
    assert tuple(np.asarray(load_rgb(str(tmp_path / "la.png")))[0, 0]) == (50, 50, 50)


def _odd_tree(root: Path) -> Path:
    """Mixed modes and sizes (down to 1x1), non-ASCII class and file names."""
    rng = np.random.default_rng(0)
    names = ["chat_été", "犬", "ñandú", "z"]
    for c, name in enumerate(names):
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(10):
            size = (1, 1) if i == 0 else (2, 3) if i == 1 else (9, 7)
            pixels = rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
            pixels[..., c % 3] = 255  # the class shows in one colour channel
            image = Image.fromarray(pixels, "RGBA")
            image = [image, image.convert("L"), image.convert("RGB"), image.convert("P")][i % 4]
            image.save(folder / f"bild_{i}_ß.png")
    return root


def test_odd_images_and_non_ascii_names_train_and_resume(tmp_path, one_thread):
    tree = _odd_tree(tmp_path / "tree")
    config = tiny_config(tree, tmp_path / "run", num_neighbours=5, batch_size=4, max_epochs=2)
    result = train(config)
    assert result.split.trained_classes == ["chat_été", "z"]  # sorted by code point
    assert all(np.isfinite(entry["loss"]) for entry in result.history)
    continued = train(tiny_config(tree, tmp_path / "run", num_neighbours=5, batch_size=4, max_epochs=3),
                      resume=True)
    assert len(continued.history) == 3
    assert load_run(tmp_path / "run").classes == sorted(["chat_été", "犬", "ñandú", "z"])


def test_resume_refuses_a_changed_data_folder(tmp_path, one_thread):
    tree = make_tree(tmp_path / "tree")
    train(tiny_config(tree, tmp_path / "run", max_epochs=1))
    (tree / "class_001" / "im_003.png").unlink()
    with pytest.raises(CheckpointError, match="are not those .* was trained on"):
        train(tiny_config(tree, tmp_path / "run", max_epochs=2), resume=True)
    shutil.rmtree(tree / "class_001")
    with pytest.raises(CheckpointError, match="was trained on classes"):
        train(tiny_config(tree, tmp_path / "run", max_epochs=2), resume=True)


def test_resume_after_the_data_folder_moved(tmp_path, one_thread):
    tree = make_tree(tmp_path / "tree")
    train(tiny_config(tree, tmp_path / "run", max_epochs=1))
    moved = tree.rename(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="does not exist"):
        train(make_config(save_dir=str(tmp_path / "run"), max_epochs=2, progress=False),
              resume=True)
    result = train(tiny_config(moved, tmp_path / "run", max_epochs=2), resume=True)
    assert len(result.history) == 2


def test_batch_larger_than_the_data(tmp_path, capsys):
    tree = make_tree(tmp_path / "tree", num_classes=2, per_class=5)
    err = _one_line_error(capsys, tiny_argv(tree, tmp_path / "run", "--batch_size", "64"))
    assert "--batch_size 64 is larger than the" in err


def test_config_error_is_raised_for_a_python_caller_too(tmp_path):
    with pytest.raises(ConfigError, match="--sigma must be a number"):
        tiny_config(tmp_path, tmp_path / "run", sigma="ten")


def test_digits_cannot_be_exported_to_an_unwritable_place(tmp_path, monkeypatch, capsys):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("NNGK_DATA", str(tmp_path / "a_file"))
    err = _one_line_error(capsys, ["--save_dir", str(tmp_path / "run")])
    assert f"cannot write the digits to {tmp_path / 'a_file' / 'digits'}" in err and "set NNGK_DATA" in err


@pytest.mark.parametrize("values, mode, expected", [
    (np.arange(16, dtype=np.int32).reshape(4, 4) * 4369, "I", np.arange(16).reshape(4, 4) * 4369 >> 8),  # 0-65535
    (np.arange(16, dtype=np.int32).reshape(4, 4) * 17, "I", np.arange(16).reshape(4, 4) * 17),  # already 0-255
    (np.arange(16, dtype=np.int32).reshape(4, 4) * 2**27, "I", np.arange(16).reshape(4, 4) * 2**27 >> 24),
    (np.arange(16, dtype=np.float32).reshape(4, 4) / 15, "F", np.rint(np.arange(16).reshape(4, 4) * 17)),  # 0-1
    (np.arange(16, dtype=np.float32).reshape(4, 4) * 17, "F", np.arange(16).reshape(4, 4) * 17),  # 0-255
    (np.arange(16, dtype=np.float32).reshape(4, 4) - 8, "F", np.rint(np.arange(16).reshape(4, 4) * 17)),  # min-max
])
def test_32_bit_and_float_images_are_scaled_from_their_range(tmp_path, values, mode, expected):
    path = tmp_path / "image.tiff"
    Image.fromarray(values, mode).save(path)
    assert Image.open(path).mode == mode
    rgb = np.asarray(load_rgb(str(path)))
    assert (rgb[..., 0] == expected).all() and (rgb[..., 2] == expected).all(), rgb[..., 0]
