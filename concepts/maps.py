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

Maps are returned at the input resolution by **bilinear interpolation** (trilinear for 3D layers,
:mod:`concepts.volume_maps`) between the centres of the feature cells, edges clamped. Where the
layer is reached from the input through a chain of convolutions, poolings, zero-paddings and
croppings (the usual CNN trunk, 2D or 3D), each cell is placed at the centre of its receptive
field, computed per axis from the layers' kernel sizes, strides, dilations and padding (so a
``"valid"`` convolution's lost border is accounted for exactly). Otherwise (branches, nested
models, unknown layers) the grid is stretched over the input with half-pixel centres, the
convention of ``tf.image.resize(..., "bilinear")``: cell ``i`` at ``(i + 0.5) H / H' - 0.5``.

The input resolution is the model's input size, or, for a model with a flexible input
(``(None, None, C)``, e.g. a ``keras.applications`` backbone built with ``input_shape=(None, None,
3)``), the size of the images actually fed; the images of one call must then share one size.

Nothing here runs the model except :func:`result_concept_maps` on images the analysis has not seen:
for a class's own examples, the activations and gradients of the scoring pass are read back from
the engine's cache; for new images it costs one pass (forward only for presence).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from probes.errors import InputShapeError, ToolkitError
from probes.keras_graph import is_graph_operation, single_input, tensor_origin

__all__ = ["MAP_KINDS", "presence_maps", "influence_maps", "upsample", "MapContext", "result_concept_maps",
           "pointing_game", "receptive_geometry", "check_image_array"]

Geometry = tuple[tuple[float, float], ...]  # per spatial axis: (offset, stride) of the cell centres

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
                     f"must have {'·'.join(letters)}·C = {size} entries (a CAV) or C = {c} (a pooled RCV). With a "
                     "model of flexible input size, a CAV only fits images of the size the concept was scored "
                     "on: resize the images to that size.")


def _static_size(engine: Any, n_spatial: int) -> tuple[int, ...] | None:
    """The model's fixed input size ``(H, W)`` / ``(D, H, W)``, or None for a flexible input."""
    size = tuple(engine.input_shape[:n_spatial])
    return None if any(d is None for d in size) else tuple(int(d) for d in size)


def _fed_sizes(source: Any, n_spatial: int, first_only: bool) -> list[tuple[int, ...]]:
    """Spatial sizes of the images ``source`` feeds the model, in order of appearance.

    Batches of one image: decoding only, no model pass, and never a batch that mixes sizes."""
    sizes: list[tuple[int, ...]] = []
    for batch in source.batches(1):
        size = tuple(int(d) for d in np.shape(batch)[1:1 + n_spatial])
        if size not in sizes:
            sizes.append(size)
        if first_only:
            break
    return sizes


def _run_layer(engine: Any, source: Any, layer: str, class_index: int | None, n_spatial: int) -> Any:
    """``engine.run`` for one layer; for a flexible model, images of several sizes are a clear error."""
    try:
        return engine.run(source, class_index=class_index, layers=[layer])
    except ValueError as error:
        # Only shape trouble can come from mixed sizes (not, say, a layer that is not differentiable).
        if _static_size(engine, n_spatial) is not None or (isinstance(error, ToolkitError)
                                                           and not isinstance(error, InputShapeError)):
            raise
        # A flexible model accepts every size, but one call's maps form one array at one size; the
        # engine only notices when a batch of another size does not fit its output arrays.
        sizes = _fed_sizes(source, n_spatial, first_only=False)
        if len(sizes) <= 1:
            raise
        shown = ", ".join("×".join(map(str, size)) for size in sizes[:6]) + (", ..." if len(sizes) > 6 else "")
        raise InputShapeError(
            f"The model's input {tuple(engine.input_shape)} has no fixed size, so concept maps come at the size of "
            f"the images fed, and one call needs images of one size; these have {len(sizes)} sizes ({shown}). "
            "Resize them to one size (e.g. preprocess=...), or call concept_maps once per size.") from error


