"""The published releases of the paper's datasets (and two small ones), read with the
field's own libraries: pytorch-metric-learning's ``CUB``, ``Cars196``,
``StanfordOnlineProducts`` and ``INaturalist2018`` (their standard class splits), and
torchvision's ``CIFAR100`` and ``Flowers102``.

Each reader turns a release into a flat list of :class:`Entry` (one per image: its class,
readable class name, trained or held out, and the file to link or the pixels to write);
:mod:`nngk_lab.datasets` writes them as a class-folder tree. What the libraries do not
give (readable class names, where they are not in the release's own annotation), is read
here from the release's files, minimally.
"""

from __future__ import annotations

import re
import tarfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError, first_line


@dataclass(frozen=True)
class Entry:
    """One image of a release."""

    key: int                          # the release's class id: sorts the classes
    name: str                         # readable class name
    trained: bool                     # in the trained half of the standard protocol
    file: str                         # file name in its class folder
    path: str | None = None           # an extracted file, linked into the tree ...
    pixels: np.ndarray | None = None  # ... or an image held in memory (CIFAR), saved as PNG


@dataclass(frozen=True)
class Release:
    """A dataset release: what to download, what ``--source`` must hold, how to read it.

    ``read(source, download, staging)`` returns the entries and whether their files may be
    moved into the tree (they were extracted into ``staging``, a scratch folder inside the
    tree being written) rather than linked.
    """

    name: str
    title: str
    url: str
    expects: str                      # what --source holds, for the error messages
    required: tuple[str, ...]         # files under the library's root that must exist
    read: Callable[[Path, bool, Path], tuple[list[Entry], bool]]

    def missing(self, root: Path) -> list[str]:
        return [f for f in self.required if not (root / f).exists()]


def _named_root(source: Path, folder: str, marker: str, staging: Path) -> Path:
    """The root a library expects to hold ``folder/marker``. ``--source`` may be that root,
    or the ``folder`` itself under any name; a folder named otherwise is linked into
    ``staging`` under the name the library joins to its root."""
    if (source / marker).exists() and not (source / folder / marker).exists():
        if source.name == folder:
            return source.parent
        staging.mkdir(parents=True, exist_ok=True)
        (staging / folder).symlink_to(source.resolve(), target_is_directory=True)
        return staging
    return source


def _library_read(release: Release, root: Path, download: bool, make: Callable[[bool], object]) -> None:
    """Run the library's own download (``make(True)``) when asked, then check that the
    files it reads are there, with one sentence for each way this fails."""
    if download:
        try:
            make(True)
        except FileNotFoundError:
            pass  # a partial release the library would not download again: named below
        except Exception as e:  # urllib and torchvision raise many types; all mean "no download"
            raise DataError(
                f"cannot download {release.title} into {root} ({first_line(e, 120)}); if this machine is offline, "
                f"download {release.url} on one that is not and pass it with --source") from e
    missing = release.missing(root)
    if missing:
        raise DataError(f"{root} is not a complete {release.title} release ({missing[0]} is missing): download "
                        f"{release.url} and pass {release.expects} with --source")


def _corrupt(release: Release, root: Path, error: Exception) -> DataError:
    return DataError(f"{release.title} in {root} cannot be read ({first_line(error, 120)}): download {release.url} "
                     f"again and pass {release.expects} with --source")


def _pml_class(name: str):
    """A dataset class of pytorch-metric-learning, which only the benchmarks need."""
    try:
        import pytorch_metric_learning.datasets as pml_datasets
    except ImportError as e:
        raise DataError("reading this release needs pytorch-metric-learning: pip install "
                        "pytorch-metric-learning==2.9.0 (it is in requirements.txt)") from e
    return getattr(pml_datasets, name)


