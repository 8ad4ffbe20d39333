"""Figures of a finished concept report: heatmaps and layer profiles (one row's RCV scatter and null
distribution are in :mod:`concepts.row_plots`).

Every function takes the tidy result table (one row per class x layer x concept, see
:mod:`concepts.report`) or plain arrays, and returns a :class:`matplotlib.figure.Figure` built with
the object API. Nothing touches ``pyplot``'s global state, so figures never pile up in notebooks
or tests and no display is needed (PNG output uses the Agg renderer).

Conventions shared by all figures:

* classes, layers and concepts keep the order of their first appearance in the table (layers in
  model order; never alphabetical);
* colour scales are diverging and centred at the null (0 for UBS, effect and Br, 0.5 for the
  TCAV score), so colour alone says "more than chance" (red) or "less than chance" (blue);
* a cell or point is *significant* when its corrected ``q_value`` is below the level
  ``significance`` (falling back
  to the table's ``significant`` column where ``q_value`` is missing); non-significant values are
  still shown, only visibly de-emphasised;
* long names are wrapped at ``_`` / ``-`` / ``/`` / spaces, never truncated.
"""
from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle

from probes.errors import UnknownLayerError

from .colour import rgb_to_grey
from .renames import renamed

__all__ = [
    "VALUE_SPECS",
    "ValueSpec",
    "figure_to_png_bytes",
    "is_significant",
    "ordered_unique",
    "plot_heatmap",
    "plot_layer_profile",
    "wrap_label",
]


@dataclass(frozen=True)
class ValueSpec:
    """How one plottable column is labelled, centred and bracketed by a confidence interval."""

    label: str                 # axis / colour-bar label
    null: float                # the value expected by chance: the centre of every colour scale
    ci: tuple[str, str] | None  # (low, high) columns of its confidence interval, if any
    fmt: str                   # format of a cell annotation
    short: str                 # colour-bar label: short enough to fit beside the bar
    name: str                  # what a title calls it
    fixed_range: tuple[float, float] | None = None  # a bounded quantity keeps its full range


VALUE_SPECS: dict[str, ValueSpec] = {
    "ubs": ValueSpec(
        label="UBS (signed, in units of a random direction; null = 0)", null=0.0,
        ci=("ubs_ci_low", "ubs_ci_high"), fmt="{:+.2f}", short="UBS (0 = random direction)", name="UBS"),
    "score": ValueSpec(
        label="TCAV score (fraction of class examples with positive sensitivity; null = 0.5)", null=0.5,
        ci=("score_ci_low", "score_ci_high"), fmt="{:.2f}", short="TCAV score (0.5 = null)",
        name="TCAV score", fixed_range=(0.0, 1.0)),
    "effect": ValueSpec(
        label="effect = TCAV score \u2212 random-vs-random mean (null = 0)", null=0.0,
        ci=("effect_ci_low", "effect_ci_high"), fmt="{:+.2f}",
        short="effect = score \u2212 null mean (0 = null)", name="Effect (TCAV score \u2212 null mean)"),
    "br": ValueSpec(
        label="Br = held-out R\u00b2 \u00b7 mean(S) / std(S) (null = 0)", null=0.0, ci=None, fmt="{:+.2f}",
        short="Br (0 = null)", name="Br (bidirectional relevance)"),
}

_CMAP = "RdBu_r"          # diverging: blue below the null, red above, white at the null
_CLASS_COLOURS = "tab10"  # qualitative, distinguishable lines for up to 10 classes


# --------------------------------------------------------------------------- small helpers


def ordered_unique(values: Iterable) -> list:
    """Distinct values in order of first appearance (how layers, classes and concepts are ordered).

    Examples
    --------
    >>> ordered_unique(["conv2", "conv1", "conv2", "dense"])
    ['conv2', 'conv1', 'dense']
    """
    # dict preserves insertion order; pd.unique would too but turns lists into arrays
    return list(dict.fromkeys(values))


