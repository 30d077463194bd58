"""What the converter reads: image folders, their classes, and the checks that keep
the label space from shifting.

* :func:`scan_class_folders`: a class-per-folder tree (ImageNet ``train/``);
  label = index of the folder in sorted order. Folders that are not classes --
  hidden ones, ``lost+found``, ``__MACOSX``, folders without an image file --
  would get a label and move every label after them, so they are refused
  with one line naming them unless ``skip_non_class`` (then logged, left out).
* :func:`scan_flat_folder`: one folder of images with a label file
  (ILSVRC's validation images), labels from a given class list (the training
  records' manifest) or the sorted classes of the label file.
* :func:`check_expected_classes`: the class names against an expected list, or
  ``"imagenet"``: 1,000 distinct WordNet ids ``n########``.
"""
from __future__ import annotations

import json
import os
import re
from typing import Callable, Sequence

__all__ = ["NOT_CLASS_FOLDERS", "IMAGENET", "LabelSpaceError", "scan_class_folders",
           "read_label_file", "scan_flat_folder", "check_expected_classes",
           "read_expected_classes", "classes_from_records"]

#: Folder names that are never classes (file-system and archive debris).
NOT_CLASS_FOLDERS = ("lost+found", "__MACOSX")
#: The expected-classes value of ImageNet: 1,000 synsets named n########.
IMAGENET = "imagenet"
IMAGENET_NUM_CLASSES = 1000
_SYNSET = re.compile(r"^n\d{8}$")


class LabelSpaceError(ValueError):
    """The classes found are not the classes the records should have."""


def _image_files(folder: str) -> list[str]:
    """Sorted names of the regular, non-hidden files of ``folder``."""
    return sorted(e.name for e in os.scandir(folder) if e.is_file() and not e.name.startswith("."))


def scan_class_folders(root: str, skip_non_class: bool = False,
                       log: Callable[[str], None] | None = None
                       ) -> tuple[list[str], list[tuple[str, int]]]:
    """``(classes, items)`` of a class-per-folder tree.

    ``classes``: the sorted class folder names; ``items``: ``(path, label)`` of
    every regular non-hidden file, ``label`` = index of its folder in
    ``classes``, files sorted by name within each folder.

    Raises:
      FileNotFoundError: ``root`` is missing or holds no class folder / image.
      LabelSpaceError: folders that are not classes, unless ``skip_non_class``.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist (--imagenet_dir)")
    folders = sorted(e.name for e in os.scandir(root) if e.is_dir())
    files = {name: _image_files(os.path.join(root, name)) for name in folders
             if not name.startswith(".") and name not in NOT_CLASS_FOLDERS}
    not_classes = [name for name in folders if name not in files] + [
        f"{name} (no image files)" for name, names in files.items() if not names]
    classes = [name for name, names in files.items() if names]
    if not_classes:
        if not skip_non_class:
            raise LabelSpaceError(
                f"{root!r} holds folders that are not classes: {not_classes}; each would "
                "take a label and shift the labels after it: remove them, or pass "
                "--skip_non_class_folders to leave them out")
        (log or (lambda m: None))(f"[convert] leaving out folders that are not classes: "
                                  f"{not_classes}")
    if not classes:
        raise FileNotFoundError(f"no class subfolders with images in {root!r}; --imagenet_dir "
                                "must be the train folder with one subfolder of images per "
                                "synset")
    items = [(os.path.join(root, name, f), label) for label, name in enumerate(classes)
             for f in files[name]]
    return classes, items


def read_label_file(path: str) -> dict[str, str]:
    """``{image file name: class}`` of a label file: lines ``<file> <class>``
    (whitespace or comma separated; further fields ignored, so Kaggle's
    ``LOC_val_solution.csv`` -- ``ImageId,PredictionString`` -- works). A file
    name may omit its extension. Raises ``ValueError`` naming the file."""
    labels = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            fields = line.replace(",", " ").split()
            if not fields or fields[0] == "ImageId":
                continue
            if len(fields) < 2:
                raise ValueError(
                    f"{path}:{number}: {line.strip()!r} is not '<image file> <class>' (the "
                    "devkit's ILSVRC2012_validation_ground_truth.txt holds ids in the "
                    "devkit's order, not synsets: give a '<file> <synset>' list, e.g. "
                    "LOC_val_solution.csv)")
            labels[fields[0]] = fields[1]
    if not labels:
        raise ValueError(f"label file {path} holds no labels")
    return labels


def scan_flat_folder(root: str, label_file: str, classes: Sequence[str] | None = None
                     ) -> tuple[list[str], list[tuple[str, int]]]:
    """``(classes, items)`` of one folder of images labelled by ``label_file``.

    ``classes``: the class list the labels index (e.g. the training records'
    synsets); default the sorted classes of the label file. Raises
    ``FileNotFoundError`` / ``LabelSpaceError`` naming an image without a
    label or a label outside ``classes``.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist (--validation_dir)")
    labels = read_label_file(label_file)
    names = _image_files(root)
    if not names:
        raise FileNotFoundError(f"no image files in {root!r} (--validation_dir)")
    found = {}
    for name in names:
        label = labels.get(name, labels.get(os.path.splitext(name)[0]))
        if label is None:
            raise LabelSpaceError(f"{os.path.join(root, name)} has no label in {label_file} "
                                  "(--validation_labels)")
        found[name] = label
    classes = sorted(set(labels.values())) if classes is None else list(classes)
    index = {c: i for i, c in enumerate(classes)}
    unknown = sorted(set(found.values()) - set(index))
    if unknown:
        raise LabelSpaceError(f"{label_file} names classes that are not in the class list "
                              f"({len(classes)} classes): {unknown[:10]}")
    return classes, [(os.path.join(root, n), index[found[n]]) for n in names]


def check_expected_classes(classes: Sequence[str], expected, source: str) -> None:
    """Raises ``LabelSpaceError`` naming the difference when ``classes`` are not
    ``expected`` (a list, or :data:`IMAGENET`: 1,000 distinct ``n########``);
    None checks nothing."""
    if expected is None:
        return
    if expected == IMAGENET:
        bad = [c for c in classes if not _SYNSET.match(str(c))]
        if bad or len(set(classes)) != IMAGENET_NUM_CLASSES:
            raise LabelSpaceError(
                f"{source} has {len(set(classes))} classes, ImageNet has "
                f"{IMAGENET_NUM_CLASSES} synsets named n########"
                + (f"; not synsets: {bad[:10]}" if bad else "")
                + " (--expected_classes)")
        return
    missing = sorted(set(expected) - set(classes))
    extra = sorted(set(classes) - set(expected))
    if missing or extra or list(classes) != list(expected):
        raise LabelSpaceError(
            f"{source}'s classes are not the expected list: missing {missing[:10]}, "
            f"unexpected {extra[:10]}" + ("" if missing or extra else ", other order")
            + " (--expected_classes)")


def read_expected_classes(spec: str | None):
    """The ``--expected_classes`` value: None, :data:`IMAGENET`, or the class
    names of a file (one a line)."""
    if not spec or spec == IMAGENET:
        return spec or None
    with open(spec, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def classes_from_records(records_dir: str) -> list[str]:
    """The class names (``synsets``) of the ``manifest.json`` of converted records."""
    path = os.path.join(records_dir, "manifest.json")
    try:
        with open(path, encoding="utf-8") as f:
            classes = json.load(f)["synsets"]
    except (OSError, ValueError, KeyError) as e:
        raise FileNotFoundError(f"cannot read the class list of {path} (--classes_from): "
                                f"{e}") from e
    return list(classes)
