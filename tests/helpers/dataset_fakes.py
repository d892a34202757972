"""Miniature fakes of each release that nngk_lab.datasets prepares: a few generated
images in the exact file structure and annotation formats that the reading library
expects (pytorch-metric-learning's CUB, Cars196, StanfordOnlineProducts and
INaturalist2018; torchvision's on-disk formats of CIFAR-100 and Flowers102).

Each ``make_*`` returns what ``--source`` is given and the expected result: the class
folder names in order (trained classes first) and the number of trained classes.
Real class ids are used where the library's split depends on them (CUB's trained
classes are 1-100, Cars196's 1-98, SOP's 1-11,318).
"""

from __future__ import annotations

import hashlib
import json
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

PER_CLASS = 3


@dataclass
class Fake:
    source: Path
    folders: list[str]   # expected class folders of the prepared tree, in order
    num_trained: int
    images: int


def _jpg(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=90)


def make_cub(root: Path, per_class: int = PER_CLASS) -> Fake:
    """``root/CUB_200_2011/``: images.txt, image_class_labels.txt, classes.txt, images/."""
    classes = {1: "Black_footed_Albatross", 2: "Laysan_Albatross", 101: "White_Pelican", 102: "Western_Wood_Pewee"}
    base = root / "CUB_200_2011"
    base.mkdir(parents=True)
    images, labels = [], []
    for cid, name in classes.items():
        for j in range(per_class):
            rel = f"{cid:03d}.{name}/{name}_{j:04d}_{cid}.jpg"
            _jpg(base / "images" / rel, len(images))
            images.append(f"{len(images) + 1} {rel}")
            labels.append(f"{len(labels) + 1} {cid}")
    (base / "images.txt").write_text("\n".join(images) + "\n")
    (base / "image_class_labels.txt").write_text("\n".join(labels) + "\n")
    (base / "classes.txt").write_text("".join(f"{cid} {cid:03d}.{name}\n" for cid, name in classes.items()))
    folders = ["000_Black_footed_Albatross", "001_Laysan_Albatross", "002_White_Pelican", "003_Western_Wood_Pewee"]
    return Fake(root, folders, 2, len(images))


def make_cub_tgz(root: Path) -> Fake:
    """CUB_200_2011.tgz as published: the CUB_200_2011/ folder, gzipped."""
    fake = make_cub(root / "unpacked")
    archive = root / "CUB_200_2011.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(fake.source / "CUB_200_2011", arcname="CUB_200_2011")
    return Fake(archive, fake.folders, fake.num_trained, fake.images)


def make_cars(root: Path) -> Fake:
    """The Kaggle "stanford-car-dataset-by-classes-folder" layout Cars196 reads: names.csv
    (one name per line, label = line number), anno_train.csv / anno_test.csv
    (``file,x1,y1,x2,y2,label``, no header), car_data/car_data/{train,test}/NAME/ with '/'
    in names replaced by '-'."""
    names = [f"Make{i} Model {2000 + i}" for i in range(1, 101)]
    names[1] = "Ram C/V Cargo Van Minivan 2012"
    root.mkdir(parents=True)
    (root / "names.csv").write_text("\n".join(names) + "\n")
    count = 0
    for split in ("train", "test"):
        rows = []
        for cid in (1, 2, 99, 100):
            for j in range(2):  # each split numbers its files from 00001.jpg
                file = f"{len(rows) + 1:05d}.jpg"
                _jpg(root / "car_data" / "car_data" / split / names[cid - 1].replace("/", "-") / file, count)
                rows.append(f"{file},10,20,300,200,{cid}")
                count += 1
        (root / f"anno_{split}.csv").write_text("\n".join(rows) + "\n")
    folders = ["000_Make1_Model_2001", "001_Ram_C_V_Cargo_Van_Minivan_2012", "002_Make99_Model_2099",
               "003_Make100_Model_2100"]
    return Fake(root, folders, 2, count)