def wrap_label(text: str, width: int = 14) -> str:
    """Wrap a name onto several lines at ``_``, ``-``, ``/``, ``.`` or spaces; never truncate it.

    Tokens longer than ``width`` stay whole: a full name on a long line beats a name cut in two.

    Examples
    --------
    >>> wrap_label("block3_conv2_nuclei_area", 12)
    'block3_\\nconv2_\\nnuclei_area'
    """
    text = str(text)
    if len(text) <= width:
        return text
    # split after each separator so every separator stays visible at the end of its line
    tokens = [t for t in re.split(r"(?<=[_\-/.\s])", text) if t]
    lines: list[str] = []
    line = ""
    for token in tokens:
        if line and len(line) + len(token.rstrip()) > width:
            lines.append(line.rstrip())
            line = token
        else:
            line += token
    if line:
        lines.append(line.rstrip())
    return "\n".join(lines)


@renamed(alpha="significance")
def is_significant(table: pd.DataFrame, significance: float = 0.05) -> pd.Series:
    """Boolean Series: corrected ``q_value < significance``, else the table's ``significant`` column.

    ``q_value`` wins where it is a number so that ``significance`` means what it says; rows without one
    (NaN) fall back to ``significant``; with neither column nothing is significant.

    Examples
    --------
    >>> t = pd.DataFrame({"q_value": [0.01, 0.2, float("nan")], "significant": [True, False, True]})
    >>> is_significant(t).tolist()
    [True, False, True]
    """
    fallback = (table["significant"].fillna(False).astype(bool) if "significant" in table
                else pd.Series(False, index=table.index))
    if "q_value" not in table:
        return fallback
    q = pd.to_numeric(table["q_value"], errors="coerce")
    return (q < significance).where(q.notna(), fallback).astype(bool)


def _spec(value: str) -> ValueSpec:
    try:
        return VALUE_SPECS[value]
    except KeyError:
        raise ValueError(f"value={value!r} cannot be plotted; choose one of {sorted(VALUE_SPECS)}") from None


def _chosen(table: pd.DataFrame, column: str, wanted: Any, error: type[Exception]) -> list:
    """The values of ``column`` to draw: all of them in table order, or just ``wanted`` (which must be there)."""
    present = ordered_unique(table[column])
    if wanted is None:
        return present
    if wanted not in present:
        raise error(f"{column} {wanted!r} is not in the table; its {column}s are {present}")
    return [wanted]


def _check_table(table: pd.DataFrame, value: str) -> None:
    missing = [c for c in ("class", "layer", "concept", value) if c not in table.columns]
    if missing:
        raise ValueError(f"the results table lacks the column(s) {missing}; pass the table from "
                         "Report.to_frame()")
    if table.empty:
        raise ValueError("the results table is empty: there is nothing to plot")
    dup = table.duplicated(["class", "layer", "concept"])
    if dup.any():
        first = table.loc[dup, ["class", "layer", "concept"]].iloc[0].tolist()
        raise ValueError(f"the table has several rows for (class, layer, concept) = {tuple(first)}; "
                         "plot one report at a time")


def _grid(n: int, max_cols: int = 3) -> tuple[int, int]:
    ncols = min(n, max_cols)
    return math.ceil(n / ncols), ncols


def _fmt(spec: ValueSpec, v: float) -> str:
    if not np.isfinite(v):
        return "n/a"
    if spec.fmt.endswith(".2f}") and abs(v) >= 100:
        return spec.fmt.replace(".2f", ".0f").format(v)  # 3 significant digits are enough in a cell
    if spec.fmt.endswith(".2f}") and abs(v) >= 10:
        return spec.fmt.replace(".2f", ".1f").format(v)
    return spec.fmt.format(v)


def _luminance(rgba: Sequence[float]) -> float:
    return float(rgb_to_grey(np.asarray(rgba, dtype=float)))


# --------------------------------------------------------------------------- heatmap


def _heatmap_norm(values: np.ndarray, spec: ValueSpec) -> TwoSlopeNorm:
    """Colour normalisation centred at the null, symmetric so equal distances get equal colours."""
    if spec.fixed_range is not None:
        lo, hi = spec.fixed_range
        half = max(spec.null - lo, hi - spec.null)
    else:
        finite = values[np.isfinite(values)]
        half = float(np.max(np.abs(finite - spec.null))) if finite.size else 0.0
    if not half > 0:  # all values at the null (or none): any positive span keeps TwoSlopeNorm valid
        half = 1.0
    return TwoSlopeNorm(vcenter=spec.null, vmin=spec.null - half, vmax=spec.null + half)


