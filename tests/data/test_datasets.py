"""nngk_lab.datasets: every release prepared from a miniature fake of its layout (splits,
readable names, links), atomic and repeatable prepares, and one-sentence errors for
missing, incomplete and (offline) undownloadable releases. The network is blocked in
every test here, so nothing can download."""

import os
import socket

import numpy as np
import pytest
from PIL import Image

import dataset_fakes as fakes
from nngk_lab import datasets
from nngk_lab.data import release_tree as prepare_module
from nngk_lab.data.folders import scan_image_folder
from nngk_lab.errors import DataError
from nngk_lab.data.releases import RELEASES


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(101, "Network is unreachable (blocked in tests)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


@pytest.fixture
def torchvision_checksums(monkeypatch):
    """Lets torchvision accept the fakes: their MD5 sums replace the real files' ones."""
    from torchvision.datasets import CIFAR100, Flowers102

    def accept(name, md5):
        if name == "cifar100":
            monkeypatch.setattr(CIFAR100, "train_list", [["train", md5["train"]]])
            monkeypatch.setattr(CIFAR100, "test_list", [["test", md5["test"]]])
            monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": md5["meta"]})
        else:
            monkeypatch.setattr(Flowers102, "_file_dict", {**Flowers102._file_dict,
                                                           "label": ("imagelabels.mat", md5["imagelabels.mat"]),
                                                           "setid": ("setid.mat", md5["setid.mat"])})
    return accept


def make_fake(name, root, torchvision_checksums):
    maker = {"cub200": fakes.make_cub, "cars196": fakes.make_cars, "sop": fakes.make_sop,
             "inaturalist2018": fakes.make_inaturalist, "cifar100": fakes.make_cifar100,
             "flowers102": fakes.make_flowers102}[name]
    made = maker(root)
    if isinstance(made, tuple):
        made, md5 = made
        torchvision_checksums(name, md5)
    return made


@pytest.mark.parametrize("name", list(RELEASES))
def test_prepare_writes_the_standard_split_with_readable_names(name, tmp_path, torchvision_checksums, capsys):
    fake = make_fake(name, tmp_path / "source", torchvision_checksums)
    out = tmp_path / "tree"
    assert datasets.main(["prepare", name, "--source", str(fake.source), "--out", str(out), "--no_progress"]) == 0
    classes, samples = scan_image_folder(out)
    assert classes == fake.folders and len(samples) == fake.images
    manifest = prepare_module.read_manifest(out)
    assert manifest["trained_classes"] == fake.num_trained and manifest["classes"] == len(fake.folders)
    printed = capsys.readouterr().out
    assert f"--data_dir {out} --save_dir runs/{name} --num_classes {fake.num_trained}" in printed
    assert ("--test_fraction 0" in printed) == (name in prepare_module.PAPER_DATASETS)
    assert not any(p.name.startswith(".") and p.name != prepare_module.MANIFEST for p in out.iterdir())
    assert not list(tmp_path.glob(".*partial*"))
    for path, _ in samples:
        Image.open(path).verify()
        if name != "cifar100":  # extracted files are hard links, not copies
            assert os.stat(path).st_nlink == 2


def test_cifar_images_keep_their_pixels(tmp_path, torchvision_checksums):
    from torchvision.datasets import CIFAR100

    fake = make_fake("cifar100", tmp_path / "source", torchvision_checksums)
    prepare_module.prepare("cifar100", tmp_path / "tree", fake.source, progress=False)
    original = CIFAR100(str(fake.source), train=False)
    written = np.asarray(Image.open(tmp_path / "tree" / "003_bear" / "test_00003.png"))
    assert original.targets[3] == 3 and np.array_equal(written, original.data[3])


def test_cub_from_its_tgz_moves_the_extracted_files_and_leaves_nothing_else(tmp_path):
    fake = fakes.make_cub_tgz(tmp_path)
    prepared = prepare_module.prepare("cub200", tmp_path / "tree", fake.source, progress=False)
    classes, samples = scan_image_folder(prepared.root)
    assert classes == fake.folders and len(samples) == fake.images
    assert all(os.stat(p).st_nlink == 1 for p, _ in samples)
    assert sorted(p.name for p in prepared.root.iterdir()) == sorted([prepare_module.MANIFEST, *fake.folders])


@pytest.mark.parametrize("form", ["parent", "folder", "renamed"])
def test_cub_source_may_be_the_folder_its_parent_or_a_renamed_copy(form, tmp_path):
    fake = fakes.make_cub(tmp_path / "dl")
    source = {"parent": fake.source, "folder": fake.source / "CUB_200_2011"}.get(form)
    if form == "renamed":
        source = (fake.source / "CUB_200_2011").rename(tmp_path / "birds")
    prepared = prepare_module.prepare("cub200", tmp_path / "tree", source, progress=False)
    assert scan_image_folder(prepared.root)[0] == fake.folders
    assert all(not p.is_symlink() for p in prepared.root.rglob("*"))  # no links into the staging folder


def test_symbolic_links_where_hard_links_fail(tmp_path, monkeypatch):
    fake = fakes.make_cub(tmp_path / "dl")

    def no_hard_links(*args):
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_hard_links)
    prepared = prepare_module.prepare("cub200", tmp_path / "tree", fake.source / "CUB_200_2011", progress=False)
    files = [p for p in prepared.root.rglob("*.jpg")]
    assert files and all(p.is_symlink() and p.resolve().is_file() for p in files)
    assert prepared.manifest["files"] == "symbolic links"


