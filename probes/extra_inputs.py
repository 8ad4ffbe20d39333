"""Values for a model's inputs other than the images (``extra_inputs=`` of the engine).

A multi-input model (e.g. an image plus a clinical vector) is fed the images by the engine and
the other inputs from :class:`_ExtraInputs`: fixed arrays broadcast to every batch, or
per-example tables keyed by image file (or by the name of an in-memory image set). Their digest
is part of the engine's cache keys.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from probes.errors import InputShapeError
from probes.keras_graph import input_name
from probes.layer_index import _shape_fits


class _ExtraInputs:
    """The model's non-image inputs: which input takes the images, and values for the others.

    A value is fixed (one array of the input's per-example shape, broadcast to every batch) or
    per example (a table keyed by image file path, or by the name of an in-memory image set).
    Tables are keyed by file rather than by set because the analysis merges random sets into one
    pool of distinct files: a file keeps its values wherever it goes.
    """

    def __init__(self, model: Any, graph: Any, extra_inputs: Mapping[str, Any] | None) -> None:
        names = [input_name(t) for t in graph.inputs]
        if extra_inputs is None:
            extra_inputs = {}
        if not isinstance(extra_inputs, Mapping):
            raise InputShapeError(
                f"extra_inputs must be a dict {{input name: values}}, got {type(extra_inputs).__name__}. "
                f"Model '{model.name}' has inputs {names}.")
        unknown = [k for k in extra_inputs if k not in names]
        if unknown:
            raise InputShapeError(
                f"extra_inputs names {unknown}, but model '{model.name}' has inputs {names}. Key "
                "extra_inputs by input name (the name given to keras.Input(..., name=...)).")
        left = [n for n in names if n not in extra_inputs]
        if len(left) != 1:
            what = ("every input is given in extra_inputs; leave the image input out of it" if not left
                    else f"the engine feeds images to one of them and needs values for the others: pass "
                         f"extra_inputs={{{', '.join(repr(n) + ': values' for n in left[1:])}}} (fixed arrays, or "
                         "per-example values keyed by image file)")
            raise InputShapeError(f"Model '{model.name}' has {len(names)} inputs {names}; {what}.")
        self.image_input: str = left[0]
        self.names: list[str] = [n for n in names if n in extra_inputs]
        self.shapes: dict[str, tuple] = {}
        self.dtypes: dict[str, str] = {}
        self.fixed: dict[str, np.ndarray] = {}
        self.tables: dict[str, tuple[dict[str, np.ndarray], dict[str, np.ndarray]]] = {}
        digest = hashlib.sha256()
        for tensor in graph.inputs:
            name = input_name(tensor)
            if name not in extra_inputs:
                continue
            shape, dtype = tuple(tensor.shape[1:]), str(getattr(tensor.dtype, "name", tensor.dtype))
            self.shapes[name], self.dtypes[name] = shape, dtype
            value = extra_inputs[name]
            digest.update(f"{name}|{dtype}|".encode())
            if isinstance(value, Mapping) or hasattr(value, "index") and hasattr(value, "to_numpy"):
                rows = self._rows(name, value, shape, dtype)
                resolved = {}
                for key, row in rows.items():
                    try:
                        resolved[str(Path(key).expanduser().resolve())] = row
                    except (OSError, ValueError):
                        pass
                    digest.update(f"{key}|".encode())
                    digest.update(np.ascontiguousarray(row).data)
                self.tables[name] = (rows, resolved)
            else:
                array = self._array(name, value, shape, dtype, "the fixed value")
                if array.shape == (1, *array.shape[1:]) and len(array.shape) == len(shape) + 1:
                    array = array[0]
                if not _shape_fits(array.shape, shape):
                    raise InputShapeError(
                        f"extra_inputs[{name!r}] has shape {array.shape}, but input {name!r} of model "
                        f"'{model.name}' takes {shape} per example. Give one array of that shape (used for "
                        "every example) or per-example values keyed by image file.")
                self.fixed[name] = array
                digest.update(np.ascontiguousarray(array).data)
        self.digest = digest.hexdigest() if self.names else ""

    def __bool__(self) -> bool:
        return bool(self.names)

    @staticmethod
    def _array(name: str, value: Any, shape: tuple, dtype: str, what: str) -> np.ndarray:
        try:
            return np.asarray(value, dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise InputShapeError(f"extra_inputs[{name!r}]: {what} cannot be read as a {dtype} array "
                                  f"of shape {shape} ({exc}).") from exc

    def _rows(self, name: str, value: Any, shape: tuple, dtype: str) -> dict[str, np.ndarray]:
        if hasattr(value, "columns"):  # a DataFrame: one row per image, one column per feature
            items = [(k, value.loc[k].to_numpy()) for k in value.index]
        elif hasattr(value, "to_numpy"):  # a Series
            items = list(value.items())
        else:
            items = list(value.items())
        rows: dict[str, np.ndarray] = {}
        for key, row in items:
            array = self._array(name, row, shape, dtype, f"the value of {key!r}")
            if not (_shape_fits(array.shape, shape) or _shape_fits(array.shape[1:], shape)):
                raise InputShapeError(
                    f"extra_inputs[{name!r}][{str(key)!r}] has shape {array.shape}; input {name!r} takes "
                    f"{shape} per example (or (n, *{shape}) for an in-memory image set of n images).")
            rows[str(key)] = array
        return rows

    def values(self, source: Any) -> list[np.ndarray | None]:
        """Per-example arrays ``(len(source), *shape)`` of each extra input; None where fixed."""
        out: list[np.ndarray | None] = []
        for name in self.names:
            if name in self.fixed:
                out.append(None)
                continue
            rows, resolved = self.tables[name]
            files = getattr(source, "files", None)
            set_name = str(getattr(source, "name", ""))
            if files is None or set_name in rows:
                if set_name not in rows:
                    raise InputShapeError(
                        f"extra_inputs[{name!r}] has no values for image set {set_name!r}: in-memory images carry "
                        f"no file names, so give an array of {len(source)} rows under the set's name, "
                        f"extra_inputs={{{name!r}: {{{set_name!r}: array}}}}.")
                array = rows[set_name]
                if array.shape[0] != len(source) or array.ndim != len(self.shapes[name]) + 1:
                    raise InputShapeError(
                        f"extra_inputs[{name!r}][{set_name!r}] has shape {array.shape}; set {set_name!r} has "
                        f"{len(source)} images, so it needs {len(source)} rows of {self.shapes[name]}.")
                out.append(array)
                continue
            found, missing = [], []
            for f in files:
                row = resolved.get(str(Path(f).resolve()), rows.get(str(f), rows.get(Path(f).name)))
                if row is None:
                    missing.append(str(f))
                else:
                    found.append(row)
            if missing:
                raise InputShapeError(
                    f"extra_inputs[{name!r}] has no value for {len(missing)} image(s) of set {set_name!r}, "
                    f"e.g. {missing[0]!r}. Key per-example values by image path (or file name) and cover every "
                    "image the analysis reads: class examples, concept images and the random pool.")
            out.append(np.stack(found) if found else np.empty((0, *self.shapes[name]), self.dtypes[name]))
        return out

    def batch(self, per_example: list[np.ndarray | None], start: int, size: int) -> list[np.ndarray]:
        """The extra inputs of examples ``start:start + size``."""
        out = []
        for name, rows in zip(self.names, per_example):
            if rows is None:
                value = self.fixed[name]
                out.append(np.ascontiguousarray(np.broadcast_to(value, (size, *value.shape))))
            else:
                out.append(rows[start:start + size])
        return out

    def key(self, source: Any) -> str:
        """Digest of the per-example values this source gets ("" when every extra input is fixed)."""
        if not self.tables:
            return ""
        digest = hashlib.sha256()
        for array in self.values(source):
            if array is not None:
                digest.update(np.ascontiguousarray(array).data)
        return digest.hexdigest()