def _draw_heatmap_panel(ax: Axes, sub: pd.DataFrame, classes: list, concepts: list, value: str,
                        spec: ValueSpec, norm: TwoSlopeNorm, sig: pd.Series, show_ylabels: bool):
    cmap = colormaps[_CMAP]
    grid = np.full((len(classes), len(concepts)), np.nan)
    sig_grid = np.zeros_like(grid, dtype=bool)
    present = np.zeros_like(grid, dtype=bool)
    ci, cj = {c: i for i, c in enumerate(classes)}, {c: j for j, c in enumerate(concepts)}
    for idx, row in sub[sub["concept"].isin(cj)].iterrows():
        i, j = ci[row["class"]], cj[row["concept"]]
        grid[i, j] = pd.to_numeric(row[value], errors="coerce")
        sig_grid[i, j] = bool(sig.loc[idx])
        present[i, j] = True
    masked = np.ma.masked_invalid(grid)
    cmap_nan = cmap.with_extremes(bad="0.88")  # missing values in neutral grey, not a colour of the scale
    image = ax.imshow(masked, cmap=cmap_nan, norm=norm, aspect="auto", interpolation="nearest")

    for i in range(len(classes)):
        for j in range(len(concepts)):
            v = grid[i, j]
            if not present[i, j]:
                ax.text(j, i, "not\ntested", ha="center", va="center", fontsize=7, color="0.4")
                continue
            text = _fmt(spec, v)
            if not np.isfinite(v):  # no value: grey "n/a", and no hatch, which would claim "not significant"
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color="0.35")
            elif sig_grid[i, j]:
                colour = "white" if _luminance(cmap(norm(v))) < 0.5 else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=9, fontweight="bold", color=colour)
            else:
                # wash the colour out and hatch it; keep the number legible on a light box
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor=(1, 1, 1, 0.6),
                                       edgecolor="0.45", hatch="///", linewidth=0))
                ax.text(j, i, text, ha="center", va="center", fontsize=9, color="0.15",
                        bbox=dict(boxstyle="round,pad=0.15", facecolor="white", edgecolor="none",
                                  alpha=0.85))

    ax.set_xticks(range(len(concepts)), [wrap_label(c, 12) for c in concepts], fontsize=8)
    ax.set_yticks(range(len(classes)), [wrap_label(c, 18) for c in classes] if show_ylabels else [],
                  fontsize=9)
    ax.set_xlabel("concept")
    if show_ylabels:
        ax.set_ylabel("class")
    # thin white grid between cells so adjacent washed-out cells stay distinguishable
    ax.set_xticks(np.arange(-0.5, len(concepts), 1), minor=True)
    ax.set_yticks(np.arange(-0.5, len(classes), 1), minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    ax.tick_params(which="minor", length=0)
    return image


@renamed(alpha="significance")
def plot_heatmap(table: pd.DataFrame, layer: str | None = None, value: str = "ubs", *,
                 significance: float = 0.05) -> Figure:
    """Class x concept heatmap of ``value`` for one layer, or one panel per layer (``layer=None``).

    The colour scale is diverging and centred at the null (0 for ``ubs``/``effect``/``br``,
    0.5 for ``score``) and shared by all panels. Each cell prints its value; non-significant
    cells (q >= ``significance``) are hatched and washed out but keep their value; significant values
    are bold.

    Examples
    --------
    >>> fig = plot_heatmap(report.to_frame(), layer="conv2", value="ubs")
    >>> figure_to_png_bytes(fig)[:4]
    b'\\x89PNG'
    """
    spec = _spec(value)
    _check_table(table, value)
    layers = _chosen(table, "layer", layer, UnknownLayerError)
    classes = ordered_unique(table["class"])
    shown = table[table["layer"].isin(layers)]
    numbers = pd.to_numeric(shown[value], errors="coerce")
    # a concept without any value here (e.g. Br of a CAV) would only add a column of "n/a"
    concepts = [c for c in ordered_unique(table["concept"]) if numbers[shown["concept"] == c].notna().any()]
    if not concepts:
        raise ValueError(f"the table has no {value!r} value for layer(s) {layers}; nothing to plot")
    sig = is_significant(table, significance)
    values = numbers.to_numpy(float)
    norm = _heatmap_norm(values, spec)

    nrows, ncols = _grid(len(layers))
    panel_w = max(3.2, 0.95 * len(concepts) + 1.2)
    panel_h = max(2.0, 0.6 * len(classes) + 1.3)
    fig = Figure(figsize=(panel_w * ncols + 1.8, panel_h * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    has_width = "d" in table.columns
    image = None
    for k, lay in enumerate(layers):
        ax = axes[k // ncols][k % ncols]
        sub = table[table["layer"] == lay]
        image = _draw_heatmap_panel(ax, sub, classes, concepts, value, spec, norm, sig,
                                    show_ylabels=(k % ncols == 0))
        title = f"layer {lay}"
        widths = pd.to_numeric(sub["d"], errors="coerce").dropna() if has_width else []
        if len(widths):
            title += f" (width d = {int(widths.iloc[0])})"
        ax.set_title(wrap_label(title, 40), fontsize=10)
    for k in range(len(layers), nrows * ncols):  # empty grid slots would read as missing data
        fig.delaxes(axes[k // ncols][k % ncols])

    used = [axes[k // ncols][k % ncols] for k in range(len(layers))]
    cbar = fig.colorbar(image, ax=used, shrink=0.9, pad=0.02)
    cbar.set_label(spec.short, fontsize=9)
    where = f", layer {layer}" if layer is not None else ", by layer"
    fig.suptitle(f"{spec.name} per class and concept{where}", fontsize=11)
    handles = [Patch(facecolor="0.8", edgecolor="0.45", hatch="///",
                     label=f"hatched, faded: not significant (q \u2265 {significance:g}); value still shown"),
               Patch(facecolor=colormaps[_CMAP](0.85), edgecolor="none",
                     label=f"solid, bold value: significant (q < {significance:g}, corrected)")]
    fig.legend(handles=handles, loc="outside lower center", ncols=2 if ncols > 1 else 1, fontsize=8,
               frameon=False)
    return fig


# --------------------------------------------------------------------------- layer profile


@renamed(alpha="significance")
def plot_layer_profile(table: pd.DataFrame, concept: str | None = None, value: str = "ubs", *,
                       significance: float = 0.05) -> Figure:
    """``value`` across layers (model order) for one concept, or one panel per concept.

    One line per class with confidence-interval error bars; a dashed line marks the null;
    significant points (q < ``significance``) are filled, non-significant ones hollow.

    Examples
    --------
    >>> fig = plot_layer_profile(report.to_frame(), concept="horizontal")
    >>> len(fig.axes)
    1
    """
    spec = _spec(value)
    _check_table(table, value)
    concepts = _chosen(table, "concept", concept, ValueError)
    if concept is None:
        # a concept without any value (e.g. Br of a CAV) would only add an empty panel
        numbers = pd.to_numeric(table[value], errors="coerce")
        concepts = [c for c in concepts if numbers[table["concept"] == c].notna().any()]
        if not concepts:
            raise ValueError(f"the table has no {value!r} value to plot")
    layers = ordered_unique(table["layer"])
    classes = ordered_unique(table["class"])
    sig = is_significant(table, significance)
    x_of = {lay: i for i, lay in enumerate(layers)}
    colours = colormaps[_CLASS_COLOURS]
    # dodge the classes sideways so their error bars do not sit on top of each other
    step = min(0.08, 0.5 / max(len(classes), 1))
    offsets = {c: (i - (len(classes) - 1) / 2) * step for i, c in enumerate(classes)}

    nrows, ncols = _grid(len(concepts))
    panel_w = max(4.0, 1.1 * len(layers) + 1.5)
    fig = Figure(figsize=(panel_w * ncols, 3.4 * nrows + 0.8), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, con in enumerate(concepts):
        ax = axes[k // ncols][k % ncols]
        sub = table[table["concept"] == con]
        for ci, cls in enumerate(classes):
            rows = sub[sub["class"] == cls]
            if rows.empty:
                continue
            rows = rows.assign(_x=rows["layer"].map(x_of)).sort_values("_x")
            x = rows["_x"].to_numpy(float) + offsets[cls]
            y = pd.to_numeric(rows[value], errors="coerce").to_numpy(float)
            colour = colours(ci % colours.N)
            ax.plot(x, y, color=colour, linewidth=1.5, zorder=2)
            if spec.ci is not None and all(c in rows for c in spec.ci):
                lo = pd.to_numeric(rows[spec.ci[0]], errors="coerce").to_numpy(float)
                hi = pd.to_numeric(rows[spec.ci[1]], errors="coerce").to_numpy(float)
                # an interval that does not bracket its estimate must not become a negative bar
                yerr = np.vstack([np.clip(y - lo, 0, None), np.clip(hi - y, 0, None)])
                ax.errorbar(x, y, yerr=yerr, fmt="none", ecolor=colour, elinewidth=1.2, capsize=3,
                            zorder=2)
            s = sig.loc[rows.index].to_numpy(bool)
            ax.scatter(x[s], y[s], s=46, color=colour, edgecolors=colour, linewidths=1.5, zorder=3)
            ax.scatter(x[~s], y[~s], s=46, facecolors="white", edgecolors=colour, linewidths=1.5,
                       zorder=3)
        ax.axhline(spec.null, color="0.3", linestyle="--", linewidth=1, zorder=1)
        ax.set_xticks(range(len(layers)), [wrap_label(lay, 12) for lay in layers], fontsize=8)
        if len(layers) > 6:
            ax.tick_params(axis="x", labelrotation=30)
        ax.set_xlim(-0.5, len(layers) - 0.5)
        ax.set_xlabel("layer (model order, input \u2192 output)")
        ax.set_ylabel(wrap_label(spec.label, 32), fontsize=9)
        kinds = ordered_unique(sub["kind"]) if "kind" in sub else []
        kind = f" ({', '.join(str(v).upper() for v in kinds)})" if kinds else ""
        ax.set_title(wrap_label(f"concept {con}{kind}", 45), fontsize=10)
        ax.grid(axis="y", color="0.92")
    for k in range(len(concepts), nrows * ncols):
        fig.delaxes(axes[k // ncols][k % ncols])

    handles = [Line2D([], [], color=colours(i % colours.N), marker="o", label=f"class {c}")
               for i, c in enumerate(classes)]
    handles += [Line2D([], [], color="0.2", marker="o", linestyle="none",
                       label=f"significant (q < {significance:g})"),
                Line2D([], [], color="0.2", marker="o", markerfacecolor="white", linestyle="none",
                       label="not significant"),
                Line2D([], [], color="0.3", linestyle="--", label=f"null ({spec.null:g})")]
    if spec.ci is not None:
        handles.append(Line2D([], [], color="0.2", marker="|", markersize=10, linestyle="none",
                              label="bars: confidence interval"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4 if ncols > 1 else 3),
               fontsize=8, frameon=False)
    fig.suptitle(f"{spec.name} across layers" + (f": concept {concept}" if concept is not None else ""),
                 fontsize=11)
    return fig


# --------------------------------------------------------------------------- export


def figure_to_png_bytes(fig: Figure, dpi: int = 110) -> bytes:
    """Render a figure to PNG bytes (Agg renderer; no display or pyplot needed).

    Examples
    --------
    >>> png = figure_to_png_bytes(Figure())
    >>> png[:4]
    b'\\x89PNG'
    """
    buffer = io.BytesIO()
    # "tight" is a safety net for long labels; constrained layout already does most of the work
    fig.savefig(buffer, format="png", dpi=dpi, facecolor="white", bbox_inches="tight", pad_inches=0.1)
    return buffer.getvalue()


def __getattr__(name: str) -> Any:
    # One row's diagnostics moved to concepts.row_plots (which imports this module); still reachable here.
    if name in ("plot_null_distribution", "plot_rcv_scatter"):
        from . import row_plots
        return getattr(row_plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