def test_per_class_keeps_the_first_images_of_each_class(tmp_path):
    fake = fakes.make_cub(tmp_path / "dl")
    prepared = prepare_module.prepare("cub200", tmp_path / "tree", fake.source, per_class=2, progress=False)
    _, samples = scan_image_folder(prepared.root)
    assert len(samples) == 2 * len(fake.folders)
    assert sorted(p.name for p in (prepared.root / "000_Black_footed_Albatross").iterdir()) == [
        "Black_footed_Albatross_0000_1.jpg", "Black_footed_Albatross_0001_1.jpg"]


def test_prepare_again_is_a_no_op_and_refuses_another_source(tmp_path):
    fake = fakes.make_cub(tmp_path / "dl")
    other = fakes.make_cub(tmp_path / "other")
    out = tmp_path / "tree"
    prepare_module.prepare("cub200", out, fake.source, progress=False)
    stamp = (out / prepare_module.MANIFEST).stat().st_mtime_ns
    again = prepare_module.prepare("cub200", out, fake.source, progress=False)
    assert again.already and (out / prepare_module.MANIFEST).stat().st_mtime_ns == stamp
    for kwargs, words in ((dict(name="cub200", source=other.source), "already holds cub200 prepared from"),
                          (dict(name="cub200", source=fake.source, per_class=1), "per_class None"),
                          (dict(name="sop", source=fake.source), "already holds cub200")):
        with pytest.raises(DataError, match=words):
            prepare_module.prepare(out=out, progress=False, **kwargs)


def test_out_holding_something_else_is_refused_and_an_empty_one_is_used(tmp_path):
    fake = fakes.make_cub(tmp_path / "dl")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="is not a tree prepared by nngk_lab"):
        prepare_module.prepare("cub200", tmp_path / "busy", fake.source, progress=False)
    (tmp_path / "empty").mkdir()
    assert prepare_module.prepare("cub200", tmp_path / "empty", fake.source, progress=False).manifest["images"] == 12


