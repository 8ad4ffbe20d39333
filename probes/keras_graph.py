"""Every use of Keras internals in the toolkit, behind small functions, plus loading saved models.

The engine walks a model's layer graph itself (to record any intermediate tensor, reach into
nested models and bypass a final softmax). Keras 3 exposes no public API for that walk, so the
few private attributes it needs are read here and nowhere else. Tested with Keras 3.15.1
(TensorFlow 2.21); ``setup.cfg`` pins ``keras>=3.0,<4``. If a Keras release renames one of
them, this is the only file to change.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from probes.errors import ToolkitError

__all__ = ["KERAS_INTERNALS", "SUPPORTED_KERAS", "ModelFileError", "UnsupportedModelError", "load_model",
           "graph_of", "nodes_by_operation", "parent_operations", "run_through_graph", "standardize_inputs",
           "tensor_origin", "takes_training_flag", "is_model", "input_name", "graph_operations",
           "single_input", "is_graph_operation", "keras_version_supported"]

#: Keras versions this adapter supports, as in setup.cfg's ``keras>=3.0,<4``.
SUPPORTED_KERAS = (">=3.0", "<4")

#: The private Keras names read here (each exercised by tests/test_keras_adapter.py).
KERAS_INTERNALS = ("keras.src.models.functional.Functional", "Sequential._functional",
                   "Functional._nodes_by_depth", "Functional._run_through_graph",
                   "Functional._standardize_inputs", "Layer._inbound_nodes", "Layer._call_context_args",
                   "KerasTensor._keras_history")

#: File suffixes Keras 3 loads with ``keras.models.load_model``.
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")


class ModelFileError(ToolkitError, ValueError):
    """A model path that does not exist or cannot be loaded as a Keras model."""


class UnsupportedModelError(ToolkitError, TypeError):
    """A model (or layer) whose structure the engine cannot walk."""


def _keras() -> Any:
    # Imported lazily so that `import probes` stays free of TensorFlow start-up cost.
    import keras

    return keras


def load_model(path: str | os.PathLike) -> Any:
    """Load a saved Keras model (``.keras`` or legacy ``.h5``) for inference, without compiling.

    Examples
    --------
    >>> [layer.name for layer in load_model("model.keras").layers][1:]   # after its input layer
    ['conv1', 'conv2', 'gap', 'head']
    >>> load_model("missing.keras")
    Traceback (most recent call last):
    ...
    probes.keras_graph.ModelFileError: Model file 'missing.keras' does not exist. ...
    """
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"Model file '{path}' does not exist. Give the path of a model saved with "
                             "model.save('model.keras') (or a legacy .h5 file), or pass the keras.Model itself.")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise ModelFileError(f"Model file '{path}' has suffix {path.suffix!r}; Keras 3 loads "
                             f"{', '.join(MODEL_SUFFIXES)} files. A TensorFlow SavedModel folder cannot be "
                             "walked layer by layer: load it in its original code and save it with "
                             "model.save('model.keras').")
    try:
        return _keras().models.load_model(path, compile=False)
    except Exception as exc:  # a damaged archive, an unknown custom layer, ...
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelFileError(
            f"Cannot load '{path}' as a Keras model ({reason}). If it uses custom layers, load it "
            "yourself with keras.models.load_model(path, custom_objects={...}) and pass the model."
        ) from exc


def is_model(op: Any) -> bool:
    """True for a (possibly nested) keras.Model.

    Examples
    --------
    >>> import keras
    >>> is_model(keras.layers.Dense(2)), is_model(model)
    (False, True)
    """
    return isinstance(op, _keras().Model)


def graph_of(model: Any) -> Any | None:
    """The Functional graph behind ``model`` (None when it is a subclassed model).

    Examples
    --------
    >>> import keras
    >>> sequential = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(2, name="d")])
    >>> [op.name for op in graph_operations(graph_of(sequential))], graph_of(model) is model
    (['x', 'd'], True)
    """
    keras = _keras()
    from keras.src.models.functional import Functional

    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise UnsupportedModelError(
                f"Sequential model '{model.name}' has not been built, so it has no layer graph. "
                "Give it an input shape (start it with keras.Input(shape=...)) or call it once on "
                "a batch before passing it to the engine.")
        return graph
    if isinstance(model, Functional):
        return model
    return None


def nodes_by_operation(graph: Any) -> dict[int, list]:
    """The graph's nodes (calls) grouped by ``id`` of the layer that made them.

    Examples
    --------
    >>> import keras
    >>> shared = keras.layers.Dense(2, name="shared")   # called twice: two nodes
    >>> a, b = keras.Input((3,), name="a"), keras.Input((3,), name="b")
    >>> siamese = keras.Model([a, b], keras.layers.Add()([shared(a), shared(b)]))
    >>> len(nodes_by_operation(siamese)[id(shared)])
    2
    """
    nodes: dict[int, list] = {}
    for depth_nodes in graph._nodes_by_depth.values():
        for node in depth_nodes:
            if node.operation is not None:
                nodes.setdefault(id(node.operation), []).append(node)
    return nodes


def graph_operations(graph: Any) -> list:
    """Every operation of the graph in order: its layers and the bare ops (``x + y``) between them.

    Examples
    --------
    >>> [op.name for op in graph_operations(model)][1:]   # after its input layer
    ['conv1', 'conv2', 'gap', 'head']
    """
    return list(getattr(graph, "operations", graph.layers))


def parent_operations(node: Any) -> list:
    """The layers whose outputs a node consumes.

    Examples
    --------
    >>> import keras
    >>> x = keras.Input((4,), name="x")
    >>> stem = keras.layers.Dense(3, name="stem")(x)
    >>> b2 = keras.layers.Dense(3, name="b2")(stem)
    >>> residual = keras.Model(x, keras.layers.Add(name="add")([stem, b2]))
    >>> node, = nodes_by_operation(residual)[id(residual.get_layer("add"))]
    >>> [op.name for op in parent_operations(node)]
    ['stem', 'b2']
    """
    return [parent.operation for parent in node.parent_nodes]


def run_through_graph(graph: Any, inputs: Any, operation_fn: Callable[[Any], Callable]) -> Any:
    """Run ``graph`` on ``inputs``, calling ``operation_fn(layer)(*args, **kwargs)`` for each layer.

    Examples
    --------
    >>> x = np.ones((2, 16, 16, 1), np.float32)
    >>> out = run_through_graph(model, x, lambda op: op)   # the plain forward pass
    >>> np.allclose(np.asarray(out), np.asarray(model(x)))
    True
    """
    return graph._run_through_graph(inputs, operation_fn=operation_fn)


def standardize_inputs(graph: Any, inputs: Any) -> list:
    """The graph's inputs as a flat list in ``graph.inputs`` order.

    Examples
    --------
    >>> import keras
    >>> image, clinical = keras.Input((4,), name="image"), keras.Input((2,), name="clinical")
    >>> fused = keras.layers.Concatenate()([image, clinical])
    >>> two_inputs = keras.Model([image, clinical], keras.layers.Dense(1)(fused))
    >>> batch = standardize_inputs(two_inputs, {"clinical": np.zeros((5, 2)), "image": np.ones((5, 4))})
    >>> [tuple(t.shape) for t in batch]   # a list in the model's input order
    [(5, 4), (5, 2)]
    """
    return graph._standardize_inputs(inputs)


def tensor_origin(tensor: Any) -> tuple[Any, int]:
    """The layer that produced a symbolic tensor, and which of its outputs the tensor is.

    Examples
    --------
    >>> op, index = tensor_origin(model.outputs[0])
    >>> op.name, index
    ('head', 0)
    """
    history = tensor._keras_history
    return history.operation, int(history.tensor_index)


def input_name(tensor: Any) -> str:
    """Name of the Input layer behind a symbolic input tensor.

    Examples
    --------
    >>> import keras
    >>> image, clinical = keras.Input((4,), name="image"), keras.Input((2,), name="clinical")
    >>> fused = keras.layers.Concatenate()([image, clinical])
    >>> two_inputs = keras.Model([image, clinical], keras.layers.Dense(1)(fused))
    >>> [input_name(t) for t in two_inputs.inputs]
    ['image', 'clinical']
    """
    return tensor_origin(tensor)[0].name


def takes_training_flag(op: Any) -> bool:
    """Whether a layer's call() accepts ``training=`` (dropout, batch norm, augmentation...).

    Examples
    --------
    >>> import keras
    >>> takes_training_flag(keras.layers.Dropout(0.5)), takes_training_flag(object())
    (True, False)
    """
    return "training" in getattr(op, "_call_context_args", ())


def single_input(op: Any) -> Any | None:
    """The one symbolic input tensor of a layer called exactly once on one tensor; None otherwise.

    Examples
    --------
    >>> import keras
    >>> x = keras.Input((8, 8, 1)); y = keras.layers.Conv2D(2, 3, name="c")(x)
    >>> single_input(keras.Model(x, y).get_layer("c")) is x
    True
    """
    nodes = getattr(op, "_inbound_nodes", None) or []
    if len(nodes) != 1 or len(nodes[0].input_tensors) != 1:
        return None
    return nodes[0].input_tensors[0]


def is_graph_operation(op: Any) -> bool:
    """Whether ``op`` is a layer of a symbolic graph (it records the calls that built the graph).

    Examples
    --------
    >>> import keras
    >>> is_graph_operation(keras.layers.Dense(2))
    True
    >>> is_graph_operation(object())
    False
    """
    return getattr(op, "_inbound_nodes", None) is not None


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def keras_version_supported(version: str | None = None) -> bool:
    """Whether a Keras version (default: the installed one) lies in :data:`SUPPORTED_KERAS`.

    Parameters
    ----------
    version : str or None
        A version such as ``"3.15.1"``; None reads ``keras.__version__``.

    Returns
    -------
    bool

    Examples
    --------
    >>> keras_version_supported("3.15.1"), keras_version_supported("4.0.0"), keras_version_supported("2.15")
    (True, False, False)
    """
    found = _version_tuple(version if version is not None else _keras().__version__)
    for spec in SUPPORTED_KERAS:
        op = spec.rstrip("0123456789.")
        bound = _version_tuple(spec[len(op):])
        padded = found + (0,) * max(0, len(bound) - len(found))
        ok = {">=": padded >= bound, "<": padded < bound, ">": padded > bound, "<=": padded <= bound,
              "==": padded == bound}[op]
        if not ok:
            return False
    return True
