"""Concept maps of 3D convolutional layers: where in a volume a layer expresses a concept.

The 3D counterpart of :mod:`concepts.maps` (same definitions, one more spatial axis): for
activations ``a[d, h, w, c]`` and a concept vector ``v``, **presence**
``P[d, h, w] = Σ_c a[d, h, w, c] · v[d, h, w, c]`` (``v[c]`` for a pooled RCV) and **influence**
``I = Σ_c g · v`` with the gradient ``g`` of a class's target (summed over positions it is the
volume's directional derivative). Maps are brought to the input ``(D, H, W)`` (the model's, or for a
flexible model the volumes' own) by trilinear interpolation between feature-cell centres, edges
clamped. As in 2D, each cell sits at the centre of its receptive field where the layer is reached
through a chain of ``Conv3D``, ``MaxPooling3D``, ``AveragePooling3D``, ``ZeroPadding3D`` and
``Cropping3D`` layers (kernel, stride, dilation and padding per axis, so a ``"valid"`` layer's lost
border is accounted for), else the grid is stretched with half-voxel centres. Maps are shown as
three orthogonal slices (:func:`plot_volume_map`, or :func:`plot_volume_maps` for several volumes).

:meth:`concepts.scoring.ScoreResult.concept_maps` comes here for layers with ``(D, H, W, C)``
activations, so the call is the same as in 2D.

Examples
--------
>>> maps = presence_maps3d(np.ones((1, 2, 2, 2, 3)), np.ones(3))
>>> upsample3d(maps, (4, 4, 4)).shape
(1, 4, 4, 4)
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

# One projection, one map pipeline (receptive-field placement included) and one interpolation for
# 2D and 3D layers.
from .maps import _check_geometry, _check_size, _layer_maps, _project, _resample

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["axial_slices", "influence_maps3d", "plot_volume_map", "plot_volume_maps", "presence_maps3d",
           "upsample3d", "volume_concept_maps"]


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


def upsample3d(maps: np.ndarray, size: tuple[int, int, int],
               geometry: tuple[tuple[float, float], tuple[float, float], tuple[float, float]] | None = None
               ) -> np.ndarray:
    """Trilinear upsampling (clamped edges) of ``(n, d, h, w)`` maps to ``size = (D, H, W)``.

    Parameters
    ----------
    maps : numpy.ndarray
        ``(n, d, h, w)`` maps.
    size : tuple of int
        The output ``(D, H, W)``: the model's input size, or a flexible model's volumes' own size.
    geometry : tuple, optional
        ``((offset_d, stride_d), (offset_y, stride_y), (offset_x, stride_x))``: cell ``(i, j, k)`` is
        centred on input voxel ``(offset_d + stride_d i, ...)`` (:func:`concepts.maps.receptive_geometry`);
        default the half-voxel stretch.

    Returns
    -------
    numpy.ndarray
        ``(n, D, H, W)`` float32 maps.

    Examples
    --------
    >>> upsample3d(np.array([[[[0.0, 1.0]]]]), (1, 1, 4))[0, 0, 0].tolist()
    [0.0, 0.25, 0.75, 1.0]
    >>> upsample3d(np.array([[[[0.0, 1.0]]]]), (1, 1, 4), geometry=((0, 1), (0, 1), (1, 1)))[0, 0, 0].tolist()
    [0.0, 0.0, 1.0, 1.0]
    """
    maps = np.asarray(maps, dtype=np.float64)
    if maps.ndim != 4:
        raise ValueError(f"maps must have shape (n, d, h, w); got {maps.shape}.")
    return _resample(maps, _check_size(size, 3, "(D, H, W)"), _check_geometry(geometry, 3))


def volume_concept_maps(engine: Any, source: Any, vector: np.ndarray, *, layer: str, kind: str,
                        class_index: int | None, resolution: str) -> np.ndarray:
    """Maps of one concept in one 3D layer for the volumes of ``source`` (used by ``ScoreResult.concept_maps``).

    Parameters
    ----------
    engine : probes.engine.Engine
        The result's engine (its cache holds the scoring pass).
    source : ArraySource
        The volumes.
    vector : numpy.ndarray
        The concept vector (``D'·H'·W'·C`` entries, or ``C`` for a pooled RCV).
    layer, kind, class_index, resolution
        As in :meth:`concepts.scoring.ScoreResult.concept_maps`.

    Returns
    -------
    numpy.ndarray
        ``(n, D, H, W)`` maps at the input resolution, or ``(n, D', H', W')`` at the layer's.

    Examples
    --------
    >>> result3d = concepts.score(model3d, "conv1", "data3d/concepts/z_layers", n_random=3, progress=False)
    >>> context = result3d._context
    >>> v = result3d._outcome.vectors[("conv1", "z_layers")]["consensus"]
    >>> volume_concept_maps(context.engine, context.classes["layered"].images, v, layer="conv1",
    ...                     kind="presence", class_index=None, resolution="input").shape
    (8, 16, 16, 16)
    """
    return _layer_maps(engine, source, vector, layer=layer, kind=kind, class_index=class_index,
                       resolution=resolution, n_spatial=3)


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


_VIEWS = ("axial", "coronal", "sagittal")


def _peak(heat: np.ndarray) -> tuple[int, int, int]:
    return tuple(int(i) for i in np.unravel_index(int(np.argmax(np.abs(heat))), heat.shape))


def _volume_and_map(volume: np.ndarray, heat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    image = np.asarray(volume, dtype=np.float32)
    if image.ndim == 4:
        image = image[..., 0]
    heat = np.asarray(heat, dtype=np.float32)
    if image.shape != heat.shape or image.ndim != 3:
        raise ValueError(f"volume {image.shape} and heat {heat.shape} must be two (D, H, W) arrays of one shape.")
    return image, heat


def _draw_slices(axes: Sequence[Any], image: np.ndarray, heat: np.ndarray, at: tuple[int, int, int], norm: Any,
                 opacity: float) -> Any:
    """The axial, coronal and sagittal slices through voxel ``at``, the map overlaid; returns the map artist."""
    shown = None
    for ax, name, index in zip(axes, _VIEWS, (np.s_[at[0], :, :], np.s_[:, at[1], :], np.s_[:, :, at[2]])):
        ax.imshow(image[index], cmap="gray", origin="lower")
        shown = ax.imshow(heat[index], cmap="coolwarm", norm=norm, alpha=opacity, origin="lower")
        ax.set_title(f"{name} through {at}", fontsize=9)
        ax.set_axis_off()
    return shown


def plot_volume_map(volume: np.ndarray, heat: np.ndarray, *, title: str | None = None,
                    at: tuple[int, int, int] | None = None) -> "Figure":
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

    image, heat = _volume_and_map(volume, heat)
    if at is None:
        at = _peak(heat)
    limit = float(np.max(np.abs(heat))) or 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
    fig, axes = plt.subplots(1, 3, figsize=(9, 3.2))
    shown = _draw_slices(axes, image, heat, at, norm, 0.5)
    fig.colorbar(shown, ax=list(axes), shrink=0.8, label="concept map")
    if title:
        fig.suptitle(title)
    return fig


def plot_volume_maps(volumes: np.ndarray, maps: np.ndarray, *, labels: Sequence[str] | None = None,
                     title: str = "", opacity: float = 0.5) -> "Figure":
    """Several volumes with their concept maps: one row each, the three orthogonal slices through its
    map's largest absolute value, one colour scale (centred at 0) shared by every panel.

    This is what :meth:`concepts.scoring.ScoreResult.plot_concept_maps` and
    :func:`concepts.explain_plots.plot_concept_maps` draw for 3D layers. Built without pyplot.

    Parameters
    ----------
    volumes : numpy.ndarray
        ``(n, D, H, W)`` or ``(n, D, H, W, C)`` model-ready volumes (channel 0 is shown).
    maps : numpy.ndarray
        ``(n, D, H, W)`` maps at the input resolution (:meth:`ScoreResult.concept_maps`).
    labels : sequence of str, optional
        A caption per volume (e.g. file names), written before its first slice's title.
    title : str
        Figure title.
    opacity : float
        Opacity of the maps over the volumes.

    Returns
    -------
    matplotlib.figure.Figure
        ``3 n`` slice panels and a colour bar.

    Raises
    ------
    ValueError
        ``volumes`` and ``maps`` do not hold the same number of volumes of one ``(D, H, W)``.

    Examples
    --------
    >>> fig = plot_volume_maps(np.zeros((2, 4, 4, 4, 1)), np.random.rand(2, 4, 4, 4), labels=["a", "b"])
    >>> len(fig.axes)  # 2 volumes x 3 slices, and the colour bar
    7
    """
    from matplotlib.colors import TwoSlopeNorm
    from matplotlib.figure import Figure

    volumes, maps = np.asarray(volumes), np.asarray(maps)
    if maps.ndim != 4 or volumes.ndim not in (4, 5) or len(volumes) != len(maps) or \
            volumes.shape[1:4] != maps.shape[1:4]:
        raise ValueError(f"volumes {volumes.shape} and maps {maps.shape} must be (n, D, H, W[, C]) and (n, D, H, W) "
                         "with the same n, D, H and W.")
    bound = float(np.nanmax(np.abs(maps))) if maps.size else 1.0
    bound = bound if np.isfinite(bound) and bound > 0 else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-bound, vmax=bound)
    rows = max(len(maps), 1)
    fig = Figure(figsize=(8.5, 2.8 * rows + 0.6))
    axes = fig.subplots(rows, 3, squeeze=False)
    shown = None
    for i in range(rows):
        if i >= len(maps):
            for ax in axes[i]:
                ax.axis("off")
            continue
        image, heat = _volume_and_map(volumes[i], maps[i])
        shown = _draw_slices(axes[i], image, heat, _peak(heat), norm, opacity)
        if labels is not None and i < len(labels):
            axes[i, 0].set_title(f"{labels[i]}\n{axes[i, 0].get_title()}", fontsize=8)
    if shown is not None:
        fig.colorbar(shown, ax=list(axes.ravel()), shrink=0.8, label="concept map (0 = none)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig
