"""Concept maps: hand computations on a tiny model, and the planted lesion case.

Known answers:

* on a tiny 1×1-convolution model the activations and the logit gradients are known in closed
  form, so presence and influence maps can be written out by hand and compared;
* on the planted case of ``planted_lesion.py`` (texture only inside an 8×8 lesion, a model that
  reads texture only), the presence map of the concept ``textured`` must peak inside the lesion
  on held-out images (pointing game ≥ 0.9), and must stop doing so on copies of the model with
  randomised weights;
* maps of a class's own examples reuse the scoring pass (no engine batch), and maps of new images
  cost one pass over them.
"""
from __future__ import annotations

import math
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import concepts  # noqa: E402
from concepts.maps import pointing_game, receptive_geometry, upsample  # noqa: E402
from probes.engine import randomize_weights  # noqa: E402
from planted_lesion import build_lesion_model, held_out, make_lesion_data  # noqa: E402

FAST = dict(n_random=5, n_directions=100, progress=False, cache_dir=False)


# --------------------------------------------------------------------------- a tiny model, by hand
W_CONV = np.array([1.0, 2.0, -1.0], np.float32)  # 1×1 convolution: channel c = W_CONV[c] * pixel
W_HEAD = np.array([[1.0, -1.0], [0.5, 0.0], [2.0, 1.0]], np.float32)  # (channels, classes)
H = W = 6


def tiny_model():
    import keras

    inputs = keras.Input((H, W, 1))
    conv = keras.layers.Conv2D(3, 1, activation="relu", name="conv")
    head = keras.layers.Dense(2, name="head")
    model = keras.Model(inputs, head(keras.layers.GlobalAveragePooling2D()(conv(inputs))))
    conv.set_weights([W_CONV[None, None, None, :], np.zeros(3, np.float32)])
    head.set_weights([W_HEAD, np.zeros(2, np.float32)])
    return model


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    bright = rng.uniform(0.5, 1.0, (12, H, W, 1)).astype(np.float32)
    dark = rng.uniform(0.0, 0.5, (40, H, W, 1)).astype(np.float32)
    examples = {"a": rng.uniform(0, 1, (8, H, W, 1)).astype(np.float32),
                "b": rng.uniform(0, 1, (8, H, W, 1)).astype(np.float32)}
    randoms = [dark[i * 8:(i + 1) * 8] for i in range(5)]
    result = concepts.score(tiny_model(), "conv", {"bright": bright}, examples=examples, class_names=["a", "b"],
                            random=randoms, **FAST)
    return result, examples


