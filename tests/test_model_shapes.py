"""The models teams actually have: wrappers, preprocessing inside, mixed precision, several outputs
and inputs, saved files, and the errors for what cannot work.

Known answers come from the planted-concept model of :mod:`synthetic`: every variant below must
give exactly what the plain model gives (same activations, gradients and conclusions), because at
inference its extra parts are identities or linear in a known way.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
from keras import layers as L  # noqa: E402

import concepts  # noqa: E402
from probes.engine import Engine, UnsupportedModelError  # noqa: E402
from probes.errors import InputShapeError, NotDifferentiableError, TargetError, UnknownLayerError  # noqa: E402
from probes.keras_graph import ModelFileError  # noqa: E402
from probes.sources import InMemoryImages  # noqa: E402
from synthetic import SIZE, build_model, make_data  # noqa: E402

FAST = dict(n_random=5, n_directions=100, progress=False, cache_dir=False)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("shapes"), n_class=10, n_concept=10, n_pool=40)


@pytest.fixture(scope="module")
def planted():
    return build_model(head_activation="softmax", nested=True)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(0, 1, (6, SIZE, SIZE, 1)).astype("float32")


def _table(result):
    return result.to_frame().sort_values(["class", "layer", "concept"]).reset_index(drop=True)


def _same_conclusions(a, b, rtol=1e-4):
    ta, tb = _table(a), _table(b)
    assert list(ta["significant"]) == list(tb["significant"])
    np.testing.assert_allclose(ta["ubs"], tb["ubs"], rtol=rtol, atol=rtol)
    np.testing.assert_allclose(ta["score"], tb["score"], atol=1e-9 if rtol < 1e-3 else 0.05)


# ------------------------------------------------------------------------------ the example
def test_flexible_backbone_inside_fixed_model_scores(data):
    """The standard transfer-learning shape: gray input copied to RGB, flexible MobileNetV2 inside."""
    keras.utils.set_random_seed(0)
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(None, None, 3), alpha=0.35)
    inp = keras.Input((32, 32, 1))
    x = base(L.Concatenate()([inp, inp, inp]))
    model = keras.Model(inp, L.Dense(2)(L.GlobalAveragePooling2D()(x)))
    layer = f"{base.name}/block_3_expand_relu"
    result = concepts.score(model, layer, data / "concepts" / "horizontal", **FAST)
    table = result.to_frame()
    assert set(table["layer"]) == {layer} and len(table) == 2
    # 32 -> 16 (Conv1, stride 2) -> 8 (block_1, stride 2); block_3 expands 8 channels six-fold.
    assert (table["d"] == 8 * 8 * 48).all()
    assert np.isfinite(table["ubs"]).all()


# ------------------------------------------------------------------------------ wrappers and layers inside
def _wrapped_with_preprocessing(planted):
    """planted -> nested Sequential with inference-time identities -> functional wrapper (depth 3)."""
    trunk = keras.Sequential([
        keras.Input((SIZE, SIZE, 1)),
        L.Rescaling(1.0, name="rescale"),
        L.Normalization(mean=0.0, variance=1.0, name="norm"),
        L.Resizing(SIZE, SIZE, name="resize"),
        L.RandomFlip(name="flip"), L.RandomRotation(0.3, name="rotate"), L.RandomContrast(0.5, name="contrast"),
        L.Dropout(0.5, name="drop"),
        planted,
    ], name="trunk")
    inp = keras.Input((SIZE, SIZE, 1), name="image")
    return keras.Model(inp, trunk(inp), name="wrapper")


def test_wrapped_model_with_preprocessing_and_augmentation_matches_plain(planted, x):
    wrapper = _wrapped_with_preprocessing(planted)
    inner = f"trunk/{planted.name}/backbone/conv1"
    plain = Engine(planted, ["backbone/conv1", "gap"], progress=False).run(InMemoryImages(x), 0)
    wrapped = Engine(wrapper, [inner, f"trunk/{planted.name}/gap"], progress=False).run(InMemoryImages(x), 0)
    # Augmentation and dropout are off and BatchNorm/Normalization use their statistics: identical.
    np.testing.assert_allclose(wrapped.activations[inner], plain.activations["backbone/conv1"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(wrapped.gradients[inner], plain.gradients["backbone/conv1"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(wrapped.gradients[f"trunk/{planted.name}/gap"], plain.gradients["gap"], rtol=1e-5)


def test_batchnorm_runs_on_moving_statistics(x):
    inp = keras.Input((SIZE, SIZE, 1))
    bn = L.BatchNormalization(name="bn")
    out = L.Dense(2, name="logits")(L.Flatten()(bn(inp)))
    model = keras.Model(inp, out)
    bn.set_weights([np.full(1, 2.0), np.full(1, 0.5), np.full(1, 0.25), np.full(1, 4.0)])  # gamma beta mean var
    act = Engine(model, ["bn"], progress=False).activations(InMemoryImages(x))["bn"]
    expected = 2.0 * (x - 0.25) / np.sqrt(4.0 + bn.epsilon) + 0.5
    np.testing.assert_allclose(act, expected, rtol=1e-5)


# ------------------------------------------------------------------------------ mixed precision
def test_mixed_float16_gives_the_float32_conclusions(planted, data):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        half = build_model(head_activation="softmax", nested=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert half.get_layer("head").compute_dtype == "float16"
    x = np.random.default_rng(3).uniform(0, 1, (4, SIZE, SIZE, 1)).astype("float32")
    res16 = Engine(half, ["backbone/conv2"], progress=False).run(InMemoryImages(x), 0)
    res32 = Engine(planted, ["backbone/conv2"], progress=False).run(InMemoryImages(x), 0)
    grad16, grad32 = res16.gradients["backbone/conv2"], res32.gradients["backbone/conv2"]
    assert grad16.dtype == np.float32 and res16.activations["backbone/conv2"].dtype == np.float32
    np.testing.assert_allclose(grad16, grad32, rtol=1e-2, atol=1e-3)

    concept = data / "concepts" / "horizontal"
    a = concepts.score(half, "backbone/conv2", concept, **FAST)
    b = concepts.score(planted, "backbone/conv2", concept, **FAST)
    _same_conclusions(a, b, rtol=0.05)


# ------------------------------------------------------------------------------ several outputs
def _two_heads(planted):
    """The planted model's logits as output 'diagnosis', plus a sigmoid 'severity' and a side branch."""
    inp = keras.Input((SIZE, SIZE, 1), name="image")
    features = planted.get_layer("backbone")(inp)
    pooled = planted.get_layer("gap")(features)
    diagnosis = L.Dense(2, activation="softmax", name="diagnosis")
    side = L.Dense(4, name="side_only")(pooled)
    severity = L.Dense(1, activation="sigmoid", name="severity")(side)
    model = keras.Model(inp, [diagnosis(pooled), severity])
    diagnosis.set_weights(planted.get_layer("head").get_weights())
    return model


