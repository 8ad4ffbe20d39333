"""The engine's index of a model's layers, and what one traced walk through the model records.

:func:`_index_layers` lists every layer (and bare operation) of a model under its path, recursing
into nested models (``"outer/inner"``), with its per-example shape and how often it runs per
forward pass; :func:`resolve_layers` checks requested layers against it. :class:`_Recorder` holds
the tensors of the requested layers (and the logits) during one walk of the graph.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from probes.errors import UnknownLayerError
from probes.keras_graph import UnsupportedModelError, graph_of as _graph_of, graph_operations
from probes.keras_graph import is_model as _is_model, nodes_by_operation as _nodes_by_operation


@dataclass
class _LayerInfo:
    path: str
    layer: Any
    shape: tuple  # per-example shape from the graph; may contain None
    n_calls: int  # times the layer runs per forward pass (shared layers, or inside a shared model)
    n_outputs: int  # tensors produced by that node
    shared_by: str = ""  # path of the shared layer or model that makes n_calls > 1


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


def resolve_layers(model_name: str, index: dict[str, _LayerInfo], layers: Sequence[str] | str) -> list[str]:
    """The requested layer paths, checked: each exists, runs once per pass and has one output.

    Parameters
    ----------
    model_name : str
        Name of the model, for messages.
    index : dict[str, _LayerInfo]
        The model's layers, as made by :func:`_index_layers`.
    layers : Sequence[str] | str
        Layer names or ``"outer/inner"`` paths (one name may be given as a string).

    Returns
    -------
    list[str]
        The paths, in the order given, without repeats.

    Raises
    ------
    UnknownLayerError
        For a path not in ``index`` (the message suggests close names).
    UnsupportedModelError
        For a shared layer, a layer never called, or one with several outputs.

    Examples
    --------
    >>> info = _LayerInfo("feat", None, (5,), 1, 1)
    >>> resolve_layers("m", {"feat": info}, "feat")
    ['feat']
    """
    if isinstance(layers, str):
        layers = [layers]
    resolved: list[str] = []
    for name in layers:
        if not isinstance(name, str) or name not in index:
            raise UnknownLayerError(unknown_layer_message(model_name, index, name))
        info = index[name]
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


def unknown_layer_message(model_name: str, index: dict[str, _LayerInfo], name: Any) -> str:
    """The error message for a layer name the model does not have, with the likeliest intended ones.

    Parameters
    ----------
    model_name : str
        Name of the model.
    index : dict[str, _LayerInfo]
        The model's layers, as made by :func:`_index_layers`.
    name : Any
        What was asked for.

    Returns
    -------
    str
        The message, naming close matches (a nested layer named without its model's prefix first).

    Examples
    --------
    >>> info = _LayerInfo("backbone/conv1", None, (8,), 1, 1)
    >>> "Did you mean 'backbone/conv1'?" in unknown_layer_message("m", {"backbone/conv1": info}, "conv1")
    True
    """
    paths = list(index)
    text = str(name)
    close = difflib.get_close_matches(text, paths, n=5, cutoff=0.6)
    # A nested layer named without its model's prefix is the commonest slip.
    nested = [p for p in paths if p.endswith("/" + text)]
    close = nested + [c for c in close if c not in nested]
    hint = f" Did you mean {', '.join(repr(c) for c in close[:5])}?" if close else ""
    for path, info in index.items():
        if text.startswith(path + "/") and _is_model(info.layer) and _graph_of(info.layer) is None:
            hint = (f" '{path}' is a subclassed model: its call() is Python code, so the layers inside it "
                    f"cannot be addressed. Probe '{path}' itself (its output), or rebuild it as a "
                    "functional model.")
    listing = (f" Valid layer names and paths: {', '.join(paths)}." if len(paths) <= 60 else
               f" It has {len(paths)} layers.")
    return (f"Model '{model_name}' has no layer {name!r}.{hint} Layers of nested models are "
            f"addressed as 'outer/inner'.{listing} See every layer, its shape and the suggested "
            "probe points with concepts.layers(model) (command line: concepts layers MODEL_FILE).")