def _pml_entries(release: Release, cls, root: Path, download: bool,
                 name_of: Callable[[str, int], str], file_of: Callable[[str], str] = lambda p: Path(p).name
                 ) -> list[Entry]:
    """Entries of a pytorch-metric-learning dataset, its ``train`` split (trained classes)
    then its ``test`` split (held-out classes)."""
    _library_read(release, root, download, lambda dl: cls(str(root), split="train", download=dl))
    entries = []
    for split in ("train", "test"):
        try:
            data = cls(str(root), split=split, download=False)
            entries += [Entry(int(label), name_of(path, int(label)), split == "train", file_of(path), path=path)
                        for path, label in zip(data.paths, data.labels)]
        except (OSError, ValueError, KeyError, IndexError) as e:  # unreadable or inconsistent annotation files
            raise _corrupt(release, root, e) from e
    return entries


def _read_cub(source: Path, download: bool, staging: Path) -> tuple[list[Entry], bool]:
    CUB = _pml_class("CUB")
    moved = False
    if source.is_file() and source.name.endswith((".tgz", ".tar.gz")) and not download:
        _extract(source, staging / "tgz")
        source, moved = staging / "tgz", True
    root = _named_root(source, "CUB_200_2011", "images.txt", staging / "root")
    names = cache(lambda: _cub_names(root))  # read once the release is known to be there
    return _pml_entries(CUB_200_2011, CUB, root, download, lambda path, label: names()[label]), moved


def _cub_names(root: Path) -> dict[int, str]:
    lines = (root / "CUB_200_2011" / "classes.txt").read_text().split("\n")
    pairs = (line.split(maxsplit=1) for line in lines if line.strip())
    return {int(k): re.sub(r"^\d+\.", "", v.strip()) for k, v in pairs}  # "001.Black_footed_Albatross"


def _extract(archive: Path, into: Path) -> None:
    from tqdm.auto import tqdm

    try:
        with tarfile.open(archive) as tar:
            for member in tqdm(tar, desc=f"extracting {archive.name}", unit=" files", leave=False):
                tar.extract(member, into, filter="data")
    except (OSError, tarfile.TarError) as e:
        raise DataError(f"cannot extract {archive} ({first_line(e, 120)}); download it again") from e


def _read_cars(source: Path, download: bool, staging: Path) -> tuple[list[Entry], bool]:
    Cars196 = _pml_class("Cars196")
    names = cache(lambda: (source / "names.csv").read_text().splitlines())  # read as Cars196 reads it
    # Train and test images share file names (00001.jpg ...): keep the split in the name.
    return _pml_entries(CARS196, Cars196, source, download, lambda path, label: names()[label - 1].strip(),
                        lambda path: f"{Path(path).parts[-3]}_{Path(path).name}"), False


def _read_sop(source: Path, download: bool, staging: Path) -> tuple[list[Entry], bool]:
    StanfordOnlineProducts = _pml_class("StanfordOnlineProducts")
    root = _named_root(source, "Stanford_Online_Products", "Ebay_train.txt", staging / "root")

    def name_of(path, label):  # no product names in SOP: "bicycle_final/111085122871_0.JPG" -> bicycle_111085122871
        p = Path(path)
        return f"{p.parent.name.removesuffix('_final')}_{p.stem.rsplit('_', 1)[0]}"

    return _pml_entries(SOP, StanfordOnlineProducts, root, download, name_of), False


def _read_inaturalist(source: Path, download: bool, staging: Path) -> tuple[list[Entry], bool]:
    INaturalist2018 = _pml_class("INaturalist2018")

    def name_of(path, label):  # "train_val2018/Plantae/7477/x.jpg": the release names species only by number
        return f"{Path(path).parts[-3]}_{label}"

    return _pml_entries(INATURALIST, INaturalist2018, source, download, name_of), False


def _torchvision_root(source: Path, folder: str) -> Path:
    return source.parent if source.name == folder and not (source / folder).exists() else source


def _torchvision_splits(release: Release, root: Path, download: bool, splits: tuple[str, ...],
                        make: Callable[[str, bool], object]) -> list[tuple[str, object]]:
    """``(split, dataset)`` for each split of a torchvision dataset, after its own download
    when asked (``make(split, download)`` builds one)."""
    _library_read(release, root, download, lambda dl: make(splits[0], dl))
    try:
        return [(split, make(split, False)) for split in splits]
    except (RuntimeError, OSError, ValueError, KeyError) as e:  # torchvision: "not found or corrupted"
        raise _corrupt(release, root, e) from e