def _layer_maps(engine: Any, source: Any, vector: np.ndarray, *, layer: str, kind: str,
                class_index: int | None, resolution: str, n_spatial: int) -> np.ndarray:
    """Presence or influence maps of one layer for ``source`` (2D and 3D): at the layer's resolution,
    or at the input's (receptive-field centres where the layer chain allows, else the stretch)."""
    static = _static_size(engine, n_spatial)
    if len(source) == 0:
        spatial = static if resolution == "input" else engine.layer_shapes.get(layer, ())[:n_spatial]
        return np.zeros((0, *[d or 0 for d in (spatial or (0,) * n_spatial)]), np.float32)
    result = _run_layer(engine, source, layer, class_index, n_spatial)
    if kind == "presence":
        maps = _project(result.activations[layer], vector, "activations", n_spatial)
    else:
        maps = _project(result.gradients[layer], vector, "gradients", n_spatial)
    if resolution == "layer":
        return maps.astype(np.float32)
    # A flexible model: the size of the images actually fed (the run above succeeded, so they share it).
    size = static if static is not None else _fed_sizes(source, n_spatial, first_only=True)[0]
    geometry, cells = _receptive(engine.model, layer, size)
    if geometry is not None and cells != tuple(maps.shape[1:]):
        geometry = None  # the chain does not predict the layer's grid: a convention we do not know
    return _resample(maps, size, geometry)


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


def _resample(maps: np.ndarray, size: Sequence[int], geometry: Geometry | None) -> np.ndarray:
    """Separable linear interpolation of ``(n, *cells)`` maps to ``(n, *size)``, any number of axes."""
    matrices = [_interpolation_matrix(int(n_out), int(n_in), None if geometry is None else geometry[axis])
                for axis, (n_out, n_in) in enumerate(zip(size, maps.shape[1:]))]
    out = np.asarray(maps, dtype=np.float64)
    for axis, matrix in enumerate(matrices):
        # Axis by axis: the cost grows with the output, not with (output × input) per voxel.
        out = np.moveaxis(np.tensordot(matrix, out, axes=([1], [axis + 1])), 0, axis + 1)
    return out.astype(np.float32)


def _check_size(size: Any, n_spatial: int, what: str) -> tuple[int, ...]:
    try:
        values = tuple(size)
    except TypeError:
        values = ()
    if len(values) != n_spatial or any(v is None or isinstance(v, bool) or int(v) != v or int(v) < 1
                                       for v in values):
        raise ValueError(f"size must be {n_spatial} positive integers {what}; got {size!r}. For a model with a "
                         "flexible input (None dimensions), pass the size of the images the maps belong to.")
    return tuple(int(v) for v in values)


def _check_geometry(geometry: Any, n_spatial: int) -> Geometry | None:
    if geometry is None:
        return None
    try:
        pairs = tuple((float(offset), float(stride)) for offset, stride in geometry)
    except (TypeError, ValueError):
        pairs = ()
    if len(pairs) != n_spatial or any(not stride > 0 for _, stride in pairs):
        raise ValueError(f"geometry must be {n_spatial} pairs (offset, stride > 0), one per axis, as "
                         f"receptive_geometry returns; got {geometry!r}.")
    return pairs


