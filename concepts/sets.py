"""Image sets: files on disk, read lazily and turned into model-ready float32 batches.

An :class:`ImageSet` is an ordered list of image files plus how to turn each one into a model
input (the model's input shape and a preprocessing function). It follows the
:class:`probes.sources.ArraySource` protocol, so the engine can read it batch by batch, and its
:attr:`ImageSet.content_key` (file bytes + preprocessing + input shape) keys the activation cache.

:func:`random_sets` builds the random counterexample sets of TCAV from a ``random/`` folder that
holds either one subfolder per set or one pool of images.

Sets may hold volumes (NIfTI files, DICOM series folders) for 3D models with input ``(D, H, W, C)``;
they are preprocessed by :func:`concepts.volumes.volume_preprocess` unless ``preprocess`` is given.

Why one module of about 620 lines (some 200 of them docstrings with runnable examples): the set, the
per-process memory of its content key and the random-set draw share one content-identity rule, which
must not drift apart; preprocessing is in :mod:`concepts.preprocess` and decoding in
:mod:`concepts.image_files`.

Examples
--------
>>> horizontal = ImageSet.from_folder("data/concepts/horizontal", input_shape=(16, 16, 1))
>>> next(horizontal.batches(8)).shape
(8, 16, 16, 1)
"""
from __future__ import annotations

import hashlib
import os
import stat
import time
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np

from probes import identity as _identity
from probes.fork_safe import ForkSafeLock
from probes.identity import RACY_SECONDS
from probes.identity import file_sha256 as _file_sha256

from .errors import ConceptFolderError, ImageReadError, InputShapeError, InsufficientDataError
from .image_files import IMAGE_EXTENSIONS, is_image_file, list_image_files, read_image
# Preprocessing lives in concepts.preprocess; these names stay importable from concepts.sets.
from .preprocess import (DEFAULT_PREPROCESS_ID, InputShape, Preprocess, _check_input_shape,  # noqa: F401
                         default_preprocess, preprocess_identity)