def _read_cifar100(source: Path, download: bool, staging: Path) -> tuple[list[Entry], bool]:
    from torchvision.datasets import CIFAR100

    root = _torchvision_root(source, CIFAR100.base_folder)
    entries = []
    for split, data in _torchvision_splits(CIFAR_100, root, download, ("train", "test"),
                                           make=lambda s, dl: CIFAR100(str(root), train=s == "train", download=dl)):
        half = len(data.classes) // 2
        entries += [Entry(int(label), data.classes[label], label < half, f"{split}_{i:05d}.png", pixels=pixels)
                    for i, (pixels, label) in enumerate(zip(data.data, data.targets))]
    return entries, False


def _read_flowers102(source: Path, download: bool, staging: Path) -> tuple[list[Entry], bool]:
    from torchvision.datasets import Flowers102

    root = _torchvision_root(source, "flowers-102")
    half = len(Flowers102.classes) // 2
    entries = []
    for _, data in _torchvision_splits(FLOWERS_102, root, download, ("train", "val", "test"),
                                       make=lambda s, dl: Flowers102(str(root), split=s, download=dl)):
        # Flowers102 keeps its file list private; torchvision is pinned (requirements.txt).
        entries += [Entry(int(label), Flowers102.classes[label], label < half, Path(path).name, path=str(path))
                    for path, label in zip(data._image_files, data._labels)]
    return entries, False


CUB_200_2011 = Release(
    "cub200", "CUB-200-2011", "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz",
    "CUB_200_2011.tgz or its extracted CUB_200_2011 folder",
    ("CUB_200_2011/images.txt", "CUB_200_2011/image_class_labels.txt", "CUB_200_2011/classes.txt"), _read_cub)
CARS196 = Release(
    "cars196", "Stanford Cars (Cars196)",
    "https://www.kaggle.com/datasets/jutrera/stanford-car-dataset-by-classes-folder",
    "the extracted folder holding names.csv, anno_train.csv, anno_test.csv and car_data/",
    ("names.csv", "anno_train.csv", "anno_test.csv", "car_data/car_data"), _read_cars)
SOP = Release(
    "sop", "Stanford Online Products", "https://cvgl.stanford.edu/projects/lifted_struct/",
    "the extracted Stanford_Online_Products folder",
    ("Stanford_Online_Products/Ebay_train.txt", "Stanford_Online_Products/Ebay_test.txt"), _read_sop)
INATURALIST = Release(
    "inaturalist2018", "iNaturalist 2018", "https://github.com/visipedia/inat_comp/tree/master/2018 (images and "
    "train2018.json / val2018.json) and the Smooth-AP splits (https://github.com/Andrew-Brown1/Smooth_AP)",
    "the folder holding train2018.json, val2018.json, Inat_dataset_splits/ and train_val2018/",
    ("train2018.json", "val2018.json", "Inat_dataset_splits/Inaturalist_train_set1.txt",
     "Inat_dataset_splits/Inaturalist_test_set1.txt"), _read_inaturalist)
CIFAR_100 = Release(
    "cifar100", "CIFAR-100", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
    "the folder holding its extracted cifar-100-python/ folder",
    ("cifar-100-python/train", "cifar-100-python/test", "cifar-100-python/meta"), _read_cifar100)
FLOWERS_102 = Release(
    "flowers102", "Oxford Flowers 102", "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/ (102flowers.tgz, "
    "imagelabels.mat, setid.mat)", "the folder holding flowers-102/ (jpg/, imagelabels.mat, setid.mat)",
    ("flowers-102/jpg", "flowers-102/imagelabels.mat", "flowers-102/setid.mat"), _read_flowers102)

RELEASES = {r.name: r for r in (CUB_200_2011, CARS196, SOP, INATURALIST, CIFAR_100, FLOWERS_102)}
