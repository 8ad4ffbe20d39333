"""The 3D demo CNN (for the ``"mri3d"`` case): architecture, volume loading and augmentation.

Architecture (layer names match the 2D demo CNN, so reports and the demo refer to the same layers)::

    Input(8, 8, 8, 1) -> Conv3D(8, 3, same, relu, "conv1") -> MaxPool3D -> Conv3D(16, 3, same, relu, "conv2")
    -> MaxPool3D -> Conv3D(16, 3, same, relu, "conv3") -> GlobalAveragePooling3D -> Dense(n, softmax, "logits")

Volumes are read and preprocessed as the report will read them: through
:class:`concepts.sets.ImageSet` with the case's ``preprocess`` (for ``"mri3d"``,
:func:`concepts.volumes.volume_preprocess` with the template's fixed 0..255 range, resampled from
16^3 voxels at 1 mm to the model's 8^3 at 2 mm). Training on a 16^3 input took about 6x longer on 2
CPU cores and was no more accurate. :func:`concepts.demo.model.demo_model` trains and
caches it like the 2D model.

Examples
--------
>>> build_cnn3d((8, 8, 8, 1), 2).get_layer("conv2").filters
16
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConceptFolderError
from ..image_files import list_image_files

ARCHITECTURE_3D = "demo_cnn3d/v1"


def build_cnn3d(input_shape: tuple[int, int, int, int], n_classes: int):
    """The untrained 3D demo CNN (see the module docstring).

    Examples
    --------
    >>> build_cnn3d((8, 8, 8, 1), 2).output_shape
    (None, 2)
    """
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="volume")
    x = layers.Conv3D(8, 3, padding="same", activation="relu", name="conv1")(inputs)
    x = layers.MaxPooling3D(name="pool1")(x)
    x = layers.Conv3D(16, 3, padding="same", activation="relu", name="conv2")(x)
    x = layers.MaxPooling3D(name="pool2")(x)
    x = layers.Conv3D(16, 3, padding="same", activation="relu", name="conv3")(x)
    x = layers.GlobalAveragePooling3D(name="gap")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="logits")(x)
    return keras.Model(inputs, outputs, name="demo_cnn3d")


def load_split3d(folder: Path, class_names: list[str], input_shape: tuple[int, int, int, int],
                 preprocess: Any = None) -> tuple[np.ndarray, np.ndarray, list[Path]]:
    """Volumes under ``folder/<class>/`` as float32 ``(N, D, H, W, C)``, integer labels, and files.

    ``preprocess`` is the case's (None: the toolkit's default), exactly as the report will apply it.

    Examples
    --------
    >>> x, y, files = load_split3d(Path("data3d/classes"), ["layered", "other"], (8, 8, 8, 1))
    >>> x.shape, x.dtype, np.bincount(y), files[0].name
    ((16, 8, 8, 8, 1), dtype('float32'), array([8, 8]), 'l000.nii.gz')
    """
    from ..sets import ImageSet

    arrays, labels, files = [], [], []
    for index, name in enumerate(class_names):
        found = list_image_files(folder / name)
        if not found:
            raise ConceptFolderError(f"No volumes in {str(folder / name)!r}; build the demo case first "
                                     "(concepts.demo.build_case).")
        arrays.append(ImageSet(found, name=name, input_shape=input_shape, preprocess=preprocess).load_all())
        labels += [index] * len(found)
        files += found
    return np.concatenate(arrays), np.asarray(labels, dtype=np.int64), files


def flips3d(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 combinations of flips along the three spatial axes, in a fixed order.

    Brain tissue cubes have no preferred direction at this scale and the labels do not depend on one,
    so this multiplies the training set for free (deterministically).
    """
    out = []
    for flips in range(8):
        axes = tuple(axis + 1 for axis in range(3) if flips >> axis & 1)
        out.append(np.flip(x, axis=axes) if axes else x)
    return np.ascontiguousarray(np.concatenate(out)), np.tile(y, 8)
