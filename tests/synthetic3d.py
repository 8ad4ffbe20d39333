"""Synthetic volumes and a hand-built Conv3D model whose use of a concept is known exactly.

The 3D analogue of :mod:`synthetic`: 16³ volumes, ``conv1`` holds four fixed 3D edge filters, two
responding to stripes that vary along z (axial layers), two to stripes that vary along x. After
ReLU and global average pooling, the logit of ``layered`` is (z-stripe energy − x-stripe energy)
and the logit of ``other`` its negative. So the concept ``z_layers`` raises ``layered`` and
``x_layers`` lowers it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from concepts.volumes import write_volume

SIZE = 16
SPACING = (1.0, 1.0, 2.0)


def stripes(rng: np.random.Generator, axis: str) -> np.ndarray:
    period = rng.integers(3, 6)
    phase = rng.uniform(0, 2 * np.pi)
    wave = 0.5 + 0.4 * np.sin(2 * np.pi * np.arange(SIZE) / period + phase)
    shape = [1, 1, 1]
    shape[0 if axis == "z" else 2] = SIZE
    volume = np.broadcast_to(wave.reshape(shape), (SIZE, SIZE, SIZE))
    return np.clip(volume + rng.normal(0, 0.05, (SIZE,) * 3), 0, 1)


def noise(rng: np.random.Generator) -> np.ndarray:
    return np.clip(rng.uniform(0.2, 0.8) + rng.normal(0, 0.15, (SIZE,) * 3), 0, 1)


def write(path: Path, volume: np.ndarray) -> None:
    # Stored as integers 0..1000 (an MRI-like scale); the default preprocessing normalises them.
    write_volume(np.round(volume * 1000).astype(np.int16), path, spacing=SPACING)


def make_data(root: Path, *, n_class: int = 16, n_concept: int = 14, n_pool: int = 60, seed: int = 0) -> Path:
    """Write the folder convention with NIfTI volumes under ``root`` and return it."""
    rng = np.random.default_rng(seed)
    for i in range(n_class):
        write(root / "classes" / "layered" / f"l{i:03d}.nii.gz", stripes(rng, "z"))
        write(root / "classes" / "other" / f"o{i:03d}.nii.gz", noise(rng) if i % 2 else stripes(rng, "x"))
    for i in range(n_concept):
        write(root / "concepts" / "z_layers" / f"z{i:03d}.nii.gz", stripes(rng, "z"))
        write(root / "concepts" / "x_layers" / f"x{i:03d}.nii.gz", stripes(rng, "x"))
    for i in range(n_pool):
        write(root / "random" / f"r{i:04d}.nii.gz", noise(rng))
    (root / "classes.txt").write_text("layered\nother\n")
    return root


def edge_filters() -> np.ndarray:
    """3×3×3 kernels [d/dz, -d/dz, d/dx, -d/dx] as a (3, 3, 3, 1, 4) Conv3D kernel (axes z, y, x)."""
    smooth = np.array([1.0, 2.0, 1.0]) / 4
    diff = np.array([-1.0, 0.0, 1.0])
    dz = np.einsum("i,j,k->ijk", diff, smooth, smooth) / 4
    dx = np.einsum("i,j,k->ijk", smooth, smooth, diff) / 4
    return np.stack([dz, -dz, dx, -dx], axis=-1)[:, :, :, None, :].astype(np.float32)


def build_model(size: int | None = SIZE):
    """The planted-concept Conv3D model (input (16, 16, 16, 1), layers conv1, conv2, pool, head);
    ``size=None``: the same model with a flexible input ``(None, None, None, 1)``."""
    import keras

    inputs = keras.Input((size, size, size, 1))
    conv1 = keras.layers.Conv3D(4, 3, activation="relu", name="conv1")
    conv2 = keras.layers.Conv3D(4, 1, activation="relu", name="conv2")
    pooled = keras.layers.MaxPooling3D(1, name="pool")(conv2(conv1(inputs)))  # identity, but a 3D pooling layer
    gap = keras.layers.GlobalAveragePooling3D(name="gap")(pooled)
    head = keras.layers.Dense(2, activation="softmax", name="head")
    model = keras.Model(inputs, head(gap))
    conv1.set_weights([edge_filters(), np.zeros(4, np.float32)])
    conv2.set_weights([np.eye(4, dtype=np.float32)[None, None, None], np.zeros(4, np.float32)])
    w = np.array([[1.0, -1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, 1.0]], dtype=np.float32) * 8.0
    head.set_weights([w, np.zeros(2, np.float32)])
    return model
