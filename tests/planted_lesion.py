"""A planted case for concept maps: a textured lesion in a smooth, shaded background.

Images are 32×32 grayscale. The background is smooth but far from flat (a random brightness, a
linear shading and a broad blob), as in a real scan; a *lesion* is an 8×8 square of fine
checkerboard texture at a random place. The hand-built model sees only texture:

* ``conv1`` (3×3, valid): a Laplacian and its negative, then ReLU, so smooth shading gives about 0
  and the checkerboard a strong response in both channels;
* ``conv2`` (3×3, valid): a box average of both ``conv1`` channels (texture energy), then ReLU;
* global average pooling and a dense head: the ``lesion`` logit is the texture energy minus a
  threshold, the ``normal`` logit its negative.

So by construction the class evidence sits in the lesion, the concept ``textured`` (whole images
of the same texture) drives the ``lesion`` class, and its presence map must peak in the lesion.
A copy with randomised weights responds mostly to brightness and shading, not to the texture.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from synthetic import write_png

SIZE = 32
LESION = 8


def background(rng: np.random.Generator) -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE] / (SIZE - 1) - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    shading = rng.uniform(0.1, 0.3) * (np.cos(angle) * x + np.sin(angle) * y)
    cy, cx = rng.uniform(-0.5, 0.5, 2)
    blob = rng.uniform(-0.15, 0.15) * np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * 0.25 ** 2))
    return rng.uniform(0.35, 0.65) + shading + blob


def texture(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    y, x = np.indices(shape)
    phase = rng.integers(0, 2)
    return rng.uniform(0.03, 0.05) * np.where((y + x + phase) % 2 == 0, 1.0, -1.0)


def lesion_image(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """An image with one lesion, and the lesion's boolean mask."""
    image = background(rng)
    top, left = rng.integers(2, SIZE - LESION - 2, 2)
    image[top:top + LESION, left:left + LESION] += texture(rng, (LESION, LESION))
    mask = np.zeros((SIZE, SIZE), bool)
    mask[top:top + LESION, left:left + LESION] = True
    return np.clip(image, 0, 1), mask


def textured_image(rng: np.random.Generator) -> np.ndarray:
    return np.clip(background(rng) + texture(rng, (SIZE, SIZE)), 0, 1)


def smooth_image(rng: np.random.Generator) -> np.ndarray:
    return np.clip(background(rng), 0, 1)


def make_lesion_data(root: Path, *, n_class: int = 20, n_concept: int = 20, n_pool: int = 100,
                     seed: int = 0) -> Path:
    """Write the folder convention (classes lesion / normal, concept ``textured``, random smooth images)."""
    rng = np.random.default_rng(seed)
    for i in range(n_class):
        write_png(root / "classes" / "lesion" / f"l{i:03d}.png", lesion_image(rng)[0])
        write_png(root / "classes" / "normal" / f"n{i:03d}.png", smooth_image(rng))
    for i in range(n_concept):
        write_png(root / "concepts" / "textured" / f"t{i:03d}.png", textured_image(rng))
        write_png(root / "concepts" / "smooth" / f"s{i:03d}.png", smooth_image(rng))
    for i in range(n_pool):
        write_png(root / "random" / f"r{i:04d}.png", smooth_image(rng))
    (root / "classes.txt").write_text("lesion\nnormal\n")
    return root


def held_out(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``n`` fresh lesion images as model inputs ``(n, 32, 32, 1)`` (8-bit rounded, as read from PNG), and masks."""
    rng = np.random.default_rng(seed)
    pairs = [lesion_image(rng) for _ in range(n)]
    images = np.stack([np.round(p[0] * 255) / 255 for p in pairs])[..., None].astype(np.float32)
    return images, np.stack([p[1] for p in pairs])


def build_lesion_model():
    """The texture-reading model described in the module docstring."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 1))
    conv1 = keras.layers.Conv2D(2, 3, activation="relu", name="conv1")
    conv2 = keras.layers.Conv2D(2, 3, activation="relu", name="conv2")
    head = keras.layers.Dense(2, name="head")
    outputs = head(keras.layers.GlobalAveragePooling2D(name="gap")(conv2(conv1(inputs))))
    model = keras.Model(inputs, keras.layers.Softmax(name="softmax")(outputs))
    laplacian = np.array([[0, -1, 0], [-1, 4, -1], [0, -1, 0]], np.float32)
    conv1.set_weights([np.stack([laplacian, -laplacian], -1)[:, :, None, :], np.zeros(2, np.float32)])
    conv2.set_weights([np.full((3, 3, 2, 2), 1.0 / 18, np.float32), np.zeros(2, np.float32)])
    head.set_weights([np.array([[10.0, -10.0], [10.0, -10.0]], np.float32), np.array([-0.5, 0.5], np.float32)])
    return model
