"""The demo CNN: a small Keras model trained with fixed seeds on a built demo case, cached on disk.

Architecture (names are stable so that reports can refer to layers)::

    Input(32, 32, C) -> Conv2D(16, 3, relu, "conv1") -> MaxPool -> Conv2D(32, 3, relu, "conv2")
    -> MaxPool -> Conv2D(32, 3, relu, "conv3") -> GlobalAveragePooling2D -> Dense(n, softmax, "logits")

The softmax is part of the last layer on purpose: the toolkit bypasses it to reach the logits.
Inputs are the images scaled to [0, 1] exactly as :func:`concepts.sets.default_preprocess` does,
so the toolkit's default loading feeds the model correctly. The model is trained on ``train/``
and its held-out accuracy measured on ``classes/`` (the report's examples, never trained on).

Examples
--------
>>> from concepts.demo import build_case
>>> from concepts.demo.model import demo_model
>>> info = build_case("histology", size="small")  # builds a case (1-4 s)  # doctest: +SKIP
>>> model, metrics = demo_model(info)  # trains a CNN (minutes)  # doctest: +SKIP
>>> metrics["test_accuracy"] > 0.85  # of that model  # doctest: +SKIP
True
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from probes.cache import default_cache_dir  # the one cache-folder rule (re-exported here for callers)

from ..errors import CacheCorruptionWarning, ConceptFolderError
from ..image_files import list_image_files, read_image
from ._common import CaseInfo

ARCHITECTURE = "demo_cnn/v1"
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
# Default epochs per case and size; sized so that training takes well under a minute on 2 CPU cores.
DEFAULT_EPOCHS = {("histology", "full"): 10, ("histology", "small"): 4,
                  ("mri", "full"): 10, ("mri", "small"): 4, ("mri3d", "full"): 12, ("mri3d", "small"): 10}


def build_cnn(input_shape: tuple[int, int, int], n_classes: int):
    """The untrained demo CNN (see the module docstring for the architecture).

    Examples
    --------
    >>> cnn = build_cnn((32, 32, 3), 2)
    >>> cnn.get_layer("conv1").filters, cnn.output_shape
    (16, (None, 2))
    >>> [layer.name for layer in cnn.layers if layer.name.startswith("conv")]
    ['conv1', 'conv2', 'conv3']
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="image")
    x = layers.Conv2D(16, 3, activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling2D(name="pool1")(x)
    x = layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(name="pool2")(x)
    x = layers.Conv2D(32, 3, activation="relu", name="conv3")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs, name="demo_cnn")


def load_split(folder: Path, class_names: list[str], channels: int) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Images under ``folder/<class>/`` as float32 (N, 32, 32, C) in [0, 1], integer labels, and files.

    Uses :func:`concepts.sets.default_preprocess`, the same conversion the toolkit applies.

    Examples
    --------
    >>> x, y, files = load_split(Path("data/classes"), ["striped", "other"], 1)
    >>> x.shape, x.dtype, np.bincount(y), files[0].name
    ((24, 16, 16, 1), dtype('float32'), array([12, 12]), 's000.png')
    """
    from ..sets import default_preprocess

    images, labels, files = [], [], []
    for index, name in enumerate(class_names):
        found = list_image_files(folder / name)
        if not found:
            raise ConceptFolderError(f"No images in {str(folder / name)!r}; build the demo case first "
                                     "(concepts.demo.build_case).")
        for path in found:
            image = read_image(path)
            images.append(np.asarray(default_preprocess(image, (image.shape[0], image.shape[1], channels)),
                                     dtype=np.float32))
            labels.append(index)
            files.append(path)
    return np.stack(images), np.asarray(labels, dtype=np.int64), files


def _dihedral(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 rotations/reflections of every image. Tissue and brain patches have no preferred
    orientation at this scale and the labels do not depend on it, so this multiplies the small
    training set for free (and in a fixed order, so training stays deterministic)."""
    out = []
    for flip in (False, True):
        base = x[:, :, ::-1] if flip else x
        for k in range(4):
            out.append(np.rot90(base, k, axes=(1, 2)))
    return np.ascontiguousarray(np.concatenate(out)), np.tile(y, 8)


