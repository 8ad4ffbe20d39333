"""Concept maps at the right size and place: flexible inputs, single images, 3D geometry, 3D plots.

Known answers:

* convolutions whose kernels are centred deltas copy the input: a cell's value is the pixel (voxel)
  at the centre of its receptive field. With a channel vector of ones the presence map is that
  copy, so at the input resolution it must equal the input at every cell centre and peak on a
  bright pixel -- for 'valid' and strided 'same' layers, in 2D and 3D, and for a model of flexible
  input size at the size of the images fed (where TensorFlow's 'same' padding, hence the centres,
  depends on that size: odd centres at 16 pixels, even ones at 17);
* with all-ones kernels a cell depends on exactly its receptive field, found from the Jacobian:
  its centre must be where ``receptive_geometry`` says, per axis, through 3D convolutions,
  poolings, zero-paddings and croppings;
* a model with input ``(None, None, C)`` gives maps at its images' size from the scoring pass
  (no model pass), and images of several sizes in one call, or one image without its batch axis,
  are errors that say what to do.
"""
from __future__ import annotations

import os
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import concepts  # noqa: E402
from concepts.errors import InputShapeError  # noqa: E402
from concepts.maps import MapContext, receptive_geometry, result_concept_maps, upsample  # noqa: E402
from concepts.volume_maps import upsample3d  # noqa: E402
from synthetic import write_png  # noqa: E402

FAST = dict(n_random=5, n_directions=100, progress=False, cache_dir=False)


