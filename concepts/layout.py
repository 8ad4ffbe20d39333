"""Finding the parts of a data folder that follows the toolkit's convention, and naming classes.

::

    data/
      classes/<class>/...     example images of each model class
      classes.txt             optional: class names, one per line, in output-index order
      concepts/<concept>/...  one folder per concept
      random/<set>/...        counterexample sets, or random/ holding one pool of images
      masks/...               optional region masks mirroring the image paths (radiomics)

The mapping from class names to model outputs never falls back to a silent guess: it comes
from an explicit argument, ``classes.txt``, integer folder names, or (with a warning) the sorted
folder order that ``keras.utils.image_dataset_from_directory`` uses.
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

from .errors import ConceptFolderError, UnknownClassError
from .image_files import list_image_files


@dataclass
class DataLayout:
    """Where classes, concepts, random sets and masks live under one data folder."""

    root: Path | None
    class_dirs: dict[str, Path] = field(default_factory=dict)
    concept_dirs: dict[str, Path] = field(default_factory=dict)
    random_dir: Path | None = None
    masks_dir: Path | None = None
    classes_txt: Path | None = None

    @classmethod
    def from_root(cls, root: str | Path) -> "DataLayout":
        """Read the layout of a data folder.

        Examples
        --------
        >>> layout = DataLayout.from_root("data")
        >>> layout.class_dirs
        {'other': PosixPath('data/classes/other'), 'striped': PosixPath('data/classes/striped')}
        >>> sorted(layout.concept_dirs), layout.classes_txt
        (['horizontal', 'vertical'], PosixPath('data/classes.txt'))
        >>> layout.random_dir, layout.masks_dir
        (PosixPath('data/random'), PosixPath('data/masks'))
        """
        root = Path(root)
        if not root.is_dir():
            raise ConceptFolderError(f"Data folder {str(root)!r} does not exist or is not a folder.")
        layout = cls(root=root)
        layout.class_dirs = _subfolders(root / "classes")
        layout.concept_dirs = _subfolders(root / "concepts")
        layout.random_dir = root / "random" if (root / "random").is_dir() else None
        layout.masks_dir = root / "masks" if (root / "masks").is_dir() else None
        for candidate in (root / "classes.txt", root / "classes" / "classes.txt"):
            if candidate.is_file():
                layout.classes_txt = candidate
                break
        return layout

    @classmethod
    def beside_concept(cls, concept_dir: str | Path) -> "DataLayout":
        """The layout of the data folder that holds ``concept_dir`` (``<root>/concepts/<name>``).

        Examples
        --------
        >>> DataLayout.beside_concept("data/concepts/horizontal").root
        PosixPath('data')
        >>> DataLayout.beside_concept("elsewhere/horizontal").root is None
        True
        """
        concept_dir = Path(concept_dir)
        if concept_dir.parent.name == "concepts":
            return cls.from_root(concept_dir.parent.parent)
        return cls(root=None)

    @classmethod
    def beside_images(cls, images: Iterable[str | Path]) -> "DataLayout":
        """The layout of the data folder that holds measured images (``<root>/classes/<class>/...``).

        A measure computed on ``data/classes`` locates ``data`` (its classes, ``classes.txt`` and
        random pool) the way a concept folder does: the nearest ancestor of the first image that is
        named ``classes`` (or ``concepts``) gives the data folder above it.

        Examples
        --------
        >>> DataLayout.beside_images(["/nonexistent/x.png"]).root is None
        True
        """
        for image in images:
            for parent in Path(image).parents:
                if parent.name in ("classes", "concepts") and parent.is_dir():
                    return cls.from_root(parent.parent)
            break
        return cls(root=None)


def _subfolders(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_dir() and not p.name.startswith(".")}


def read_class_names(path: str | Path) -> list[str]:
    """Class names from a ``classes.txt`` (one per line, in output-index order; blank lines ignored).

    The file is read as UTF-8, with or without a byte-order mark (as Notepad or Excel save "UTF-8
    with BOM"); spaces and Windows line ends around each name are ignored, and lines starting
    with ``#`` are comments.

    Examples
    --------
    >>> read_class_names("data/classes.txt")
    ['striped', 'other']
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        byte = exc.object[exc.start:exc.start + 1]
        raise ConceptFolderError(
            f"{str(path)!r} is not UTF-8 text (undecodable byte {byte!r} at offset {exc.start}). Save it "
            "as UTF-8 plain text, one class name per line in the model's output order; UTF-16 "
            "('Unicode' in Notepad) and legacy code pages are not read.") from None
    numbered = [(number, line.strip().strip("\ufeff").strip())
                for number, line in enumerate(text.splitlines(), start=1)]
    numbered = [(number, n) for number, n in numbered if n and not n.startswith("#")]
    names = [n for _, n in numbered]
    if not names:
        raise ConceptFolderError(
            f"{str(path)!r} names no class. Write the class names one per line, in the model's output "
            "order (the first line is output 0), or delete the file to map class folders another way.")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        lines = {n: [number for number, name in numbered if name == n] for n in repeated}
        shown = "; ".join(f"{n!r} on lines {', '.join(map(str, lines[n]))}" for n in repeated)
        raise ConceptFolderError(f"{str(path)!r} names a class more than once: {shown}. Each line must be "
                                 "a distinct class name, in the model's output order; remove the repeats.")
    return names


_CLASS_NAMES_HOW = ("Give class_names as a list of class names in output order (['benign', 'malignant']) "
                    "or as a dict {name: output index} with a distinct integer index per class "
                    "({'benign': 0, 'malignant': 1}).")


def _is_integer(value: object) -> bool:
    """True for Python and numpy integers, but not for booleans."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds (messages show ``1.5``, not ``np.float64(1.5)``)."""
    return value.item() if isinstance(value, np.generic) else value


def _class_names_map(class_names: object) -> dict[str, int]:
    """``class_names=`` (a list in output order or a ``{name: index}`` dict) checked, as a dict.

    Names must be distinct, non-empty text (integers are taken as their text, for integer class
    folders); indices must be integers (numpy integers included). Anything else is an error that
    names the offending entries.

    Examples
    --------
    >>> _class_names_map(["benign", "malignant"])
    {'benign': 0, 'malignant': 1}
    >>> _class_names_map({"malignant": np.int64(0)})
    {'malignant': 0}
    """
    if isinstance(class_names, (str, bytes, os.PathLike)):
        raise UnknownClassError(
            f"class_names={class_names!r} is a single {type(class_names).__name__}, not a list of class "
            f"names. {_CLASS_NAMES_HOW} To read the names from a file, put them in classes.txt in the data "
            "folder (one per line).")
    if isinstance(class_names, Set):
        raise UnknownClassError(
            f"class_names={class_names!r} is a set, which has no order, so it cannot say which class is "
            f"which output. {_CLASS_NAMES_HOW}")
    if isinstance(class_names, Mapping):
        items = list(class_names.items())
        given_as = "dict"
    else:
        try:
            items = [(name, i) for i, name in enumerate(class_names)]
        except TypeError:
            raise UnknownClassError(
                f"class_names={class_names!r} ({type(class_names).__name__}) is neither a list nor a "
                f"dict. {_CLASS_NAMES_HOW}") from None
        given_as = "list"
    if not items:
        raise UnknownClassError(f"class_names is empty. {_CLASS_NAMES_HOW} Or leave class_names out to use "
                                "classes.txt or integer folder names.")

    bad_names = [name for name, _ in items
                 if not (_is_integer(name) or (isinstance(name, str) and name.strip()))]
    if bad_names:
        shown = ", ".join(repr(_plain(name)) for name in bad_names)
        raise UnknownClassError(
            f"class_names holds entries that are not class names: {shown}. Each class name must be "
            f"non-empty text, as the class folder is named (classes/<name>/). {_CLASS_NAMES_HOW}")
    padded = [name for name, _ in items if isinstance(name, str) and name != name.strip()]
    if padded:
        raise UnknownClassError(
            f"class_names has names with spaces around them: {', '.join(map(repr, padded))}. Remove the "
            f"spaces ({', '.join(repr(n.strip()) for n in padded)}), as a classes.txt line would be read.")
    names = [str(int(name)) if _is_integer(name) else str(name) for name, _ in items]
    repeated = [n for n in dict.fromkeys(names) if names.count(n) > 1]
    if repeated:
        if given_as == "list":
            shown = "; ".join(
                f"{n!r} at positions {', '.join(str(i) for i, m in enumerate(names) if m == n)}"
                for n in repeated)
            detail = (f"class_names lists a class more than once: {shown}. A list gives the class of each "
                      "output in order (position 0 is output 0), so each name must appear once; remove the "
                      "repeats")
        else:
            shown = "; ".join(f"{n!r} as {' and '.join(repr(k) for k, _ in items if str(k) == n)}"
                              for n in repeated)
            detail = f"class_names has keys that are the same class name when read as text: {shown}; keep one"
        raise UnknownClassError(f"{detail}. {_CLASS_NAMES_HOW}")

    bad_indices = {name: _plain(index) for name, (_, index) in zip(names, items) if not _is_integer(index)}
    if bad_indices:
        raise UnknownClassError(
            f"class_names gives output indices that are not integers: {bad_indices}. Each class needs the "
            "integer index of its model output (0 is the first output); a float such as 1.9 or a string "
            f"such as '1' is not taken as an index. {_CLASS_NAMES_HOW}")
    return {name: int(index) for name, (_, index) in zip(names, items)}


def _one_unit_error(mapping: Mapping[str, int], source: str) -> UnknownClassError:
    """The error for several classes mapped onto an output with a single unit (a binary sigmoid head)."""
    ordered = list(mapping)
    at_one = [name for name, index in mapping.items() if index == 1]
    scored = at_one[0] if at_one else ordered[-1]
    naming = (f"Name only that class: class_names={{{scored!r}: 0}}, or a classes.txt holding the single "
              f"line {scored!r}; when the data folder also has other class folders, score it alone with "
              f"classes=[{scored!r}] (command line: --classes {scored}).")
    if len(mapping) == 2:
        other = next(name for name in ordered if name != scored)
        return UnknownClassError(
            f"The explained output has one unit, but {source} maps 2 classes onto it: {dict(mapping)}. A "
            "one-unit output (a sigmoid binary classifier) scores one class: the toolkit explains its "
            "logit, the evidence for the class the unit stands for, usually the class labelled 1 in "
            f"training ({scored!r} if {source} lists the classes in label order). {naming} The other "
            f"class, {other!r}, needs no score of its own: its logit is minus this one, so its concept "
            f"sensitivities are the same with the opposite sign (a concept that raises the {scored!r} logit "
            f"lowers {other!r}); scoring it separately adds nothing.")
    return UnknownClassError(
        f"The explained output has one unit, but {source} maps {len(mapping)} classes onto it: "
        f"{dict(mapping)}. A one-unit output (a sigmoid binary classifier) scores one class, its logit, so "
        f"it cannot tell {len(mapping)} classes apart: check that this is the model (and output=) meant for "
        f"these classes. If it is a binary classifier, {naming[0].lower()}{naming[1:]}")


def _check_class_map(mapping: Mapping[str, int], n_outputs: int, source: str) -> None:
    """Refuse a class map that does not give each class its own output of the model."""
    if n_outputs == 1 and len(mapping) > 1:
        raise _one_unit_error(mapping, source)
    by_index: dict[int, list[str]] = {}
    for name, index in mapping.items():
        by_index.setdefault(index, []).append(name)
    shared = {index: names for index, names in by_index.items() if len(names) > 1}
    if shared:
        shown = "; ".join(f"{' and '.join(map(repr, names))} on output {index}"
                          for index, names in shared.items())
        raise UnknownClassError(
            f"Class mapping from {source} puts several classes on one model output: {shown}. Each output "
            "is the score of one class, so classes sharing it would get identical results. Give each class "
            f"its own output index (0..{n_outputs - 1}), or leave out the class that has no output of its "
            "own.")
    bad = {name: index for name, index in mapping.items() if not 0 <= index < n_outputs}
    if bad:
        negative = (" Negative indices are not counted from the end; write the output's own index."
                    if any(index < 0 for index in bad.values()) else "")
        raise UnknownClassError(
            f"Class mapping from {source} points outside the model's {n_outputs} outputs: {bad}. "
            f"Valid output indices are 0..{n_outputs - 1}.{negative}")


def class_index_map(n_outputs: int, *, class_names: Sequence[str] | Mapping[str, int] | None = None,
                    classes_txt: Path | None = None, folder_names: Sequence[str] = ()) -> dict[str, int]:
    """Map class names to model output indices.

    Precedence: ``class_names`` (a list in index order or a ``{name: index}`` dict), then
    ``classes.txt``, then folder names that are integers, then (with a warning) the sorted folder
    names when their number equals the number of outputs. Every class gets its own output: repeated
    names, shared or non-integer indices, indices outside ``0..n_outputs - 1`` and several classes
    on a one-unit (binary sigmoid) output are errors that say how to fix them.

    Examples
    --------
    >>> class_index_map(2, class_names=["benign", "malignant"])
    {'benign': 0, 'malignant': 1}
    >>> class_index_map(1, class_names={"malignant": 0})
    {'malignant': 0}
    """
    if class_names is not None:
        mapping = _class_names_map(class_names)
        source = "class_names"
    elif classes_txt is not None:
        mapping = {n: i for i, n in enumerate(read_class_names(classes_txt))}
        source = repr(str(classes_txt))
    elif folder_names and all(str(n).isdigit() for n in folder_names):
        mapping = {str(n): int(n) for n in folder_names}
        source = "integer folder names"
    elif folder_names and len(folder_names) == n_outputs:
        mapping = {n: i for i, n in enumerate(sorted(folder_names))}
        warnings.warn(
            f"No classes.txt or class_names given: mapping class folders to outputs in sorted order "
            f"{mapping} (the order keras.utils.image_dataset_from_directory uses). Add a classes.txt "
            "(one class name per line, in output order) to make this explicit.", UserWarning, stacklevel=3)
        source = "sorted folder names"
    else:
        mapping = {str(i): i for i in range(n_outputs)}
        source = "output indices"
    _check_class_map(mapping, n_outputs, source)
    return mapping


def resolve_class(name: str | int, mapping: Mapping[str, int], n_outputs: int) -> tuple[str, int]:
    """Turn a class name or output index into ``(name, index)``; unknown classes are an error.

    Examples
    --------
    >>> resolve_class("malignant", {"benign": 0, "malignant": 1}, 2)
    ('malignant', 1)
    """
    if _is_integer(name):
        name = int(name)
        if not 0 <= name < n_outputs:
            raise UnknownClassError(f"Class index {name} is outside the model's outputs 0..{n_outputs - 1}.")
        inverse = {i: n for n, i in mapping.items()}
        return inverse.get(name, str(name)), name
    key = str(name)
    if key in mapping:
        return key, mapping[key]
    known = f"Unknown class {key!r}. Known classes: {sorted(mapping, key=mapping.get)}."
    if n_outputs == 1:
        named = [n for n in mapping if n != "0"]
        scored = named[0] if named else "<the class the unit stands for>"
        raise UnknownClassError(
            f"{known} The explained output has one unit (a sigmoid binary classifier), which scores one "
            f"class: its logit. Name that class with class_names={{{scored!r}: 0}} or a one-line "
            f"classes.txt, and score it alone with classes=[{scored!r}] (command line: --classes {scored}); "
            "the other class needs no score of its own, as its concept sensitivities are the same with the "
            "opposite sign (a concept that raises the logit lowers the other class).")
    raise UnknownClassError(
        f"{known} Class names come from class_names=, a classes.txt in the data folder, or integer folder "
        "names; add the class there or pass its output index.")


def has_images(folder: Path) -> bool:
    """True when ``folder`` directly holds at least one image file.

    Examples
    --------
    >>> has_images(Path("data/concepts/horizontal")), has_images(Path("data/concepts"))
    (True, False)
    """
    return folder.is_dir() and bool(list_image_files(folder))
