"""Synthetic images and a hand-built model whose use of a concept is known exactly.

The model reads 16×16 grayscale images. ``conv1`` holds four fixed edge filters: two respond to
horizontal stripes (vertical intensity changes), two to vertical stripes. After ReLU and global
average pooling, the logit of class ``striped`` is (horizontal-stripe energy − vertical-stripe
energy) and the logit of ``other`` is its negative. So, by construction:

* the concept ``horizontal`` raises the ``striped`` logit (TCAV score near 1, positive UBS);
* the concept ``vertical`` lowers it (score near 0, negative UBS);
* noise-image "concepts" drawn like the random sets carry no signal.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 16


def stripes(rng: np.random.Generator, orientation: str) -> np.ndarray:
    period = rng.integers(3, 6)
    phase = rng.uniform(0, 2 * np.pi)
    axis = np.arange(SIZE)
    wave = 0.5 + 0.4 * np.sin(2 * np.pi * axis / period + phase)
    image = np.tile(wave[:, None], (1, SIZE)) if orientation == "horizontal" else np.tile(wave[None, :], (SIZE, 1))
    return np.clip(image + rng.normal(0, 0.05, (SIZE, SIZE)), 0, 1)


def noise(rng: np.random.Generator) -> np.ndarray:
    smooth = rng.uniform(0.2, 0.8) + rng.normal(0, 0.15, (SIZE, SIZE))
    return np.clip(smooth, 0, 1)


def write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8), mode="L").save(path)


def make_data(root: Path, *, n_class: int = 24, n_concept: int = 20, n_pool: int = 120, n_noise_concepts: int = 0,
              seed: int = 0) -> Path:
    """Write the folder convention under ``root`` and return it."""
    rng = np.random.default_rng(seed)
    for i in range(n_class):
        # The striped class shows horizontal stripes; the other class is a mix of noise and vertical stripes.
        write_png(root / "classes" / "striped" / f"s{i:03d}.png", stripes(rng, "horizontal"))
        other = noise(rng) if i % 2 else stripes(rng, "vertical")
        write_png(root / "classes" / "other" / f"o{i:03d}.png", other)
    for i in range(n_concept):
        write_png(root / "concepts" / "horizontal" / f"h{i:03d}.png", stripes(rng, "horizontal"))
        write_png(root / "concepts" / "vertical" / f"v{i:03d}.png", stripes(rng, "vertical"))
    for k in range(n_noise_concepts):
        for i in range(n_concept):
            write_png(root / "concepts" / f"noise_{k:02d}" / f"n{i:03d}.png", noise(rng))
    for i in range(n_pool):
        write_png(root / "random" / f"r{i:04d}.png", noise(rng))
    (root / "classes.txt").write_text("striped\nother\n")
    return root


def edge_filters() -> np.ndarray:
    """3×3 kernels: [d/dy, -d/dy, d/dx, -d/dx] as a (3, 3, 1, 4) Conv2D kernel."""
    dy = np.array([[-1, -2, -1], [0, 0, 0], [1, 2, 1]], dtype=np.float32) / 4
    dx = dy.T
    return np.stack([dy, -dy, dx, -dx], axis=-1)[:, :, None, :]


def build_model(head_activation: str | None = "softmax", nested: bool = False):
    """The planted-concept model; ``nested=True`` puts the convolutions in a functional backbone."""
    import keras

    inputs = keras.Input((SIZE, SIZE, 1))
    conv1 = keras.layers.Conv2D(4, 3, activation="relu", name="conv1")
    conv2 = keras.layers.Conv2D(4, 1, activation="relu", name="conv2")
    if nested:
        backbone_in = keras.Input((SIZE, SIZE, 1))
        backbone = keras.Model(backbone_in, conv2(conv1(backbone_in)), name="backbone")
        features = backbone(inputs)
    else:
        features = conv2(conv1(inputs))
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(features)
    head = keras.layers.Dense(2, activation=head_activation, name="head")
    model = keras.Model(inputs, head(pooled))
    conv1.set_weights([edge_filters(), np.zeros(4, np.float32)])
    conv2.set_weights([np.eye(4, dtype=np.float32)[None, None], np.zeros(4, np.float32)])
    w = np.array([[1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, 1.0]], dtype=np.float32) * 4.0
    head.set_weights([w, np.zeros(2, np.float32)])
    return model
