"""``concepts.layers``: what is my bottleneck called? Every layer of a model, and where to probe.

The table lists every layer the engine can address (nested models as ``outer/inner``), its output
shape and width, whether it can be probed (and why not), and marks suggested probe points.

The suggestion rule (architecture-agnostic, then a naming convention):

1. A candidate is a **cut point** of its (sub)graph: every path from the input to the explained
   output passes through it, so its activation carries everything the model knows at that depth.
   Inside a residual or dense block the skip connection bypasses the block's own layers, so only
   the layer where the branches merge again (``*_add``, ``*_concat``, ``*_out``, ``mixedN``) is a
   cut point. In a plain chain every layer is one.
2. A cut point is **suggested** when it ends a block: its output feeds two or more layers (the
   next block branches from it), its name ends a block by the ``keras.applications`` convention
   (``_add``, ``_concat``, ``_out``, ``add_N``, ``mixedN``), it is followed by a max/average pooling
   layer (only in graphs without such names: plain CNNs), or it is the last feature layer before
   the head's global pooling / flatten (the bottleneck); that pooling layer is suggested too.
3. A suggested layer is a **stage end** when the next suggested layer has a different spatial size
   (the network downsamples after it) or when it is the bottleneck: one layer per resolution, the
   usual short list for a first look.

For a backbone nested in a wrapper the marks fall on the backbone's own layers
(``densenet121/conv4_block24_concat``), never on the wrapper's row for the whole backbone.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import numpy as np
import pandas as pd

from probes.engine import Engine, _classify_final, _final_operation, _index_layers, _select_output
from probes.keras_graph import (graph_of, graph_operations, input_name, is_model, load_model, nodes_by_operation,
                                parent_operations, tensor_origin)

__all__ = ["layers"]

_BLOCK_END_NAME = re.compile(r"(_add|_concat|_out|^add(_\d+)?|^mixed\d+)$")
_POOL_TYPES = ("MaxPooling", "AveragePooling")
_HEAD_TYPES = ("GlobalAveragePooling", "GlobalMaxPooling", "Flatten")
#: A block's name prefix in backbones that name their layers <block>_<op> (block2a_expand_conv).
_BLOCK_PREFIX = re.compile(r"^(block_?\d+[a-z]?|conv\d+_block\d+|stage\d+_block\d+)_")


def _squeeze_excite_branch(consumers: list) -> bool:
    """A branch into a squeeze-and-excitation gate (global pooling that rescales the same tensor): the
    block goes on, so the branch point does not end it (EfficientNet's blockNx_activation)."""
    return len(consumers) >= 2 and any(type(c).__name__.startswith("GlobalAveragePooling") for c in consumers)


def _leaves_named_block(op: Any, consumers: list) -> bool:
    """The last layer of a named block: its one consumer lies outside it (block1a_project_bn feeds
    block2a_expand_conv; block7a_project_bn feeds top_conv). Poolings between named blocks (VGG's
    blockN_pool) are not block ends: the layer before them is."""
    here = _BLOCK_PREFIX.match(op.name)
    if here is None or len(consumers) != 1 or type(op).__name__.startswith(_POOL_TYPES):
        return False
    there = _BLOCK_PREFIX.match(consumers[0].name)
    return there is None or there.group(1) != here.group(1)


def _graph_structure(graph: Any, final_ops: list) -> tuple[list, dict[int, list], set[int], set[int]]:
    """Topological order of the graph's layers, consumers of each, ancestors of ``final_ops``, cut points."""
    nodes = nodes_by_operation(graph)
    order = [op for op in graph_operations(graph) if nodes.get(id(op))]
    position = {id(op): i for i, op in enumerate(order)}
    consumers: dict[int, list] = {id(op): [] for op in order}
    parents: dict[int, list] = {}
    for op in order:
        parents[id(op)] = [p for node in nodes[id(op)] for p in parent_operations(node)]
        for parent in parents[id(op)]:
            consumers.setdefault(id(parent), []).append(op)
    ancestors: set[int] = set()
    stack = list(final_ops)
    while stack:
        op = stack.pop()
        if id(op) in ancestors:
            continue
        ancestors.add(id(op))
        stack.extend(parents.get(id(op), []))
    # Non-image inputs (clinical vectors) join late; their edges do not make image layers optional.
    side_inputs = {id(tensor_origin(t)[0]) for t in graph.inputs[1:]}
    cuts: set[int] = set()
    reach = -1  # furthest consumer of any earlier layer on the path
    for i, op in enumerate(order):
        if id(op) not in ancestors:
            continue
        if reach <= i and id(op) not in side_inputs:
            cuts.add(id(op))
        if id(op) in side_inputs:
            continue
        onward = [position[id(c)] for c in consumers.get(id(op), []) if id(c) in ancestors]
        reach = max([reach] + onward)
    return order, consumers, ancestors, cuts


def _mark(graph: Any, prefix: str, final_ops: list, rows: dict[str, dict]) -> None:
    """Fill ``on_path`` and ``suggested`` for the layers of ``graph`` (recursing into nested models)."""
    order, consumers, ancestors, cuts = _graph_structure(graph, final_ops)
    # "Followed by pooling" marks blocks of plain CNNs; in a backbone whose blocks are named, it
    # would also mark transition convolutions (DenseNet's poolN_conv) ahead of the real block ends.
    named_blocks = any(_BLOCK_END_NAME.search(op.name) for op in order)
    for i, op in enumerate(order):
        path = prefix + op.name
        if path not in rows:
            continue
        rows[path]["on_path"] = id(op) in ancestors
        inner = graph_of(op) if is_model(op) else None
        if inner is not None:
            # Inside a backbone that does not lead to the output, nothing is on the path.
            inner_finals = [tensor_origin(t)[0] for t in inner.outputs] if id(op) in ancestors else []
            _mark(inner, path + "/", inner_finals, rows)
        if id(op) not in cuts or type(op).__name__ == "InputLayer" or op in final_ops:
            continue
        nxt = [c for c in consumers.get(id(op), []) if id(c) in ancestors]
        next_type = type(nxt[0]).__name__ if len(nxt) == 1 else ""
        bottleneck = any(next_type.startswith(t) for t in _HEAD_TYPES)
        head_pool = type(op).__name__.startswith(_HEAD_TYPES) and i > 0
        ends_block = ((len(nxt) >= 2 and not _squeeze_excite_branch(nxt)) or bool(_BLOCK_END_NAME.search(op.name))
                      or _leaves_named_block(op, nxt)
                      or (next_type.startswith(_POOL_TYPES) and not named_blocks) or bottleneck or head_pool)
        if not ends_block:
            continue
        target = path
        if inner is not None:
            # The backbone's row stands for its last layer: mark that layer instead.
            last, _ = tensor_origin(inner.outputs[0])
            target = path + "/" + last.name
        if target in rows:
            rows[target]["suggested"] = True
            rows[target]["bottleneck"] = rows[target].get("bottleneck", False) or bottleneck


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join("?" if d is None else str(d) for d in shape) + ")"


def layers(model: Any, *, output: int | str | None = None, extra_inputs: Mapping[str, Any] | None = None,
           suggested_only: bool = False) -> pd.DataFrame:
    """Every layer of ``model`` with its output shape, width, probe-ability and suggested probe points.

    Parameters
    ----------
    model : keras.Model or str or os.PathLike
        A Keras 3 model, or the path of one saved as ``.keras`` / ``.h5``.
    output : int | str | None, default=None
        The explained output of a multi-output model (name or index), as in ``concepts.score``;
        default the first output. Layers that do not lead to it cannot be probed.
    extra_inputs : Mapping[str, Any] | None, default=None
        As in ``concepts.score``; only needed to resolve shapes of multi-input models
        (zeros are used otherwise).
    suggested_only : bool, default=False
        Keep only the suggested rows.

    Returns
    -------
    pd.DataFrame
        A DataFrame, one row per layer in graph order, with columns ``path`` (what to pass as a
        layer), ``class``, ``output_shape``, ``width`` (units per example; -1 when unknown),
        ``probeable``, ``why_not``, ``suggested``, ``stage_end`` and ``depth`` (nesting level).
        See the module docstring for the suggestion rule.

    Examples
    --------
    The planted model of the doctests (``conv1`` → ``conv2`` → global pooling → ``head``):

    >>> import concepts
    >>> table = concepts.layers("model.keras")
    >>> table.loc[0, "class"]  # the input layer's name depends on how many Inputs Keras has made
    'InputLayer'
    >>> table[["path", "class", "probeable", "suggested"]].iloc[1:]
        path                   class  probeable  suggested
    1  conv1                  Conv2D       True      False
    2  conv2                  Conv2D       True       True
    3    gap  GlobalAveragePooling2D       True       True
    4   head                   Dense       True      False
    >>> table[table.stage_end][["path", "output_shape", "width"]]
        path output_shape  width
    2  conv2  (14, 14, 4)    784
    3    gap          (4)      4
    """
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model)
    graph = graph_of(model)
    if graph is None:
        # The engine's own message says what to do with a subclassed model.
        Engine(model, [], progress=False)
    index: dict = {}
    _index_layers(graph, "", index)
    n_graph_outputs = len(graph.outputs)
    output_index = _select_output(model, output if output is not None or n_graph_outputs == 1 else 0)
    final_path, final_op = _final_operation(model, output_index)
    mode, _ = _classify_final(final_op)

    rows: dict[str, dict] = {}
    for path, info in index.items():
        rows[path] = {"path": path, "class": type(info.layer).__name__, "shape": info.shape,
                      "depth": path.count("/"), "on_path": False, "suggested": False, "bottleneck": False,
                      "n_calls": info.n_calls, "n_outputs": info.n_outputs, "shared_by": info.shared_by}
    top_final = tensor_origin(graph.outputs[output_index])[0]
    _mark(graph, "", [top_final], rows)

    for row in rows.values():
        row["why_not"] = _why_not(row, final_path, mode)
        row["probeable"] = row["why_not"] == ""
    _resolve_shapes(model, graph, rows, output_index, extra_inputs)

    table = pd.DataFrame([{
        "path": r["path"], "class": r["class"], "output_shape": _shape_text(r["shape"]),
        "width": int(np.prod(r["shape"])) if r["shape"] and all(d is not None for d in r["shape"]) else -1,
        "probeable": r["probeable"], "why_not": r["why_not"], "suggested": r["suggested"] and r["probeable"],
        "stage_end": False, "depth": r["depth"], "_bottleneck": r["bottleneck"], "_shape": r["shape"],
    } for r in rows.values()])
    _stage_ends(table)
    table = table.drop(columns=["_bottleneck", "_shape"])
    if suggested_only:
        table = table[table["suggested"]].reset_index(drop=True)
    table.attrs["model"] = model.name
    return table


