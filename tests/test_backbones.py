"""Every keras.applications backbone a medical-imaging team uses, wrapped the way they wrap it.

Each backbone is built once (``weights=None``: nothing is downloaded) with a flexible input shape,
put inside a fixed-shape nested Sequential after a Rescaling layer, and that inside a functional
classification head: the standard transfer-learning shape, two levels of nesting. At an inner
layer the engine's activations must equal a flat sub-model of the backbone's own graph, and its
gradient must match a central finite difference of the wrapped model's logit, computed by
Keras's own forward pass with the layer's output perturbed.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

keras = pytest.importorskip("keras")
from keras import layers as L  # noqa: E402

from probes.engine import Engine  # noqa: E402
from probes.sources import InMemoryImages  # noqa: E402

#: (constructor, smallest input it accepts, an inner layer to probe, extra constructor arguments)
BACKBONES = {
    "DenseNet121": ("DenseNet121", 32, "conv3_block12_concat", {}),
    "ResNet50": ("ResNet50", 32, "conv3_block4_out", {}),
    "ResNet50V2": ("ResNet50V2", 32, "conv3_block4_out", {}),
    "EfficientNetB0": ("EfficientNetB0", 32, "block3b_add", {}),
    "MobileNetV2": ("MobileNetV2", 32, "block_5_add", {"alpha": 0.35}),
    "InceptionV3": ("InceptionV3", 75, "mixed2", {}),
    "Xception": ("Xception", 71, "block4_sepconv2_bn", {}),
    "ConvNeXtTiny": ("ConvNeXtTiny", 32, "convnext_tiny_stage_1_block_1_layer_scale", {}),
}


def _wrapped(name: str):
    ctor, size, layer, kwargs = BACKBONES[name]
    base = getattr(keras.applications, ctor)(include_top=False, weights=None, input_shape=(None, None, 3),
                                             **kwargs)
    trunk = keras.Sequential([keras.Input((size, size, 3)), L.Rescaling(1.0 / 255, name="scale"), base],
                             name="trunk")
    inp = keras.Input((size, size, 3), name="image")
    feat = L.GlobalAveragePooling2D(name="gap")(trunk(inp))
    model = keras.Model(inp, L.Dense(3, name="logits")(feat), name=f"{name.lower()}_head")
    return model, base, f"trunk/{base.name}/{layer}", layer, size


@pytest.fixture(scope="module", params=list(BACKBONES))
def case(request):
    keras.utils.set_random_seed(0)
    model, base, path, layer, size = _wrapped(request.param)
    images = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype("float32")
    return {"name": request.param, "model": model, "base": base, "path": path, "layer": layer, "images": images}


def _logits_with_perturbation(model, layer, images, delta, class_index):
    """The model's logits with ``delta`` added to ``layer``'s output, by Keras's own forward pass."""
    original = layer.call

    def shifted(*args, **kwargs):
        return original(*args, **kwargs) + delta

    layer.call = shifted
    try:
        return np.asarray(model(images, training=False), np.float64)[:, class_index]
    finally:
        del layer.call


def test_engine_matches_flat_submodel_and_finite_difference(case):
    model, base, path = case["model"], case["base"], case["path"]
    images = case["images"]
    eng = Engine(model, [path], progress=False)
    result = eng.run(InMemoryImages(images), class_index=1)
    act, grad = result.activations[path], result.gradients[path]
    assert act.shape == grad.shape and act.shape[0] == 2
    assert eng.layer_shapes[path] == act.shape[1:]  # resolved although the backbone is flexible

    # Activations: the backbone's own graph, cut at the layer, on the rescaled images.
    flat = keras.Model(base.input, base.get_layer(case["layer"]).output)
    np.testing.assert_allclose(act, np.asarray(flat(images / 255.0, training=False)), rtol=1e-3, atol=1e-4)

    # Gradient: central finite difference along a direction of the layer's scale.
    rng = np.random.default_rng(2)
    direction = rng.standard_normal(act.shape).astype("float32")
    direction /= np.linalg.norm(direction.reshape(2, -1), axis=1).reshape(2, *[1] * (act.ndim - 1))
    eps = 1e-2 * float(np.linalg.norm(act.reshape(2, -1), axis=1).mean() + 1e-3)
    layer = base.get_layer(case["layer"])
    # One batch holds both sides of the difference: examples +eps, then the same examples -eps.
    both = _logits_with_perturbation(model, layer, np.concatenate([images, images]),
                                     np.concatenate([eps * direction, -eps * direction]), 1)
    finite = (both[:2] - both[2:]) / (2 * eps)
    analytic = np.sum(grad.reshape(2, -1) * direction.reshape(2, -1), axis=1)
    scale = np.abs(grad.reshape(2, -1)).sum(axis=1) / np.sqrt(direction[0].size)
    np.testing.assert_allclose(finite, analytic, rtol=0.05, atol=0.05 * scale.max() + 1e-6)