def test_output_selection_by_name_and_index(planted, x):
    model = _two_heads(planted)
    plain = Engine(planted, ["gap"], progress=False).gradients(InMemoryImages(x), 0)["gap"]
    for output in ("diagnosis", 0, -2):
        eng = Engine(model, ["gap"], output=output, progress=False)
        assert eng.output_name == "diagnosis" and eng.n_outputs == 2
        np.testing.assert_allclose(eng.gradients(InMemoryImages(x), 0)["gap"], plain, rtol=1e-6)
    sev = Engine(model, ["side_only"], output="severity", progress=False)
    assert "sigmoid bypassed" in sev.target_description and "severity" in sev.target_description
    # The severity logit is linear in side_only: its gradient is the kernel column, for every example.
    kernel = model.get_layer("severity").get_weights()[0][:, 0]
    np.testing.assert_allclose(sev.gradients(InMemoryImages(x), 0)["side_only"], np.tile(kernel, (len(x), 1)),
                               rtol=1e-6)
    assert sev.fingerprint != Engine(model, ["gap"], output=0, progress=False).fingerprint


def test_output_errors_name_the_outputs(planted):
    model = _two_heads(planted)
    with pytest.raises(TargetError, match="2 outputs.*'diagnosis'.*'severity'.*output="):
        Engine(model, ["gap"], progress=False)
    with pytest.raises(TargetError, match="Did you mean 'diagnosis'"):
        Engine(model, ["gap"], output="diagnosys", progress=False)
    with pytest.raises(TargetError, match="out of range"):
        Engine(model, ["gap"], output=2, progress=False)


def test_layer_off_the_explained_output_is_not_differentiable(planted, x):
    eng = Engine(_two_heads(planted), ["side_only"], output="diagnosis", progress=False)
    with pytest.raises(NotDifferentiableError, match="'side_only'"):
        eng.gradients(InMemoryImages(x), 0)


def test_score_explains_the_chosen_output(planted, data):
    concept = data / "concepts" / "horizontal"
    chosen = concepts.score(_two_heads(planted), "gap", concept, output="diagnosis", **FAST)
    plain = concepts.score(planted, "gap", concept, **FAST)
    _same_conclusions(chosen, plain)