def test_presence_and_influence_match_a_hand_computation(tiny):
    result, examples = tiny
    x = examples["a"][..., 0]
    v = result._outcome.vectors[("conv", "bright")]["consensus"].reshape(H, W, 3).astype(np.float64)
    assert np.isclose(np.linalg.norm(v), 1.0, atol=1e-5)
    presence = np.zeros((len(x), H, W))
    influence = np.zeros((len(x), H, W))
    for n in range(len(x)):
        for h in range(H):
            for w in range(W):
                for c in range(3):
                    activation = max(W_CONV[c] * x[n, h, w], 0.0)
                    # d logit_a / d a[h, w, c] = W_HEAD[c, a] / (H W) (average pooling, then the head)
                    gradient = W_HEAD[c, 0] / (H * W)
                    presence[n, h, w] += activation * v[h, w, c]
                    influence[n, h, w] += gradient * v[h, w, c]
    got_p = result.concept_maps("a", concept="bright", layer="conv", kind="presence")
    got_i = result.concept_maps("a", concept="bright", layer="conv", kind="influence", class_name="a")
    assert got_p.shape == got_i.shape == (len(x), H, W)  # a 1×1 convolution: the input grid itself
    np.testing.assert_allclose(got_p, presence, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_i, influence, rtol=1e-4, atol=1e-7)
    # The maps unfold the per-example numbers: influence sums to the sensitivity, presence to a · v.
    rows = result.per_example()
    rows = rows[(rows["class"] == "a") & (rows["concept"] == "bright")]
    np.testing.assert_allclose(got_i.sum(axis=(1, 2)), rows["sensitivity"], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(got_p.sum(axis=(1, 2)), rows["presence"], rtol=1e-4, atol=1e-6)


def test_maps_of_scored_examples_reuse_the_scoring_pass_and_new_images_cost_one_pass(tiny):
    result, examples = tiny
    engine = result._context.engine
    before = engine.n_batches_run
    result.concept_maps("b", concept="bright", layer="conv", kind="influence", class_name="b")
    result.concept_maps("b", concept="bright", layer="conv")
    assert engine.n_batches_run == before
    fresh = np.random.default_rng(5).uniform(0, 1, (1000, H, W, 1)).astype(np.float32)
    maps = result.concept_maps(fresh, concept="bright", layer="conv")
    assert maps.shape == (1000, H, W)
    assert engine.n_batches_run - before == math.ceil(1000 / engine.batch_size)  # one forward pass


def test_bad_map_requests_name_the_culprit(tiny):
    result, _ = tiny
    with pytest.raises(KeyError, match="nowhere.*bright"):
        result.concept_maps("a", concept="nowhere", layer="conv")
    with pytest.raises(ValueError, match="kind must be"):
        result.concept_maps("a", concept="bright", layer="conv", kind="saliency")
    with pytest.raises(ValueError, match="class_name"):
        result.concept_maps("a", concept="bright", layer="conv", kind="influence")


# --------------------------------------------------------------------------- geometry
def test_upsampling_known_answers():
    ramp = np.array([[[0.0, 1.0]]])
    np.testing.assert_allclose(upsample(ramp, (1, 4))[0, 0], [0.0, 0.25, 0.75, 1.0])  # half-pixel centres
    same = np.random.default_rng(0).normal(size=(2, 5, 7))
    np.testing.assert_allclose(upsample(same, (5, 7)), same, rtol=1e-6)  # same size: unchanged
    np.testing.assert_allclose(upsample(np.full((1, 3, 3), 2.5), (9, 9)), 2.5)  # constants stay constant
    # A 'valid' 3×3 grid of 4 cells centred on input pixels 1..4 of a 6-pixel input.
    out = upsample(np.arange(4.0)[None, None, :], (1, 6), geometry=((0.0, 1.0), (1.0, 1.0)))
    np.testing.assert_allclose(out[0, 0], [0, 0, 1, 2, 3, 3])


def test_receptive_geometry_of_valid_same_strided_and_pooled_layers():
    import keras

    x = keras.Input((32, 32, 1))
    a = keras.layers.Conv2D(2, 3, name="valid")(x)
    b = keras.layers.MaxPooling2D(name="pool")(a)
    c = keras.layers.Conv2D(2, 3, strides=2, padding="same", name="strided")(b)
    model = keras.Model(x, keras.layers.Activation("relu", name="act")(c))
    assert receptive_geometry(model, "valid") == ((1.0, 1.0), (1.0, 1.0))
    assert receptive_geometry(model, "pool") == ((1.5, 2.0), (1.5, 2.0))
    # 'same' with stride 2 on 15 cells: 8 outputs, 2 padded in total, 1 on top (TensorFlow's
    # convention), so output i is centred on pool cell 2i, i.e. input pixel 1.5 + 4i.
    assert receptive_geometry(model, "strided") == ((1.5, 4.0), (1.5, 4.0))
    assert receptive_geometry(model, "act") == receptive_geometry(model, "strided")


def test_pointing_game_counts_maxima_inside_regions():
    maps = np.zeros((2, 4, 4))
    maps[0, 1, 1] = maps[1, 3, 3] = 1.0
    regions = np.zeros((2, 4, 4), bool)
    regions[:, :2, :2] = True
    assert pointing_game(maps, regions) == 0.5


# --------------------------------------------------------------------------- the planted lesion
@pytest.fixture(scope="module")
def lesion_data(tmp_path_factory):
    return make_lesion_data(tmp_path_factory.mktemp("lesion"))


def _pointing(model, data, layers=("conv1", "conv2")):
    images, masks = held_out(40)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # randomised copies may give degenerate (constant) CAVs
        result = concepts.score(model, list(layers), data / "concepts" / "textured", data=data, **FAST)
    return {layer: pointing_game(result.concept_maps(images, concept="textured", layer=layer), masks)
            for layer in layers}, result


def test_presence_map_of_the_driving_concept_points_at_the_lesion(lesion_data):
    games, result = _pointing(build_lesion_model(), lesion_data)
    table = result.to_frame()
    lesion = table[table["class"] == "lesion"]
    assert (lesion["ubs"] > 0).all(), lesion  # the concept drives the lesion class ...
    assert all(game >= 0.9 for game in games.values()), games  # ... and its map finds the lesion


def test_randomised_weights_lose_the_lesion(lesion_data):
    # A random ReLU convolution can, by chance, detect fine texture (an "off" unit that texture
    # switches on), so one copy may still point at the lesion in one layer; on average they must not.
    model = build_lesion_model()
    games = [_pointing(randomize_weights(model, seed=seed), lesion_data)[0] for seed in range(3)]
    assert all(g["conv1"] <= 0.3 for g in games), games
    assert np.mean([value for g in games for value in g.values()]) <= 0.5, games


def test_plot_concept_maps_overlays_one_panel_per_image(tiny):
    from matplotlib.figure import Figure

    result, examples = tiny
    engine = result._context.engine
    before = engine.n_batches_run
    fig = result.plot_concept_maps("a", concept="bright", layer="conv", n=3)
    assert isinstance(fig, Figure) and engine.n_batches_run == before
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 3 and all(len(ax.images) == 2 for ax in panels)  # image + map overlay
    fig = result.plot_concept_maps(examples["b"][:2], concept="bright", layer="conv", kind="influence",
                                   class_name="b")
    assert len([ax for ax in fig.axes if ax.images]) == 2


def test_receptive_geometry_matches_the_receptive_fields_found_by_differentiation():
    # All-ones kernels and average pooling: output cell (i, j) depends on exactly the input pixels
    # of its receptive field, found here from the Jacobian. Cells whose field is cut by padding (at
    # any depth) have a smaller field than the others and are skipped; every other cell must be
    # centred where receptive_geometry says.
    import keras
    import tensorflow as tf

    size = 31
    x = keras.Input((size, size, 1))
    h = keras.layers.Conv2D(1, 3, name="a")(x)
    h = keras.layers.Conv2D(1, 3, strides=2, padding="same", name="b")(h)
    h = keras.layers.AveragePooling2D(2, name="c")(h)
    h = keras.layers.Conv2D(1, 3, dilation_rate=2, padding="same", name="d")(h)
    model = keras.Model(x, h)
    for layer in model.layers[1:]:
        if layer.weights:
            layer.set_weights([np.ones_like(layer.get_weights()[0]), np.zeros(1, np.float32)])
    image = tf.ones((1, size, size, 1))
    for name in ("a", "b", "c", "d"):
        sub = keras.Model(x, model.get_layer(name).output)
        (off_y, step_y), (off_x, step_x) = receptive_geometry(model, name)
        with tf.GradientTape() as tape:
            tape.watch(image)
            out = sub(image)[0, :, :, 0]
        jacobian = tape.jacobian(out, image).numpy()[:, :, 0, :, :, 0] != 0  # (h, w, H, W)
        fields = {}
        for i in range(jacobian.shape[0]):
            for j in range(jacobian.shape[1]):
                where = np.argwhere(jacobian[i, j])
                fields[i, j] = (where.min(axis=0), where.max(axis=0))
        full = max(int((hi - lo).sum()) for lo, hi in fields.values())
        checked = 0
        for (i, j), (lo, hi) in fields.items():
            if int((hi - lo).sum()) < full:
                continue  # cut by padding: its centre is not the cell's
            assert (lo[0] + hi[0]) / 2 == pytest.approx(off_y + step_y * i), (name, i, j)
            assert (lo[1] + hi[1]) / 2 == pytest.approx(off_x + step_x * j), (name, i, j)
            checked += 1
        assert checked >= 4, name
