"""Concept maps of 3D convolutional layers: where in a volume a layer expresses a concept.

The 3D counterpart of :mod:`concepts.maps` (same definitions, one more spatial axis): for
activations ``a[d, h, w, c]`` and a concept vector ``v``, **presence**
``P[d, h, w] = Σ_c a[d, h, w, c] · v[d, h, w, c]`` (``v[c]`` for a pooled RCV) and **influence**
``I = Σ_c g · v`` with the gradient ``g`` of a class's target (summed over positions it is the
volume's directional derivative). Maps are brought to the model's input ``(D, H, W)`` by trilinear
interpolation between feature-cell centres (half-voxel stretch, edges clamped), and shown as
three orthogonal slices (:func:`plot_volume_map`).

:meth:`concepts.scoring.ScoreResult.concept_maps` comes here for layers with ``(D, H, W, C)``
activations, so the call is the same as in 2D.

Examples
--------
>>> maps = presence_maps3d(np.ones((1, 2, 2, 2, 3)), np.ones(3))
>>> upsample3d(maps, (4, 4, 4)).shape
(1, 4, 4, 4)
"""
from __future__ import annotations

from typing import Any

import numpy as np

# One projection, one map pipeline and one interpolation for 2D and 3D layers.
from .maps import _interpolation_matrix, _layer_maps, _project

__all__ = ["axial_slices", "influence_maps3d", "plot_volume_map", "presence_maps3d", "upsample3d",
           "volume_concept_maps"]


def _project3d(fields: np.ndarray, vector: np.ndarray, what: str) -> np.ndarray:
    return _project(fields, vector, what, n_spatial=3)


def presence_maps3d(activations: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``(n, D', H', W')`` presence maps: activations projected on the concept vector at each position.

    Examples
    --------
    >>> presence_maps3d(np.ones((1, 1, 1, 2, 2)), np.array([1.0, -1.0]))[0].tolist()
    [[[0.0, 0.0]]]
    """
    return _project3d(activations, vector, "activations")


def influence_maps3d(gradients: np.ndarray, vector: np.ndarray) -> np.ndarray:
    """``(n, D', H', W')`` influence maps; their sum over positions is each volume's directional derivative.

    Examples
    --------
    >>> float(influence_maps3d(np.full((1, 2, 2, 2, 1), 0.5), np.ones(1)).sum())
    4.0
    """
    return _project3d(gradients, vector, "gradients")


def upsample3d(maps: np.ndarray, size: tuple[int, int, int]) -> np.ndarray:
    """Trilinear upsampling (half-voxel centres, clamped edges) of ``(n, d, h, w)`` maps to ``size``.

    Examples
    --------
    >>> upsample3d(np.array([[[[0.0, 1.0]]]]), (1, 1, 4))[0, 0, 0].tolist()
    [0.0, 0.25, 0.75, 1.0]
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4:
        raise ValueError(f"maps must have shape (n, d, h, w); got {maps.shape}.")
    depth, rows, cols = (_interpolation_matrix(int(n_out), n_in) for n_out, n_in in zip(size, maps.shape[1:]))
    return np.einsum("Dd,ndhw,Hh,Ww->nDHW", depth, maps, rows, cols, optimize=True).astype(np.float32)


def volume_concept_maps(engine: Any, source: Any, vector: np.ndarray, *, layer: str, kind: str,
                        class_index: int | None, resolution: str) -> np.ndarray:
    """Maps of one concept in one 3D layer for the volumes of ``source`` (used by ``ScoreResult.concept_maps``)."""
    return _layer_maps(engine, source, vector, layer=layer, kind=kind, class_index=class_index,
                       resolution=resolution, n_spatial=3,
                       resize=lambda maps: upsample3d(maps, tuple(int(s) for s in engine.input_shape[:3])))


def axial_slices(volumes: np.ndarray, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each volume, the axial slice (and map slice) through its map's largest absolute value.

    Lets 2D displays (the report's most/least driven examples) show volumes.

    Examples
    --------
    >>> maps = np.zeros((1, 3, 2, 2)); maps[0, 2, 1, 1] = 5.0
    >>> images, slices = axial_slices(np.arange(12.0).reshape(1, 3, 2, 2, 1), maps)
    >>> images.shape, float(slices[0].max())
    ((1, 2, 2, 1), 5.0)
    """
    volumes, maps = np.asarray(volumes), np.asarray(maps)
    depth = [int(np.unravel_index(int(np.argmax(np.abs(m))), m.shape)[0]) for m in maps]
    return (np.stack([v[d] for v, d in zip(volumes, depth)]) if len(volumes) else volumes[:, 0],
            np.stack([m[d] for m, d in zip(maps, depth)]) if len(maps) else maps[:, 0])


def plot_volume_map(volume: np.ndarray, heat: np.ndarray, *, title: str | None = None,
                    at: tuple[int, int, int] | None = None):
    """Three orthogonal slices (axial, coronal, sagittal) of a volume with its concept map overlaid.

    Parameters
    ----------
    volume : np.ndarray
        ``(D, H, W)`` or ``(D, H, W, C)`` model input (channel 0 is shown).
    heat : np.ndarray
        ``(D, H, W)`` map at the input resolution (``ScoreResult.concept_maps(...)[i]``).
    title : str | None, default=None
        Figure title.
    at : tuple[int, int, int] | None, default=None
        The voxel ``(d, h, w)`` the slices pass through; default the map's largest absolute value.

    Returns
    -------
    matplotlib.figure.Figure
        A matplotlib figure; the map is drawn with a diverging colour scale centred at 0.

    Examples
    --------
    >>> fig = plot_volume_map(np.zeros((4, 4, 4)), np.ones((4, 4, 4)))
    >>> len(fig.axes) >= 3
    True
    """
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    image = np.asarray(volume, dtype=np.float32)
    if image.ndim == 4:
        image = image[..., 0]
    heat = np.asarray(heat, dtype=np.float32)
    if image.shape != heat.shape or image.ndim != 3:
        raise ValueError(f"volume {image.shape} and heat {heat.shape} must be two (D, H, W) arrays of one shape.")
    if at is None:
        at = tuple(int(i) for i in np.unravel_index(int(np.argmax(np.abs(heat))), heat.shape))
    limit = float(np.max(np.abs(heat))) or 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    views = [("axial", np.s_[at[0], :, :]), ("coronal", np.s_[:, at[1], :]), ("sagittal", np.s_[:, :, at[2]])]
    for ax, (name, index) in zip(axes, views):
        ax.imshow(image[index], cmap="gray", origin="lower")
        shown = ax.imshow(heat[index], cmap="coolwarm", norm=norm, alpha=0.5, origin="lower")
        ax.set_title(f"{name} through {at}", fontsize=9)
        ax.set_axis_off()
    fig.colorbar(shown, ax=list(axes), shrink=0.8, label="concept map")
    if title:
        fig.suptitle(title)
    return fig
