"""Planted cases with known answers, for the CAV-estimator validation study and its tests.

Each case writes the toolkit's folder convention (``classes/``, ``concepts/``, ``random/``,
``classes.txt``) and returns a model whose use of the concepts is known by construction:

* ``lesion`` -- grey images with one disc ("lesion") on a mottled background. Class
  ``lesion_textured`` fills the disc with stripes or checks, class ``lesion_smooth`` leaves it
  uniform. A 3-conv CNN (conv1 -> pool -> conv2 -> pool -> conv3 -> global average pooling ->
  dense) is trained on them. Concepts show texture or smoothness in *other geometries* than the
  classes (rectangles, half-planes, the full frame; never a disc): ``striped`` and ``dotted`` must
  raise ``lesion_textured`` (and lower ``lesion_smooth``), ``smooth`` must do the opposite, in
  every layer. This is the kind of case where a ridge least-squares CAV was seen to reverse the
  direction in the middle layer. ``conv3`` is a last convolutional layer followed only by global
  pooling and a dense head: every example has the same gradient there.
* ``lesion_nested`` -- the same task with the convolutions inside a nested functional backbone
  (layer paths ``backbone/conv1`` ...) and another training seed.
* ``stripes`` -- the hand-built model of ``tests/synthetic.py`` (no training): the logit of
  ``striped`` is horizontal minus vertical stripe energy, exactly; probed at ``conv2``, which is
  followed only by pooling and a linear head.

Every case also writes ``noise_XX`` concepts drawn from the same distribution as the random
images: they must come out significant no more often than the nominal rate.

Example:
    >>> from benchmarks.planted import make_case
    >>> case = make_case("lesion", "/tmp/planted", size="small")  # doctest: +SKIP
    >>> case.expected[("lesion_textured", "striped")]             # doctest: +SKIP
    1
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

__all__ = ["PlantedCase", "make_case", "CASES", "SIZES"]

#: Image side, images per concept / random set, class examples per class, noise concepts,
#: random pool size and training images per class, per study size.
SIZES = {
    "small": dict(side=32, concept=30, examples=30, noise=4, pool=600, train=200),
    "full": dict(side=32, concept=40, examples=50, noise=10, pool=4000, train=400),
}
CASES = ("lesion", "lesion_nested", "stripes")


@dataclass
class PlantedCase:
    """A written case: its data folder, model, layers, and the expected sign per (class, concept)."""

    name: str
    data: Path
    model: Any
    layers: list[str]
    expected: dict[tuple[str, str], int]
    noise_concepts: list[str] = field(default_factory=list)

    @property
    def concepts(self) -> list[Path]:
        """Every concept folder, planted ones first, then the noise concepts."""
        planted = sorted({c for _, c in self.expected})
        return [self.data / "concepts" / c for c in planted + self.noise_concepts]


# ------------------------------------------------------------------------------------------------ images
def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8), mode="L").save(path)


def _smooth_field(rng: np.random.Generator, side: int, scale: float) -> np.ndarray:
    """Gaussian noise low-passed in Fourier space: a mottled field with correlation length ~scale."""
    noise = rng.normal(size=(side, side))
    f = np.fft.fftfreq(side)
    radius2 = f[:, None] ** 2 + f[None, :] ** 2
    field_ = np.real(np.fft.ifft2(np.fft.fft2(noise) * np.exp(-radius2 * (scale * np.pi) ** 2 * 2)))
    return field_ / (field_.std() + 1e-9)


def _background(rng: np.random.Generator, side: int) -> np.ndarray:
    return rng.uniform(0.35, 0.65) + 0.06 * _smooth_field(rng, side, rng.uniform(3, 8))


def _texture(rng: np.random.Generator, side: int, kind: str) -> np.ndarray:
    yy, xx = np.mgrid[0:side, 0:side].astype(float)
    period = rng.uniform(3.0, 5.5)
    if kind == "striped":
        angle = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        return 0.5 + 0.35 * np.sin(2 * np.pi * (xx * np.cos(angle) + yy * np.sin(angle)) / period + phase)
    if kind == "checks":
        return 0.5 + 0.35 * np.sign(np.sin(2 * np.pi * xx / period) * np.sin(2 * np.pi * yy / period))
    if kind == "dotted":
        on = (np.sin(2 * np.pi * xx / period) > 0.6) & (np.sin(2 * np.pi * yy / period) > 0.6)
        return np.where(on, 0.9, 0.25)
    raise ValueError(kind)


def _disc(rng: np.random.Generator, side: int) -> np.ndarray:
    radius = rng.uniform(0.2, 0.3) * side
    cy, cx = rng.uniform(radius + 1, side - radius - 1, size=2)
    yy, xx = np.mgrid[0:side, 0:side]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= radius ** 2


def _region(rng: np.random.Generator, side: int) -> np.ndarray:
    """A rectangle, a half-plane or the full frame: never a disc."""
    yy, xx = np.mgrid[0:side, 0:side]
    kind = rng.integers(3)
    if kind == 0:
        h, w = rng.integers(side // 3, side, size=2)
        y0, x0 = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
        return (yy >= y0) & (yy < y0 + h) & (xx >= x0) & (xx < x0 + w)
    if kind == 1:
        angle = rng.uniform(0, 2 * np.pi)
        return (xx - side / 2) * np.cos(angle) + (yy - side / 2) * np.sin(angle) > rng.uniform(-side / 4, side / 4)
    return np.ones((side, side), dtype=bool)


def lesion_image(rng: np.random.Generator, side: int, textured: bool) -> np.ndarray:
    """One class example: a disc, textured (stripes or checks) or uniform, on a mottled background."""
    image = _background(rng, side)
    disc = _disc(rng, side)
    if textured:
        fill = _texture(rng, side, "striped" if rng.random() < 0.5 else "checks")
    else:
        fill = np.full((side, side), rng.uniform(0.2, 0.8))
    image[disc] = fill[disc]
    return image + rng.normal(0, 0.02, image.shape)


def concept_image(rng: np.random.Generator, side: int, concept: str) -> np.ndarray:
    """A concept example: texture or smoothness in a rectangle, half-plane or the full frame."""
    image = _background(rng, side)
    region = _region(rng, side)
    fill = np.full((side, side), rng.uniform(0.2, 0.8)) if concept == "smooth" else _texture(rng, side, concept)
    image[region] = fill[region]
    return image + rng.normal(0, 0.02, image.shape)


def random_image(rng: np.random.Generator, side: int) -> np.ndarray:
    """A counterexample: a mottled field of random brightness, contrast and grain, with a few blobs."""
    image = rng.uniform(0.3, 0.7) + rng.uniform(0.03, 0.2) * _smooth_field(rng, side, rng.uniform(0.3, 6))
    for _ in range(rng.integers(0, 3)):
        image[_disc(rng, side) if rng.random() < 0.5 else _region(rng, side)] += rng.uniform(-0.2, 0.2)
    return image + rng.normal(0, 0.02, image.shape)


# ------------------------------------------------------------------------------------------------ models
def _lesion_model(side: int, nested: bool, seed: int):
    import keras

    keras.utils.set_random_seed(seed)
    layers = [keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
              keras.layers.MaxPooling2D(name="pool1"),
              keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
              keras.layers.MaxPooling2D(name="pool2"),
              keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv3")]
    inputs = keras.Input((side, side, 1))
    if nested:
        inner_in = keras.Input((side, side, 1))
        x = inner_in
        for layer in layers:
            x = layer(x)
        features = keras.Model(inner_in, x, name="backbone")(inputs)
    else:
        features = inputs
        for layer in layers:
            features = layer(features)
    pooled = keras.layers.GlobalAveragePooling2D(name="gap")(features)
    outputs = keras.layers.Dense(2, activation="softmax", name="head")(pooled)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def _train_lesion(root: Path, side: int, n_train: int, nested: bool, seed: int):
    import keras

    cached = root / "model.keras"
    if cached.exists():
        return keras.models.load_model(cached)
    rng = np.random.default_rng(seed + 1000)
    x = np.stack([lesion_image(rng, side, textured=bool(i % 2)) for i in range(2 * n_train)])[..., None]
    y = np.array([0 if i % 2 else 1 for i in range(2 * n_train)])   # 0 = textured, 1 = smooth
    model = _lesion_model(side, nested, seed)
    model.fit(np.clip(x, 0, 1).astype("float32"), y, epochs=8, batch_size=32, verbose=0, validation_split=0.2)
    accuracy = float(model.evaluate(np.clip(x, 0, 1).astype("float32"), y, verbose=0)[1])
    (root / "model_info.json").write_text(json.dumps({"train_accuracy": accuracy, "seed": seed}))
    model.save(cached)
    return model


def _write_common(root: Path, spec: dict[str, Any], rng: np.random.Generator, concept_fn, concepts: list[str],
                  classes: dict[str, Any]) -> list[str]:
    side = spec["side"]
    for name, make in classes.items():
        for i in range(spec["examples"]):
            _write(root / "classes" / name / f"{name}_{i:03d}.png", make(rng))
    (root / "classes.txt").write_text("".join(f"{c}\n" for c in classes))
    for concept in concepts:
        for i in range(spec["concept"]):
            _write(root / "concepts" / concept / f"{concept}_{i:03d}.png", concept_fn(rng, concept))
    noise = [f"noise_{k:02d}" for k in range(spec["noise"])]
    for concept in noise:
        for i in range(spec["concept"]):
            _write(root / "concepts" / concept / f"{concept}_{i:03d}.png", random_image(rng, side))
    for i in range(spec["pool"]):
        _write(root / "random" / f"r{i:05d}.png", random_image(rng, side))
    return noise


def make_case(name: str, work: str | Path, size: str = "small", seed: int = 0) -> PlantedCase:
    """Write (or reuse) planted case ``name`` under ``work/name-size`` and return it.

    Example:
        >>> case = make_case("stripes", "/tmp/planted")  # doctest: +SKIP
        >>> case.layers                                   # doctest: +SKIP
        ['conv2']
    """
    if name not in CASES:
        raise ValueError(f"unknown planted case {name!r}; choose one of {CASES}.")
    spec = SIZES[size]
    root = Path(work) / f"{name}-{size}-{seed}"
    done = root / "written.json"
    fresh = not done.exists()
    rng = np.random.default_rng(seed)
    side = spec["side"]
    if name == "stripes":
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        import synthetic

        if fresh:
            synthetic.make_data(root, n_class=spec["examples"], n_concept=spec["concept"], n_pool=spec["pool"],
                                n_noise_concepts=spec["noise"], seed=seed)
        model = synthetic.build_model()
        expected = {("striped", "horizontal"): 1, ("striped", "vertical"): -1,
                    ("other", "horizontal"): -1, ("other", "vertical"): 1}
        noise = [f"noise_{k:02d}" for k in range(spec["noise"])]
        layers = ["conv2"]
    else:
        nested = name == "lesion_nested"
        if fresh:
            noise = _write_common(
                root, spec, rng, lambda r, c: concept_image(r, side, c), ["striped", "dotted", "smooth"],
                {"lesion_textured": lambda r: lesion_image(r, side, True),
                 "lesion_smooth": lambda r: lesion_image(r, side, False)})
        else:
            noise = [f"noise_{k:02d}" for k in range(spec["noise"])]
        model = _train_lesion(root, side, spec["train"], nested, seed + (7 if nested else 0))
        prefix = "backbone/" if nested else ""
        layers = [f"{prefix}conv1", f"{prefix}conv2", f"{prefix}conv3"]
        expected = {}
        for concept, sign in (("striped", 1), ("dotted", 1), ("smooth", -1)):
            expected[("lesion_textured", concept)] = sign
            expected[("lesion_smooth", concept)] = -sign
    done.write_text(json.dumps({"name": name, "size": size, "seed": seed}))
    return PlantedCase(name, root, model, layers, expected, noise)
