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

Where the parts live: :mod:`probes.model_outputs` (which output, how to reach its logits),
:mod:`probes.layer_index` (layer paths and their checks), :mod:`probes.extra_inputs` (non-image
inputs), :mod:`probes.traced_steps` (the traced batch step, shared between engines) and
:mod:`probes.weights` (model fingerprint, randomised copies). Their names that callers used from
here stay importable from here.
"""
from __future__ import annotations

import hashlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from probes.cache import ActivationCache
from probes.errors import (InputShapeError, NotDifferentiableError, TargetError, ToolkitError,  # noqa: F401
                           UnknownLayerError)
from probes.extra_inputs import _ExtraInputs
from probes.keras_graph import UnsupportedModelError, graph_of as _graph_of, input_name  # noqa: F401
from probes.keras_graph import is_model as _is_model  # noqa: F401
from probes.keras_graph import load_model
from probes.layer_index import _index_layers, _LayerInfo, _Recorder, _shape_fits, resolve_layers  # noqa: F401
# Re-exported: these names were defined here before the split, and callers import them from here.
from probes.model_outputs import (_LINEAR_LAYER_TYPES, _LINEAR_NAMES, _SIGMOID_NAMES,  # noqa: F401
                                  _SOFTMAX_NAMES, TARGETS, _activation_name, _classify_activation,
                                  _classify_final, _final_operation, _keras, _select_output, describe_target,
                                  output_names)
from probes.prefetch import prefetched
from probes.progress import progress as _progress
from probes.sources import ArraySource
from probes.traced_steps import _SHARED_STEPS_MAX, _shared_lock, _shared_steps, _StepTwin  # noqa: F401
from probes.traced_steps import step_function
from probes.weights import _ENGINE_VERSION, _model_fingerprint, randomize_weights

__all__ = ["Engine", "EngineResult", "UnsupportedModelError", "randomize_weights", "TARGETS"]


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
    >>> from probes.sources import InMemoryImages
    >>> eng = Engine(model, ["feat"], progress=False)
    >>> src = InMemoryImages(np.random.rand(4, 6))
    >>> eng.run(src, class_index=1).gradients["feat"].shape
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
        #: The image input's dtype name ("float32"; "uint8" for a model that rescales inside).
        self.input_dtype: str = str(np.dtype(getattr(graph.inputs[self._image_position], "dtype", None) or "float32"))

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
        return describe_target(self.model.name, self.target, self._final_path, self._final_mode,
                               self._squash, self._final_op)

    def _resolve(self, layers: Sequence[str] | str) -> list[str]:
        return resolve_layers(self.model.name, self._index, layers)

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
    def _step_fn(self, act_layers: tuple, grad_layers: tuple, want_outputs: bool) -> Any:
        """tf.function computing the given activations, gradients and (optionally) target values
        for one batch; traced once per layer set, for any batch size (see :mod:`probes.traced_steps`)."""
        return step_function(self, act_layers, grad_layers, want_outputs)

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
        batches = _progress(prefetched(source.batches(self.batch_size)), enabled=self.progress and total > 8,
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
                    # A read-only view of the tensor's memory, not .numpy()'s copy: a pass copies each batch
                    # into its output arrays anyway (the random pool's activations are ~0.5 GB on a wide layer).
                    value = np.asarray(result[kind][path])
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
        >>> from probes.sources import InMemoryImages
        >>> engine = Engine(model, ["conv1", "conv2"], progress=False)
        >>> x = np.random.default_rng(0).random((10, 16, 16, 1), dtype="float32")
        >>> v = np.ones(14 * 14 * 4, "float32")
        >>> [(grads["conv2"].reshape(len(grads["conv2"]), -1) @ v).shape   # projections per batch
        ...  for acts, grads in engine.stream(InMemoryImages(x), class_index=0)]
        [(10,)]
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
    def _content(self, source: ArraySource, source_key: str | None = None) -> str:
        # Per-example extra inputs are part of what a source means to this model.
        extra = self._extras.key(source) if self._extras else ""
        return (source.content_key if source_key is None else source_key) + (f"+extra:{extra}" if extra else "")

    def _key(self, source: ArraySource, path: str, kind: str, class_index: int | None,
             content: str | None = None) -> str:
        content = self._content(source) if content is None else content
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
        >>> from probes.sources import InMemoryImages
        >>> engine = Engine(model, ["conv1", "conv2"], progress=False)
        >>> x = np.random.default_rng(0).random((10, 16, 16, 1), dtype="float32")
        >>> res = engine.run(InMemoryImages(x), class_index=0)
        >>> res.gradients["conv2"].shape == res.activations["conv2"].shape
        True
        """
        paths = self._paths_with_shapes(layers)
        ci = None if class_index is None else self._check_class_index(class_index)

        acts: dict[str, np.ndarray] = {}
        grads: dict[str, np.ndarray] = {}
        keys: dict[tuple[str, str], str] = {}
        missing_act: list[str] = []
        missing_grad: list[str] = []
        wanted = [("act", acts, missing_act, None)] + ([("grad", grads, missing_grad, ci)] if ci is not None else [])
        # A file set's content key stats every file: asked once per run, not once per layer and kind.
        source_key = source.content_key
        content = self._content(source, source_key)
        for p in paths:
            for kind, store, missing, index in wanted:
                keys[(p, kind)] = self._key(source, p, kind, index, content)
                cached = self.cache.get(keys[(p, kind)])
                if cached is None:
                    missing.append(p)
                else:
                    store[p] = cached

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
                            "fingerprint": self.fingerprint, "source": source_key,
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
        >>> from probes.sources import InMemoryImages
        >>> engine = Engine(model, ["conv1", "conv2"], progress=False)
        >>> x = np.random.default_rng(0).random((10, 16, 16, 1), dtype="float32")
        >>> engine.activations(InMemoryImages(x))["conv1"].shape
        (10, 14, 14, 4)
        """
        return self.run(source, None, layers).activations

    def gradients(self, source: ArraySource, class_index: int,
                  layers: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Gradients of the target of ``class_index`` w.r.t. each layer, per example.

        Examples
        --------
        >>> from probes.sources import InMemoryImages
        >>> engine = Engine(model, ["conv1", "conv2"], progress=False)
        >>> x = np.random.default_rng(0).random((10, 16, 16, 1), dtype="float32")
        >>> engine.gradients(InMemoryImages(x), 1)["conv2"].shape
        (10, 14, 14, 4)
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
        >>> from probes.sources import InMemoryImages
        >>> engine = Engine(model, ["conv1", "conv2"], progress=False)
        >>> x = np.random.default_rng(0).random((10, 16, 16, 1), dtype="float32")
        >>> engine.outputs(InMemoryImages(x)).shape
        (10, 2)
        """
        return self._pass(source, (), (), 0, want_outputs=True)["out"]
