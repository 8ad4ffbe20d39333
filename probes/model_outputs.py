"""Which output of a model the engine explains, and how to reach its logits.

The engine explains one output of a model (``output=``, by layer name or index) and, for the
``"logit"`` target, needs the pre-softmax/pre-sigmoid scores of that output. This module finds the
operation that produces the output (looking into nested models), classifies it (a layer with a
squashing ``activation`` to swap for a linear one, a Softmax/Activation layer whose input is the
logits, an affine layer whose output already is the logits, or an opaque function), and describes
the resulting target in words. It reads the layer graph only through :mod:`probes.keras_graph`.
"""
from __future__ import annotations

import difflib
from typing import Any

import numpy as np

from probes.errors import TargetError
from probes.keras_graph import graph_of as _graph_of, is_model as _is_model, tensor_origin

__all__ = ["TARGETS", "output_names", "describe_target"]

#: Targets the engine can differentiate.
TARGETS = ("logit", "log_prob", "prob")

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


def output_names(model: Any) -> list[str]:
    """Names of a model's outputs, in order: the name of the layer that produces each.

    Examples
    --------
    >>> output_names(model)
    ['head']
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


def describe_target(model_name: str, target: str, path: str, mode: str, squash: str, final_op: Any) -> str:
    """What the engine differentiates, in words (the engine's ``target_description``).

    Parameters
    ----------
    model_name : str
        Name of the model, for the error message.
    target : str
        One of :data:`TARGETS`.
    path : str
        Path of the operation producing the explained output (see ``_final_operation``).
    mode : str
        How that operation relates to the logits, as returned by ``_classify_final``.
    squash : str
        ``"softmax"``, ``"sigmoid"`` or ``"none"``.
    final_op : Any
        The operation itself (named in the error message when it is opaque).

    Returns
    -------
    str
        E.g. ``"logit: pre-softmax output of layer 'head' (softmax bypassed)"``.

    Raises
    ------
    TargetError
        For ``target="logit"`` when the final operation is opaque.

    Examples
    --------
    >>> describe_target("m", "prob", "head", "swap", "softmax", None)
    "prob: softmax of the pre-softmax output of layer 'head' (softmax bypassed)"
    """
    kind = target
    if mode == "opaque":
        if kind == "logit":
            what = (f"layer '{path}' ({type(final_op).__name__})")
            raise TargetError(
                f"Cannot find the logits of model '{model_name}': its output comes from "
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
