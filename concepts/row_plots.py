"""Diagnostic figures of one result row: the RCV's measure-vs-projection scatter and the null distribution.

Same conventions as :mod:`concepts.plots` (object API only, no ``pyplot`` state, names wrapped,
never truncated).
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from .plots import wrap_label

__all__ = ["plot_null_distribution", "plot_rcv_scatter"]


# --------------------------------------------------------------------------- RCV scatter


def plot_rcv_scatter(data: pd.DataFrame, *, concept: str, layer: str, r2_cv: float) -> Figure:
    """Concept measure (x) vs projection on the RCV (y), the least-squares line and the held-out R².

    ``data`` has columns ``measure`` and ``projection`` (one row per image). The fitted line is a
    description of these points; the quality that counts is the cross-validated ``r2_cv``.

    Examples
    --------
    >>> d = pd.DataFrame({"measure": [0.0, 1.0, 2.0], "projection": [0.1, 0.9, 2.2]})
    >>> fig = plot_rcv_scatter(d, concept="nuclei_area", layer="conv2", r2_cv=0.8)
    >>> "held-out R²" in fig.axes[0].get_title()
    True
    """
    missing = [c for c in ("measure", "projection") if c not in data.columns]
    if missing:
        raise ValueError(f"the scatter data lacks the column(s) {missing}; it needs 'measure' and "
                         "'projection'")
    x = pd.to_numeric(data["measure"], errors="coerce").to_numpy(float)
    y = pd.to_numeric(data["projection"], errors="coerce").to_numpy(float)
    ok = np.isfinite(x) & np.isfinite(y)
    r2_text = f"{r2_cv:.2f}" if r2_cv is not None and np.isfinite(r2_cv) else "n/a"

    fig = Figure(figsize=(5.6, 4.4), layout="constrained")
    ax = fig.subplots()
    ax.scatter(x[ok], y[ok], s=18, alpha=0.7, color="#3b6ea5", edgecolors="none",
               label=f"images (n = {int(ok.sum())})")
    if ok.sum() >= 2 and np.ptp(x[ok]) > 0:
        slope, intercept = np.polyfit(x[ok], y[ok], 1)
        xs = np.linspace(x[ok].min(), x[ok].max(), 100)
        ax.plot(xs, slope * xs + intercept, color="#c0392b", linewidth=2,
                label=f"least-squares line (slope {slope:.3g})")
    ax.plot([], [], linestyle="none", label=f"held-out R\u00b2 = {r2_text} (cross-validated)")
    ax.set_xlabel(wrap_label(f"concept measure: {concept}", 50))
    ax.set_ylabel("projection on the RCV (fitted value)")
    ax.set_title(wrap_label(f"RCV of {concept} at layer {layer}", 50)
                 + f"\nheld-out R\u00b2 = {r2_text}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.grid(color="0.92")
    if ok.sum() < len(x):
        ax.annotate(f"{len(x) - int(ok.sum())} image(s) without a value left out", (0.01, 0.01),
                    xycoords="axes fraction", fontsize=7, color="0.4")
    return fig


# --------------------------------------------------------------------------- null distribution


def plot_null_distribution(concept_scores: Sequence[float] | np.ndarray,
                           null_scores: Sequence[float] | np.ndarray, *, title: str,
                           p_value: float | None = None, xlabel: str = "TCAV score",
                           null_value: float = 0.5, concept_label: str = "concept vs random",
                           null_label: str = "random vs random (null)") -> Figure:
    """Histograms of a concept's runs and of the null runs, with every run as a tick.

    The further apart the two distributions, the smaller the p-value; overlapping histograms are
    why a high-looking score can still be non-significant. ``p_value`` is only printed. By default
    the values are TCAV scores (0..1, null 0.5); pass ``xlabel``/``null_value`` for another
    statistic such as UBS (null 0).

    Examples
    --------
    >>> fig = plot_null_distribution([0.8, 0.9, 0.85], [0.5, 0.45, 0.55], title="conv2: stripes")
    >>> fig.axes[0].get_xlabel()
    'TCAV score'
    """
    c = np.asarray(concept_scores, dtype=float)
    n = np.asarray(null_scores, dtype=float)
    c, n = c[np.isfinite(c)], n[np.isfinite(n)]
    both = np.concatenate([c, n])
    if both.size and both.min() >= 0 and both.max() <= 1:
        # TCAV scores live in [0, 1]: bins on a fixed 0.04 grid make figures of different concepts
        # comparable
        w = 0.04
        lo, hi = math.floor(both.min() / w) * w, max(math.ceil(both.max() / w) * w, both.min() + w)
        bins = np.arange(lo, hi + w / 2, w)
    elif both.size:
        bins = np.histogram_bin_edges(both, bins="auto")
    else:
        bins = np.linspace(0, 1, 26)

    fig = Figure(figsize=(6.0, 4.2), layout="constrained")
    ax = fig.subplots()
    series = [(n, null_label, "0.55"), (c, concept_label, "#c0392b")]
    for vals, label, colour in series:
        if vals.size == 0:
            continue
        counts, edges = np.histogram(vals, bins=bins)
        keep = counts > 0  # bars only where there are runs: empty bins would draw a baseline
        ax.bar(edges[:-1][keep], counts[keep], width=np.diff(edges)[keep], align="edge", color=colour,
               alpha=0.45, edgecolor=colour, linewidth=1,
               label=f"{label}: n = {vals.size}, mean {vals.mean():.2f}")
        ax.axvline(vals.mean(), color=colour, linewidth=2.5)
    # one tick per run below the axis: with 10-20 runs, individual values say more than bars
    ymax = ax.get_ylim()[1]
    for k, (vals, _, colour) in enumerate(series):
        ax.plot(vals, np.full(vals.shape, -(0.06 + 0.06 * k) * ymax), linestyle="none", marker="|",
                markersize=10, color=colour)
    ax.set_ylim(-0.16 * ymax, ymax * 1.05)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.axvline(null_value, color="0.3", linestyle=":", linewidth=1, label=f"{null_value:g} (no preference)")
    if null_value == 0.5:
        ax.set_xlim(min(0.0, bins[0]), max(1.0, bins[-1]))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("number of random runs")
    full_title = title if p_value is None or not np.isfinite(p_value) else f"{title}  (p = {p_value:.2g})"
    ax.set_title(wrap_label(full_title, 60), fontsize=10)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False,
               title="thick vertical lines: means; ticks below the axis: one per run",
               title_fontsize=8)
    return fig
