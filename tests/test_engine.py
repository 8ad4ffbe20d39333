"""Tests of probes.engine: known answers for gradients, softmax bypass, nesting, errors, caching."""
from __future__ import annotations

import math
import os
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers as L  # noqa: E402

from probes.cache import ActivationCache  # noqa: E402
from probes.engine import Engine, UnsupportedModelError, randomize_weights  # noqa: E402
from probes.errors import (CacheCorruptionWarning, InputShapeError, NotDifferentiableError,  # noqa: E402
                           TargetError, ToolkitError, UnknownLayerError)
from probes.sources import InMemoryImages  # noqa: E402

RNG = np.random.default_rng(0)


def _linear_head(kind: str = "dense_softmax", units: int = 3, seed: int = 0) -> keras.Model:
    """Input(6) -> Dense(5, 'feat') -> head, with the same weights whatever the head's form."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input((6,))
    feat = L.Dense(5, name="feat")(inp)
    if kind == "dense_softmax":
        out = L.Dense(units, activation="softmax", name="head")(feat)
    elif kind == "dense_sigmoid":
        out = L.Dense(units, activation="sigmoid", name="head")(feat)
    elif kind == "linear":
        out = L.Dense(units, name="head")(feat)
    elif kind == "softmax_layer":
        out = L.Softmax(name="sm")(L.Dense(units, name="head")(feat))
    elif kind == "activation_layer":
        out = L.Activation("softmax", name="sm")(L.Dense(units, name="head")(feat))
    elif kind == "relu":
        out = L.Dense(units, activation="relu", name="head")(feat)
    else:
        raise ValueError(kind)
    return keras.Model(inp, out)


def _copy_weights(dst: keras.Model, src: keras.Model) -> keras.Model:
    for name in ("feat", "head"):
        dst.get_layer(name).set_weights(src.get_layer(name).get_weights())
    return dst


@pytest.fixture(scope="module")
def x6() -> np.ndarray:
    return RNG.normal(size=(10, 6)).astype(np.float32)


# -- known answers ----------------------------------------------------------------------------
def test_linear_head_gradient_is_weight_column(x6):
    model = _linear_head()
    eng = Engine(model, ["feat"], batch_size=4, progress=False)
    assert eng.target == "logit"
    assert eng.target_description == "logit: pre-softmax output of layer 'head' (softmax bypassed)"
    assert eng.layer_shapes == {"feat": (5,)} and eng.layer_widths == {"feat": 5}
    assert eng.input_shape == (6,) and eng.n_outputs == 3 and eng.layers == ["feat"]
    W = model.get_layer("head").kernel.numpy()
    v = RNG.normal(size=5)
    v /= np.linalg.norm(v)
    for k in range(3):
        g = eng.gradients(InMemoryImages(x6), k)["feat"]
        assert g.shape == (10, 5) and g.dtype == np.float32
        np.testing.assert_allclose(g, np.broadcast_to(W[:, k], g.shape), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(g @ v, np.full(10, W[:, k] @ v), rtol=1e-5, atol=1e-6)


def test_activations_and_outputs_match_keras(x6):
    model = _linear_head()
    eng = Engine(model, ["feat"], batch_size=4, progress=False)
    acts = eng.activations(InMemoryImages(x6))["feat"]
    expected = keras.Model(model.inputs, model.get_layer("feat").output).predict(x6, verbose=0)
    np.testing.assert_allclose(acts, expected, rtol=1e-5, atol=1e-6)
    logits = eng.outputs(InMemoryImages(x6))
    head = model.get_layer("head")
    np.testing.assert_allclose(logits, expected @ head.kernel.numpy() + head.bias.numpy(),
                               rtol=1e-5, atol=1e-5)
    probs = Engine(model, ["feat"], target="prob", progress=False).outputs(InMemoryImages(x6))
    np.testing.assert_allclose(probs, model.predict(x6, verbose=0), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "softmax_layer", "activation_layer"])
def test_softmax_bypass_gives_identical_logit_gradients(kind, x6):
    reference = _linear_head("dense_softmax")
    other = _copy_weights(_linear_head(kind, seed=1), reference)
    g_ref = Engine(reference, ["feat"], progress=False).gradients(InMemoryImages(x6), 2)["feat"]
    eng = Engine(other, ["feat"], progress=False)
    np.testing.assert_allclose(eng.gradients(InMemoryImages(x6), 2)["feat"], g_ref, atol=1e-6)
    if kind == "linear":
        assert "no final softmax" in eng.target_description
    else:
        assert eng.target_description == ("logit: input of softmax layer 'sm' (softmax bypassed)")


@pytest.mark.parametrize("kind", ["dense_softmax", "softmax_layer"])
def test_prob_and_log_prob_closed_form(kind, x6):
    model = _copy_weights(_linear_head(kind, seed=2), _linear_head("dense_softmax"))
    W = model.get_layer("head").kernel.numpy()
    k = 1
    src = InMemoryImages(x6)
    p = Engine(model, ["feat"], target="prob", progress=False).outputs(src)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-5)
    # d log p_k / da = W_k - W p ; d p_k / da = p_k (W_k - W p)
    expected_log = W[:, k][None, :] - p @ W.T
    eng_lp = Engine(model, ["feat"], target="log_prob", progress=False)
    assert eng_lp.target_description.startswith("log_prob: log_softmax")
    np.testing.assert_allclose(eng_lp.gradients(src, k)["feat"], expected_log, atol=1e-5)
    eng_p = Engine(model, ["feat"], target="prob", progress=False)
    np.testing.assert_allclose(eng_p.gradients(src, k)["feat"], p[:, [k]] * expected_log,
                               atol=1e-5)


def test_prob_target_matches_finite_differences(x6):
    # Differentiate w.r.t. the input layer: finite differences of the model's own predictions.
    model = _linear_head("dense_softmax")
    layer = model.layers[0].name  # the InputLayer: gradients w.r.t. the image itself
    eng = Engine(model, [layer], target="prob", progress=False)
    g = eng.gradients(InMemoryImages(x6[:3]), 0)[layer]
    eps = 1e-3
    x = x6[:3].astype(np.float64)
    fd = np.zeros_like(x)
    for j in range(6):
        up, down = x.copy(), x.copy()
        up[:, j] += eps
        down[:, j] -= eps
        fd[:, j] = (model.predict(up.astype(np.float32), verbose=0)[:, 0]
                    - model.predict(down.astype(np.float32), verbose=0)[:, 0]) / (2 * eps)
    np.testing.assert_allclose(g, fd, atol=2e-3)


def test_single_sigmoid_unit(x6):
    model = _linear_head("dense_sigmoid", units=1)
    w = model.get_layer("head").kernel.numpy()[:, 0]
    src = InMemoryImages(x6)
    eng = Engine(model, ["feat"], progress=False)
    assert eng.n_outputs == 1 and "sigmoid bypassed" in eng.target_description
    np.testing.assert_allclose(eng.gradients(src, 0)["feat"], np.broadcast_to(w, (10, 5)),
                               atol=1e-6)
    s = Engine(model, ["feat"], target="prob", progress=False).outputs(src)[:, 0]
    np.testing.assert_allclose(s, model.predict(x6, verbose=0)[:, 0], rtol=1e-5)
    g_prob = Engine(model, ["feat"], target="prob", progress=False).gradients(src, 0)["feat"]
    np.testing.assert_allclose(g_prob, (s * (1 - s))[:, None] * w, atol=1e-6)
    g_lp = Engine(model, ["feat"], target="log_prob", progress=False).gradients(src, 0)["feat"]
    np.testing.assert_allclose(g_lp, (1 - s)[:, None] * w, atol=1e-6)
    with pytest.raises(TargetError, match="0 to 0"):
        eng.gradients(src, 1)


def test_opaque_final_layer_needs_prob(x6):
    model = _linear_head("relu")
    with pytest.raises(TargetError, match="target='prob'"):
        Engine(model, ["feat"], progress=False)
    eng = Engine(model, ["feat"], target="prob", progress=False)
    assert "taken as-is" in eng.target_description
    np.testing.assert_allclose(eng.outputs(InMemoryImages(x6)), model.predict(x6, verbose=0),
                               rtol=1e-5, atol=1e-6)


# -- convolutional and nested models ------------------------------------------------------------
def _conv_layers(prefix: str = ""):
    return [L.Conv2D(4, 3, activation="relu", name="conv1"),
            L.Conv2D(6, 3, activation="relu", name="conv2")]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return RNG.normal(size=(9, 10, 10, 1)).astype(np.float32)


def _flat_conv_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    inp = keras.Input((10, 10, 1))
    c1, c2 = _conv_layers()
    x = c2(c1(inp))
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inp, L.Dense(3, activation="softmax", name="out")(x))


def _nested_conv_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    b_in = keras.Input((10, 10, 1))
    c1, c2 = _conv_layers()
    backbone = keras.Model(b_in, c2(c1(b_in)), name="backbone")
    return keras.Sequential([keras.Input((10, 10, 1)), backbone,
                             L.GlobalAveragePooling2D(name="gap"),
                             L.Dense(3, activation="softmax", name="out")], name="seq")


def test_conv_activations_match_keras_submodels(images):
    model = _flat_conv_model()
    eng = Engine(model, ["conv1", "conv2", "gap"], batch_size=4, progress=False)
    assert eng.layer_shapes == {"conv1": (8, 8, 4), "conv2": (6, 6, 6), "gap": (6,)}
    assert eng.layer_widths == {"conv1": 256, "conv2": 216, "gap": 6}
    acts = eng.activations(InMemoryImages(images))
    for name in ("conv1", "conv2", "gap"):
        expected = keras.Model(model.inputs, model.get_layer(name).output).predict(images,
                                                                                  verbose=0)
        np.testing.assert_allclose(acts[name], expected, rtol=1e-5, atol=1e-5)


def test_nested_backbone_matches_flat(images):
    flat = _flat_conv_model()
    nested = _nested_conv_model(seed=5)
    backbone = nested.get_layer("backbone")
    for name in ("conv1", "conv2"):
        backbone.get_layer(name).set_weights(flat.get_layer(name).get_weights())
    nested.get_layer("out").set_weights(flat.get_layer("out").get_weights())

    eng_n = Engine(nested, ["backbone/conv2", "backbone/conv1", "backbone"], batch_size=4,
                   progress=False)
    assert eng_n.layers == ["backbone/conv2", "backbone/conv1", "backbone"]
    assert eng_n.layer_shapes["backbone/conv2"] == (6, 6, 6)
    eng_f = Engine(flat, ["conv2", "conv1"], batch_size=4, progress=False)
    src = InMemoryImages(images)
    rn, rf = eng_n.run(src, class_index=2), eng_f.run(src, class_index=2)
    for n_name, f_name in (("backbone/conv2", "conv2"), ("backbone/conv1", "conv1"),
                           ("backbone", "conv2")):
        np.testing.assert_allclose(rn.activations[n_name], rf.activations[f_name], atol=1e-5)
        np.testing.assert_allclose(rn.gradients[n_name], rf.gradients[f_name], atol=1e-5)
    assert np.abs(rf.gradients["conv1"]).max() > 0


def test_nested_head_ending_in_softmax(x6):
    keras.utils.set_random_seed(0)
    h_in = keras.Input((5,))
    head = keras.Model(h_in, L.Dense(3, activation="softmax", name="dense_out")(h_in),
                       name="head_model")
    model = keras.Sequential([keras.Input((6,)), L.Dense(5, name="feat"), head])
    eng = Engine(model, ["feat"], progress=False)
    assert "'head_model/dense_out'" in eng.target_description
    W = head.get_layer("dense_out").kernel.numpy()
    g = eng.gradients(InMemoryImages(x6), 0)["feat"]
    np.testing.assert_allclose(g, np.broadcast_to(W[:, 0], g.shape), atol=1e-6)


# -- errors ---------------------------------------------------------------------------------
def test_unknown_layer_lists_all_paths():
    model = _nested_conv_model()
    with pytest.raises(UnknownLayerError) as info:
        Engine(model, ["conv3"], progress=False)
    message = str(info.value)
    for path in ("backbone", "backbone/conv1", "backbone/conv2", "gap", "out", "'conv3'"):
        assert path in message
    assert isinstance(info.value, KeyError) and isinstance(info.value, ToolkitError)


class _IntRound(L.Layer):
    """Quantises through an integer cast: no gradient flows back through it."""

    def call(self, x):
        return keras.ops.cast(keras.ops.cast(x * 10.0, "int32"), "float32")


def test_not_differentiable_path(x6):
    inp = keras.Input((6,))
    feat = L.Dense(5, name="feat")(inp)
    after = L.Dense(4, name="after")(_IntRound(name="quant")(feat))
    model = keras.Model(inp, L.Dense(3, name="logits")(after))
    eng = Engine(model, ["feat", "after"], progress=False)
    src = InMemoryImages(x6)
    with pytest.raises(NotDifferentiableError, match="'feat'"):
        eng.run(src, class_index=0)
    # Activations alone are fine, and so are gradients of layers after the cast.
    assert eng.activations(src)["feat"].shape == (10, 5)
    assert eng.gradients(src, 0, layers=["after"])["after"].shape == (10, 4)


def test_bypassed_softmax_layer_has_no_logit_gradient(x6):
    eng = Engine(_linear_head("dense_softmax"), ["head"], progress=False)
    src = InMemoryImages(x6)
    probs = eng.activations(src)["head"]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)  # the layer's real output
    with pytest.raises(NotDifferentiableError, match="'head'"):
        eng.gradients(src, 0)


def test_wrong_input_shape_and_class_index(x6):
    eng = Engine(_linear_head(), ["feat"], progress=False)
    with pytest.raises(InputShapeError, match=r"\(7,\).*\(6,\)"):
        eng.activations(InMemoryImages(np.zeros((4, 7), np.float32)))
    for bad in (3, -1, 1.5):
        with pytest.raises(TargetError, match="0 to 2|integer"):
            eng.run(InMemoryImages(x6), class_index=bad)
    with pytest.raises(TargetError):
        Engine(_linear_head(), ["feat"], target="loss")


def test_unsupported_models():
    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.d = L.Dense(2)

        def call(self, x):
            return self.d(x)

    sub = Sub()
    sub(np.zeros((1, 3), np.float32))
    with pytest.raises(UnsupportedModelError, match="functional"):
        Engine(sub, ["d"], progress=False)

    class Split(L.Layer):
        def call(self, x):
            return [x, 2.0 * x]

    inp = keras.Input((4,))
    a, b = Split(name="split")(inp)
    model = keras.Model(inp, L.Dense(2, name="o")(L.Add()([a, b])))
    with pytest.raises(UnsupportedModelError, match="several tensors|produces 2"):
        Engine(model, ["split"], progress=False)


# -- one pass and caching -------------------------------------------------------------------
class _CountingCache(ActivationCache):
    def __init__(self, directory=None):
        super().__init__(directory)
        self.puts: list[tuple[str, str]] = []

    def put(self, key, array, meta=None):
        self.puts.append((meta["layer"], meta["kind"]))
        super().put(key, array, meta)


def test_one_pass_for_all_layers_and_gradients(images):
    eng = Engine(_flat_conv_model(), ["conv1", "conv2", "gap"], batch_size=4, progress=False)
    result = eng.run(InMemoryImages(images), class_index=1)
    assert eng.n_batches_run == math.ceil(len(images) / 4)
    assert set(result.gradients) == {"conv1", "conv2", "gap"}
    assert result.activations["conv1"].shape == (9, 8, 8, 4)
    assert result.gradients["conv2"].shape == (9, 6, 6, 6)


def test_cache_hits_extra_layer_and_corruption(tmp_path, images):
    model = _flat_conv_model()
    cache = _CountingCache(tmp_path)
    src = InMemoryImages(images)
    eng = Engine(model, ["conv1", "conv2"], batch_size=4, cache=cache, progress=False)
    first = eng.run(src, class_index=0)
    passes = math.ceil(len(images) / 4)
    assert eng.n_batches_run == passes and len(cache.puts) == 4

    second = eng.run(src, class_index=0)
    assert eng.n_batches_run == passes
    for kind in ("activations", "gradients"):
        for name in ("conv1", "conv2"):
            np.testing.assert_array_equal(getattr(second, kind)[name], getattr(first, kind)[name])

    # A fresh engine on the same model and directory reuses the disk entries.
    eng2 = Engine(model, ["conv1", "conv2"], batch_size=4, cache=str(tmp_path), progress=False)
    assert eng2.fingerprint == eng.fingerprint
    eng2.run(src, class_index=0)
    assert eng2.n_batches_run == 0

    # One extra layer: only its two entries are computed, in one pass.
    cache.puts.clear()
    third = eng.run(src, class_index=0, layers=["conv1", "conv2", "gap"])
    assert eng.n_batches_run == 2 * passes
    assert sorted(cache.puts) == [("gap", "act"), ("gap", "grad")]
    assert set(third.activations) == {"conv1", "conv2", "gap"}

    # Another class needs only gradients.
    cache.puts.clear()
    eng.run(src, class_index=1)
    assert eng.n_batches_run == 3 * passes
    assert sorted(cache.puts) == [("conv1", "grad"), ("conv2", "grad")]

    # A damaged file is detected, removed and recomputed to the same values.
    from probes.cache import flush_writes

    flush_writes()  # the background writer has put every entry on disk
    for npy in tmp_path.rglob("*.npy"):
        data = bytearray(npy.read_bytes())
        data[-3] ^= 0xFF
        npy.write_bytes(bytes(data))
    with pytest.warns(CacheCorruptionWarning, match="recomputed"):
        again = eng.run(src, class_index=0)
    assert eng.n_batches_run == 4 * passes
    np.testing.assert_array_equal(again.gradients["conv2"], first.gradients["conv2"])
    np.testing.assert_array_equal(again.activations["conv1"], first.activations["conv1"])


def test_cache_keys_follow_weights_and_source(tmp_path, images):
    model = _flat_conv_model()
    src = InMemoryImages(images)
    eng = Engine(model, ["conv2"], batch_size=5, cache=tmp_path, progress=False)
    before = eng.activations(src)["conv2"].copy()

    other_src = InMemoryImages(images + 1.0)
    eng.activations(other_src)
    assert eng.n_batches_run == 4

    kernel = model.get_layer("conv2").kernel
    kernel.assign(kernel.numpy() * 2.0)
    eng_changed = Engine(model, ["conv2"], batch_size=5, cache=tmp_path, progress=False)
    assert eng_changed.fingerprint != eng.fingerprint
    after = eng_changed.activations(src)["conv2"]
    assert eng_changed.n_batches_run == 2
    assert not np.allclose(after, before)


def test_default_in_memory_cache(x6):
    eng = Engine(_linear_head(), ["feat"], batch_size=4, progress=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tqdm may warn about missing notebook widgets
        a = eng.activations(InMemoryImages(x6))["feat"]
        b = eng.activations(InMemoryImages(x6))["feat"]
    assert eng.n_batches_run == 3
    assert np.shares_memory(a, b) and not a.flags.writeable and not b.flags.writeable


def test_randomize_weights(images):
    model = _flat_conv_model()
    original = [w.copy() for w in model.get_weights()]
    random_model = randomize_weights(model, seed=3)
    for w_old, w_now in zip(original, model.get_weights()):
        np.testing.assert_array_equal(w_old, w_now)
    assert not np.allclose(random_model.predict(images, verbose=0),
                           model.predict(images, verbose=0))
    again = randomize_weights(model, seed=3)
    for w1, w2 in zip(random_model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(w1, w2)
    k1, k2 = (m.get_layer("conv1").kernel.numpy() for m in (random_model,
                                                            randomize_weights(model, seed=4)))
    assert not np.allclose(k1, k2)
    eng = Engine(random_model, ["conv1"], progress=False)
    assert eng.fingerprint != Engine(model, ["conv1"], progress=False).fingerprint

    nested_random = randomize_weights(_nested_conv_model(), seed=0)
    assert "backbone/conv2" in Engine(nested_random, ["backbone/conv2"],
                                      progress=False).available_layers


def test_engines_on_one_model_share_traced_steps(x6):
    """A second engine on the same model (a user's second call) reuses the traced step functions:
    same results, and what the first trace learnt (a layer without gradient) still raises."""
    import gc
    import weakref

    import probes.engine as engine_mod

    model = _linear_head("dense_softmax")
    first = Engine(model, ["feat"], progress=False)
    src = InMemoryImages(x6)
    g1 = first.gradients(src, 1)["feat"]
    second = Engine(model, ["feat"], progress=False)
    g2 = second.gradients(src, 1)["feat"]
    assert np.array_equal(g1, g2)
    assert set(second._steps.values()) <= set(first._steps.values())  # shared, not traced again
    # The shared function does not keep the first engine (and its cache) alive.
    ref = weakref.ref(first)
    del first
    gc.collect()
    assert ref() is None
    # Gradient-free layers found by the first engine's trace are reported to the second one too.
    Engine(model, ["head"], progress=False).activations(src)
    with pytest.raises(NotDifferentiableError, match="'head'"):
        Engine(model, ["head"], progress=False).gradients(src, 0)
    with pytest.raises(NotDifferentiableError, match="'head'"):
        Engine(model, ["head"], progress=False).gradients(src, 0)
    assert len(engine_mod._shared_steps) <= engine_mod._SHARED_STEPS_MAX
