"""The engine's index of a model's layers, and what one traced walk through the model records.

:func:`_index_layers` lists every layer (and bare operation) of a model under its path, recursing
into nested models (``"outer/inner"``), with its per-example shape and how often it runs per
forward pass; the engine uses it to resolve and check requested layers. :class:`_Recorder` holds
the tensors of the requested layers (and the logits) during one walk of the graph.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

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