# ------------------------------------------------------------------------------ extra inputs
def _with_clinical(planted):
    """Image + a 3-vector clinical input; logit = planted logit + clinical . w (linear head)."""
    image = keras.Input((SIZE, SIZE, 1), name="image")
    clinical = keras.Input((3,), name="clinical")
    pooled = planted.get_layer("gap")(planted.get_layer("backbone")(image))
    head = L.Dense(2, name="logits")
    model = keras.Model([image, clinical], head(L.Concatenate()([pooled, clinical])))
    kernel, bias = planted.get_layer("head").get_weights()
    head.set_weights([np.concatenate([kernel, [[1.0, -1.0], [2.0, 0.0], [0.0, 3.0]]]), bias])
    return model


def test_fixed_extra_input_is_broadcast(planted, x):
    model = _with_clinical(planted)
    base = Engine(planted, ["gap"], progress=False)
    a = Engine(model, ["gap"], extra_inputs={"clinical": np.zeros(3)}, progress=False)
    b = Engine(model, ["gap"], extra_inputs={"clinical": np.array([1.0, 1.0, 1.0])}, progress=False)
    src = InMemoryImages(x)
    # Outputs: the planted model's pre-softmax logits, shifted by clinical . w.
    logits = Engine(planted, ["gap"], target="logit", progress=False).outputs(src)
    np.testing.assert_allclose(a.outputs(src), logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b.outputs(src) - a.outputs(src), np.tile([3.0, 2.0], (len(x), 1)), rtol=1e-5)
    np.testing.assert_allclose(a.gradients(src, 0)["gap"], base.gradients(src, 0)["gap"], rtol=1e-6)
    assert a.fingerprint != b.fingerprint  # different values never share a cache entry


def test_per_example_extra_inputs_by_file_and_by_set_name(planted, data, x):
    model = _with_clinical(planted)
    files = sorted((data / "concepts" / "horizontal").glob("*.png"))
    values = {str(f): np.array([i, 0.0, 0.0]) for i, f in enumerate(files)}
    eng = Engine(model, ["gap"], extra_inputs={"clinical": values}, progress=False)
    images = concepts.ImageSet(files, name="horizontal", input_shape=eng.input_shape)
    fixed = Engine(model, ["gap"], extra_inputs={"clinical": np.zeros(3)}, progress=False)
    shift = eng.outputs(images) - fixed.outputs(images)
    np.testing.assert_allclose(shift[:, 0], np.arange(len(files)), rtol=1e-5, atol=1e-5)
    # In-memory images have no file names: values are given per set name, one row per image.
    named = Engine(model, ["gap"], extra_inputs={"clinical": {"mine": np.eye(3)[[0, 1, 2, 0, 1, 2]]}},
                   progress=False)
    out = named.outputs(InMemoryImages(x, name="mine")) - fixed.outputs(InMemoryImages(x))
    np.testing.assert_allclose(out, np.array([[1, -1], [2, 0], [0, 3]] * 2, float), rtol=1e-5, atol=1e-5)
    with pytest.raises(InputShapeError, match="no values for image set 'other'"):
        named.outputs(InMemoryImages(x, name="other"))
    # A clinical table indexed by file name, one column per feature, is read the same way.
    import pandas as pd

    table = pd.DataFrame({"age": np.arange(len(files), dtype=float), "b": 0.0, "c": 0.0},
                         index=[f.name for f in files])
    from_table = Engine(model, ["gap"], extra_inputs={"clinical": table}, progress=False)
    np.testing.assert_allclose(from_table.outputs(images), eng.outputs(images), rtol=1e-6)
    partial = Engine(model, ["gap"], extra_inputs={"clinical": dict(list(values.items())[:3])}, progress=False)
    with pytest.raises(InputShapeError, match="no value for 7 image"):
        partial.outputs(images)


def test_extra_input_errors(planted):
    model = _with_clinical(planted)
    with pytest.raises(InputShapeError, match=r"2 inputs \['image', 'clinical'\].*extra_inputs=\{'clinical'"):
        Engine(model, ["gap"], progress=False)
    with pytest.raises(InputShapeError, match="'clinic'.*inputs"):
        Engine(model, ["gap"], extra_inputs={"clinic": np.zeros(3)}, progress=False)
    with pytest.raises(InputShapeError, match=r"shape \(4,\).*\(3,\)"):
        Engine(model, ["gap"], extra_inputs={"clinical": np.zeros(4)}, progress=False)


