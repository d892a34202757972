"""Prepare the paper's datasets (and CIFAR-100, Flowers 102) as class-folder trees:
``python -m nngk_lab.datasets prepare NAME --source PATH --out DIR``.

The tree is what ``--data_dir`` reads. Class folders are numbered in the standard
protocol's order, trained classes first, and keep the readable name
(``000_Black_footed_Albatross/``), so the number is the label training gives the class and
``--num_classes`` (printed with the train command) trains on exactly the release's
trained half. Images of an extracted release are hard-linked (symlinked across file
systems), so nothing is stored twice; CIFAR's pickled arrays are written as PNG files.

Preparing is atomic: the tree is written to a hidden folder next to ``DIR`` and renamed
to ``DIR`` when complete, with a manifest (``.nngk_dataset.json``) recording its source.
Preparing again into a complete tree is a no-op; into a tree from another source it is
refused. Nothing is downloaded unless ``--download`` is given."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from ..errors import DataError, first_line
from .bundled import default_data_root
from .releases import RELEASES, Entry, Release

MANIFEST = ".nngk_dataset.json"


PAPER_DATASETS = ("cub200", "cars196", "sop", "inaturalist2018")


@dataclass(frozen=True)
class Prepared:
    """A prepared tree: where it is, its manifest, and the commands that train on it."""

    root: Path
    manifest: dict
    already: bool  # True when the tree was complete before this call

    @property
    def num_trained(self) -> int:
        return self.manifest["trained_classes"]

    def train_command(self, save_dir: str | None = None) -> str:
        return train_command(self.manifest["dataset"], self.root, self.num_trained, save_dir)


def train_command(name: str, root, num_trained: int, save_dir: str | None = None) -> str:
    """The standard protocol on a prepared tree: train on the first ``num_trained``
    classes (the release's trained half), test retrieval on the rest. The paper's
    benchmarks train on every image of those classes (``--test_fraction 0``)."""
    save_dir = save_dir or f"runs/{name}"
    protocol = " --test_fraction 0" if name in PAPER_DATASETS else ""
    return (f"python -m nngk_lab.train --data_dir {root} --save_dir {save_dir} --num_classes {num_trained}"
            f"{protocol} --gpu_id 0")


def read_manifest(root) -> dict | None:
    """The manifest of a complete prepared tree, or None when ``root`` is not one."""
    try:
        return json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def readable(name: str) -> str:
    """A class name as a folder name on any system: letters, digits, '.', '-' and '_'."""
    return re.sub(r"[^A-Za-z0-9.\-]+", "_", name).strip("._") or "class"


def class_folders(entries: list[Entry]) -> tuple[dict[int, str], int]:
    """Folder name of each class key, trained classes first (each part sorted by key),
    with a zero-padded index; and the number of trained classes."""
    trained = {e.key: e.name for e in entries if e.trained}
    heldout = {e.key: e.name for e in entries if not e.trained}
    both = trained.keys() & heldout.keys()
    if both:
        raise DataError(f"class {min(both)} is in both the trained and the held-out split of the release")
    order = sorted(trained) + sorted(heldout)
    width = max(3, len(str(len(order) - 1)))
    names = {**trained, **heldout}
    return {key: f"{i:0{width}d}_{readable(names[key])}" for i, key in enumerate(order)}, len(trained)


def _first_per_class(entries: list[Entry], per_class: int) -> list[Entry]:
    counts: dict[int, int] = {}
    kept = []
    for e in entries:
        counts[e.key] = counts.get(e.key, 0) + 1
        if counts[e.key] <= per_class:
            kept.append(e)
    return kept


def _place(entry: Entry, target: Path, move: bool) -> str:
    """Put one image at ``target``; return how ("hard links", "symbolic links", ...)."""
    if entry.pixels is not None:
        Image.fromarray(entry.pixels).save(target)
        return "written"
    if move:
        os.replace(entry.path, target)
        return "moved from the extracted archive"
    try:
        os.link(entry.path, target)
        return "hard links"
    except OSError:  # another file system, or one without hard links
        target.symlink_to(os.path.realpath(entry.path))  # not through the staging folder's links
        return "symbolic links"


def _check_out(out: Path, wanted: dict) -> dict | None:
    """The manifest when ``out`` already holds this very tree; refuse any other content."""
    manifest = read_manifest(out)
    if manifest is not None:
        same = {k: manifest.get(k) for k in wanted} == wanted
        if same:
            return manifest
        raise DataError(f"{out} already holds {manifest.get('dataset')} prepared from {manifest.get('source')} "
                        f"(per_class {manifest.get('per_class')}); choose another --out or delete it")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(f"{out} exists and is not a tree prepared by nngk_lab; choose a new or empty --out")
    return None


def default_source(name: str) -> Path:
    """Where ``--download`` puts a release when no ``--source`` is given."""
    return default_data_root() / "sources" / name


def prepare(name: str, out, source=None, download: bool = False, per_class: int | None = None,
            progress: bool = True) -> Prepared:
    """Write release ``name`` from ``source`` as a class-folder tree at ``out``.

    ``download=True`` lets the release's library download it into ``source`` (default
    :func:`default_source`) when it is not there yet. ``per_class`` keeps the first N
    images of each class (a small tree for CPUs and Binder). Raises :class:`DataError`
    with one sentence for an unknown name, a missing, incomplete or undownloadable
    release, and an ``out`` that holds something else.
    """
    release = _release(name)
    if per_class is not None and per_class < 1:
        raise DataError(f"--per_class must be at least 1, got {per_class}")
    if source is None:
        if not download:
            raise DataError(f"give --source PATH: download {release.url} and pass {release.expects} "
                            "(or add --download where this machine is online)")
        source = default_source(name)
    source, out = Path(source).expanduser().absolute(), Path(out).expanduser().absolute()
    if not download and not source.exists():
        raise DataError(f"--source {source} does not exist: download {release.url} and pass {release.expects}")
    wanted = {"dataset": name, "source": str(source.resolve()), "per_class": per_class}
    existing = _check_out(out, wanted)
    if existing is not None:
        return Prepared(out, existing, already=True)
    temp = out.parent / f".{out.name}.partial"
    shutil.rmtree(temp, ignore_errors=True)  # left by a prepare that was killed
    try:
        temp.mkdir(parents=True)
        manifest = _write_tree(release, source, download, temp, per_class, progress)
        manifest = {**wanted, **manifest}
        (temp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        if out.exists():
            out.rmdir()  # empty (checked above); rename cannot replace it on every system
        os.replace(temp, out)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return Prepared(out, manifest, already=False)


def _release(name: str) -> Release:
    if name not in RELEASES:
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(RELEASES)}")
    return RELEASES[name]


def _write_tree(release: Release, source: Path, download: bool, temp: Path, per_class: int | None,
                progress: bool) -> dict:
    staging = temp / ".staging"
    entries, move = release.read(source, download, staging)
    if per_class is not None:
        entries = _first_per_class(entries, per_class)
    if not entries:
        raise DataError(f"{source} holds no images of {release.title}: download {release.url} and pass "
                        f"{release.expects}")
    absent = [e.path for e in entries if e.path is not None and not os.path.isfile(e.path)]
    if absent:
        raise DataError(f"{source} is an incomplete {release.title} release: {len(absent)} of {len(entries)} "
                        f"images are missing, e.g. {absent[0]}; download {release.url} again")
    folders, num_trained = class_folders(entries)
    for folder in set(folders.values()):
        (temp / folder).mkdir()
    how = set()
    try:
        for entry in tqdm(entries, desc=f"writing {release.name}", unit=" images", disable=not progress):
            how.add(_place(entry, temp / folders[entry.key] / entry.file, move))
    except OSError as e:
        raise DataError(f"cannot write the tree next to {temp.parent} ({first_line(e, 120)})") from e
    shutil.rmtree(staging, ignore_errors=True)
    return {"title": release.title, "classes": len(folders), "trained_classes": num_trained, "images": len(entries),
            "trained_images": sum(e.trained for e in entries), "files": " and ".join(sorted(how))}
