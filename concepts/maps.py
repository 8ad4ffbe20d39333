"""Concept maps: *where* in an image a convolutional layer expresses a concept, and where it matters.

For a convolutional layer with activations ``a[h, w, c]`` and a concept vector ``v`` (the
consensus vector of a folder concept: the normalised mean of its CAVs, living in the flattened
``(H', W', C)`` space; or a measure's RCV, which for a pooled layer lives in channel space):

* **presence** ``P[h, w] = Σ_c a[h, w, c] · v[h, w, c]`` (``v[c]`` for a pooled RCV): how much
  of the concept the activation at that position carries. Summed over positions it is the image's
  presence score ``a · v`` (for a pooled RCV its mean over positions is, since the RCV reads the
  channel means);
* **influence** ``I[h, w] = Σ_c g[h, w, c] · v[h, w, c]`` with ``g`` the gradient of a class's
  target: where moving the representation along the concept changes the class score. Summed over
  positions it is exactly the image's directional derivative (its TCAV sensitivity), for CAVs and
  pooled RCVs alike (the gradient of a pooled activation is the spatial sum of the gradient).

Maps are returned at the model's input resolution by **bilinear interpolation** between the
centres of the feature cells, edges clamped. Where the layer is reached from the input through a
chain of convolutions and poolings (the usual CNN trunk), each cell is placed at the centre of its
receptive field, computed from the layers' kernel sizes, strides, dilations and padding (so a
``"valid"`` convolution's lost border is accounted for exactly). Otherwise (branches, nested
models, unknown layers) the grid is stretched over the input with half-pixel centres, the
convention of ``tf.image.resize(..., "bilinear")``: cell ``i`` at ``(i + 0.5) H / H' - 0.5``.

Nothing here runs the model except :func:`result_concept_maps` on images the analysis has not seen:
for a class's own examples, the activations and gradients of the scoring pass are read back from
the engine's cache; for new images it costs one pass (forward only for presence).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from probes.keras_graph import is_graph_operation, single_input, tensor_origin

__all__ = ["MAP_KINDS", "presence_maps", "influence_maps", "upsample", "MapContext", "result_concept_maps",
           "pointing_game", "receptive_geometry"]

MAP_KINDS = ("presence", "influence")


def _project(fields: np.ndarray, vector: np.ndarray, what: str, n_spatial: int = 2) -> np.ndarray:
    """``Σ_c fields[n, ..., c] · v[..., c]`` (flattened-layer vector) or ``· v[c]`` (channel vector).

    ``n_spatial`` is 2 for ``(n, H, W, C)`` layers and 3 for ``(n, D, H, W, C)`` layers
    (:mod:`concepts.volume_maps`).
    """
    fields = np.asarray(fields, dtype=np.float32)
    letters = "DHW"[-n_spatial:]
    if fields.ndim != n_spatial + 2:
        raise ValueError(f"{what} must have shape (n, {', '.join(letters)}, C) "
                         f"(a {n_spatial}D convolutional layer); got {fields.shape}.")
    spatial, c = fields.shape[1:-1], fields.shape[-1]
    axes = letters.lower()
    v = np.asarray(vector, dtype=np.float32).ravel()
    size = int(np.prod(spatial)) * c
    if v.size == size:
        return np.einsum(f"n{axes}c,{axes}c->n{axes}", fields, v.reshape(*spatial, c), optimize=True)
    if v.size == c:
        return np.einsum(f"n{axes}c,c->n{axes}", fields, v, optimize=True)
    dims = "×".join(str(x) for x in (*spatial, c))
    raise ValueError(f"The concept vector has {v.size} entries, but the layer's {what} are {dims}: a vector "
                     f"must have {'·'.join(letters)}·C = {size} entries (a CAV) or C = {c} (a pooled RCV).")


def _layer_maps(engine: Any, source: Any, vector: np.ndarray, *, layer: str, kind: str,
                class_index: int | None, resolution: str, n_spatial: int,
                resize: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Presence or influence maps of one layer for ``source`` (2D and 3D): at the layer's resolution,
    or brought to the input's by ``resize``."""
    result = engine.run(source, class_index=class_index, layers=[layer])
    if kind == "presence":
        maps = _project(result.activations[layer], vector, "activations", n_spatial)
    else:
        maps = _project(result.gradients[layer], vector, "gradients", n_spatial)
    if resolution == "layer":
        return maps.astype(np.float32)
    return resize(maps)


