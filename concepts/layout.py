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

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping, Sequence

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

    Examples
    --------
    >>> read_class_names("data/classes.txt")
    ['striped', 'other']
    """
    names = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        lines = {n: [i + 1 for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines())
                     if line.strip() == n] for n in repeated}
        shown = "; ".join(f"{n!r} on lines {', '.join(map(str, lines[n]))}" for n in repeated)
        raise ConceptFolderError(f"{str(path)!r} names a class more than once: {shown}. Each line must be a "
                                 "distinct class name, in the model's output order; remove the repeats.")
    return names


def class_index_map(n_outputs: int, *, class_names: Sequence[str] | Mapping[str, int] | None = None,
                    classes_txt: Path | None = None, folder_names: Sequence[str] = ()) -> dict[str, int]:
    """Map class names to model output indices.

    Precedence: ``class_names`` (a list in index order or a ``{name: index}`` dict), then
    ``classes.txt``, then folder names that are integers, then (with a warning) the sorted folder
    names when their number equals the number of outputs.

    Examples
    --------
    >>> class_index_map(2, class_names=["benign", "malignant"])
    {'benign': 0, 'malignant': 1}
    """
    if class_names is not None:
        mapping = dict(class_names) if isinstance(class_names, Mapping) else {
            str(n): i for i, n in enumerate(class_names)}
        source = "class_names"
    elif classes_txt is not None:
        mapping = {n: i for i, n in enumerate(read_class_names(classes_txt))}
        source = str(classes_txt)
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
    bad = {n: i for n, i in mapping.items() if not 0 <= int(i) < n_outputs}
    if bad:
        raise UnknownClassError(
            f"Class mapping from {source} points outside the model's {n_outputs} outputs: {bad}. "
            f"Valid output indices are 0..{n_outputs - 1}.")
    return {str(n): int(i) for n, i in mapping.items()}


def resolve_class(name: str | int, mapping: Mapping[str, int], n_outputs: int) -> tuple[str, int]:
    """Turn a class name or output index into ``(name, index)``; unknown classes are an error.

    Examples
    --------
    >>> resolve_class("malignant", {"benign": 0, "malignant": 1}, 2)
    ('malignant', 1)
    """
    if isinstance(name, (int,)) and not isinstance(name, bool):
        if not 0 <= name < n_outputs:
            raise UnknownClassError(f"Class index {name} is outside the model's outputs 0..{n_outputs - 1}.")
        inverse = {i: n for n, i in mapping.items()}
        return inverse.get(name, str(name)), name
    key = str(name)
    if key in mapping:
        return key, mapping[key]
    raise UnknownClassError(
        f"Unknown class {key!r}. Known classes: {sorted(mapping, key=mapping.get)}. Class names come from "
        "class_names=, a classes.txt in the data folder, or integer folder names; add the class there "
        "or pass its output index.")


def has_images(folder: Path) -> bool:
    """True when ``folder`` directly holds at least one image file.

    Examples
    --------
    >>> has_images(Path("data/concepts/horizontal")), has_images(Path("data/concepts"))
    (True, False)
    """
    return folder.is_dir() and bool(list_image_files(folder))
