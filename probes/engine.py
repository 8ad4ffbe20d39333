"""The one place where the toolkit runs a Keras model and takes TensorFlow gradients.

An :class:`Engine` wraps a Keras 3 model (Sequential, Functional, or models nested in models)
and, in one batched pass over an image source, computes the activations of every requested layer
and the gradient of one class's target (pre-softmax logit by default) with respect to each of
them. Results are cached by content (model fingerprint + layer + target + class + source content
key), and only missing entries are computed, all in a single pass.

How it works: the engine walks the model's layer graph itself (through the helpers of
:mod:`probes.keras_graph`, the one place that touches Keras internals), so it can record any
intermediate tensor, including layers of nested models addressed as ``"outer/inner"`` at any
depth, and so it can bypass a final softmax/sigmoid to reach the logits. Per-example gradients come
from a single backward pass of the batch-sum of the target, which is exact because examples do not
interact in inference mode (dropout, augmentation and batch-norm statistics are all switched to
inference). Models with several outputs explain one (``output=``); models with several inputs
take the non-image ones from ``extra_inputs=``. Layers compute in their own dtype (a
``mixed_float16`` model runs in float16), but the target is cast to float32 before it is
differentiated and every activation and gradient is returned as float32.
"""
from __future__ import annotations

import difflib
import hashlib
import json
import math
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from probes.cache import ActivationCache
from probes.errors import (InputShapeError, NotDifferentiableError, TargetError, ToolkitError,
                           UnknownLayerError)
from probes.keras_graph import UnsupportedModelError, graph_of as _graph_of, is_model as _is_model
from probes.keras_graph import nodes_by_operation as _nodes_by_operation
from probes.keras_graph import (graph_operations, input_name, load_model, run_through_graph, standardize_inputs,
                                takes_training_flag, tensor_origin)
from probes.progress import progress as _progress
from probes.sources import ArraySource

__all__ = ["Engine", "EngineResult", "UnsupportedModelError", "randomize_weights", "TARGETS"]

#: Targets the engine can differentiate.
TARGETS = ("logit", "log_prob", "prob")

# Bumped whenever what the engine computes for a given key changes meaning.
_ENGINE_VERSION = "engine-v1"

#: Traced step functions shared by every engine of this process on the same model object:
#: a user's second ``concepts.score`` call on a model does not trace its graph again. Bounded
#: (a traced function keeps its model alive); the oldest entry goes first.
_SHARED_STEPS_MAX = 16
_shared_steps: dict[tuple, tuple[Any, Any, set]] = {}

_SOFTMAX_NAMES = {"softmax", "softmax_v2", "log_softmax"}
_SIGMOID_NAMES = {"sigmoid"}
_LINEAR_NAMES = {"linear", "identity"}
# Layers that are affine in inference mode: a model ending in one of them outputs logits.
_LINEAR_LAYER_TYPES = {
    "Flatten", "Reshape", "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D",
    "GaussianDropout", "GaussianNoise", "AlphaDropout", "Identity", "Permute", "Rescaling",
    "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
    "AveragePooling1D", "AveragePooling2D", "AveragePooling3D", "Add", "Subtract", "Average",
    "Concatenate", "BatchNormalization", "Cropping1D", "Cropping2D", "Cropping3D",
    "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D",
}


@dataclass
class EngineResult:
    """Activations (and optionally gradients) of the requested layers for every example.

    ``activations[layer]`` has shape ``(n, *layer_shape)``; ``gradients[layer]`` (when a class was
    given) holds d target[class_index] / d activation per example, same shape. Arrays are float32
    and read-only.

    Examples
    --------
    >>> r = EngineResult({"feat": np.zeros((2, 5), "float32")}, None, "logit", None)
    >>> r.activations["feat"].shape
    (2, 5)
    """

    activations: dict[str, np.ndarray]
    gradients: dict[str, np.ndarray] | None
    target: str
    class_index: int | None


@dataclass
class _LayerInfo:
    path: str
    layer: Any
    shape: tuple  # per-example shape from the graph; may contain None
    n_calls: int  # times the layer runs per forward pass (shared layers, or inside a shared model)
    n_outputs: int  # tensors produced by that node
    shared_by: str = ""  # path of the shared layer or model that makes n_calls > 1


def _keras():
    # Imported lazily so that `import probes` stays free of TensorFlow start-up cost.
    import keras

    return keras


def _activation_name(fn: Any) -> str | None:
    if fn is None:
        return "linear"
    name = getattr(fn, "__name__", None)
    if name is None:
        name = getattr(type(fn), "__name__", None)
    return name.lower() if isinstance(name, str) else None


def _index_layers(graph: Any, prefix: str, out: dict[str, _LayerInfo], calls: int = 1,
                  shared_by: str = "") -> None:
    """Record every layer of ``graph`` (recursing into nested models) under its path.

    ``calls`` is how often ``graph`` itself runs per forward pass: a layer inside a model that is
    called twice runs twice too, and is as ambiguous as a shared layer."""
    nodes = _nodes_by_operation(graph)
    # Bare operations (``x + y`` between layers) are indexed too: ConvNeXt's blocks end in one.
    for layer in graph_operations(graph):
        path = prefix + layer.name
        layer_nodes = nodes.get(id(layer), [])
        shape: tuple = ()
        n_outputs = 1
        if layer_nodes:
            outputs = layer_nodes[0].outputs
            n_outputs = len(outputs)
            if outputs:
                shape = tuple(outputs[0].shape[1:])
        n_calls = max(len(layer_nodes), 1) * calls if layer_nodes else 0
        culprit = shared_by or (path if len(layer_nodes) > 1 else "")
        out[path] = _LayerInfo(path, layer, shape, n_calls, n_outputs, culprit)
        if _is_model(layer):
            inner = _graph_of(layer)
            if inner is not None:
                _index_layers(inner, path + "/", out, max(n_calls, 1), culprit)


