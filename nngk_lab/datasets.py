"""``python -m nngk_lab.datasets``: class-folder trees from the command line.

- ``list`` and ``prepare NAME --source PATH --out DIR``: a published release written as a
  tree (:mod:`nngk_lab.data.release_tree`);
- ``export-digits DIR``, ``export-fashion DIR``, ``info DIR`` and ``check DIR``: the embedded
  digits or the bundled Fashion-MNIST photos written as a tree, a tree's classes and image
  counts, and its unreadable images.

Every foreseen problem is one ``error: ...`` line and exit status 2."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from .data.digits import export_digits
from .data.fashion import export_fashion
from .data.folders import find_unreadable_images, scan_image_folder
from .data.release_tree import Prepared, prepare
from .data.releases import RELEASES
from .errors import DataError


def _print_prepared(prepared: Prepared) -> None:
    m = prepared.manifest
    state = "already prepared" if prepared.already else "prepared"
    print(f"{m['title']} {state} in {prepared.root}: {m['classes']} classes ({m['trained_classes']} trained, "
          f"{m['classes'] - m['trained_classes']} held out), {m['images']} images ({m['files']}).")
    print("Train and evaluate with the standard protocol (ResNet18; see docs/paper-protocol.md):")
    print(f"  {prepared.train_command()}")
    print(f"  python -m nngk_lab.evaluate --save_dir runs/{m['dataset']} --gpu_id 0")
    print("On a CPU, leave out --gpu_id and add --model small_cnn --input_size 64. "
          f"In the notebooks: NNGK_DATASET={prepared.root}")


def main(argv=None) -> int:
    """The command line: one ``error: ...`` line and exit status 2 for every foreseen problem."""
    parser = argparse.ArgumentParser(prog="python -m nngk_lab.datasets",
                                     description="Prepare a published dataset as a class-folder tree; export, list or check a tree.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="the datasets, where to download them and what --source holds")
    p = commands.add_parser("prepare", help="write a release as a class-folder tree (atomically)")
    p.add_argument("name", choices=list(RELEASES), metavar="NAME", help=", ".join(RELEASES))
    p.add_argument("--source", help="the downloaded release (`list` says what it holds); with --download, "
                                    "where to download it (default $NNGK_DATA/sources/NAME)")
    p.add_argument("--out", required=True, help="the class-folder tree to write")
    p.add_argument("--download", action="store_true", help="download the release first if it is not there "
                                                           "(needs network)")
    p.add_argument("--per_class", type=int, help="keep only the first N images of each class")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    commands.add_parser("export-digits", help="write the embedded digits as a class-folder tree") \
        .add_argument("dir", help="the tree to write")
    commands.add_parser("export-fashion", help="write the bundled Fashion-MNIST photos (1,200, 28x28) as a "
                                               "class-folder tree").add_argument("dir", help="the tree to write")
    commands.add_parser("info", help="print a tree's classes and image counts").add_argument("dir")
    commands.add_parser("check", help="decode every image of a tree and list those that cannot be read "
                                      "(exit status 1 if any)").add_argument("dir")
    args = parser.parse_args(argv)
    if args.command == "list":
        for release in RELEASES.values():
            print(f"{release.name:16s} {release.title}: download {release.url}; --source: {release.expects}")
        print(f"{'fashion':16s} Fashion-MNIST, 1,200 photos bundled with the kit: no download; "
              "export-fashion DIR writes them, NNGK_DATASET=fashion uses them in the notebooks")
        return 0
    try:
        return _run(args)
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    if args.command == "prepare":
        _print_prepared(prepare(args.name, args.out, args.source, args.download, args.per_class,
                                not args.no_progress))
    elif args.command == "export-digits":
        print(f"digits written to {export_digits(args.dir)}")
    elif args.command == "export-fashion":
        print(f"Fashion-MNIST photos written to {export_fashion(args.dir)}")
    elif args.command == "info":
        classes, samples = scan_image_folder(args.dir)
        counts = np.bincount([label for _, label in samples], minlength=len(classes))
        for name, n in zip(classes, counts):
            print(f"{name}\t{n}")
        print(f"{len(classes)} classes, {len(samples)} images")
    else:
        _, samples = scan_image_folder(args.dir)
        bad = find_unreadable_images(samples)
        for path, reason in bad:
            print(f"{path}\t{reason}")
        print(f"{len(bad)} of {len(samples)} images cannot be read")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