# --------------------------------------------------------------------------- helpers
def _delta_model(input_shape, layers):
    """A model of single-channel convolutions whose kernels are centred deltas (they copy their input)."""
    import keras

    x = keras.Input(input_shape)
    h = x
    built = []
    for layer in layers:
        h = layer(h)
        built.append(layer)
    pool = keras.layers.GlobalAveragePooling3D() if len(input_shape) == 4 else keras.layers.GlobalAveragePooling2D()
    model = keras.Model(x, keras.layers.Dense(2, name="head")(pool(h)))
    for layer in built:
        if layer.weights:
            kernel = np.zeros_like(layer.get_weights()[0])
            kernel[tuple(k // 2 for k in kernel.shape[:-2])] = 1.0
            layer.set_weights([kernel, np.zeros(1, np.float32)])
    return model


def _ones_maps(model, layer, images, resolution="input"):
    """Presence maps along a channel vector of ones, through the same path as ScoreResult.concept_maps."""
    from probes.engine import Engine
    from probes.sources import InMemoryImages

    engine = Engine(model, [layer], progress=False)
    context = MapContext(engine=engine, classes={}, bind=lambda arrays, name: InMemoryImages(arrays, name=name))
    outcome = types.SimpleNamespace(vectors={(layer, "ones"): {"consensus": np.ones(1, np.float32)}})
    return result_concept_maps(outcome, context, images, concept="ones", layer=layer, resolution=resolution)


def _check_centres(model, name, input_shape):
    """With all-ones kernels, every cell whose receptive field is not cut by padding is centred where
    receptive_geometry says (the field found from the Jacobian); returns how many cells were checked."""
    import keras
    import tensorflow as tf

    geometry = receptive_geometry(model, name)
    assert geometry is not None and len(geometry) == len(input_shape) - 1, (name, geometry)
    sub = keras.Model(model.inputs, model.get_layer(name).output)
    image = tf.ones((1, *input_shape))
    with tf.GradientTape() as tape:
        tape.watch(image)
        out = sub(image)[0, ..., 0]
    jacobian = tape.jacobian(out, image).numpy()[..., 0] != 0  # (*cells, 1, *pixels)
    cells = out.shape
    fields = {}
    for cell in np.ndindex(*cells):
        where = np.argwhere(jacobian[cell][0])
        if len(where):  # a cell made of zero padding only depends on no pixel
            fields[cell] = (where.min(axis=0), where.max(axis=0))
    full = max(int((hi - lo).sum()) for lo, hi in fields.values())
    checked = 0
    for cell, (lo, hi) in fields.items():
        if int((hi - lo).sum()) < full:
            continue  # cut by padding (zero or 'same'): its centre is not the cell's
        for axis, (offset, stride) in enumerate(geometry):
            assert (lo[axis] + hi[axis]) / 2 == pytest.approx(offset + stride * cell[axis]), (name, cell, axis)
        checked += 1
    return checked


# --------------------------------------------------------------------------- known answers: placement
def test_flexible_2d_maps_come_at_the_fed_size_with_each_sizes_receptive_field_centres():
    import keras

    model = _delta_model((None, None, 1), [keras.layers.Conv2D(1, 5, name="conv1"),
                                           keras.layers.Conv2D(1, 3, strides=2, padding="same", name="conv2")])
    for size, bright, centres in ((16, (7, 9), np.arange(3, 14, 2)), (17, (8, 10), np.arange(2, 15, 2))):
        x = np.zeros((2, size, size, 1), np.float32)
        x[0, bright[0], bright[1], 0] = 1.0
        x[1] = np.random.default_rng(size).uniform(0, 1, (size, size, 1))
        maps = _ones_maps(model, "conv2", x)
        assert maps.shape == (2, size, size)  # the size fed, not the model's (None, None)
        assert np.unravel_index(np.argmax(maps[0]), maps[0].shape) == bright
        # Each cell sits on the pixel it copies: exact at every cell centre, for both images.
        grid = np.ix_(centres, centres)
        np.testing.assert_allclose(maps[:, grid[0], grid[1]], x[:, grid[0], grid[1], 0], atol=1e-6)


def test_3d_valid_chain_puts_the_map_peak_on_the_bright_voxel():
    import keras

    chain = lambda: [keras.layers.Conv3D(1, 5, padding="valid", name="conv1"),  # noqa: E731
                     keras.layers.Conv3D(1, 5, padding="valid", name="conv2")]
    bright = (6, 9, 7)
    x = np.zeros((2, 16, 16, 16, 1), np.float32)
    x[0][bright] = 1.0
    x[1] = np.random.default_rng(0).uniform(0, 1, (16, 16, 16, 1))
    model = _delta_model((16, 16, 16, 1), chain())
    assert receptive_geometry(model, "conv2") == ((4.0, 1.0),) * 3  # conv2[i] = input[i + 4]
    maps = _ones_maps(model, "conv2", x)
    assert maps.shape == (2, 16, 16, 16)
    assert np.unravel_index(np.argmax(maps[0]), maps[0].shape) == bright
    # Inside the cells' span [4, 11] the map is the input itself (the half-voxel stretch is not).
    np.testing.assert_allclose(maps[:, 4:12, 4:12, 4:12], x[:, 4:12, 4:12, 4:12, 0], atol=1e-6)
    layer = _ones_maps(model, "conv2", x, resolution="layer")
    np.testing.assert_allclose(upsample3d(layer, (16, 16, 16), receptive_geometry(model, "conv2")), maps)
    # The same chain with a flexible input, fed volumes of 17 voxels a side: the peak follows the voxel.
    flexible = _delta_model((None, None, None, 1), chain())
    y = np.zeros((1, 17, 17, 17, 1), np.float32)
    y[0, 12, 5, 8, 0] = 1.0
    maps = _ones_maps(flexible, "conv2", y)
    assert maps.shape == (1, 17, 17, 17)
    assert np.unravel_index(np.argmax(maps[0]), maps[0].shape) == (12, 5, 8)


def test_3d_strided_pooled_padded_and_cropped_layers_are_centred_on_their_receptive_fields():
    import keras

    shape = (13, 18, 15, 1)
    x = keras.Input(shape)
    h = keras.layers.Conv3D(1, (3, 1, 5), strides=(1, 2, 1), name="a")(x)
    h = keras.layers.ZeroPadding3D(((1, 0), (0, 2), (1, 1)), name="b")(h)
    h = keras.layers.AveragePooling3D((2, 1, 2), padding="same", name="c")(h)
    h = keras.layers.Conv3D(1, 3, dilation_rate=(1, 2, 1), padding="same", name="d")(h)
    h = keras.layers.Cropping3D(((1, 0), (0, 1), (1, 1)), name="e")(h)
    model = keras.Model(x, keras.layers.Activation("relu", name="f")(h))
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([np.ones_like(layer.get_weights()[0]), np.zeros(1, np.float32)])
    # Conv 'a' by hand: kernel 3 / 1 / 5, strides 1 / 2 / 1, 'valid': cell (i, j, k) at (1 + i, 2 j, 2 + k).
    assert receptive_geometry(model, "a") == ((1.0, 1.0), (0.0, 2.0), (2.0, 1.0))
    for name in "abcdef":
        assert _check_centres(model, name, shape) >= 8, name


def test_2d_zero_padding_and_cropping_shift_the_grid():
    import keras

    shape = (17, 15, 1)
    x = keras.Input(shape)
    h = keras.layers.ZeroPadding2D(((2, 0), (1, 3)), name="pad")(x)
    h = keras.layers.Conv2D(1, 3, strides=2, name="conv")(h)
    h = keras.layers.Cropping2D(((1, 1), (0, 2)), name="crop")(h)
    model = keras.Model(x, h)
    model.get_layer("conv").set_weights([np.ones((3, 3, 1, 1), np.float32), np.zeros(1, np.float32)])
    # Cell 0 of 'conv' covers padded rows -2..0 and columns -1..1: centred on (-1, 0).
    assert receptive_geometry(model, "conv") == ((-1.0, 2.0), (0.0, 2.0))
    assert receptive_geometry(model, "crop") == ((1.0, 2.0), (0.0, 2.0))
    for name in ("conv", "crop"):
        assert _check_centres(model, name, shape) >= 4, name


def test_flexible_geometry_uses_the_size_fed_where_same_padding_depends_on_it():
    import keras

    def chain(shape):
        x = keras.Input(shape)
        h = keras.layers.Conv2D(2, 3, name="valid")(x)
        h = keras.layers.Conv2D(2, 3, strides=2, padding="same", name="strided")(h)
        return keras.Model(x, h)

    flexible = chain((None, None, 1))
    assert receptive_geometry(flexible, "valid") == ((1.0, 1.0), (1.0, 1.0))  # needs no size
    assert receptive_geometry(flexible, "strided") is None  # TensorFlow's split of 'same' needs it
    for size in (15, 16):
        assert receptive_geometry(flexible, "strided", input_size=(size, size)) == \
            receptive_geometry(chain((size, size, 1)), "strided")
    assert receptive_geometry(flexible, "strided", (15, 15)) != receptive_geometry(flexible, "strided", (16, 16))
    with pytest.raises(ValueError, match="2 spatial sizes"):
        receptive_geometry(flexible, "strided", input_size=(15, 15, 15))


def test_upsampling_to_an_unknown_size_says_what_to_pass():
    with pytest.raises(ValueError, match="size of the images"):
        upsample(np.zeros((1, 2, 2)), (None, None))
    with pytest.raises(ValueError, match="two|2 pairs"):
        upsample(np.zeros((1, 2, 2)), (4, 4), geometry=((0.0, 1.0),))
    with pytest.raises(ValueError, match=r"\(D, H, W\)"):
        upsample3d(np.zeros((1, 2, 2, 2)), (4, 4))


# --------------------------------------------------------------------------- a flexible model, scored
H = 12


def _flexible_model():
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((None, None, 1))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")(x)
    h = keras.layers.Conv2D(4, 3, strides=2, padding="same", activation="relu", name="conv2")(h)
    return keras.Model(x, keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling2D()(h)))


@pytest.fixture(scope="module")
def flexible():
    rng = np.random.default_rng(0)
    bright = rng.uniform(0.5, 1.0, (12, H, H, 1)).astype(np.float32)
    dark = rng.uniform(0.0, 0.5, (40, H, H, 1)).astype(np.float32)
    examples = {"a": rng.uniform(0, 1, (8, H, H, 1)).astype(np.float32),
                "b": rng.uniform(0, 1, (8, H, H, 1)).astype(np.float32)}
    result = concepts.score(_flexible_model(), "conv2", {"bright": bright}, examples=examples,
                            class_names=["a", "b"], random=[dark[i * 8:(i + 1) * 8] for i in range(5)], **FAST)
    return result, examples


def test_flexible_model_maps_of_class_examples_need_no_model_pass(flexible):
    result, examples = flexible
    engine = result._context.engine
    assert engine.input_shape[:2] == (None, None)
    before = engine.n_batches_run
    maps = result.concept_maps("a", concept="bright", layer="conv2")
    influence = result.concept_maps("a", concept="bright", layer="conv2", kind="influence", class_name="a")
    assert maps.shape == influence.shape == (8, H, H)  # the images' size
    assert engine.n_batches_run == before
    # The maps are the layer's grid placed by the geometry of the size fed.
    layer = result.concept_maps("a", concept="bright", layer="conv2", resolution="layer")
    geometry = receptive_geometry(engine.model, "conv2", input_size=(H, H))
    np.testing.assert_allclose(maps, upsample(layer, (H, H), geometry), rtol=1e-5, atol=1e-7)
    # New images of the scored size: one pass, the same maps as the class's cached ones.
    np.testing.assert_allclose(result.concept_maps(examples["a"], concept="bright", layer="conv2"), maps,
                               rtol=1e-4, atol=1e-6)
    fig = result.plot_concept_maps("a", concept="bright", layer="conv2", n=3)
    assert len([ax for ax in fig.axes if ax.images]) == 3


def test_flexible_model_images_of_several_sizes_are_a_clear_error(flexible, tmp_path, monkeypatch):
    result, _ = flexible
    rng = np.random.default_rng(1)
    files = []
    for i, size in enumerate((H, H, H + 4, H + 4)):
        files.append(tmp_path / f"im{i}.png")
        write_png(files[-1], rng.uniform(0, 1, (size, size)))
    # Batches of two: each batch is of one size, the second does not fit the first's (the set says so).
    monkeypatch.setattr(result._context.engine, "batch_size", 2)
    with pytest.raises(InputShapeError, match=r"different sizes .*12x12x1 .*im0\.png.*16x16x1 .*im2\.png"):
        result.concept_maps(files, concept="bright", layer="conv2")
    # Images of one other size: the concept's vector was fitted on the scored size.
    with pytest.raises(ValueError, match="size the concept was scored on"):
        result.concept_maps(files[2:], concept="bright", layer="conv2")


def test_one_image_without_its_batch_axis_is_refused_with_the_fix(flexible):
    result, examples = flexible
    one = examples["a"][0]
    with pytest.raises(InputShapeError, match=r"one image.*\(n, H, W, 1\).*images\[None\]"):
        result.concept_maps(one, concept="bright", layer="conv2")
    with pytest.raises(InputShapeError, match=r"images\[None\]"):
        result.plot_concept_maps(one, concept="bright", layer="conv2")
    assert result.concept_maps(one[None], concept="bright", layer="conv2").shape == (1, H, H)
    with pytest.raises(InputShapeError, match=r"\(2, 12, 12, 3\).*\(n, H, W, 1\)"):
        result.concept_maps(np.zeros((2, H, H, 3), np.float32), concept="bright", layer="conv2")


def test_a_single_image_of_a_fixed_size_model_is_refused_too():
    from probes.engine import Engine
    from probes.sources import InMemoryImages

    import keras

    model = _delta_model((8, 8, 1), [keras.layers.Conv2D(1, 3, name="conv")])
    context = MapContext(engine=Engine(model, ["conv"], progress=False), classes={},
                         bind=lambda arrays, name: InMemoryImages(arrays, name=name))
    outcome = types.SimpleNamespace(vectors={("conv", "c"): {"consensus": np.ones(1, np.float32)}})
    with pytest.raises(InputShapeError, match=r"has shape \(8, 8, 1\): one image.*\(n, 8, 8, 1\).*images\[None\]"):
        result_concept_maps(outcome, context, np.zeros((8, 8, 1)), concept="c", layer="conv")


# --------------------------------------------------------------------------- volumes, plotted
def test_plot_concept_maps_draws_each_volume_as_orthogonal_slices():
    import keras
    from matplotlib.figure import Figure

    from concepts.explain_plots import plot_concept_maps

    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8, 8, 1))
    h = keras.layers.Conv3D(3, 3, activation="relu", name="conv")(x)
    model = keras.Model(x, keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling3D()(h)))
    rng = np.random.default_rng(0)
    bright = rng.uniform(0.5, 1.0, (8, 8, 8, 8, 1)).astype(np.float32)
    dark = [rng.uniform(0.0, 0.5, (6, 8, 8, 8, 1)).astype(np.float32) for _ in range(5)]
    examples = {c: rng.uniform(0, 1, (6, 8, 8, 8, 1)).astype(np.float32) for c in "ab"}
    result = concepts.score(model, "conv", {"bright": bright}, examples=examples, class_names=["a", "b"],
                            random=dark, **FAST)
    engine = result._context.engine
    before = engine.n_batches_run
    fig = result.plot_concept_maps("a", concept="bright", layer="conv", n=2)
    assert isinstance(fig, Figure) and engine.n_batches_run == before
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 6 and all(len(ax.images) == 2 for ax in panels)  # 2 volumes x 3 slices
    assert [ax.get_title().split(" through")[0].split("\n")[-1] for ax in panels[:3]] == \
        ["axial", "coronal", "sagittal"]
    # The slices pass through each map's peak.
    maps = result.concept_maps("a", concept="bright", layer="conv")[:2]
    peak = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(maps[0])), maps[0].shape))
    assert panels[0].get_title().endswith(f"axial through {peak}")
    fig = plot_concept_maps(examples["b"][:3], maps[:1].repeat(3, axis=0), labels=["x", "y", "z"])
    assert len([ax for ax in fig.axes if ax.images]) == 9
    with pytest.raises(ValueError, match=r"\(n, D, H, W"):
        plot_concept_maps(examples["b"][:2, :4], maps)