def output_names(model: Any) -> list[str]:
    """Names of a model's outputs, in order: the name of the layer that produces each.

    Examples
    --------
    >>> output_names(model)   # doctest: +SKIP
    ['diagnosis', 'grade']
    """
    origins = [tensor_origin(t) for t in _graph_of(model).outputs]
    plain = [op.name for op, _ in origins]
    # Two outputs of one layer (or of one nested model) share its name: number them.
    return [name if plain.count(name) == 1 else f"{name}:{index}"
            for name, (_, index) in zip(plain, origins)]


def _select_output(model: Any, output: int | str | None) -> int:
    """Index of the explained output among the model's outputs (``output=`` by name or index)."""
    names = output_names(model)
    listing = ", ".join(f"{i}: {n!r}" for i, n in enumerate(names))
    if output is None:
        if len(names) != 1:
            raise TargetError(
                f"Model '{model.name}' has {len(names)} outputs ({listing}); say which one to explain "
                "with output= (a name or an index), e.g. output=0.")
        return 0
    if isinstance(output, (int, np.integer)) and not isinstance(output, bool):
        if not -len(names) <= int(output) < len(names):
            raise TargetError(f"output={int(output)} is out of range: model '{model.name}' has "
                              f"{len(names)} output(s): {listing}.")
        return int(output) % len(names)
    if isinstance(output, str):
        if output in names:
            return names.index(output)
        close = difflib.get_close_matches(output, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        raise TargetError(f"Model '{model.name}' has no output {output!r}.{hint} Its outputs are: {listing}.")
    raise TargetError(f"output must be an output name or index, got {output!r}. Outputs: {listing}.")


def _final_operation(model: Any, output_index: int = 0, prefix: str = "") -> tuple[str, Any]:
    """Path and object of the operation that produces the selected output (looking into nested
    models)."""
    graph = _graph_of(model)
    if graph is None:
        return prefix.rstrip("/"), model
    op, tensor_index = tensor_origin(graph.outputs[output_index])
    if _is_model(op) and _graph_of(op) is not None:
        return _final_operation(op, tensor_index, prefix + op.name + "/")
    if not _is_model(op) and tensor_index != 0:
        # A layer with several outputs: its activation cannot be swapped for a linear one.
        return prefix + op.name, None
    return prefix + op.name, op


def _classify_activation(name: str, bypass: str) -> tuple[str, str]:
    """How to reach the logit through a final activation ``name``: (how, which) as in the caller."""
    if name in _SOFTMAX_NAMES:
        return bypass, "softmax"
    if name in _SIGMOID_NAMES:
        return bypass, "sigmoid"
    if name in _LINEAR_NAMES:
        return "none", "none"
    return "opaque", "none"


def _classify_final(op: Any) -> tuple[str, str]:
    """How the final operation relates to logits: (mode, squash).

    mode: "swap" (layer with a squashing ``activation`` attribute), "input" (a Softmax or
    Activation layer: logits are its input), "none" (output already logits), "opaque" (a
    non-linear function we cannot see through).
    squash: "softmax", "sigmoid" or "none".
    """
    keras = _keras()
    type_name = type(op).__name__
    if isinstance(op, keras.layers.Softmax):
        axis = getattr(op, "axis", -1)
        if axis not in (-1, [-1], (-1,), 1, [1], (1,)):
            return "opaque", "none"
        return "input", "softmax"
    if isinstance(op, keras.layers.Activation):
        # A standalone activation layer is bypassed by taking its input.
        return _classify_activation(_activation_name(op.activation), "input")
    if _is_model(op):
        return "opaque", "none"
    if hasattr(op, "activation"):
        # A layer with a built-in activation is bypassed by swapping that activation for linear.
        return _classify_activation(_activation_name(op.activation), "swap")
    if type_name in _LINEAR_LAYER_TYPES:
        return "none", "none"
    return "opaque", "none"


def _model_fingerprint(model: Any) -> str:
    """The engine version plus :func:`probes.identity.model_identity` (config, weights, custom code).

    A model whose identity cannot be established (``get_config`` fails) gets a fingerprint that
    matches nothing (:func:`probes.identity.unidentified_fingerprint`), with one warning: its
    results are computed but never matched to another model's cached ones.
    """
    from probes.identity import model_identity, unidentified_fingerprint

    identity = model_identity(model)
    if identity is None:
        import warnings

        warnings.warn(f"Model {getattr(model, 'name', type(model).__name__)!r} cannot be identified "
                      "(its get_config() fails), so nothing computed with it is cached. Implement get_config() "
                      "in its custom layers to enable caching.", UserWarning, stacklevel=3)
        return unidentified_fingerprint()
    return hashlib.sha256(f"{_ENGINE_VERSION}|{identity}".encode()).hexdigest()


class _Recorder:
    """Per-trace state of one walk through the model: recorded tensors and the logits."""

    def __init__(self, wanted: set[str], watch: Callable[[Any], None] | None,
                 watched: set[str]) -> None:
        self.wanted = wanted
        self.watch = watch
        self.watched = watched
        self.tensors: dict[str, Any] = {}
        self.logits: Any = None

    def record(self, path: str, tensor: Any) -> None:
        if path not in self.wanted:
            return
        if path in self.tensors:
            raise UnsupportedModelError(
                f"Layer '{path}' is called more than once in the model, so its activation is "
                "ambiguous. Request a layer that is used once.")
        if isinstance(tensor, (list, tuple, dict)):
            raise UnsupportedModelError(
                f"Layer '{path}' produces several tensors; the engine records single-output "
                "layers only. Request the layer that consumes the output you want.")
        if self.watch is not None and path in self.watched:
            self.watch(tensor)
        self.tensors[path] = tensor


def _shape_fits(got: tuple, expected: tuple) -> bool:
    return len(got) == len(expected) and all(e is None or e == g for e, g in zip(expected, got))


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


_shared_lock = threading.Lock()


class _StepTwin:
    """What a traced step function needs of its engine (graph walk and target), without the rest."""

    _walk = None  # bound below to Engine's methods, which use only the attributes copied here
    _target_tensor = None

    def __init__(self, engine: "Engine") -> None:
        self._graph = engine._graph
        self._final_path = engine._final_path
        self._final_mode = engine._final_mode
        self._squash = engine._squash
        self.target = engine.target


class Engine:
    """Batched activations and target gradients for the layers of a Keras model.

    Parameters
    ----------
    model : Any
        A built Keras 3 Sequential or Functional model (nested models at any depth
        allowed), or the path of one saved as ``.keras`` or legacy ``.h5``.
    layers : Sequence[str]
        Layer names or ``"outer/inner"`` paths into nested models.
    target : str, default='logit'
        ``"logit"`` (pre-softmax, default), ``"log_prob"`` or ``"prob"``.
    batch_size : int, default=32
        Examples per forward/backward pass.
    cache : ActivationCache | str | Path | None, default=None
        An :class:`ActivationCache`, a directory for one, or None for a private in-memory
        cache that lives as long as the engine.
    progress : bool, default=True
        Show a progress bar over batches.
    output : int | str | None, default=None
        Which output to explain, by name (the layer producing it) or index; needed when
        the model has several outputs. The softmax/sigmoid bypass applies to that output.
    extra_inputs : Mapping[str, Any] | None, default=None
        Values for every model input other than the images, by input name. Each value
        is either one array of the input's per-example shape (the same for every example,
        e.g. a reference clinical vector) or per-example values: a mapping (or a pandas
        Series/DataFrame indexed) by image file path, or by the name of an in-memory image
        set with one row per image.

    Notes
    -----
    The model fingerprint is computed once, at construction: build a new engine after changing
    the model's weights.

    Examples
    --------
    >>> import keras
    >>> inp = keras.Input((6,)); feat = keras.layers.Dense(5, name="feat")(inp)
    >>> model = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(feat))
    >>> eng = Engine(model, ["feat"], progress=False)
    >>> src = InMemoryImages(np.random.rand(4, 6))            # doctest: +SKIP
    >>> eng.run(src, class_index=1).gradients["feat"].shape   # doctest: +SKIP
    (4, 5)
    """

    def __init__(self, model: Any, layers: Sequence[str], *, target: str = "logit",
                 batch_size: int = 32, cache: ActivationCache | str | Path | None = None,
                 progress: bool = True, output: int | str | None = None,
                 extra_inputs: Mapping[str, Any] | None = None) -> None:
        keras = _keras()
        if isinstance(model, (str, os.PathLike)):
            model = load_model(model)
        if not isinstance(model, keras.Model):
            raise UnsupportedModelError(
                f"Expected a keras.Model (or the path of a saved .keras/.h5 model), got "
                f"{type(model).__name__}. Load or build the model with Keras 3 first.")
        graph = _graph_of(model)
        if graph is None:
            raise UnsupportedModelError(
                f"Model '{model.name}' ({type(model).__name__}) is a subclassed keras.Model whose "
                "call() is Python code, not a layer graph the engine can walk. Rebuild it as a "
                "functional model, e.g. inputs = keras.Input(shape); outputs = ...layers...; "
                "keras.Model(inputs, outputs), or wrap the parts you need in functional models.")
        if target not in TARGETS:
            raise TargetError(f"Unknown target {target!r}; choose one of {', '.join(TARGETS)}.")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
                or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")

        self.model = model
        self._graph = graph
        self.target = target
        self.batch_size = int(batch_size)
        self.progress = bool(progress)
        self.n_batches_run = 0
        self._steps: dict[tuple, Any] = {}
        self._step_nones: dict[tuple, set] = {}
        self._none_grads: set[str] = set()
        if cache is None:
            cache = ActivationCache(None)
        elif not isinstance(cache, ActivationCache):
            cache = ActivationCache(cache)
        self.cache: ActivationCache = cache

        self._index: dict[str, _LayerInfo] = {}
        _index_layers(graph, "", self._index)
        self._input_names = [input_name(t) for t in graph.inputs]
        self._extras = _ExtraInputs(model, graph, extra_inputs)
        self._image_position = self._input_names.index(self._extras.image_input)
        self.input_shape: tuple = tuple(graph.inputs[self._image_position].shape[1:])

        self.output_index = _select_output(model, output)
        self.output_name = output_names(model)[self.output_index]
        out_shape = tuple(graph.outputs[self.output_index].shape)
        if len(out_shape) != 2 or out_shape[1] is None:
            raise TargetError(
                f"Output {self.output_name!r} of model '{model.name}' has shape {out_shape}; the "
                "engine explains a (batch, n_classes) output with one score per class. Choose "
                "another output with output=, or build a model whose output is the class scores.")
        self.n_outputs = int(out_shape[1])

        self._final_path, self._final_op = _final_operation(model, self.output_index)
        self._final_mode, squash = _classify_final(self._final_op)
        if squash == "none" and self._final_mode == "none":
            # Outputs are taken as logits; a single unit is a binary logit.
            squash = "sigmoid" if self.n_outputs == 1 else "softmax"
        self._squash = squash
        self.target_description = self._describe_target()
        if len(graph.outputs) > 1:
            self.target_description += f" [output {self.output_name!r}]"

        self.layers: list[str] = self._resolve(layers)
        self.layer_shapes: dict[str, tuple] = {p: self._index[p].shape for p in self.layers}
        self._fill_unknown_shapes(self.layers)
        self.fingerprint = _model_fingerprint(model)
        if len(graph.outputs) > 1 or self._extras:
            # What the engine explains depends on the output and the extra inputs too; folding them
            # in keeps single-output, single-input keys (and caches) exactly as they were.
            digest = hashlib.sha256(self.fingerprint.encode())
            digest.update(f"output={self.output_index}|".encode())
            digest.update(self._extras.digest.encode())
            self.fingerprint = digest.hexdigest()

    # -- description --------------------------------------------------------------------------
    @property
    def layer_widths(self) -> dict[str, int]:
        """Number of units (product of the per-example shape) of each layer."""
        return {p: int(np.prod(s)) if all(d is not None for d in s) else -1
                for p, s in self.layer_shapes.items()}

    @property
    def available_layers(self) -> list[str]:
        """Every layer path the engine can address, in graph order."""
        return list(self._index)

    def __repr__(self) -> str:
        return (f"Engine(model={self.model.name!r}, layers={self.layers}, target={self.target!r}, "
                f"batch_size={self.batch_size})")

    def _describe_target(self) -> str:
        path, mode, squash, kind = self._final_path, self._final_mode, self._squash, self.target
        if mode == "opaque":
            if kind == "logit":
                what = (f"layer '{path}' ({type(self._final_op).__name__})")
                raise TargetError(
                    f"Cannot find the logits of model '{self.model.name}': its output comes from "
                    f"{what}, a non-linear function the engine cannot see through (not a "
                    "softmax, sigmoid or linear layer). Use target='prob' to differentiate the "
                    "model's outputs as they are, or pass a model whose output is the logits "
                    "(e.g. keras.Model(model.input, model.get_layer(...).output)).")
            base = f"output of layer '{path}' taken as-is (final function not seen through)"
            return f"prob: {base}" if kind == "prob" else f"log_prob: log of {base}"
        if mode == "swap":
            logits = f"pre-{squash} output of layer '{path}' ({squash} bypassed)"
        elif mode == "input":
            logits = f"input of {squash} layer '{path}' ({squash} bypassed)"
        else:
            logits = f"output of layer '{path}' (no final softmax/sigmoid; taken as logits)"
        if kind == "logit":
            return f"logit: {logits}"
        fn = "softmax" if squash == "softmax" else "sigmoid"
        if kind == "prob":
            return f"prob: {fn} of the {logits}"
        return f"log_prob: log_{fn} of the {logits}"

    def _resolve(self, layers: Sequence[str] | str) -> list[str]:
        if isinstance(layers, str):
            layers = [layers]
        resolved: list[str] = []
        for name in layers:
            if not isinstance(name, str) or name not in self._index:
                raise UnknownLayerError(self._unknown_layer_message(name))
            info = self._index[name]
            if info.n_calls > 1:
                where = ("" if info.shared_by == name else
                         f" because it sits inside '{info.shared_by}', which is called {info.n_calls} times")
                raise UnsupportedModelError(
                    f"Layer '{name}' runs {info.n_calls} times per forward pass{where} (a shared layer), "
                    "so its activation is ambiguous. Probe a layer that runs once, e.g. the layer where "
                    "the branches merge, or build a model that calls it once "
                    "(keras.Model(inputs, the branch you want)).")
            if info.n_calls == 0:
                raise UnsupportedModelError(
                    f"Layer '{name}' is never called in the model's graph, so it has no activation. "
                    "Probe a layer that the model uses (see concepts.layers(model)).")
            if info.n_outputs != 1:
                raise UnsupportedModelError(
                    f"Layer '{name}' produces {info.n_outputs} tensors; the engine records "
                    "single-output layers only. Request the layer that consumes the output you "
                    "want.")
            if name not in resolved:
                resolved.append(name)
        return resolved

    def _unknown_layer_message(self, name: Any) -> str:
        paths = list(self._index)
        text = str(name)
        close = difflib.get_close_matches(text, paths, n=5, cutoff=0.6)
        # A nested layer named without its model's prefix is the commonest slip.
        nested = [p for p in paths if p.endswith("/" + text)]
        close = nested + [c for c in close if c not in nested]
        hint = f" Did you mean {', '.join(repr(c) for c in close[:5])}?" if close else ""
        for path, info in self._index.items():
            if text.startswith(path + "/") and _is_model(info.layer) and _graph_of(info.layer) is None:
                hint = (f" '{path}' is a subclassed model: its call() is Python code, so the layers inside it "
                        f"cannot be addressed. Probe '{path}' itself (its output), or rebuild it as a "
                        "functional model.")
        listing = (f" Valid layer names and paths: {', '.join(paths)}." if len(paths) <= 60 else
                   f" It has {len(paths)} layers.")
        return (f"Model '{self.model.name}' has no layer {name!r}.{hint} Layers of nested models are "
                f"addressed as 'outer/inner'.{listing} See every layer, its shape and the suggested "
                "probe points with concepts.layers(model) (command line: concepts layers MODEL_FILE).")

    def _fill_unknown_shapes(self, paths: Iterable[str]) -> None:
        # Nested models built on flexible inputs (None spatial dims) have unknown inner shapes in
        # their own graph; one dry run on zeros resolves them. Not counted in n_batches_run.
        unknown = [p for p in paths if any(d is None for d in self.layer_shapes[p])]
        if not unknown or any(d is None for d in self.input_shape):
            return
        step = self._step_fn(tuple(unknown), (), False)
        extras = [np.zeros((1, *[d or 1 for d in self._extras.shapes[n]]), self._extras.dtypes[n])
                  for n in self._extras.names]
        out = step(np.zeros((1, *self.input_shape), np.float32), np.int32(0), *extras)
        for p in unknown:
            self.layer_shapes[p] = tuple(int(d) for d in out["act"][p].shape[1:])

    # -- the compiled pass --------------------------------------------------------------------
    def _walk(self, graph: Any, inputs: Any, prefix: str, rec: _Recorder) -> Any:
        keras = _keras()
        inputs = standardize_inputs(graph, inputs)
        for ref, tensor in zip(graph.inputs, inputs):
            rec.record(prefix + input_name(ref), tensor)

        def operation_fn(op: Any) -> Callable:
            path = prefix + op.name

            def call(*args: Any, **kwargs: Any) -> Any:
                inner = _graph_of(op) if _is_model(op) else None
                if inner is not None:
                    out = self._walk(inner, args[0], path + "/", rec)
                elif path == self._final_path and self._final_mode == "swap":
                    original = op.activation
                    op.activation = keras.activations.linear
                    try:
                        pre = self._call_layer(op, args, kwargs)
                    finally:
                        op.activation = original
                    rec.logits = pre
                    out = original(pre)
                elif path == self._final_path and self._final_mode == "input":
                    rec.logits = args[0]
                    out = self._call_layer(op, args, kwargs)
                else:
                    out = self._call_layer(op, args, kwargs)
                rec.record(path, out)
                return out

            return call

        outputs = run_through_graph(graph, inputs, operation_fn)
        if isinstance(outputs, (list, tuple)) and len(outputs) == 1:
            outputs = outputs[0]
        return outputs

    @staticmethod
    def _call_layer(op: Any, args: tuple, kwargs: dict) -> Any:
        # Inference mode everywhere (dropout and augmentation off, batch-norm moving statistics).
        if takes_training_flag(op):
            kwargs = dict(kwargs, training=False)
        return op(*args, **kwargs)

    def _target_tensor(self, rec: _Recorder, output: Any) -> Any:
        import tensorflow as tf

        if self._final_mode == "opaque":
            probs = tf.cast(output, tf.float32)
            if self.target == "prob":
                return probs
            # Clamp so that a probability of exactly 0 gives a large finite value, not -inf.
            return tf.math.log(tf.maximum(probs, 1e-30))
        logits = tf.cast(rec.logits if rec.logits is not None else output, tf.float32)
        if self.target == "logit":
            return logits
        if self._squash == "sigmoid":
            return tf.math.sigmoid(logits) if self.target == "prob" \
                else tf.math.log_sigmoid(logits)
        return tf.nn.softmax(logits, axis=-1) if self.target == "prob" \
            else tf.nn.log_softmax(logits, axis=-1)

    def _step_fn(self, act_layers: tuple, grad_layers: tuple, want_outputs: bool) -> Any:
        """tf.function computing the given activations, gradients and (optionally) target values
        for one batch; traced once per layer set, for any batch size."""
        key = (act_layers, grad_layers, want_outputs)
        if key in self._steps:
            return self._steps[key]
        # Everything the traced graph depends on: the model object (weights are read live), what
        # is explained (target, output, squash) and the input signature.
        # (Shape probing during __init__ runs before the fingerprint exists: not shared.)
        fingerprint = getattr(self, "fingerprint", None)
        shared_key = (id(self.model), fingerprint, self.target, self.output_index, self._image_position,
                      self.input_shape, tuple((n, tuple(self._extras.shapes[n]), str(self._extras.dtypes[n]))
                                              for n in self._extras.names), key)
        with _shared_lock:
            found = _shared_steps.get(shared_key) if fingerprint is not None else None
            if found is not None and found[0]() is not self.model:
                del _shared_steps[shared_key]   # another model now has that id
                found = None
        if found is not None:
            self._steps[key], self._step_nones[key] = found[1], found[2]
            self._none_grads |= found[2]
            return found[1]
        import tensorflow as tf

        wanted = set(act_layers) | set(grad_layers)
        grad_set = set(grad_layers)
        # Layers without a gradient are noted at trace time, in a set of this step function's own
        # (engines sharing it read it after each call, see _batch_results).
        none_grads: set[str] = set()
        self._step_nones[key] = none_grads
        # The traced function closes over a twin holding only what the walk needs, not over this
        # engine (whose cache may hold a lot of arrays and must be freed with it).
        twin = _StepTwin(self)

        keras = _keras()
        n_inputs = len(self._graph.inputs)
        position = self._image_position
        output_index = self.output_index

        def step(x: Any, class_index: Any, *extras: Any) -> dict:
            inputs = list(extras)
            inputs.insert(position, x)
            with tf.GradientTape(watch_accessed_variables=False, persistent=False) as tape:
                rec = _Recorder(wanted, tape.watch if grad_layers else None, grad_set)
                output = twin._walk(twin._graph, inputs if n_inputs > 1 else x, "", rec)
                if len(twin._graph.outputs) > 1:
                    output = keras.tree.flatten(output)[output_index]
                result: dict[str, Any] = {"act": {}, "grad": {}}
                if grad_layers or want_outputs:
                    target = twin._target_tensor(rec, output)
                if grad_layers:
                    objective = tf.reduce_sum(tf.gather(target, class_index, axis=1))
            for path in act_layers:
                result["act"][path] = tf.cast(rec.tensors[path], tf.float32)
            if grad_layers:
                sources = [rec.tensors[p] for p in grad_layers]
                grads = tape.gradient(objective, sources)
                for path, source, grad in zip(grad_layers, sources, grads):
                    if grad is None:
                        # Noted at trace time and raised outside TensorFlow, so the user gets our
                        # message rather than a traceback from inside the graph.
                        none_grads.add(path)
                        grad = tf.zeros_like(source)
                    result["grad"][path] = tf.cast(grad, tf.float32)
            if want_outputs:
                result["out"] = target
            return result

        spec = [tf.TensorSpec((None, *self.input_shape), tf.float32),
                tf.TensorSpec((), tf.int32)]
        spec += [tf.TensorSpec((None, *self._extras.shapes[n]), tf.as_dtype(self._extras.dtypes[n]))
                 for n in self._extras.names]
        fn = tf.function(step, input_signature=spec)
        self._steps[key] = fn
        if fingerprint is None:
            return fn
        try:
            model_ref = weakref.ref(self.model)
        except TypeError:
            return fn
        with _shared_lock:
            _shared_steps[shared_key] = (model_ref, fn, none_grads)
            while len(_shared_steps) > _SHARED_STEPS_MAX:
                del _shared_steps[next(iter(_shared_steps))]
        return fn

    def _check_class_index(self, class_index: Any) -> int:
        if isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer)):
            raise TargetError(f"class_index must be an integer in [0, {self.n_outputs - 1}], got "
                              f"{class_index!r}.")
        if not 0 <= int(class_index) < self.n_outputs:
            raise TargetError(
                f"class_index {int(class_index)} is out of range: model '{self.model.name}' has "
                f"{self.n_outputs} output(s), so valid class indices are 0 to "
                f"{self.n_outputs - 1}.")
        return int(class_index)

    def _check_batch(self, batch: np.ndarray) -> np.ndarray:
        batch = np.asarray(batch, dtype=np.float32)
        got = tuple(batch.shape[1:])
        expected = self.input_shape
        if batch.ndim != len(expected) + 1 or any(
                e is not None and e != g for e, g in zip(expected, got)):
            raise InputShapeError(
                f"The source yields images of shape {got} (batch shape {tuple(batch.shape)}), but "
                f"model '{self.model.name}' expects {expected} per example. Resize or preprocess "
                "the images to the model's input shape.")
        return batch

    def _batch_results(self, source: ArraySource, act_layers: tuple, grad_layers: tuple,
                       class_index: int, want_outputs: bool, desc: str | None = None) -> Iterable[dict]:
        """Batch by batch over ``source``: ``{"act": {path: array}, "grad": {...}, "out": array}``
        as numpy float32 for that batch only (nothing is kept between batches)."""
        n = len(source)
        step = self._step_fn(act_layers, grad_layers, want_outputs)
        start = 0
        total = math.ceil(n / self.batch_size) if n else 0
        # A bar for a pass of a few batches is flicker, not information.
        batches = _progress(source.batches(self.batch_size), enabled=self.progress and total > 8,
                            desc=desc or ("activations" if not grad_layers else "activations+gradients"),
                            total=total, unit="batch")
        ci = np.int32(class_index)
        extra_rows = self._extras.values(source) if self._extras else []
        for batch in batches:
            batch = self._check_batch(batch)
            b = batch.shape[0]
            if b == 0:
                continue
            if start + b > n:
                raise InputShapeError(
                    f"The source yielded more than len(source) = {n} examples; its __len__ and "
                    "batches() disagree.")
            result = step(batch, ci, *self._extras.batch(extra_rows, start, b))
            self.n_batches_run += 1
            self._none_grads |= self._step_nones.get((act_layers, grad_layers, want_outputs), set())
            if self._none_grads & set(grad_layers):
                bad = sorted(self._none_grads & set(grad_layers))
                raise NotDifferentiableError(
                    f"The {self.target} of the model is not differentiable with respect to "
                    f"layer(s) {', '.join(repr(p) for p in bad)}: no differentiable path leads "
                    "from them to the output (e.g. an integer cast, argmax or stop_gradient "
                    "after them, a side branch, or the bypassed softmax layer itself). Request "
                    "activations only for them (class_index=None) or choose another layer.")
            out: dict[str, Any] = {"act": {}, "grad": {}, "out": None}
            for kind, paths in (("act", act_layers), ("grad", grad_layers)):
                for path in paths:
                    value = result[kind][path].numpy()
                    if path in self.layer_shapes and self.layer_shapes[path] != value.shape[1:]:
                        self.layer_shapes[path] = tuple(value.shape[1:])
                    out[kind][path] = value
            if want_outputs:
                out["out"] = result["out"].numpy()
            start += b
            yield out
        if start != n:
            raise InputShapeError(
                f"The source yielded {start} examples but len(source) = {n}; its __len__ and "
                "batches() disagree.")

    def _pass(self, source: ArraySource, act_layers: tuple, grad_layers: tuple,
              class_index: int, want_outputs: bool, allocate: Callable | None = None) -> dict:
        """One pass over ``source``: fill preallocated arrays batch by batch.

        ``allocate(kind, path, shape)`` makes the array an output goes into (default: ``np.empty``);
        the analysis passes one that returns a memory-mapped file beyond its memory budget."""
        n = len(source)
        allocate = allocate or (lambda kind, path, shape: np.empty(shape, np.float32))
        acts: dict[str, np.ndarray] = {}
        grads: dict[str, np.ndarray] = {}
        outs: np.ndarray | None = None
        start = 0
        for result in self._batch_results(source, act_layers, grad_layers, class_index, want_outputs):
            b = None
            for kind, store, paths in (("act", acts, act_layers), ("grad", grads, grad_layers)):
                for path in paths:
                    value = result[kind][path]
                    b = len(value)
                    if path not in store:
                        store[path] = allocate(kind, path, (n, *value.shape[1:]))
                    store[path][start:start + b] = value
            if want_outputs:
                value = result["out"]
                b = len(value)
                if outs is None:
                    outs = np.empty((n, value.shape[1]), np.float32)
                outs[start:start + b] = value
            start += b or 0
        for kind, store, paths in (("act", acts, act_layers), ("grad", grads, grad_layers)):
            for path in paths:
                if path not in store:  # empty source
                    shape = self.layer_shapes[path]
                    store[path] = np.empty((0, *[d or 0 for d in shape]), np.float32)
        if want_outputs and outs is None:
            outs = np.empty((0, self.n_outputs), np.float32)
        return {"act": acts, "grad": grads, "out": outs}

    def stream(self, source: ArraySource, class_index: int, layers: Sequence[str] | None = None,
               *, activations: bool = True) -> Iterable[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """Activations and gradients batch by batch, never cached and never held for the whole source.

        Yields ``(activations, gradients)`` per batch, each a dict ``{layer: (b, *shape) float32}``;
        this is how :func:`concepts.score` keeps memory flat over any number of class examples (it
        keeps only the projections of each batch). ``activations=False`` yields ``{}`` for them.

        Examples
        --------
        >>> for acts, grads in engine.stream(InMemoryImages(x), class_index=0):  # doctest: +SKIP
        ...     s = grads["conv2"].reshape(len(grads["conv2"]), -1) @ v   # projections of this batch
        """
        paths = self._paths_with_shapes(layers)
        ci = self._check_class_index(class_index)
        act_layers = tuple(paths) if activations else ()
        for result in self._batch_results(source, act_layers, tuple(paths), ci, False):
            yield result["act"], result["grad"]

    def _paths_with_shapes(self, layers: Sequence[str] | None) -> list[str]:
        """The requested layer paths (default: the engine's), with every output shape known."""
        paths = self.layers if layers is None else self._resolve(layers)
        for p in paths:
            self.layer_shapes.setdefault(p, self._index[p].shape)
        new = [p for p in paths if any(d is None for d in self.layer_shapes[p])]
        if new:
            self._fill_unknown_shapes(new)
        return paths

    # -- public API -----------------------------------------------------------------------------
    def _key(self, source: ArraySource, path: str, kind: str, class_index: int | None) -> str:
        # Per-example extra inputs are part of what a source means to this model.
        extra = self._extras.key(source) if self._extras else ""
        content = source.content_key + (f"+extra:{extra}" if extra else "")
        if kind == "act":
            return ActivationCache.make_key(_ENGINE_VERSION, self.fingerprint, path, "act", content)
        return ActivationCache.make_key(_ENGINE_VERSION, self.fingerprint, path, "grad",
                                        self.target, str(class_index), content)

    def run(self, source: ArraySource, class_index: int | None = None,
            layers: Sequence[str] | None = None, *, allocate: Callable | None = None) -> EngineResult:
        """Activations of ``layers`` (default: the engine's layers) and, when ``class_index`` is
        given, gradients of that class's target, from the cache or from ONE pass over ``source``.

        ``allocate(kind, path, shape)``, when given, makes the arrays that computed outputs are
        written into (e.g. memory-mapped files for a set larger than RAM).

        Examples
        --------
        >>> res = engine.run(InMemoryImages(x), class_index=0)   # doctest: +SKIP
        >>> res.gradients["conv2"].shape == res.activations["conv2"].shape  # doctest: +SKIP
        True
        """
        paths = self._paths_with_shapes(layers)
        ci = None if class_index is None else self._check_class_index(class_index)

        acts: dict[str, np.ndarray] = {}
        grads: dict[str, np.ndarray] = {}
        keys: dict[tuple[str, str], str] = {}
        missing_act: list[str] = []
        missing_grad: list[str] = []
        for p in paths:
            keys[(p, "act")] = self._key(source, p, "act", None)
            cached = self.cache.get(keys[(p, "act")])
            if cached is None:
                missing_act.append(p)
            else:
                acts[p] = cached
            if ci is not None:
                keys[(p, "grad")] = self._key(source, p, "grad", ci)
                cached = self.cache.get(keys[(p, "grad")])
                if cached is None:
                    missing_grad.append(p)
                else:
                    grads[p] = cached

        if missing_act or missing_grad:
            fresh = self._pass(source, tuple(missing_act), tuple(missing_grad),
                               ci if ci is not None else 0, want_outputs=False, allocate=allocate)
            for kind, store, missing in (("act", acts, missing_act),
                                         ("grad", grads, missing_grad)):
                for p in missing:
                    array = fresh[kind][p]
                    array.flags.writeable = False
                    store[p] = array
                    meta = {"layer": p, "kind": kind, "model": self.model.name,
                            "fingerprint": self.fingerprint, "source": source.content_key,
                            "n": len(source)}
                    if kind == "grad":
                        meta.update(target=self.target, class_index=ci)
                    self.cache.put(keys[(p, kind)], array, meta)

        return EngineResult(
            activations={p: acts[p] for p in paths},
            gradients=None if ci is None else {p: grads[p] for p in paths},
            target=self.target, class_index=ci)

    def activations(self, source: ArraySource, layers: Sequence[str] | None = None
                    ) -> dict[str, np.ndarray]:
        """Activations of the engine's layers (or ``layers``) for every example of ``source``.

        Examples
        --------
        >>> engine.activations(InMemoryImages(x))["conv1"].shape  # doctest: +SKIP
        (10, 8, 8, 4)
        """
        return self.run(source, None, layers).activations

    def gradients(self, source: ArraySource, class_index: int,
                  layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Gradients of the target of ``class_index`` w.r.t. each layer, per example.

        Examples
        --------
        >>> engine.gradients(InMemoryImages(x), 1)["feat"].shape  # doctest: +SKIP
        (10, 5)
        """
        if class_index is None:
            raise TargetError("gradients() needs a class_index; use activations() otherwise.")
        result = self.run(source, class_index, layers)
        assert result.gradients is not None
        return result.gradients

    def outputs(self, source: ArraySource) -> np.ndarray:
        """Target values (e.g. logits) for every class and example, shape ``(n, n_outputs)``;
        not cached.

        Examples
        --------
        >>> engine.outputs(InMemoryImages(x)).shape  # doctest: +SKIP
        (10, 3)
        """
        return self._pass(source, (), (), 0, want_outputs=True)["out"]


def randomize_weights(model: Any, seed: int = 0) -> Any:
    """A copy of ``model`` with every weight freshly re-initialised (seeded); ``model`` is untouched.

    Used for the sanity check "a model with randomised weights should lose its concepts". Each
    layer's own initialisers are re-run with a distinct seed derived from ``seed``, so the result
    is reproducible and no two layers share values.

    Examples
    --------
    >>> random_model = randomize_weights(model, seed=1)   # doctest: +SKIP
    """
    keras = _keras()
    if not isinstance(model, keras.Model) or _graph_of(model) is None:
        raise UnsupportedModelError(
            "randomize_weights needs a Sequential or Functional keras model (nested models "
            f"allowed); got {type(model).__name__}. Rebuild subclassed models as functional ones.")
    counter = [0]

    def seed_initializers(config: Any) -> Any:
        if isinstance(config, dict):
            cfg = config.get("config")
            if (isinstance(cfg, dict) and "seed" in cfg
                    and "initializers" in str(config.get("module", ""))):
                counter[0] += 1
                cfg = dict(cfg, seed=int(seed) * 100003 + counter[0])
                config = dict(config, config=cfg)
            return {k: seed_initializers(v) for k, v in config.items()}
        if isinstance(config, list):
            return [seed_initializers(v) for v in config]
        return config

    def clone(layer: Any) -> Any:
        return layer.__class__.from_config(seed_initializers(layer.get_config()))

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)
    if not copy.built:
        copy.build((None, *tuple(_graph_of(model).inputs[0].shape[1:])))
    return copy


_StepTwin._walk = Engine._walk
_StepTwin._call_layer = staticmethod(Engine._call_layer)
_StepTwin._target_tensor = Engine._target_tensor
