"""Synthetic benchmark data and models: image folders in the toolkit's convention, small CNNs.

Images are drawn from seeded generators, so every run (and every process of one run) sees the
same bytes; folders are written once per spec under the run's work folder.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def _image(rng: Any, size: int, channels: int, family: str, index: int) -> Any:
    """One synthetic image: oriented stripes per class/concept, blocky smooth noise for random images."""
    import numpy as np

    if family == "random":
        cells = max(2, size // 8)
        low = rng.random((cells, cells, channels))
        rep = -(-size // cells)
        image = np.kron(low, np.ones((rep, rep, 1)))[:size, :size]
        image = 0.7 * image + rng.normal(0, 0.1, (size, size, channels))
    else:
        offset = 0 if family == "concept" else 7
        yy, xx = np.mgrid[0:size, 0:size] / size
        angle = (index + offset) * np.pi / 5 + rng.normal(0, 0.15)
        freq = rng.uniform(3, 9) * (1 + (index + offset) % 3)
        wave = 0.5 + 0.4 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 6.3))
        colour = np.random.default_rng(index + offset).uniform(0.4, 1.0, channels)
        image = wave[..., None] * colour + rng.normal(0, 0.08, (size, size, channels))
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def _write_folder(folder: Path, n: int, size: int, channels: int, family: str, index: int, seed: int) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, index, size, {"class": 1, "concept": 2, "random": 3}[family]])
    for i in range(n):
        array = _image(rng, size, channels, family, index)
        image = Image.fromarray(array[..., 0] if channels == 1 else array, mode="L" if channels == 1 else "RGB")
        image.save(folder / f"{family[0]}{index:02d}_{i:05d}.png", compress_level=1)


def ensure_data(base: Path, spec: dict[str, Any]) -> Path:
    """Write (once) the folder convention for a data spec; return its root.

    spec: size, channels, per_class, n_concepts, concept_size, and either ``random_pool`` (one pool
    folder of that many images, split into seeded sets by the toolkit) or ``random_sets`` (that many
    sub-folders of ``set_size`` distinct images each, as in the original TCAV).
    """
    key = "_".join(f"{k}{spec[k]}" for k in sorted(spec))
    root = base / key
    if (root / ".complete").exists():
        return root
    if root.exists():
        shutil.rmtree(root)
    size, channels = int(spec["size"]), int(spec["channels"])
    for c in range(2):
        _write_folder(root / "classes" / f"class{c}", spec["per_class"], size, channels, "class", c, 1)
    (root / "classes.txt").write_text("class0\nclass1\n")
    for k in range(spec["n_concepts"]):
        _write_folder(root / "concepts" / f"concept{k}", spec["concept_size"], size, channels, "concept", k, 2)
    if spec.get("random_pool"):
        _write_folder(root / "random", spec["random_pool"], size, channels, "random", 0, 3)
    else:
        for j in range(spec["random_sets"]):
            _write_folder(root / "random" / f"set_{j:03d}", spec["set_size"], size, channels, "random", j, 4)
    (root / ".complete").write_text("ok\n")
    return root


def build_model(spec: dict[str, Any]) -> Any:
    """A small random-init CNN: ``convs`` 3×3 ReLU conv layers (same padding), max-pooling after those
    flagged in ``pool_after``, global average pooling and a 2-way softmax head."""
    import keras
    from keras import layers

    keras.utils.set_random_seed(int(spec.get("seed", 0)))
    inputs = keras.Input(shape=tuple(spec["input"]), name="image")
    x = inputs
    pools = spec.get("pool_after", [True] * len(spec["convs"]))
    for i, filters in enumerate(spec["convs"]):
        x = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"conv{i + 1}")(x)
        if pools[i]:
            x = layers.MaxPooling2D(name=f"pool{i + 1}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(2, activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs, name="bench_cnn")


def ref_model(size: int = 64) -> dict[str, Any]:
    """The reference architecture (issue 13): conv 16 -> pool -> conv 32 -> pool -> conv 64.

    On 64x64 inputs its layers hold 65,536 / 32,768 / 16,384 activations; ``REF_MODEL_ISSUE13``
    has the issue's 65,536 / 32,768 / 8,192.
    """
    return {"input": [size, size, 3], "convs": [16, 32, 64], "pool_after": [True, True, False]}


#: The issue-13 reference work's model: conv1 64x64x16 (65,536), pool, conv2 32x32x32 (32,768),
#: pool, conv3 16x16x32 (8,192).
REF_MODEL_ISSUE13 = {"input": [64, 64, 3], "convs": [16, 32, 32], "pool_after": [True, True, False]}

#: The reference work's data: 2 classes x 50, 3 concept folders of 50, 20 random sets of 50 images.
REF_DATA = {"size": 64, "channels": 3, "per_class": 50, "n_concepts": 3, "concept_size": 50,
            "random_sets": 20, "set_size": 50}
