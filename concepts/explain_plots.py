"""Figures for concept maps, per-example explanations and model comparison.

Every function returns a matplotlib :class:`~matplotlib.figure.Figure` built without pyplot, so it
works headless and in notebooks alike. Maps are signed (a concept can be expressed against its
direction), so they use a diverging colour scale centred at 0 and shared by every panel of a
figure: panels are comparable with each other.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from .plots import ordered_unique, wrap_label
from .renames import renamed

__all__ = ["plot_concept_maps", "plot_driven_examples", "plot_comparison_heatmaps", "plot_comparison_profiles"]

MAP_CMAP = "RdBu_r"


def _display(image: np.ndarray) -> tuple[np.ndarray, str | None]:
    """An image rescaled to [0, 1] for display (model inputs may be normalised any way)."""
    image = np.asarray(image, dtype=float)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    elif image.ndim == 3 and image.shape[-1] != 3:
        image = image[..., 0]
    low, high = np.nanmin(image), np.nanmax(image)
    image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return image, ("gray" if image.ndim == 2 else None)


def _norm(maps: np.ndarray) -> TwoSlopeNorm:
    bound = float(np.nanmax(np.abs(maps))) if np.size(maps) else 1.0
    bound = bound if np.isfinite(bound) and bound > 0 else 1.0
    return TwoSlopeNorm(vcenter=0.0, vmin=-bound, vmax=bound)


def _overlay(ax, image: np.ndarray, heat: np.ndarray, norm: TwoSlopeNorm, opacity: float):
    shown, cmap = _display(image)
    ax.imshow(shown, cmap=cmap, interpolation="nearest")
    artist = ax.imshow(heat, cmap=MAP_CMAP, norm=norm, alpha=opacity, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    return artist


@renamed(alpha="opacity")
def plot_concept_maps(images: np.ndarray, maps: np.ndarray, *, labels: Sequence[str] | None = None,
                      title: str = "", opacity: float = 0.55, max_cols: int = 8) -> Figure:
    """Concept maps overlaid on their images, one panel per image, one shared colour scale.

    Volumes (``(n, D, H, W)`` maps of a 3D layer) are drawn as one row per volume of three
    orthogonal slices through its map's peak (:func:`concepts.volume_maps.plot_volume_maps`).

    Parameters
    ----------
    images : numpy.ndarray
        ``(n, H, W[, C])`` model-ready images, or ``(n, D, H, W[, C])`` volumes.
    maps : numpy.ndarray
        ``(n, H, W)`` maps at input resolution (:meth:`ScoreResult.concept_maps`), or ``(n, D, H, W)``.
    labels : sequence of str, optional
        A caption per panel (e.g. file names).
    title : str
        Figure title.
    opacity : float
        Opacity of the map over the image (formerly ``alpha``, which now only names the ridge penalty).
    max_cols : int
        Panels per row.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_concept_maps(np.zeros((2, 8, 8)), np.random.rand(2, 8, 8), labels=["a", "b"])
    >>> fig = plot_concept_maps(np.zeros((2, 4, 8, 8, 1)), np.random.rand(2, 4, 8, 8))  # volumes
    >>> len(fig.axes)  # 2 rows of 3 slices, and the colour bar
    7
    """
    images, maps = np.asarray(images), np.asarray(maps)
    if maps.ndim == 4:
        from .volume_maps import plot_volume_maps

        return plot_volume_maps(images, maps, labels=labels, title=title, opacity=opacity)
    if len(images) != len(maps) or maps.ndim != 3 or images.shape[1:3] != maps.shape[1:3]:
        raise ValueError(f"images {images.shape} and maps {maps.shape} must be (n, H, W[, C]) and (n, H, W) with "
                         "the same n, H and W (or, for volumes, (n, D, H, W[, C]) and (n, D, H, W)).")
    n = max(len(images), 1)
    cols = min(n, max_cols)
    rows = int(np.ceil(n / cols))
    fig = Figure(figsize=(1.9 * cols + 0.8, 2.0 * rows + 0.5))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    norm = _norm(maps)
    artist = None
    for i, ax in enumerate(axes):
        if i >= len(images):
            ax.axis("off")
            continue
        artist = _overlay(ax, images[i], maps[i], norm, opacity)
        if labels is not None and i < len(labels):
            ax.set_title(wrap_label(str(labels[i]), 18), fontsize=7)
    if artist is not None:
        fig.colorbar(artist, ax=list(axes), shrink=0.8, label="map value (0 = none)")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


@renamed(alpha="opacity")
def plot_driven_examples(most: tuple[np.ndarray, np.ndarray, Sequence[str]],
                         least: tuple[np.ndarray, np.ndarray, Sequence[str]], *, title: str = "",
                         opacity: float = 0.55) -> Figure:
    """Two rows of thumbnails with their concept maps: the examples most and least driven by a concept.

    Parameters
    ----------
    most, least : tuple
        ``(images (k, H, W[, C]), maps (k, H, W), labels)`` for each row.
    title : str
        Figure title.
    opacity : float
        Opacity of the maps (formerly ``alpha``).

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> row = (np.zeros((2, 8, 8)), np.random.rand(2, 8, 8), ["a", "b"])
    >>> fig = plot_driven_examples(row, row, title="nuclei in conv2, class tumour")
    """
    cols = max(len(most[0]), len(least[0]), 1)
    fig = Figure(figsize=(1.9 * cols + 1.6, 4.6))
    axes = fig.subplots(2, cols, squeeze=False)
    norm = _norm(np.concatenate([np.ravel(most[1]), np.ravel(least[1])]))
    artist = None
    for r, (name, (images, maps, labels)) in enumerate((("most driven", most), ("least driven", least))):
        for c in range(cols):
            ax = axes[r, c]
            if c >= len(images):
                ax.axis("off")
                continue
            artist = _overlay(ax, images[c], maps[c], norm, opacity)
            ax.set_title(wrap_label(str(labels[c]), 18), fontsize=7)
        axes[r, 0].set_ylabel(name, fontsize=9)
    if artist is not None:
        fig.colorbar(artist, ax=list(axes.ravel()), shrink=0.8, label="presence map")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_comparison_heatmaps(frame: pd.DataFrame, *, value: str = "ubs", class_name: str | None = None) -> Figure:
    """Side-by-side heatmaps, one per model: concept (rows) × layer by relative depth (columns).

    Non-significant cells are hatched and faded; every cell prints its value.

    Parameters
    ----------
    frame : pandas.DataFrame
        :meth:`concepts.comparison.Comparison.to_frame` (columns ``model``, ``depth``, ``layer``, ``class``,
        ``concept``, ``significant`` and ``value``).
    value : str
        The column shown (default ``ubs``, comparable across layers).
    class_name : str, optional
        One class; default the first class of the frame.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_comparison_heatmaps(comparison.to_frame(), class_name="striped")
    >>> [ax.get_title() for ax in fig.axes][:2]  # one panel per model
    ['planted', 'nested']
    """
    models = ordered_unique(frame["model"])
    class_name = class_name if class_name is not None else ordered_unique(frame["class"])[0]
    sub = frame[frame["class"] == class_name]
    concepts = ordered_unique(sub["concept"])
    values = sub[value].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    bound = float(np.max(np.abs(finite))) if finite.size else 1.0
    norm = TwoSlopeNorm(vcenter=0.0, vmin=-(bound or 1.0), vmax=bound or 1.0)
    widths = [max(sub[sub["model"] == m]["layer"].nunique(), 1) for m in models]
    fig = Figure(figsize=(1.3 * sum(widths) + 2.5 * len(models), 0.6 * len(concepts) + 2.0))
    axes = np.atleast_1d(fig.subplots(1, len(models), squeeze=False, gridspec_kw={"width_ratios": widths})).ravel()
    image = None
    for ax, model in zip(axes, models):
        part = sub[sub["model"] == model].sort_values("depth", kind="stable")
        layers = ordered_unique(part["layer"])
        grid = np.full((len(concepts), len(layers)), np.nan)
        sig = np.zeros_like(grid, dtype=bool)
        for _, row in part.iterrows():
            i, j = concepts.index(row["concept"]), layers.index(row["layer"])
            grid[i, j] = row[value]
            sig[i, j] = bool(row["significant"])
        image = ax.imshow(grid, cmap="RdBu_r", norm=norm, aspect="auto")
        for i in range(len(concepts)):
            for j in range(len(layers)):
                if not np.isfinite(grid[i, j]):
                    continue
                if not sig[i, j]:
                    ax.add_patch(_hatch(j, i))
                ax.text(j, i, f"{grid[i, j]:+.2f}" if value == "ubs" else f"{grid[i, j]:.2f}", ha="center",
                        va="center", fontsize=8, color="black" if sig[i, j] else "dimgray")
        depth = part.drop_duplicates("layer").set_index("layer")["depth"]
        ax.set_xticks(range(len(layers)))
        ax.set_xticklabels([f"{wrap_label(str(la), 10)}\n{depth[la]:.2f}" for la in layers], fontsize=8)
        ax.set_yticks(range(len(concepts)))
        # Rows are the same concepts in every panel: label them once, on the left.
        ax.set_yticklabels([wrap_label(str(c), 16) for c in concepts] if ax is axes[0] else [], fontsize=8)
        ax.set_title(str(model), fontsize=10)
        ax.set_xlabel("layer (relative depth)", fontsize=8)
    if image is not None:
        fig.colorbar(image, ax=list(axes), shrink=0.8, label=value)
    fig.suptitle(f"{value} per concept and layer, class {class_name} (hatched: not significant)", fontsize=10)
    return fig


def _hatch(x: float, y: float):
    from matplotlib.patches import Rectangle

    return Rectangle((x - 0.5, y - 0.5), 1, 1, fill=True, facecolor=(1, 1, 1, 0.55), hatch="//",
                     edgecolor="gray", linewidth=0)


def plot_comparison_profiles(frame: pd.DataFrame, *, value: str = "ubs", class_name: str | None = None) -> Figure:
    """Each concept's profile across relative depth, one line per model, with bootstrap intervals.

    Parameters
    ----------
    frame : pandas.DataFrame
        :meth:`concepts.comparison.Comparison.to_frame`.
    value : str
        The column plotted (its ``_ci_low``/``_ci_high`` columns give the bars when present).
    class_name : str, optional
        One class; default the first.

    Returns
    -------
    matplotlib.figure.Figure

    Examples
    --------
    >>> fig = plot_comparison_profiles(comparison.to_frame(), class_name="striped")
    >>> [ax.get_title() for ax in fig.axes][:2]  # one panel per concept
    ['horizontal', 'vertical']
    """
    class_name = class_name if class_name is not None else ordered_unique(frame["class"])[0]
    sub = frame[frame["class"] == class_name]
    concepts = ordered_unique(sub["concept"])
    cols = min(len(concepts), 3) or 1
    rows = int(np.ceil(len(concepts) / cols)) or 1
    fig = Figure(figsize=(4.2 * cols, 3.0 * rows + 0.4))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, concept in zip(axes, concepts):
        for model in ordered_unique(sub["model"]):
            part = sub[(sub["model"] == model) & (sub["concept"] == concept)].sort_values("depth")
            x, y = part["depth"].to_numpy(float), part[value].to_numpy(float)
            line, = ax.plot(x, y, marker="o", label=str(model))
            if f"{value}_ci_low" in part:
                low, high = part[f"{value}_ci_low"].to_numpy(float), part[f"{value}_ci_high"].to_numpy(float)
                ax.fill_between(x, low, high, color=line.get_color(), alpha=0.15)
        ax.axhline(0.0, color="gray", linewidth=0.8)
        ax.set_title(wrap_label(str(concept), 30), fontsize=9)
        ax.set_xlabel("relative depth", fontsize=8)
        ax.set_ylabel(value, fontsize=8)
        ax.legend(fontsize=7)
    for ax in axes[len(concepts):]:
        ax.axis("off")
    fig.suptitle(f"{value} across depth, class {class_name}", fontsize=10)
    return fig