def _why_not(row: dict, final_path: str, mode: str) -> str:
    if row["n_calls"] == 0:
        return "never called in the graph"
    if row["n_calls"] > 1:
        by = row["shared_by"]
        inside = "" if by == row["path"] else f": inside '{by}'"
        return f"runs {row['n_calls']} times (shared{inside})"
    if row["n_outputs"] != 1:
        return f"produces {row['n_outputs']} tensors"
    if not row["on_path"]:
        return "does not lead to the explained output"
    if row["path"] == final_path and mode == "input":
        return "the bypassed softmax/sigmoid: probe the layer before it"
    return ""


def _resolve_shapes(model: Any, graph: Any, rows: dict[str, dict], output_index: int,
                    extra_inputs: Mapping[str, Any] | None) -> None:
    """Fill unknown (None) inner shapes with one dry run on zeros, when the model input is fixed."""
    unknown = [p for p, r in rows.items() if r["probeable"] and any(d is None for d in r["shape"])]
    if not unknown:
        return
    names = [input_name(t) for t in graph.inputs]
    extras = dict(extra_inputs or {})
    for tensor in graph.inputs[1:]:
        name = input_name(tensor)
        if name not in extras and names[0] not in extras:
            extras[name] = np.zeros([d or 1 for d in tensor.shape[1:]], "float32")
    try:
        engine = Engine(model, unknown, target="prob", progress=False, output=output_index,
                        extra_inputs=extras or None)
    except Exception:  # a flexible input or an odd layer: shapes stay unknown, the table is still useful
        return
    for path in unknown:
        rows[path]["shape"] = tuple(engine.layer_shapes.get(path, rows[path]["shape"]))


def _stage_ends(table: pd.DataFrame) -> None:
    """A suggested layer ends a stage when the next suggested layer has another spatial size."""
    suggested = table.index[table["suggested"]].tolist()
    for k, i in enumerate(suggested):
        shape = table.at[i, "_shape"]
        if table.at[i, "_bottleneck"] or k + 1 == len(suggested):
            table.at[i, "stage_end"] = True
            continue
        nxt = table.at[suggested[k + 1], "_shape"]
        spatial, nxt_spatial = tuple(shape[:-1]), tuple(nxt[:-1])
        if len(shape) >= 3 and (spatial != nxt_spatial or len(nxt) < 3):
            table.at[i, "stage_end"] = True