def _files_digest(files: list[Path], root: Path) -> str:
    from ..manifests import sha256_file

    digest = hashlib.sha256()
    for path in sorted(files):
        digest.update(f"{path.relative_to(root).as_posix()}\0{sha256_file(path)}\n".encode())
    return digest.hexdigest()


@contextlib.contextmanager
def _deterministic_ops() -> Iterator[None]:
    """Enable TensorFlow's deterministic ops while training and restore the previous setting after,
    so that the rest of the session (e.g. GPU gradients without a deterministic kernel) is unaffected."""
    import tensorflow as tf
    from tensorflow.python.framework import config as tf_config

    was_enabled = tf_config.is_op_determinism_enabled()
    tf.config.experimental.enable_op_determinism()
    try:
        yield
    finally:
        disable = getattr(tf_config, "disable_op_determinism", None)
        if not was_enabled and disable is not None:
            disable()


def _print(message: str, enabled: bool) -> None:
    if enabled:
        print(message, file=sys.stderr, flush=True)


def demo_model(case_info: CaseInfo, *, cache_dir: str | Path | None = None, seed: int = 0,
               epochs: int | None = None, progress: bool = True):
    """The trained demo CNN of a built case: loaded from the cache, or trained (seeded) and cached.

    Parameters
    ----------
    case_info : CaseInfo
        What :func:`concepts.demo.build_case` returned.
    cache_dir : str | Path | None, default=None
        Cache root; default :func:`default_cache_dir`. The model is stored as
        ``<cache_dir>/demo/<case>_<size>/<key>/model.keras`` with ``metrics.json``, where
        ``key`` hashes the training and test files' bytes and the training configuration
        (architecture, epochs, seed, batch size, learning rate, Keras version).
    seed : int, default=0
        Seed for ``keras.utils.set_random_seed`` (weights and shuffling).
    epochs : int | None, default=None
        Training epochs; default per case and size (:data:`DEFAULT_EPOCHS`).
    progress : bool, default=True
        Print one line per few epochs and the held-out accuracy to stderr.

    Returns
    -------
    tuple[keras.Model, dict]
        ``(model, metrics)``: a compiled-free Keras model (softmax output, layers ``conv1``,
        ``conv2``, ``conv3``, ``logits``) and a dict with ``train_accuracy``, ``test_accuracy``
        (on ``classes/``, never trained on), ``n_train``, ``n_test``, ``epochs``, ``seed``,
        ``train_seconds``, ``from_cache``, ``model_path`` and ``config``.

    Examples
    --------
    >>> model, metrics = demo_model(info, cache_dir="/tmp/cache")  # trains a CNN (minutes)  # doctest: +SKIP
    >>> print(f"held-out accuracy {metrics['test_accuracy']:.3f}")  # of that model  # doctest: +SKIP
    held-out accuracy 0.947
    """
    import keras

    root = Path(case_info.root)
    classes, channels = list(case_info.class_names), case_info.channels
    train_dir = Path(case_info.train_dir) if case_info.train_dir else root / "train"
    epochs = int(epochs if epochs is not None else DEFAULT_EPOCHS.get((case_info.case, case_info.size), 15))
    config = {"architecture": ARCHITECTURE, "epochs": epochs, "seed": int(seed), "batch_size": BATCH_SIZE,
              "learning_rate": LEARNING_RATE, "optimizer": "adam", "augmentation": "dihedral x8",
              "preprocessing": "default_preprocess/v1 (uint8 / 255)", "keras": keras.__version__,
              "classes": classes, "channels": channels}
    build, load, augment = build_cnn, load_split, _dihedral
    if int(case_info.provenance.get("dimensions", 2)) == 3:  # volumes: the 3D CNN of model3d
        from .model3d import ARCHITECTURE_3D, build_cnn3d, flips3d, load_split3d
        from ..sets import preprocess_identity
        from ..volumes import DEFAULT_VOLUME_PREPROCESS_ID

        volume_shape = (*case_info.provenance["model_input_shape"], channels)
        build, augment = build_cnn3d, flips3d
        load = lambda folder, names, _channels: load_split3d(  # noqa: E731
            folder, names, volume_shape, case_info.preprocess)
        config.update(architecture=ARCHITECTURE_3D, augmentation="flips along 3 axes x8",
                      preprocessing=(preprocess_identity(case_info.preprocess) if case_info.preprocess
                                     else DEFAULT_VOLUME_PREPROCESS_ID))
    files = [p for c in classes for p in list_image_files(train_dir / c) + list_image_files(root / "classes" / c)]
    key_source = json.dumps(config, sort_keys=True) + _files_digest(files, root)
    key = hashlib.sha256(key_source.encode()).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    folder = folder / "demo" / f"{case_info.case}_{case_info.size}" / key
    model_path, metrics_path = folder / "model.keras", folder / "metrics.json"

    # metrics.json is written last, so its presence means the model file is complete.
    if metrics_path.is_file() and model_path.is_file():
        try:
            metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
            # safe_mode: a model file in a shared cache folder must not run code when loaded.
            model = keras.models.load_model(model_path, compile=False, safe_mode=True)
            metrics.update(from_cache=True, model_path=str(model_path))
            _print(f"Demo CNN ({case_info.case}, {case_info.size}) loaded from {model_path}: held-out "
                   f"accuracy {metrics['test_accuracy']:.3f} on {metrics['n_test']} tiles.", progress)
            return model, metrics
        except Exception as exc:  # a damaged cache must never stop the demo: retrain
            warnings.warn(f"Cached demo model {str(model_path)!r} is damaged ({type(exc).__name__}: {exc}); "
                          "retraining it.", CacheCorruptionWarning, stacklevel=2)

    x_train, y_train, _ = load(train_dir, classes, channels)
    x_test, y_test, _ = load(root / "classes", classes, channels)
    x_aug, y_aug = augment(x_train, y_train)
    _print(f"Training the demo CNN ({case_info.case}, {case_info.size}) on {len(x_train)} tiles "
           f"(x8 rotations/flips), {epochs} epochs, seed {seed} ...", progress)
    keras.utils.set_random_seed(int(seed))
    started = time.perf_counter()
    with _deterministic_ops():
        model = build(tuple(x_train.shape[1:]), len(classes))
        model.compile(optimizer=keras.optimizers.Adam(LEARNING_RATE),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        callbacks = []
        if progress:
            every = max(1, epochs // 5)
            callbacks.append(keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: _print(
                f"  epoch {e + 1}/{epochs}: loss {logs['loss']:.3f}, accuracy {logs['accuracy']:.3f}", True)
                if (e + 1) % every == 0 or e + 1 == epochs else None))
        model.fit(x_aug, y_aug, batch_size=BATCH_SIZE, epochs=epochs, shuffle=True, verbose=0,
                  callbacks=callbacks)
    train_seconds = time.perf_counter() - started

    def accuracy(x: np.ndarray, y: np.ndarray) -> float:
        return float(np.mean(np.argmax(model.predict(x, batch_size=256, verbose=0), axis=1) == y))

    metrics = {
        "case": case_info.case, "size": case_info.size, "class_names": classes,
        "train_accuracy": accuracy(x_train, y_train), "test_accuracy": accuracy(x_test, y_test),
        "n_train": int(len(x_train)), "n_test": int(len(x_test)), "epochs": epochs, "seed": int(seed),
        "train_seconds": round(train_seconds, 2), "test_set": "classes/ (the report's examples, never trained on)",
        "train_set": "train/", "config": config, "cache_key": key,
    }
    from probes.cache import make_private_dir

    make_private_dir(folder)  # cache folders are private to the user (mode 0700)
    # Save to a temporary name and rename, so an interrupted run never leaves half a model behind.
    tmp_model = folder / f"model.tmp{os.getpid()}.keras"
    model.save(tmp_model)
    os.replace(tmp_model, model_path)
    tmp_metrics = folder / f"metrics.tmp{os.getpid()}.json"
    tmp_metrics.write_text(json.dumps(metrics, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp_metrics, metrics_path)
    _print(f"Demo CNN trained in {train_seconds:.1f} s: train accuracy {metrics['train_accuracy']:.3f}, "
           f"held-out accuracy {metrics['test_accuracy']:.3f} on {len(x_test)} tiles; saved to {model_path}.",
           progress)
    metrics.update(from_cache=False, model_path=str(model_path))
    return model, metrics