def upsample(maps: np.ndarray, size: tuple[int, int],
             geometry: tuple[tuple[float, float], tuple[float, float]] | None = None) -> np.ndarray:
    """Bilinear upsampling (clamped edges) of ``(n, h, w)`` maps to ``size = (H, W)``.

    Parameters
    ----------
    maps : numpy.ndarray
        ``(n, h, w)`` maps.
    size : tuple of int
        The output ``(H, W)``: the size of the images the maps belong to (the model's input size,
        or for a model with a flexible input, the images' own size).
    geometry : tuple, optional
        ``((offset_y, stride_y), (offset_x, stride_x))``: cell ``(i, j)`` is centred on input pixel
        ``(offset_y + stride_y i, offset_x + stride_x j)`` (see :func:`receptive_geometry`); default
        the half-pixel stretch of ``tf.image.resize``.

    Returns
    -------
    numpy.ndarray
        ``(n, H, W)`` float32 maps. A constant map stays constant; ``size == (h, w)`` returns the input.

    Raises
    ------
    ValueError
        ``maps`` is not ``(n, h, w)``, ``size`` is not two positive integers (e.g. ``(None, None)``),
        or ``geometry`` is not two ``(offset, stride)`` pairs.

    Examples
    --------
    >>> upsample(np.array([[[0.0, 1.0]]]), (1, 4))[0].tolist()
    [[0.0, 0.25, 0.75, 1.0]]
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 3:
        raise ValueError(f"maps must have shape (n, h, w); got {maps.shape}.")
    return _resample(maps, _check_size(size, 2, "(H, W)"), _check_geometry(geometry, 2))


# Layers that move and spread the grid (kernel, stride, dilation, padding), per number of spatial axes.
_SPATIAL_LAYERS = {"Conv2D": 2, "MaxPooling2D": 2, "AveragePooling2D": 2, "DepthwiseConv2D": 2, "SeparableConv2D": 2,
                   "Conv3D": 3, "MaxPooling3D": 3, "AveragePooling3D": 3}
# Layers that only shift it (and change its size): cells are added or removed at the borders.
_SHIFT_LAYERS = {"ZeroPadding2D": ("padding", 2), "Cropping2D": ("cropping", 2),
                 "ZeroPadding3D": ("padding", 3), "Cropping3D": ("cropping", 3)}
_PASS_THROUGH = {"Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax", "BatchNormalization",
                 "LayerNormalization", "GroupNormalization", "UnitNormalization", "Dropout", "SpatialDropout2D",
                 "SpatialDropout3D", "AlphaDropout", "GaussianNoise", "GaussianDropout", "ActivityRegularization",
                 "Rescaling", "Normalization", "Identity", "InputLayer"}


def _per_axis(value: Any, n: int) -> tuple[int, ...] | None:
    """A Keras int-or-tuple setting as ``n`` ints; None when it does not have ``n`` entries."""
    if np.isscalar(value):
        return (int(value),) * n
    values = tuple(int(v) for v in value)
    return values if len(values) == n else None


def _borders(value: Any, n: int) -> tuple[tuple[int, int], ...] | None:
    """A ZeroPadding/Cropping setting (int, per-axis ints or per-axis (before, after)) as ``n`` pairs."""
    if np.isscalar(value):
        return ((int(value), int(value)),) * n
    value = tuple(value)
    if len(value) != n:
        return None
    pairs = []
    for item in value:
        if np.isscalar(item):
            pairs.append((int(item), int(item)))
        else:
            item = tuple(item)
            if len(item) != 2:
                return None
            pairs.append((int(item[0]), int(item[1])))
    return tuple(pairs)


def _chain(model: Any, layer: str) -> list[Any] | None:
    """The layers from the input to ``layer`` (input first), or None if the path is not a known chain."""
    try:
        op = model.get_layer(layer)
    except (ValueError, AttributeError):
        return None
    chain = []
    while type(op).__name__ != "InputLayer":
        kind = type(op).__name__
        if kind not in _SPATIAL_LAYERS and kind not in _SHIFT_LAYERS and kind not in _PASS_THROUGH:
            return None
        tensor = single_input(op)
        if tensor is None:
            return None
        chain.append(op)
        parent = tensor_origin(tensor)[0]
        if parent is None or not is_graph_operation(parent):
            return None
        op = parent
    return chain[::-1]


def _receptive(model: Any, layer: str, input_size: Sequence[int] | None = None
               ) -> tuple[Geometry | None, tuple[int | None, ...] | None]:
    """:func:`receptive_geometry` and the layer's grid size it predicts (None where unknown)."""
    chain = _chain(model, layer)
    if not chain:
        return None, None
    static = tuple(single_input(chain[0]).shape[1:-1])
    n_spatial = len(static)
    if input_size is not None:
        if len(tuple(input_size)) != n_spatial:
            raise ValueError(f"input_size {tuple(input_size)} must give the {n_spatial} spatial sizes of the "
                             f"model input {tuple(single_input(chain[0]).shape[1:])}.")
        static = tuple(int(d) for d in input_size)
    offsets, strides, sizes = [0.0] * n_spatial, [1.0] * n_spatial, list(static)
    for op in chain:
        kind = type(op).__name__
        if kind in _PASS_THROUGH:
            continue
        config = op.get_config()
        if config.get("data_format") == "channels_first":
            return None, None
        if kind in _SHIFT_LAYERS:
            key, rank = _SHIFT_LAYERS[kind]
            borders = _borders(config.get(key, 0), n_spatial) if rank == n_spatial else None
            if borders is None:
                return None, None
            sign = -1 if key == "padding" else 1  # padding puts cell 0 before pixel 0; cropping after
            for axis, (before, after) in enumerate(borders):
                offsets[axis] += sign * strides[axis] * before
                if sizes[axis] is not None:
                    sizes[axis] += -sign * (before + after)
            continue
        if _SPATIAL_LAYERS[kind] != n_spatial:
            return None, None
        kernel = _per_axis(config.get("kernel_size", config.get("pool_size", 1)), n_spatial)
        # Poolings default their strides to their pool size.
        step = _per_axis(config.get("strides") or kernel, n_spatial)
        dilation = _per_axis(config.get("dilation_rate", 1), n_spatial)
        padding = str(config.get("padding", "valid")).lower()
        if kernel is None or step is None or dilation is None or padding not in ("valid", "same"):
            return None, None
        for axis in range(n_spatial):
            span = (kernel[axis] - 1) * dilation[axis] + 1
            n_in, s = sizes[axis], step[axis]
            pad = 0
            if padding == "same":
                if n_in is None and s != 1:
                    return None, None  # TensorFlow's 'same' split of the padding depends on the size
                # TensorFlow's convention: the total padding, with its smaller half before the first pixel.
                pad = (span - 1) // 2 if n_in is None else max((-(-n_in // s) - 1) * s + span - n_in, 0) // 2
                sizes[axis] = None if n_in is None else -(-n_in // s)
            else:
                sizes[axis] = None if n_in is None else (n_in - span) // s + 1
            offsets[axis] += strides[axis] * ((span - 1) / 2 - pad)
            strides[axis] *= s
    return tuple((float(o), float(s)) for o, s in zip(offsets, strides)), tuple(sizes)


def receptive_geometry(model: Any, layer: str, input_size: Sequence[int] | None = None
                       ) -> tuple[tuple[float, float], ...] | None:
    """Where each cell of a layer's feature map is centred in the input: ``(offset, stride)`` per axis.

    Walks back from ``layer`` to the input through single-input layers; convolutions and poolings,
    2D or 3D (``"valid"`` or ``"same"`` padding, strides, dilations), move and spread the grid,
    zero-paddings and croppings shift it, element-wise layers (activations, normalisation, dropout)
    leave it alone. Cell ``i`` of an axis is centred on input pixel ``offset + stride * i``.

    Parameters
    ----------
    model : keras.Model
        The model holding ``layer``.
    layer : str
        A layer of ``model`` (a name ``model.get_layer`` knows).
    input_size : sequence of int, optional
        The spatial size of the images fed (``(H, W)`` or ``(D, H, W)``); default the model's input
        size. Needed for a model with a flexible input (None dimensions) when a ``"same"``
        layer has a stride above 1, since where TensorFlow puts its padding depends on the size.

    Returns
    -------
    tuple or None
        ``((offset, stride)_y, (offset, stride)_x)`` for 2D layers, ``((…)_d, (…)_y, (…)_x)`` for 3D;
        None where the path is not such a chain (a branch, a nested model, an unknown layer) or
        the size it needs is unknown: then maps are stretched.

    Examples
    --------
    >>> import keras
    >>> x = keras.Input((32, 32, 1)); y = keras.layers.Conv2D(2, 3, name="c")(x)
    >>> receptive_geometry(keras.Model(x, y), "c")
    ((1.0, 1.0), (1.0, 1.0))
    >>> v = keras.Input((None, None, None, 1)); w = keras.layers.Conv3D(2, 5, strides=2, name="c3")(v)
    >>> receptive_geometry(keras.Model(v, w), "c3", input_size=(16, 16, 16))
    ((2.0, 2.0), (2.0, 2.0), (2.0, 2.0))
    """
    return _receptive(model, layer, input_size)[0]


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


def _batch_shape_text(input_shape: Sequence[int | None]) -> str:
    """``(n, H, W, 3)``-style text of a batch of the model's input, letters for flexible sizes."""
    letters = "DHW"[-(len(input_shape) - 1):] if len(input_shape) > 1 else ""
    dims = [letters[i] if d is None and i < len(letters) else ("C" if d is None else str(d))
            for i, d in enumerate(input_shape)]
    return f"(n, {', '.join(dims)})"


def check_image_array(images: Any, input_shape: Sequence[int | None]) -> None:
    """Raise a clear error unless an in-memory ``images`` array is a batch ``(n, *input_shape)``.

    One image ``(H, W, C)`` (or one volume ``(D, H, W, C)``) is refused rather than guessed into a
    batch: the maps would then be ``(1, H, W)``, and an array with one axis too few is as often a
    batch of gray images without their channel axis. Anything that is not a numpy array passes
    (folders, files and image sets are checked where they are read).

    Parameters
    ----------
    images : Any
        What the caller passed as images.
    input_shape : sequence of int or None
        The model's per-example input shape, e.g. ``(32, 32, 3)`` or ``(None, None, 3)``.

    Raises
    ------
    InputShapeError
        The array is one image (``images[None]`` makes it a batch of one) or does not have the
        model's per-example shape.

    Examples
    --------
    >>> check_image_array(np.zeros((2, 8, 8, 3)), (8, 8, 3))           # a batch: fine
    >>> check_image_array(np.zeros((8, 8, 3)), (8, 8, 3))              # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    probes.errors.InputShapeError: images has shape (8, 8, 3): one image, but concept maps take a batch ...
    """
    if not isinstance(images, np.ndarray):
        return
    expected = tuple(input_shape)
    batch = _batch_shape_text(expected)
    shape = tuple(images.shape)

    def fits(got: tuple) -> bool:
        return len(got) == len(expected) and all(e is None or int(e) == g for e, g in zip(expected, got))

    if images.ndim == len(expected):
        what = "one image" if len(expected) <= 3 else "one volume"
        hint = (f"pass images[None] for one {what[4:]}" if fits(shape) else
                f"pass an array of shape {batch}, with images[None] for a single {what[4:]}")
        raise InputShapeError(f"images has shape {shape}: {what}, but concept maps take a batch {batch}; {hint}.")
    if images.ndim != len(expected) + 1 or not fits(shape[1:]):
        raise InputShapeError(f"images has shape {shape}, but concept maps of this model take a batch {batch} "
                              f"(the model's input per example is {expected}). Resize or preprocess the images "
                              "to the model's input shape.")


def result_concept_maps(outcome: Any, context: MapContext | None, images: Any, *, concept: str, layer: str,
                        kind: str = "presence", class_name: str | None = None,
                        resolution: str = "input") -> np.ndarray:
    """Concept maps of ``images`` for one concept in one layer (see :meth:`ScoreResult.concept_maps`).

    ``(n, H, W)`` maps for 2D layers and ``(n, D, H, W)`` for 3D layers, at the input resolution
    (the model's input size, or for a flexible model the size of the images fed) or the layer's.

    Examples
    --------
    >>> maps = result_concept_maps(result._outcome, result._context, "striped", concept="horizontal",
    ...                            layer="conv2")
    >>> maps.shape
    (12, 16, 16)
    """
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
    check_image_array(images, engine.input_shape)
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
                       resolution=resolution, n_spatial=2)