def presence_maps(activations: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Where each image expresses a concept: ``Σ_c a[h, w, c] v[h, w, c]`` at layer resolution.

    Parameters
    ----------
    activations : numpy.ndarray
        ``(n, H', W', C)`` activations of a convolutional layer.
    vector : numpy.ndarray
        A concept vector of the flattened layer (``H'·W'·C`` entries) or of its channels (``C``).

    Returns
    -------
    numpy.ndarray
        ``(n, H', W')`` maps; each sums to ``a · v`` (flattened vector).

    Examples
    --------
    >>> a = np.ones((1, 2, 2, 3)); v = np.array([1.0, 0.0, -1.0])
    >>> presence_maps(a, v)[0].tolist()
    [[0.0, 0.0], [0.0, 0.0]]
    """
    return _project(activations, vector, "activations")


def influence_maps(gradients: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """Where moving along a concept changes the class score: ``Σ_c g[h, w, c] v[h, w, c]``.

    Parameters
    ----------
    gradients : numpy.ndarray
        ``(n, H', W', C)`` gradients of a class's target with respect to the layer.
    vector : numpy.ndarray
        A concept vector of the flattened layer (``H'·W'·C`` entries) or of its channels (``C``).

    Returns
    -------
    numpy.ndarray
        ``(n, H', W')`` maps; each sums to the image's directional derivative along ``vector``.

    Examples
    --------
    >>> g = np.arange(12.0).reshape(1, 2, 2, 3); v = np.array([0.0, 1.0, 0.0])
    >>> influence_maps(g, v)[0].tolist()
    [[1.0, 4.0], [7.0, 10.0]]
    """
    return _project(gradients, vector, "gradients")


def _interpolation_matrix(n_out: int, n_in: int, geometry: tuple[float, float] | None = None) -> np.ndarray:
    """``(n_out, n_in)`` weights of 1-D linear interpolation, edges clamped.

    ``geometry = (offset, stride)``: cell ``i`` is centred on input pixel ``offset + stride * i``;
    default the half-pixel stretch (``stride = n_out / n_in``, ``offset = (stride - 1) / 2``).
    """
    if geometry is None:
        stride = n_out / n_in
        geometry = ((stride - 1) / 2, stride)
    offset, stride = geometry
    position = (np.arange(n_out) - offset) / stride
    position = np.clip(position, 0, n_in - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    frac = position - low
    matrix = np.zeros((n_out, n_in))
    matrix[np.arange(n_out), low] += 1 - frac
    matrix[np.arange(n_out), high] += frac
    return matrix


def upsample(maps: np.ndarray, size: tuple[int, int],
             geometry: tuple[tuple[float, float], tuple[float, float]] | None = None) -> np.ndarray:
    """Bilinear upsampling (clamped edges) of ``(n, h, w)`` maps to ``size = (H, W)``.

    Parameters
    ----------
    maps : numpy.ndarray
        ``(n, h, w)`` maps.
    size : tuple of int
        The output ``(H, W)``, usually the model's input size.
    geometry : tuple, optional
        ``((offset_y, stride_y), (offset_x, stride_x))``: cell ``(i, j)`` is centred on input pixel
        ``(offset_y + stride_y i, offset_x + stride_x j)`` (see :func:`receptive_geometry`); default
        the half-pixel stretch of ``tf.image.resize``.

    Returns
    -------
    numpy.ndarray
        ``(n, H, W)`` float32 maps. A constant map stays constant; ``size == (h, w)`` returns the input.

    Examples
    --------
    >>> upsample(np.array([[[0.0, 1.0]]]), (1, 4))[0].tolist()
    [[0.0, 0.25, 0.75, 1.0]]
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (n, h, w); got {maps.shape}.")
    rows = _interpolation_matrix(int(size[0]), maps.shape[1], None if geometry is None else geometry[0])
    cols = _interpolation_matrix(int(size[1]), maps.shape[2], None if geometry is None else geometry[1])
    return np.einsum("Hh,nhw,Ww->nHW", rows, maps, cols, optimize=True).astype(np.float32)


_SPATIAL_LAYERS = {"Conv2D", "MaxPooling2D", "AveragePooling2D", "DepthwiseConv2D", "SeparableConv2D"}
_PASS_THROUGH = {"Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax", "BatchNormalization",
                 "LayerNormalization", "GroupNormalization", "Dropout", "SpatialDropout2D", "GaussianNoise",
                 "GaussianDropout", "Rescaling", "Normalization", "Identity", "InputLayer"}


def _pair(value: Any) -> tuple[int, int]:
    return (int(value), int(value)) if np.isscalar(value) else (int(value[0]), int(value[1]))


def receptive_geometry(model: Any, layer: str) -> tuple[tuple[float, float], tuple[float, float]] | None:
    """Where each cell of a layer's feature map is centred in the input: ``((offset, stride)_y, (…)_x)``.

    Walks back from ``layer`` to the input through single-input layers; convolutions and poolings
    (``"valid"`` or ``"same"`` padding, strides, dilations) move and spread the grid, element-wise
    layers (activations, normalisation, dropout) leave it alone. Returns None where the path is not
    such a chain (a branch, a nested model, an unknown layer): then maps are stretched.

    Examples
    --------
    >>> import keras
    >>> x = keras.Input((32, 32, 1)); y = keras.layers.Conv2D(2, 3, name="c")(x)
    >>> receptive_geometry(keras.Model(x, y), "c")
    ((1.0, 1.0), (1.0, 1.0))
    """
    try:
        target = model.get_layer(layer)
    except (ValueError, AttributeError):
        return None
    chain, op = [], target
    while True:
        kind = type(op).__name__
        if kind == "InputLayer":
            break
        if kind not in _SPATIAL_LAYERS and kind not in _PASS_THROUGH:
            return None
        tensor = single_input(op)
        if tensor is None:
            return None
        chain.append(op)
        parent = tensor_origin(tensor)[0]
        if parent is None or not is_graph_operation(parent):
            return None
        op = parent
    geometry = []
    for axis in (0, 1):
        offset, stride = 0.0, 1.0
        for op in reversed(chain):
            if type(op).__name__ not in _SPATIAL_LAYERS:
                continue
            config = op.get_config()
            if config.get("data_format", "channels_last") != "channels_last":
                return None
            kernel = _pair(config.get("kernel_size", config.get("pool_size", 1)))[axis]
            step = _pair(config.get("strides") or kernel)[axis]
            dilation = _pair(config.get("dilation_rate", 1))[axis]
            span = (kernel - 1) * dilation + 1
            n_in = single_input(op).shape[1 + axis]
            if n_in is None:
                return None
            pad = 0
            if config.get("padding", "valid") == "same":
                pad = max((int(np.ceil(n_in / step)) - 1) * step + span - n_in, 0) // 2
            offset += stride * ((span - 1) / 2 - pad)
            stride *= step
        geometry.append((float(offset), float(stride)))
    return geometry[0], geometry[1]


def pointing_game(maps: np.ndarray, regions: np.ndarray) -> float:
    """Share of maps whose maximum falls inside the image's region (the "pointing game").

    Parameters
    ----------
    maps : numpy.ndarray
        ``(n, H, W)`` maps at input resolution.
    regions : numpy.ndarray
        ``(n, H, W)`` boolean masks of where the evidence is.

    Returns
    -------
    float
        Hits / n.

    Examples
    --------
    >>> m = np.zeros((1, 3, 3)); m[0, 1, 1] = 1.0
    >>> pointing_game(m, m > 0)
    1.0
    """
    maps = np.asarray(maps)
    regions = np.asarray(regions, dtype=bool)
    if maps.shape != regions.shape:
        raise ValueError(f"maps {maps.shape} and regions {regions.shape} must have the same shape.")
    flat = maps.reshape(len(maps), -1).argmax(axis=1)
    return float(regions.reshape(len(regions), -1)[np.arange(len(maps)), flat].mean())


@dataclass
class MapContext:
    """What a result needs to compute maps after scoring: the engine (with its activation cache),
    the class example sets of the analysis, and how to bind new images to the model."""

    engine: Any
    classes: dict[str, Any]  # class name -> ClassExamples
    bind: Callable[[Any, str], Any]  # (images, name) -> ArraySource

    def source(self, images: Any) -> tuple[Any, str]:
        """A class name gives that class's own examples (cached activations); anything else is bound."""
        if isinstance(images, str) and images in self.classes:
            return self.classes[images].images, images
        return self.bind(images, "images"), "images"


def result_concept_maps(outcome: Any, context: MapContext | None, images: Any, *, concept: str, layer: str,
                        kind: str = "presence", class_name: str | None = None,
                        resolution: str = "input") -> np.ndarray:
    """Concept maps of ``images`` for one concept in one layer (see :meth:`ScoreResult.concept_maps`)."""
    if kind not in MAP_KINDS:
        raise ValueError(f"kind must be one of {MAP_KINDS}, not {kind!r}.")
    if resolution not in ("input", "layer"):
        raise ValueError(f"resolution must be 'input' or 'layer', not {resolution!r}.")
    if (layer, concept) not in outcome.vectors:
        known = sorted({c for _, c in outcome.vectors})
        layers = sorted({la for la, _ in outcome.vectors})
        raise KeyError(f"No concept vector for concept {concept!r} in layer {layer!r}. Concepts of this result: "
                       f"{known}; layers: {layers}.")
    if context is None:
        raise ValueError("This result is not attached to a model (it was rebuilt from a table or a cache); "
                         "compute it with concepts.score(...) or concepts.report(...) to draw concept maps.")
    engine = context.engine
    shape = tuple(engine.layer_shapes.get(layer, ()))
    volumetric = len(shape) == 4  # a 3D convolutional layer (D, H, W, C): see concepts.volume_maps
    if len(shape) not in (3, 4):
        raise ValueError(f"Concept maps need a convolutional layer (activations of shape (H, W, C), or (D, H, W, C) "
                         "in 3D); layer "
                         f"{layer!r} has per-example shape {shape}. Choose a convolutional layer.")
    class_index = None
    if kind == "influence":
        if class_name is None:
            if len(context.classes) != 1:
                raise ValueError(f"kind='influence' differentiates one class's target: pass class_name= one of "
                                 f"{sorted(context.classes)}.")
            class_name = next(iter(context.classes))
        if class_name not in context.classes:
            raise KeyError(f"Unknown class {class_name!r}; classes of this result: {sorted(context.classes)}.")
        class_index = context.classes[class_name].index
    source, _ = context.source(images)
    vector = outcome.vectors[(layer, concept)]["consensus"]
    if volumetric:
        from .volume_maps import volume_concept_maps

        return volume_concept_maps(engine, source, vector, layer=layer, kind=kind, class_index=class_index,
                                   resolution=resolution)
    return _layer_maps(engine, source, vector, layer=layer, kind=kind, class_index=class_index,
                       resolution=resolution, n_spatial=2,
                       resize=lambda maps: upsample(maps, tuple(engine.input_shape[:2]),
                                                    receptive_geometry(engine.model, layer)))