def test_score_with_fixed_extra_input(planted, data):
    concept = data / "concepts" / "horizontal"
    with_clinical = concepts.score(_with_clinical(planted), "gap", concept,
                                   extra_inputs={"clinical": np.ones(3)}, **FAST)
    _same_conclusions(with_clinical, concepts.score(planted, "gap", concept, **FAST))


def test_score_with_per_image_extra_input_covers_the_random_pool(planted, data):
    # Every image the analysis reads (classes, concept, merged random pool) is found by its path.
    values = {str(path): np.array([1.0, 0.5, 0.0]) for path in data.rglob("*.png")}
    concept = data / "concepts" / "horizontal"
    per_image = concepts.score(_with_clinical(planted), "gap", concept, extra_inputs={"clinical": values}, **FAST)
    _same_conclusions(per_image, concepts.score(planted, "gap", concept, **FAST))


# ------------------------------------------------------------------------------ saved files
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_saved_model_paths_score_like_the_model(planted, data, tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    planted.save(path)
    concept = data / "concepts" / "horizontal"
    from_file = concepts.score(str(path), "backbone/conv2", concept, **FAST)
    _same_conclusions(from_file, concepts.score(planted, "backbone/conv2", concept, **FAST), rtol=1e-6)


def test_model_file_errors(tmp_path):
    with pytest.raises(ModelFileError, match="does not exist"):
        Engine(tmp_path / "missing.keras", ["conv1"])
    folder = tmp_path / "saved_model"
    folder.mkdir()
    with pytest.raises(ModelFileError, match="suffix"):
        Engine(folder, ["conv1"])
    broken = tmp_path / "broken.keras"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ModelFileError, match="Cannot load"):
        Engine(broken, ["conv1"])


# ------------------------------------------------------------------------------ what cannot work says so
def test_shared_layer_is_refused_by_name():
    inp = keras.Input((6,))
    shared = L.Dense(6, name="shared")
    model = keras.Model(inp, L.Dense(2, name="out")(shared(shared(inp))))
    with pytest.raises(UnsupportedModelError, match="'shared' runs 2 times.*shared layer.*Probe a layer"):
        Engine(model, ["shared"], progress=False)


def test_layer_inside_a_model_called_twice_is_refused():
    enc_in = keras.Input((6,))
    encoder = keras.Model(enc_in, L.Dense(4, name="code")(enc_in), name="encoder")
    a, b = keras.Input((6,), name="a"), keras.Input((6,), name="b")
    model = keras.Model([a, b], L.Dense(2, name="out")(L.Concatenate()([encoder(a), encoder(b)])))
    with pytest.raises(UnsupportedModelError, match="'encoder/code'.*inside 'encoder'.*2 times"):
        Engine(model, ["encoder/code"], extra_inputs={"b": np.zeros(6)}, progress=False)


def test_unknown_nested_layer_suggests_its_full_path(planted):
    with pytest.raises(UnknownLayerError) as info:
        Engine(planted, ["conv2"], progress=False)
    message = str(info.value)
    assert "Did you mean 'backbone/conv2'" in message and "concepts.layers(model)" in message


def test_unknown_layer_in_a_large_model_lists_close_matches_only():
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3), alpha=0.35,
                                          pooling="avg")
    model = keras.Model(base.input, L.Dense(2)(base.output))
    with pytest.raises(UnknownLayerError) as info:
        Engine(model, ["block_3_expand_rel"], progress=False)
    message = str(info.value)
    assert "'block_3_expand_relu'" in message and "block_16_project" not in message
    assert "layers" in message and "concepts layers MODEL_FILE" in message


def test_subclassed_model_inside_a_functional_one_is_opaque_but_probeable(x):
    class Block(keras.Model):
        def __init__(self):
            super().__init__(name="block")
            self.conv = L.Conv2D(2, 3, name="conv")

        def call(self, inputs):
            return self.conv(inputs)

    inp = keras.Input((SIZE, SIZE, 1))
    model = keras.Model(inp, L.Dense(2, name="out")(L.GlobalAveragePooling2D()(Block()(inp))))
    with pytest.raises(UnknownLayerError, match="'block' is a subclassed model.*Probe 'block' itself"):
        Engine(model, ["block/conv"], progress=False)
    grads = Engine(model, ["block"], progress=False).gradients(InMemoryImages(x), 0)["block"]
    assert grads.shape == (len(x), SIZE - 2, SIZE - 2, 2)