from .volumes import DEFAULT_VOLUME_PREPROCESS_ID, Volume, check_same_geometry, series_sha256, volume_preprocess


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes, memoised per process until the file changes on disk.

    See :func:`probes.identity.file_sha256` (the one implementation): the memo is keyed on
    path, size, mtime_ns, inode and ctime, and a freshly modified file is always re-hashed.

    Examples
    --------
    >>> _ = open("note.txt", "wb").write(b"test")
    >>> file_sha256("note.txt")
    '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08'
    """
    if os.path.isdir(path):  # a DICOM series folder: its .dcm files' names and bytes
        return series_sha256(path)
    return _file_sha256(path)


# --------------------------------------------------------------------------------------------------
# ImageSet
# --------------------------------------------------------------------------------------------------

_PATH = type(Path())  # what Path(...) builds on this platform

def _describe_folder_problem(folder: Path, recursive: bool) -> str | None:
    """Why ``folder`` cannot be an image set (None when it holds images), with the fix."""
    if not folder.exists():
        hint = ""
        parent = folder.parent
        if parent.is_dir():
            siblings = sorted(p.name for p in parent.iterdir() if not p.name.startswith("."))
            if siblings:
                shown = ", ".join(siblings[:10]) + (", ..." if len(siblings) > 10 else "")
                hint = f" Its parent {str(parent)!r} contains: {shown}."
        return (f"Image folder {str(folder)!r} does not exist.{hint} "
                "Create it with the images or fix the path.")
    if not folder.is_dir():
        return (f"{str(folder)!r} is a file, not a folder. Pass the folder that holds the images "
                "(one folder per concept or class).")
    if list_image_files(folder, recursive=recursive):
        return None
    entries = [p for p in (folder.rglob("*") if recursive else folder.iterdir())]
    files = sorted(p.name for p in entries if p.is_file())
    dirs = sorted(p.name for p in entries if p.is_dir())
    extensions = ", ".join(IMAGE_EXTENSIONS)
    if not files and not dirs:
        return f"Image folder {str(folder)!r} is empty. Put the images ({extensions}) in it."
    parts = []
    if files:
        shown = ", ".join(files[:5]) + (", ..." if len(files) > 5 else "")
        parts.append(f"contains {len(files)} file{'s' if len(files) != 1 else ''} but none is an image "
                     f"({extensions}): {shown}")
    if dirs and not recursive:
        shown = ", ".join(dirs[:5]) + (", ..." if len(dirs) > 5 else "")
        parts.append(f"has {len(dirs)} subfolder{'s' if len(dirs) != 1 else ''} ({shown}); images in "
                     "subfolders are used only with recursive=True")
    return (f"Image folder {str(folder)!r} " + "; ".join(parts) + ". "
            f"Put image files ({extensions}) directly in the folder"
            + (" or pass recursive=True (command line: --recursive)." if dirs and not recursive
               else ", or convert the files."))


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _warn_of_nested_images(folder: Path, used: Sequence[Path]) -> None:
    """Images in sub-folders (one per patient, say) are left out without recursive=True: say so.

    Only sub-folders that are not items themselves are listed: a DICOM series folder is one image of
    the set, and its slices are never walked through again."""
    items = set(used)
    try:
        with os.scandir(folder) as entries:
            subfolders = sorted(folder / e.name for e in entries
                                if e.is_dir() and not e.name.startswith(".") and folder / e.name not in items)
    except OSError:
        return
    nested = [f for sub in subfolders for f in list_image_files(sub, recursive=True)]
    n_used = len(used)
    if nested:
        shown = ", ".join(str(f.relative_to(folder)) for f in nested[:3]) + (", ..." if len(nested) > 3 else "")
        warnings.warn(
            f"{len(nested)} image file(s) in sub-folders of {str(folder)!r} are not used ({shown}); "
            f"{n_used} image(s) directly in it are. Pass recursive=True (command line: --recursive) to use "
            "the images of sub-folders too.", UserWarning, stacklevel=3)


class ImageSet:
    """An ordered set of image files, read lazily into float32 model inputs.

    Implements :class:`probes.sources.ArraySource`: ``len()``, :meth:`batches` and
    :attr:`content_key`. Reading needs the model's input shape: pass ``input_shape`` or call
    :meth:`bind` (the toolkit binds sets to the model for you).

    Parameters
    ----------
    files : Sequence[str | Path]
        Image paths, in the order batches are produced.
    name : str | None, default=None
        A label for reports; default the files' common folder name.
    input_shape : tuple | None, default=None
        The model's input shape without the batch dimension, ``(H, W, C)`` or
        ``(H, W)``; ``H``/``W`` may be ``None`` for models that accept any size.
    preprocess : Preprocess | None, default=None
        ``preprocess(image, input_shape) -> array`` applied to each image as read
        (native dtype: uint8, uint16, ...). It **replaces** :func:`default_preprocess`
        entirely, so scale and resize yourself or call the default first, e.g. for a
        ``keras.applications`` model that expects 0..255 input::

            from keras.applications.resnet50 import preprocess_input

            def resnet_preprocess(image, input_shape):
                x = default_preprocess(image, input_shape)   # [0, 1], channels, size
                return preprocess_input(x * 255.0)           # caffe-style BGR, mean-centred

        Define it in a module (not a lambda in a notebook) so its source identifies it in
        the activation cache (see :func:`preprocess_identity`).

    Examples
    --------
    >>> s = ImageSet(["a.png", "b.png"], name="striped", input_shape=(64, 64, 3))
    >>> len(s), s.name, s.input_shape
    (2, 'striped', (64, 64, 3))
    """

    def __init__(self, files: Sequence[str | Path], *, name: str | None = None,
                 input_shape: tuple | None = None, preprocess: Preprocess | None = None) -> None:
        if isinstance(files, (str, Path)):
            raise TypeError("ImageSet(files) takes a list of files; "
                            "use ImageSet.from_folder(folder) for a folder.")
        # Paths are immutable: ones given (e.g. a folder's listing) are kept, not rebuilt one by one.
        self.files: list[Path] = [f if type(f) is _PATH else Path(f) for f in files]
        if name is None:
            parents = {f.parent.name for f in self.files}
            name = parents.pop() if len(parents) == 1 and "" not in parents else "images"
        self.name: str = name
        self.input_shape: tuple | None = None if input_shape is None else _check_input_shape(input_shape)
        if preprocess is not None and not callable(preprocess):
            raise TypeError(f"preprocess must be a callable(image, input_shape), got {preprocess!r}.")
        self.preprocess: Preprocess | None = preprocess

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_folder(cls, folder: str | Path, *, name: str | None = None, input_shape: tuple | None = None,
                    preprocess: Preprocess | None = None, recursive: bool = False) -> "ImageSet":
        """All image files of ``folder`` (sorted by path), named after the folder.

        Raises
        ------
        ConceptFolderError
            The folder is missing, not a folder, or holds no image file; the
            message says what was found and how to fix it.

        Examples
        --------
        >>> ImageSet.from_folder("data/concepts/horizontal")
        ImageSet('horizontal', n=12, input_shape=None, preprocess=default_preprocess/v1)
        """
        folder = Path(folder)
        problem = _describe_folder_problem(folder, recursive)
        if problem:
            raise ConceptFolderError(problem)
        files = list_image_files(folder, recursive=recursive)
        if not recursive:
            _warn_of_nested_images(folder, files)
        return cls(files, name=name or folder.name, input_shape=input_shape, preprocess=preprocess)

    def _copy(self, files: Sequence[Path] | None = None, name: str | None = None,
              input_shape: tuple | None = None, batch_axis: bool = True) -> "ImageSet":
        new = type(self).__new__(type(self))
        new.files = list(self.files if files is None else files)
        new.name = self.name if name is None else name
        new.input_shape = self.input_shape if input_shape is None else _check_input_shape(input_shape,
                                                                                          batch_axis=batch_axis)
        new.preprocess = self.preprocess
        return new

    def bind(self, input_shape: tuple, *, batch_axis: bool = True) -> "ImageSet":
        """A copy bound to a model's input shape ``(H, W, C)`` or ``(H, W)``, or ``(D, H, W, C)`` for a 3D
        model: ``model.input_shape[1:]``.

        A 4-entry shape with a leading ``None`` is read as Keras's batched 2D shape (``model.input_shape``)
        unless ``batch_axis=False``: then it is a 3D shape of flexible depth, such as a flexible 3D model's
        ``(None, None, None, 1)`` (:func:`concepts.score` binds the model's own shape that way).

        Examples
        --------
        >>> ImageSet(["a.png"]).bind((224, 224, 3)).input_shape
        (224, 224, 3)
        >>> ImageSet(["a.nii.gz"]).bind((None, None, None, 1), batch_axis=False).input_shape
        (None, None, None, 1)
        """
        return self._copy(input_shape=input_shape, batch_axis=batch_axis)

    def subset(self, indices: Iterable[int], name: str | None = None) -> "ImageSet":
        """The files at ``indices`` (in that order), with the same binding and preprocessing.

        Examples
        --------
        >>> ImageSet(["a.png", "b.png", "c.png"]).subset([2, 0]).files
        [PosixPath('c.png'), PosixPath('a.png')]
        """
        return self._copy(files=[self.files[int(i)] for i in indices],
                          name=name if name is not None else f"{self.name}_subset")

    @classmethod
    def concat(cls, sets: Sequence["ImageSet"], name: str) -> "ImageSet":
        """One set holding the files of ``sets`` in order (e.g. the union of other concepts).

        All sets must share input shape and preprocessing, which the result keeps.

        Raises
        ------
        InputShapeError
            The sets are bound to different shapes or preprocess differently.
        InsufficientDataError
            ``sets`` is empty.

        Examples
        --------
        >>> both = ImageSet.concat([ImageSet(["a.png"]), ImageSet(["b.png"])], name="a+b")
        >>> len(both)
        2
        """
        sets = list(sets)
        if not sets:
            raise InsufficientDataError(f"ImageSet.concat({name!r}) needs at least one set, got none.")
        first = sets[0]
        for other in sets[1:]:
            if other.input_shape != first.input_shape:
                raise InputShapeError(
                    f"Cannot concatenate {first.name!r} (input_shape {first.input_shape}) and "
                    f"{other.name!r} (input_shape {other.input_shape}); bind them to the same model first.")
            if preprocess_identity(other.preprocess) != preprocess_identity(first.preprocess):
                raise InputShapeError(
                    f"Cannot concatenate {first.name!r} and {other.name!r}: they use different "
                    "preprocessing, so their arrays would not be comparable. Use the same preprocess=.")
        return first._copy(files=[f for s in sets for f in s.files], name=name)

    # -- ArraySource ------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return (f"ImageSet({self.name!r}, n={len(self)}, input_shape={self.input_shape}, "
                f"preprocess={self._preprocess_label()})")

    def _preprocess_label(self) -> str:
        if self.preprocess is None or self.preprocess is default_preprocess:
            return DEFAULT_PREPROCESS_ID
        return getattr(self.preprocess, "__qualname__", None) or type(self.preprocess).__name__

    def _require_shape(self, what: str) -> tuple:
        if self.input_shape is None:
            raise InputShapeError(
                f"ImageSet {self.name!r} is not bound to a model input shape, so {what} is undefined. "
                "Pass input_shape=model.input_shape[1:] or call .bind(model.input_shape[1:]).")
        return self.input_shape

    def _load(self, path: Path, shape: tuple, geometry: dict | None = None) -> np.ndarray:
        """Read and preprocess one file, checking the result against the model's input shape.

        ``geometry`` (one dict per pass over the set) remembers the first volume's geometry, so that
        a volume whose grid differs from it is named (default preprocessing only).
        """
        image = read_image(path)
        func = self.preprocess or self._default_for(image, path, shape)
        if geometry is not None and isinstance(image, Volume) and self.preprocess is None:
            if "first" in geometry:
                check_same_geometry(geometry["first"], image, self.name)
            else:
                geometry["first"] = (path, image.geometry)
        try:
            result = func(image, shape)
        except InputShapeError as exc:
            # The default preprocessing does not know the file; name it here.
            raise InputShapeError(
                f"Image {str(path)!r} (shape {image.shape}, {image.dtype}): {exc}") from None
        try:
            out = np.asarray(result, dtype=np.float32)
        except (TypeError, ValueError):
            out = None
        if out is None or result is None or out.dtype != np.float32 or out.ndim == 0:
            # A function that returns nothing or text is the function's fault, not the file's.
            raise InputShapeError(
                f"Preprocessing {self._preprocess_label()} returned {type(result).__name__} "
                f"{_short_repr(result)} for image {str(path)!r}; it must return a numeric array of the model's "
                f"input shape {shape} (check that the function ends with return ...).")
        if not np.isfinite(out).all():
            raise ImageReadError(
                f"Image {str(path)!r} ({image.dtype}) gives NaN or infinite model inputs after preprocessing "
                f"{self._preprocess_label()}; repair the file (e.g. replace NaN pixels) or remove it.")
        if out.ndim != len(shape) or any(want is not None and got != want
                                         for got, want in zip(out.shape, shape)):
            raise InputShapeError(
                f"Preprocessing {self._preprocess_label()} turned image {str(path)!r} (shape {image.shape}, "
                f"{image.dtype}) into shape {out.shape}, but the model expects {shape}. "
                "Pass preprocess=... returning arrays of the model's input shape "
                "(a custom preprocess replaces the default entirely, resizing included).")
        return out

    def batches(self, batch_size: int) -> Iterator[np.ndarray]:
        """Yield float32 batches of shape ``(b, *input_shape)``, reading only one batch of files at a time.

        Raises
        ------
        InputShapeError
            The set is not bound, or a preprocessed image has the wrong shape
            (the message names the file).
        ImageReadError
            A file cannot be read (the message names it).

        Examples
        --------
        >>> horizontal = ImageSet.from_folder("data/concepts/horizontal", input_shape=(16, 16, 1))
        >>> [batch.shape for batch in horizontal.batches(8)]
        [(8, 16, 16, 1), (4, 16, 16, 1)]
        """
        shape = self._require_shape("reading its images")
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}.")
        # Checks above run at call time; the generator below reads files only when iterated.
        return self._iter_batches(int(batch_size), shape)

    @staticmethod
    def _default_for(image: np.ndarray, path: Path, shape: tuple) -> Preprocess:
        """The default preprocessing for this file: 2D images and volumes each need their own model rank."""
        is_volume = isinstance(image, Volume)
        if len(shape) == 4 and not is_volume:
            raise InputShapeError(
                f"Image {str(path)!r} is a 2D image (shape {image.shape}), but the model takes volumes of "
                f"shape {shape}. Put NIfTI files (.nii, .nii.gz) or DICOM series folders in this set, or "
                "remove the 2D image.")
        if is_volume and len(shape) != 4:
            flexible = (" If the model is 3D with a flexible input, bind its shape with "
                        ".bind(model.input_shape[1:], batch_axis=False): otherwise (None, None, None, C) reads as "
                        "a batched 2D shape."
                        if shape[:2] == (None, None) else "")
            raise InputShapeError(
                f"{str(path)!r} is a volume (shape {image.shape}), but the model takes 2D images of shape "
                f"{shape}. Use a 3D model (input (D, H, W, C)), or slice the volume into 2D images.{flexible}")
        return volume_preprocess if is_volume else default_preprocess

    def _iter_batches(self, batch_size: int, shape: tuple) -> Iterator[np.ndarray]:
        geometry: dict = {}
        first: dict[tuple, Path] = {}      # each size seen, with the first file that has it
        for start in range(0, len(self.files), batch_size):
            paths = self.files[start:start + batch_size]
            arrays = [self._load(path, shape, geometry) for path in paths]
            for path, array in zip(paths, arrays):
                first.setdefault(array.shape, path)
            if len(first) > 1:
                # A model of flexible size takes any size, but one set is one activation array: one size.
                listing = "; ".join(f"{'x'.join(map(str, size))} (e.g. {str(path)!r})" for size, path in first.items())
                size = "(H, W, C)" if len(shape) == 3 else "(D, H, W, C)" if len(shape) == 4 else "(H, W)"
                raise InputShapeError(
                    f"The images of {self.name!r} have different sizes after preprocessing: {listing}. The model "
                    f"input {shape} has no fixed size, and one set needs one. Resize them to one size, e.g. "
                    f"preprocess=lambda image, shape: concepts.sets.default_preprocess(image, (224, 224, shape[-1])) "
                    f"for 2D images, or bind the set to a fixed {size} with ImageSet(...).bind(...).")
            yield np.stack(arrays)

    def load_all(self, batch_size: int = 64) -> np.ndarray:
        """All images as one float32 array ``(n, *input_shape)`` (for small sets; memory grows with n).

        Examples
        --------
        >>> horizontal = ImageSet.from_folder("data/concepts/horizontal", input_shape=(16, 16, 1))
        >>> horizontal.load_all().shape
        (12, 16, 16, 1)
        """
        shape = self._require_shape("loading its images")
        batches = list(self.batches(batch_size))
        if not batches:
            return np.zeros((0, *[d or 0 for d in shape]), dtype=np.float32)
        return np.concatenate(batches)

    @property
    def content_key(self) -> str:
        """SHA-256 over the input shape, the preprocessing identity and each file's content hash, in order.

        File names do not enter it (a renamed copy gives the same key); one changed byte, another
        preprocessing or another input shape give a different one. File hashes are memoised per
        process on (path, size, mtime, inode, ctime), and so is the whole key of a set of files
        (not folders) unchanged for :data:`probes.identity.RACY_SECONDS`, so repeated calls cost
        one ``stat`` per file.

        Examples
        --------
        >>> s = ImageSet.from_folder("data/concepts/horizontal", input_shape=(16, 16, 1))
        >>> s.content_key == s.subset(range(len(s))).content_key
        True
        >>> s.content_key == s.subset([1, 0]).content_key
        False
        """
        shape = self._require_shape("its content key")
        header = b"ImageSet/v1\n" + f"input_shape={shape}\n".encode() \
            + f"preprocess={preprocess_identity(self.preprocess)}\n".encode()
        if self.preprocess is None and len(shape) == 4:  # volumes: the default is volume_preprocess
            header += f"volume_preprocess={DEFAULT_VOLUME_PREPROCESS_ID}\n".encode()
        # The engine asks for the key of a set once per layer and kind: for a pool of thousands of
        # files, one stat and one lookup per file here instead of two stats, a path and a hash each.
        names = (header, tuple(os.fspath(path) for path in self.files))
        with _CONTENT_KEYS_LOCK:
            kept = _CONTENT_KEYS.get(names)
        before = _stats(names[1])
        if kept is not None and before is not None and kept[0] == before and _hashes_kept(names[1], before):
            return kept[1]
        digest = hashlib.sha256(header)
        for path in self.files:
            digest.update(file_sha256(path).encode())
            digest.update(b"\n")
        key = digest.hexdigest()
        if before is not None and _settled(before):
            with _CONTENT_KEYS_LOCK:
                _CONTENT_KEYS[names] = (before, key)
                _CONTENT_KEYS.move_to_end(names)
                while len(_CONTENT_KEYS) > CONTENT_KEYS_KEPT:
                    _CONTENT_KEYS.popitem(last=False)
        return key


#: Content keys of image sets kept per process (see :attr:`ImageSet.content_key`), least recently used dropped.
CONTENT_KEYS_KEPT = 64

# (header, file paths) -> (each file's stat when the key was computed, the key)
_CONTENT_KEYS: OrderedDict[tuple[bytes, tuple[str, ...]], tuple[tuple, str]] = OrderedDict()
_CONTENT_KEYS_LOCK = ForkSafeLock()   # a forked child gets a fresh one


def _stats(paths: Sequence[str]) -> tuple | None:
    """(size, mtime, inode, device, ctime) of every path, as file_sha256's memo keys them; None if a
    path is missing or a folder (a DICOM series: its files' stats are what count)."""
    stats = []
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:
            return None
        if stat.S_ISDIR(st.st_mode):
            return None
        stats.append((st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns))
    return tuple(stats)


def _hashes_kept(paths: Sequence[str], stats: tuple) -> bool:
    """Whether probes.identity still holds every file's hash for these stats: a set's key is a shortcut
    over the file hashes, never kept longer than they are (e.g. after probes.identity.forget_files)."""
    memo = _identity._MEMO
    return all((path, *st) in memo for path, st in zip(paths, stats))


def _settled(stats: tuple) -> bool:
    # The "racy clean" rule of probes.identity.file_sha256: only timestamps older than RACY_SECONDS
    # prove that a later same-size rewrite would change them.
    recent = (time.time() - RACY_SECONDS) * 1e9
    return all(max(st[1], st[4]) < recent for st in stats)


# --------------------------------------------------------------------------------------------------
# Random sets
# --------------------------------------------------------------------------------------------------

def _draw(n_items: int, size: int, seed: int, index: int) -> list[int]:
    """Sorted indices of a seeded draw without replacement; set ``index`` gets its own stream.

    Seeding each set with (seed, index) makes set i independent of how many sets are drawn, so
    asking for 20 random sets instead of 10 keeps the first 10 (and their cached activations).
    """
    rng = np.random.default_rng([int(seed), int(index)])
    return sorted(int(i) for i in rng.choice(n_items, size=size, replace=False))


def _file_identity(path: str | Path) -> tuple[int, int] | None:
    """The file behind a path, as (device, inode): the same for every path or link to that file, and
    costs one ``stat`` instead of resolving every component of the path (a pool may hold
    thousands of files)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def random_sets(source: str | Path | Sequence[ImageSet], n_sets: int, set_size: int | None, *, seed: int = 0,
                input_shape: tuple | None = None, preprocess: Preprocess | None = None,
                exclude: Iterable[str | Path] = ()) -> list[ImageSet]:
    """The random counterexample image sets of TCAV, reproducible from ``seed``.

    ``source`` is one of:

    * **a folder with one subfolder per set** (``random/set_00/``, ``random/set_01/``, ...): the
      first ``n_sets`` subfolders in sorted order are used, each named after its subfolder. A
      set with more than ``set_size`` images is subsampled (seeded) to ``set_size``; one with
      fewer is used whole (each CAV fit balances its sides by seeded sub-sampling).
      ``set_size=None`` uses every set whole.
    * **a folder holding one pool of images** (directly, or inside a single subfolder):
      ``n_sets`` seeded subsets of ``set_size`` images are drawn, named ``random_000``,
      ``random_001``, ... Images do not repeat within a set, but sets overlap when the pool is
      smaller than ``n_sets * set_size`` (as in the original TCAV, whose random sets are drawn
      from one large image pool); the pool needs at least ``set_size`` images.
    * **a list of ImageSets**, treated like subfolders.

    The same seed gives the same sets; set ``i`` depends only on ``seed`` and ``i``, so raising
    ``n_sets`` keeps the earlier sets unchanged. With whole subfolder sets the seed plays no role.

    Parameters
    ----------
    n_sets : int
        How many sets (the TCAV test's number of random runs).
    set_size : int | None
        Images per set, usually the concept set's size; ``None`` only for subfolder sets.
    seed : int, default=0
        Seed of the subsampling.
    input_shape, preprocess : tuple | None
        Passed to every :class:`ImageSet` (for a list of ImageSets,
        ``input_shape`` rebinds them and ``preprocess`` replaces theirs when given).
    exclude : Iterable[str | Path], default=()
        Files to leave out, e.g. the concept's own images when they share a pool.

    Raises
    ------
    ConceptFolderError
        The folder is missing, holds no image, or mixes a pool with set subfolders.
    InsufficientDataError
        Fewer sets than ``n_sets``, or a set/pool smaller than ``set_size``.

    Examples
    --------
    >>> sets = random_sets("data/random", n_sets=20, set_size=20, seed=0)
    >>> [s.name for s in sets[:2]], len(sets[0])
    (['random_000', 'random_001'], 20)
    """
    if int(n_sets) < 1:
        raise InsufficientDataError(f"n_sets must be at least 1, got {n_sets}.")
    if set_size is not None and int(set_size) < 1:
        raise InsufficientDataError(f"set_size must be at least 1 (or None for whole sets), got {set_size}.")
    excluded = {_file_identity(p) for p in exclude} - {None}

    def keep(files: Iterable[Path]) -> list[Path]:
        return [f for f in files if _file_identity(f) not in excluded] if excluded else list(files)

    def make(files: Sequence[Path], name: str, template: ImageSet | None = None) -> ImageSet:
        if template is None:
            return ImageSet(files, name=name, input_shape=input_shape, preprocess=preprocess)
        new = template._copy(files=files, name=name)
        if input_shape is not None:
            new.input_shape = _check_input_shape(input_shape)
        if preprocess is not None:
            new.preprocess = preprocess
        return new

    where: str
    if isinstance(source, (str, Path)):
        folder = Path(source)
        if not folder.is_dir():
            problem = _describe_folder_problem(folder, recursive=False)
            raise ConceptFolderError(f"Random image folder: {problem}")
        pool = list_image_files(folder)
        # A link back to the folder or above it (a symlink loop) is not a random set.
        ancestors = {folder.resolve(), *folder.resolve().parents}
        subfolders = [d for d in sorted(folder.iterdir())
                      if d.is_dir() and not d.name.startswith(".") and d.resolve() not in ancestors
                      and list_image_files(d)]
        if pool and subfolders:
            raise ConceptFolderError(
                f"Random image folder {str(folder)!r} holds both {len(pool)} images directly and "
                f"{len(subfolders)} subfolders with images ({', '.join(d.name for d in subfolders[:5])}). "
                "Use one layout: one subfolder per random set, or one pool of images directly in the folder.")
        if not pool and len(subfolders) == 1:
            pool = list_image_files(subfolders[0])
            subfolders = []
        if not pool and not subfolders:
            if not any(is_image_file(p) for p in folder.rglob("*")):
                raise ConceptFolderError(f"Random image folder: {_describe_folder_problem(folder, False)}")
            raise ConceptFolderError(
                f"Random image folder {str(folder)!r} has images only in nested subfolders. Put one "
                "random set per subfolder (random/set_00/*.png) or a pool of images directly in it.")
        where = f"subfolders of {str(folder)!r}"
        groups = [(d.name, keep(list_image_files(d)), None) for d in subfolders]
    else:
        given = list(source)
        if not all(isinstance(s, ImageSet) for s in given):
            raise TypeError("random_sets(source) takes a folder or a list of ImageSet.")
        pool, where = [], "sets given"
        groups = [(s.name, keep(s.files), s) for s in given]

    if pool:
        listed = len(pool)
        pool = keep(pool)
        if set_size is None:
            raise InsufficientDataError(
                f"Random images in {str(source)!r} form one pool, so set_size must be given "
                "(usually the concept set's size).")
        if len(pool) < set_size:
            left_out = listed - len(pool)
            note = (f" after leaving out {left_out} that are also class or concept images" if left_out else "")
            raise InsufficientDataError(
                f"The random image pool {str(source)!r} has {len(pool)} images{note}, fewer than the "
                f"set size {set_size}. Add random images or use smaller concept sets.")
        if len(pool) == set_size and n_sets > 1:
            warnings.warn(f"The random pool {str(source)!r} has exactly set_size={set_size} images, so all "
                          f"{n_sets} random sets are identical and random-vs-random tests are meaningless. "
                          "Add random images.", UserWarning, stacklevel=2)
        return [make([pool[i] for i in _draw(len(pool), set_size, seed, k)], f"random_{k:03d}")
                for k in range(n_sets)]

    if len(groups) < n_sets:
        names = ", ".join(name for name, _, _ in groups[:10]) + (", ..." if len(groups) > 10 else "")
        raise InsufficientDataError(
            f"Found {len(groups)} random sets ({where}: {names}) but {n_sets} were requested. Add "
            "subfolders, put all random images directly in the random folder to draw seeded sets from "
            f"one pool, or ask for n_random={len(groups)}.")
    result = []
    for k, (name, files, template) in enumerate(groups[:n_sets]):
        if not files:
            raise InsufficientDataError(
                f"Random set {name!r} ({where}) has no usable image left (all excluded). Add images to it.")
        # A smaller set is used whole: every CAV fit balances its two sides by seeded sub-sampling,
        # so 50 random images against a concept of 51 is a valid task, not an error.
        if set_size is not None and len(files) > set_size:
            files = [files[i] for i in _draw(len(files), set_size, seed, k)]
        result.append(make(files, name, template))
    return result
