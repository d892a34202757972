"""nngk_lab.explore.notebook: settings, paths, threads, caching, errors shown to students, and
"load notebook 2's run or train one"; nngk_lab.device's container CPU quota."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

from nngk_lab.data import folders as data
from nngk_lab import device
from nngk_lab.explore import cache
from nngk_lab.explore import notebook as nb
from nngk_lab.errors import DataError
from nngk_lab.training.config import make_config


@pytest.mark.parametrize("value, fast", [("1", True), ("yes", True), ("", False), ("0", False), ("false", False)])
def test_fast_mode_from_environment(monkeypatch, value, fast):
    monkeypatch.setenv("NNGK_FAST", value)
    assert nb.fast_mode() is fast
    assert nb.settings().fast is fast


def test_fast_and_full_settings_use_separate_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("NNGK_RUNS", str(tmp_path))
    fast, full = nb.settings(fast=True), nb.settings(fast=False)
    assert fast.main_run != full.main_run and fast.main_run.parent == full.main_run.parent == tmp_path
    assert fast.training["max_epochs"] < full.training["max_epochs"]
    assert len(fast.sweep_sigmas) < len(full.sweep_sigmas)
    # notebook 3's K on validation classes: train digits 0-2, retrieve among 3-4, as tools/heldout_curve.py measured
    for s in (fast, full):
        assert {k: s.validation[k] for k in ("setting", "values", "first_classes", "num_classes")} == \
            {"setting": "num_neighbours", "values": (20, 200), "first_classes": 5, "num_classes": 3}
    assert (full.validation["seeds"], full.validation["max_epochs"]) == ((0, 1), 4)
    assert len(fast.validation["seeds"]) < 2 and fast.validation["input_size"] < make_config().input_size
    assert fast.validation_dir != full.validation_dir and fast.validation_dir.parent == tmp_path


def test_runs_dir_is_found_from_any_subfolder(monkeypatch, tmp_path):
    monkeypatch.delenv("NNGK_RUNS", raising=False)
    (tmp_path / "nngk_lab").mkdir()
    (tmp_path / "nngk_lab" / "__init__.py").write_text("")
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert nb.runs_dir() == tmp_path / "runs"
    monkeypatch.chdir(tmp_path.parent)
    assert nb.runs_dir() != tmp_path / "runs"  # outside the project: the user cache
    monkeypatch.setenv("NNGK_RUNS", str(tmp_path / "elsewhere"))
    assert nb.runs_dir() == tmp_path / "elsewhere"


def test_limit_threads():
    before = torch.get_num_threads()
    try:
        assert nb.limit_threads(1) == 1 and torch.get_num_threads() == 1
        assert os.environ["NUMBA_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


def test_cached_reuses_until_the_key_changes(tmp_path):
    calls = []

    def compute():
        calls.append(1)
        return {"x": torch.arange(3), "n": len(calls)}

    path = tmp_path / "c.pt"
    assert cache.cached(path, compute, {"v": 1})["n"] == 1
    assert cache.cached(path, compute, {"v": 1})["n"] == 1 and len(calls) == 1
    assert cache.cached(path, compute, {"v": 2})["n"] == 2
    path.write_bytes(b"truncated")
    assert cache.cached(path, compute, {"v": 2})["n"] == 3


def test_fingerprint_follows_values():
    a = torch.arange(6.0)
    assert cache.fingerprint(a, 1) == cache.fingerprint(a.clone(), 1)
    assert cache.fingerprint(a, 1) != cache.fingerprint(a + 1e-6, 1) != cache.fingerprint(a, 2)
    assert cache.fingerprint(a) != cache.fingerprint(a.view(2, 3))


def test_show_error_prints_the_message(capsys):
    assert nb.show_error(data.scan_image_folder, "/no/such/folder") is None
    assert capsys.readouterr().out.startswith("DataError: data folder /no/such/folder does not exist")
    assert nb.show_error(lambda x: x + 1, 1) == 2


def test_malformed_examples_each_fail_clearly(tmp_path):
    examples = nb.malformed_examples(tmp_path)
    for name, path in examples.items():
        if name == "corrupt_image":
            _, samples = data.scan_image_folder(path)
            broken = [p for p, _ in samples if p.endswith("broken.png")]
            with pytest.raises(DataError, match="broken.png"):
                data.load_rgb(broken[0])
        else:
            with pytest.raises(DataError):
                data.scan_image_folder(path)


def test_folder_summary(tmp_path):
    for c in range(3):
        (tmp_path / f"class_{c:03d}").mkdir()
        for i in range(c + 1):
            Image.new("L", (4, 4)).save(tmp_path / f"class_{c:03d}" / f"{i}.png")
    text = nb.folder_summary(tmp_path, files_per_class=1, max_classes=2)
    assert "(3 classes, 6 images)" in text and "class_001/     2 images: 0.png, ..." in text
    assert "1 more class folders" in text


def _tiny_tree(root):
    rng = np.random.default_rng(0)
    for c in range(3):
        folder = root / f"class_{c:03d}"
        folder.mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), mode="L").save(folder / f"{i}.png")
    return root


def test_train_or_load_trains_once_then_loads(tmp_path, capsys):
    settings = dict(data_dir=str(_tiny_tree(tmp_path / "data")), model="small_cnn", input_size=8, batch_size=4,
                    num_neighbours=3, max_epochs=1, workers=0, num_classes=2, pretrained="none", progress=False)
    run = nb.train_or_load(tmp_path / "run", "cpu", **settings)
    assert run.finished and len(run.history) == 1
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    stamp = checkpoint.stat().st_mtime_ns
    again = nb.train_or_load(tmp_path / "run", "cpu", **settings)
    assert "Loaded the finished run" in capsys.readouterr().out
    assert checkpoint.stat().st_mtime_ns == stamp
    torch.testing.assert_close(again.bank.features, run.bank.features)


def test_a_run_on_other_class_folders_is_moved_aside_and_trained_again(tmp_path, capsys):
    data = _tiny_tree(tmp_path / "data")
    settings = dict(data_dir=str(data), model="small_cnn", input_size=8, batch_size=4, num_neighbours=3,
                    max_epochs=1, workers=0, num_classes=2, pretrained="none", progress=False)
    nb.train_or_load(tmp_path / "run", "cpu", **settings)
    (tmp_path / "run" / "embeddings.pt").write_bytes(b"a cache made from the old folders")
    for c in range(3):  # renamed as the digits' were: class_00N -> digit_N
        (data / f"class_{c:03d}").rename(data / f"digit_{c}")
    capsys.readouterr()
    run = nb.train_or_load(tmp_path / "run", "cpu", **settings)
    assert "moved it to" in capsys.readouterr().out
    assert run.classes == ["digit_0", "digit_1", "digit_2"] and run.finished
    assert (tmp_path / "run-old-classes" / "embeddings.pt").is_file()  # the stale cache went with it
    assert not (tmp_path / "run" / "embeddings.pt").exists()


def test_nngk_dataset_fashion_needs_no_prepare_step(monkeypatch, tmp_path):
    monkeypatch.setenv("NNGK_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("NNGK_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("NNGK_DATASET", "fashion")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    full, fast = nb.settings(fast=False), nb.settings(fast=True)
    assert full.data_dir == tmp_path / "data" / "fashion" and (full.data_dir / "0_t-shirt").is_dir()
    assert full.main_run.name == "fashion" and fast.main_run.name == "fashion-fast"
    assert full.training["num_classes"] == 5 == fast.training["num_classes"]
    assert (full.training["model"], full.training["input_size"]) == ("small_cnn", 28)
    assert fast.training["input_size"] == 16 and full.sweep_training["input_size"] == 28
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # 28-px photos: the small CNN on a GPU too
    assert (nb.settings(fast=False).training["model"], nb.settings(fast=False).training["input_size"]) == \
        ("small_cnn", 28)


@pytest.mark.parametrize("files, expected", [
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "50000", "cpu/cpu.cfs_period_us": "100000"}, 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, None),
    ({}, None)])
def test_cgroup_cpu_limit(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert device._cgroup_cpu_limit(tmp_path) == expected


@pytest.mark.parametrize("limit, expected", [(0.5, 1), (1.0, 1), (1.5, 2), (None, None)])
def test_available_cores_respects_the_quota(monkeypatch, limit, expected):
    monkeypatch.setattr(device, "_cgroup_cpu_limit", lambda: limit)
    affinity = len(os.sched_getaffinity(0))
    assert device.available_cores() == min(affinity, expected or affinity)


def test_nngk_dataset_picks_a_prepared_tree_with_settings_that_fit_it(monkeypatch, tmp_path):
    from dataset_fakes import make_cub
    from nngk_lab.data.release_tree import prepare

    monkeypatch.setenv("NNGK_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("NNGK_RUNS", str(tmp_path / "runs"))
    monkeypatch.delenv("NNGK_DATASET", raising=False)
    assert nb.chosen_dataset().name == "digits" and nb.settings().main_run.name == "digits"
    prepare("cub200", tmp_path / "data" / "cub200", make_cub(tmp_path / "src", per_class=10).source, progress=False)
    monkeypatch.setenv("NNGK_DATASET", "cub200")
    for fast in (True, False):
        s = nb.settings(fast=fast)
        assert s.data_dir == tmp_path / "data" / "cub200" and s.main_run.name.startswith("cub200")
        assert s.sweep_dir.name.startswith("sigma-sweep-cub200") and s.cache_dir.name.startswith("cache-cub200")
        # 2 trained classes of 10 images: at least 14 training images, so K <= 13 and batch <= 14
        assert s.training["num_classes"] == 2 and s.training["num_neighbours"] <= 13
        assert s.training["batch_size"] <= 14 and s.training["hflip"]
        # 2 trained classes cannot train 2 and spare 2 for validation: notebook 3 says so instead
        assert s.validation is None and s.validation_dir.name.startswith("validation-cub200")
    assert nb.settings(fast=False).training["max_time"] > 0
    monkeypatch.setenv("NNGK_DATASET", str(tmp_path / "src" / "CUB_200_2011" / "images"))  # any class-folder tree
    assert nb.chosen_dataset().name == "images" and nb.settings().training["num_classes"] is None


def test_nngk_dataset_naming_nothing_says_how_to_prepare_it(monkeypatch, tmp_path):
    monkeypatch.setenv("NNGK_DATA", str(tmp_path))
    monkeypatch.setenv("NNGK_DATASET", "cub200")
    with pytest.raises(DataError, match=r"NNGK_DATASET=cub200, but .*cub200 holds no prepared dataset: prepare it "
                                        r"with python -m nngk_lab.datasets prepare"):
        nb.settings()


def test_start_is_settings_and_setup_in_one_call(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("NNGK_FAST", "1")
    monkeypatch.delenv("NNGK_DATASET", raising=False)
    monkeypatch.setenv("NNGK_DATA", str(tmp_path))
    chosen, device = nb.start("cpu")
    assert chosen == nb.settings() and device.type == "cpu"
    out = capsys.readouterr().out
    assert "fast mode" in out and "NNGK_DATASET=fashion" in out