def test_an_interrupted_prepare_leaves_no_tree_and_the_next_one_completes(tmp_path, monkeypatch):
    fake = fakes.make_cub(tmp_path / "dl")
    out = tmp_path / "tree"
    place, calls = prepare_module._place, []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return place(*args)

    monkeypatch.setattr(prepare_module, "_place", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_module.prepare("cub200", out, fake.source, progress=False)
    assert not out.exists() and not list(tmp_path.glob(".tree*"))
    monkeypatch.setattr(prepare_module, "_place", place)
    # A prepare killed outright (SIGKILL) leaves its hidden temporary folder: it is replaced.
    (tmp_path / ".tree.partial" / "000_Black_footed_Albatross").mkdir(parents=True)
    prepared = prepare_module.prepare("cub200", out, fake.source, progress=False)
    assert not prepared.already and len(scan_image_folder(out)[1]) == fake.images
    assert not (tmp_path / ".tree.partial").exists()


def _cli_error(capsys, *argv) -> str:
    assert datasets.main(["prepare", *argv, "--no_progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize("name", list(RELEASES))
def test_download_offline_is_one_sentence_saying_what_to_get(name, tmp_path, capsys):
    err = _cli_error(capsys, name, "--download", "--source", str(tmp_path / "dl"), "--out", str(tmp_path / "t"))
    assert f"cannot download {RELEASES[name].title}" in err and "offline" in err and "--source" in err
    assert not (tmp_path / "t").exists()


def test_download_without_source_goes_to_the_data_folder(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NNGK_DATA", str(tmp_path / "data"))
    err = _cli_error(capsys, "cifar100", "--download", "--out", str(tmp_path / "t"))
    assert str(tmp_path / "data" / "sources" / "cifar100") in err


def test_download_of_a_release_already_there_needs_no_network(tmp_path, torchvision_checksums):
    fake = make_fake("cifar100", tmp_path / "source", torchvision_checksums)
    prepared = prepare_module.prepare("cifar100", tmp_path / "tree", fake.source, download=True, progress=False)
    assert prepared.manifest["images"] == fake.images


@pytest.mark.parametrize("name", list(RELEASES))
def test_missing_source_says_what_to_download(name, tmp_path, capsys):
    err = _cli_error(capsys, name, "--source", str(tmp_path / "nothing"), "--out", str(tmp_path / "t"))
    assert "does not exist" in err and RELEASES[name].url.split()[0] in err
    err = _cli_error(capsys, name, "--out", str(tmp_path / "t"))
    assert "give --source" in err


@pytest.mark.parametrize("name, remove", [
    ("cub200", "CUB_200_2011/classes.txt"), ("cars196", "anno_test.csv"),
    ("sop", "Stanford_Online_Products/Ebay_test.txt"), ("inaturalist2018", "val2018.json"),
    ("cifar100", "cifar-100-python/meta"), ("flowers102", "flowers-102/setid.mat")])
def test_incomplete_source_names_the_missing_file(name, remove, tmp_path, capsys, torchvision_checksums):
    fake = make_fake(name, tmp_path / "source", torchvision_checksums)
    (fake.source / remove).unlink()
    err = _cli_error(capsys, name, "--source", str(fake.source), "--out", str(tmp_path / "t"))
    assert f"is not a complete {RELEASES[name].title} release ({remove} is missing)" in err
    assert not (tmp_path / "t").exists() and not list(tmp_path.glob(".t.partial"))


def test_download_into_a_partial_release_names_what_is_missing(tmp_path, capsys):
    fake = fakes.make_cub(tmp_path / "source")
    (fake.source / "CUB_200_2011" / "images.txt").unlink()
    err = _cli_error(capsys, "cub200", "--download", "--source", str(fake.source), "--out", str(tmp_path / "t"))
    assert "is not a complete CUB-200-2011 release (CUB_200_2011/images.txt is missing)" in err


def test_missing_images_and_a_failed_checksum_are_named(tmp_path, capsys, monkeypatch):
    fake = fakes.make_cub(tmp_path / "cub")
    next((fake.source / "CUB_200_2011" / "images").rglob("*.jpg")).unlink()
    err = _cli_error(capsys, "cub200", "--source", str(fake.source), "--out", str(tmp_path / "t"))
    assert "incomplete CUB-200-2011 release: 1 of 12 images are missing" in err
    cifar, _ = fakes.make_cifar100(tmp_path / "cifar")  # torchvision's real checksums: the fake fails them
    err = _cli_error(capsys, "cifar100", "--source", str(cifar.source), "--out", str(tmp_path / "t"))
    assert "CIFAR-100 in" in err and "cannot be read" in err


def test_unknown_name_and_list(capsys):
    with pytest.raises(DataError, match="unknown dataset 'mnist'"):
        prepare_module.prepare("mnist", "/tmp/x", "/tmp")
    assert datasets.main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in RELEASES)


def test_the_bundled_photos_are_listed_and_exported_like_the_digits(capsys, tmp_path):
    assert datasets.main(["list"]) == 0
    assert "fashion" in capsys.readouterr().out
    assert datasets.main(["export-fashion", str(tmp_path / "fashion")]) == 0
    assert datasets.main(["info", str(tmp_path / "fashion")]) == 0
    out = capsys.readouterr().out
    assert "0_t-shirt\t120" in out and "9_ankle-boot\t120" in out and "10 classes, 1200 images" in out
    (tmp_path / "a_file").write_text("")
    assert datasets.main(["export-fashion", str(tmp_path / "a_file" / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the Fashion-MNIST photos") and err.count("\n") == 1