def make_sop(root: Path) -> Fake:
    """``Stanford_Online_Products/``: Ebay_train.txt and Ebay_test.txt
    (``image_id class_id super_class_id path`` with a header line) and the image folders."""
    base = root / "Stanford_Online_Products"
    products = {"train": [(1, "bicycle_final", 111085122871), (2, "chair_final", 121216458962)],
                "test": [(11319, "bicycle_final", 251065286935), (11320, "mug_final", 380815587463)]}
    count = 0
    for split, classes in products.items():
        lines = ["image_id class_id super_class_id path"]
        for cid, folder, product in classes:
            for j in range(PER_CLASS):
                rel = f"{folder}/{product}_{j}.JPG"
                _jpg(base / rel, count)
                count += 1
                lines.append(f"{count} {cid} 1 {rel}")
        (base / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")
    folders = ["000_bicycle_111085122871", "001_chair_121216458962", "002_bicycle_251065286935",
               "003_mug_380815587463"]
    return Fake(root, folders, 2, count)


def make_inaturalist(root: Path) -> Fake:
    """train2018.json / val2018.json (COCO-style images and annotations),
    Inat_dataset_splits/Inaturalist_{train,test}_set1.txt (image paths) and
    train_val2018/SUPERCATEGORY/CATEGORY/*.jpg."""
    splits = {"train": [(3, "Plantae"), (7, "Aves")], "test": [(5, "Insecta"), (11, "Plantae")]}
    jsons = {"train2018.json": {"images": [], "annotations": [], "categories": []},
             "val2018.json": {"images": [], "annotations": [], "categories": []}}
    (root / "Inat_dataset_splits").mkdir(parents=True)
    count = 0
    for split, classes in splits.items():
        paths = []
        for cid, kingdom in classes:
            for j in range(PER_CLASS):
                rel = f"train_val2018/{kingdom}/{cid}/{hashlib.md5(f'{cid}{j}'.encode()).hexdigest()}.jpg"
                _jpg(root / rel, count)
                target = jsons["val2018.json" if j == 0 else "train2018.json"]
                target["images"].append({"id": count, "file_name": rel, "width": 24, "height": 20})
                target["annotations"].append({"id": count, "image_id": count, "category_id": cid})
                paths.append(rel)
                count += 1
        (root / "Inat_dataset_splits" / f"Inaturalist_{split}_set1.txt").write_text("\n".join(paths) + "\n")
    for name, content in jsons.items():
        (root / name).write_text(json.dumps(content))
    return Fake(root, ["000_Plantae_3", "001_Aves_7", "002_Insecta_5", "003_Plantae_11"], 2, count)


def make_cifar100(root: Path) -> tuple[Fake, dict]:
    """``cifar-100-python/{train,test,meta}``: latin1 pickles of dicts with ``data``
    (N x 3072 uint8, channel planes), ``fine_labels`` and ``fine_label_names``.

    Returns the fake and the MD5 sums torchvision's CIFAR100 must be given to accept it.
    """
    names = ["apple", "aquarium_fish", "baby", "bear"]
    base = root / "cifar-100-python"
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    count = 0
    for split, n in (("train", 3), ("test", 1)):
        labels = [c for c in range(len(names)) for _ in range(n)]
        data = rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8)
        entry = {"filenames": [f"{split}_{i}.png" for i in range(len(labels))], "batch_label": split,
                 "fine_labels": labels, "coarse_labels": [0] * len(labels), "data": data}
        (base / split).write_bytes(pickle.dumps(entry))
        count += len(labels)
    (base / "meta").write_bytes(pickle.dumps({"fine_label_names": names, "coarse_label_names": ["fruit"]}))
    md5 = {f: hashlib.md5((base / f).read_bytes()).hexdigest() for f in ("train", "test", "meta")}
    return Fake(root, ["000_apple", "001_aquarium_fish", "002_baby", "003_bear"], 2, count), md5


def make_flowers102(root: Path) -> tuple[Fake, dict]:
    """``flowers-102/``: jpg/image_NNNNN.jpg, imagelabels.mat (``labels``, 1-based) and
    setid.mat (``trnid``, ``valid``, ``tstid``: 1-based image ids).

    Uses labels 1, 2 (trained: the first 51 of 102) and 52, 53 (held out). Returns the
    fake and the MD5 sums torchvision's Flowers102 must be given to accept it.
    """
    from scipy.io import savemat

    base = root / "flowers-102"
    labels = [c for c in (1, 2, 52, 53) for _ in range(PER_CLASS)]
    for i in range(len(labels)):
        _jpg(base / "jpg" / f"image_{i + 1:05d}.jpg", i)
    savemat(base / "imagelabels.mat", {"labels": np.array(labels, dtype=np.uint8)})
    ids = np.arange(1, len(labels) + 1)
    savemat(base / "setid.mat", {"trnid": ids[0::3], "valid": ids[1::3], "tstid": ids[2::3]})
    md5 = {f: hashlib.md5((base / f).read_bytes()).hexdigest() for f in ("imagelabels.mat", "setid.mat")}
    folders = ["000_pink_primrose", "001_hard-leaved_pocket_orchid", "002_wild_pansy", "003_primula"]
    return Fake(root, folders, 2, len(labels)), md5
