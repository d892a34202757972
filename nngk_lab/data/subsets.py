"""A class-folder tree cut to its first classes, for a validation protocol that never
looks at the test classes: on the digits, train on 0-2 and measure retrieval on 3-4
(the first five folders, three of them trained), leaving 5-9 untouched."""

from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from .folders import list_classes


def class_subset(data_dir, first_classes: int, into) -> Path:
    """A new folder ``into`` of links to the first ``first_classes`` class folders of
    ``data_dir`` (in the sorted order every tree is read in), so nothing is copied and
    nothing inside the other class folders is read.

    Raises :class:`DataError` when ``first_classes`` is not between 2 and the tree's class
    count, or when ``into`` already exists (a stale subset would be read silently)."""
    data_dir, into = Path(data_dir), Path(into)
    classes = list_classes(data_dir)  # the held-out classes' folders are not even listed
    if not 2 <= first_classes <= len(classes):
        raise DataError(f"a class subset of {data_dir} needs 2 to {len(classes)} classes, got {first_classes}")
    if into.exists():
        raise DataError(f"{into} already exists; a class subset is written into a new folder")
    into.mkdir(parents=True)
    for name in classes[:first_classes]:
        (into / name).symlink_to((data_dir / name).resolve(), target_is_directory=True)
    return into
