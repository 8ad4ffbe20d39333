"""The report's "for whom and where" part: per significant concept, the cases it drives most and least.

For each significant (class, concept) (in the convolutional layer where its UBS is largest), the
report shows the class examples with the largest and the smallest ``drive`` (the sensitivity in the
concept's overall direction, :mod:`concepts.per_example`) as thumbnails with the concept's presence
map overlaid, and lists them in a table. Everything comes from the scoring pass: the per-example
numbers are stored with the result, and the maps of a class's own examples read the activations
the engine cached, so no image goes through the model again.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["driven_rows", "driven_example_figures", "driven_examples_html", "driven_examples_text"]


def driven_rows(result: Any, *, limit: int = 6) -> list[tuple[str, str, str]]:
    """``(class, concept, layer)`` for the significant concepts, at most ``limit``, strongest |UBS| first.

    Only convolutional layers (maps need a spatial grid) of results that keep their model qualify.

    Examples
    --------
    >>> driven_rows(report, limit=2)
    [('other', 'horizontal', 'conv2'), ('striped', 'horizontal', 'conv2')]
    """
    table = result.to_frame()
    context = getattr(result, "_context", None)
    if table.empty or context is None:
        return []
    shapes = context.engine.layer_shapes
    # (H, W, C) or, for 3D models, (D, H, W, C): volumes are shown as their most concept-laden slice.
    spatial = table["layer"].map(lambda la: len(tuple(shapes.get(la, ()))) in (3, 4))
    sig = table[table["significant"].astype(bool) & spatial & table["ubs"].notna()]
    sig = sig.assign(_abs=sig["ubs"].abs()).sort_values("_abs", ascending=False, kind="stable")
    best = sig.drop_duplicates(["class", "concept"])
    return [(r["class"], r["concept"], r["layer"]) for _, r in best.head(int(limit)).iterrows()]


def _images(source: Any, indices: np.ndarray) -> np.ndarray:
    """Model-ready arrays of the examples at ``indices`` (decoded again, not run through the model)."""
    if hasattr(source, "subset"):
        return source.subset(indices).load_all()
    if hasattr(source, "images"):
        return np.asarray(source.images)[indices]
    arrays = np.concatenate(list(source.batches(64)))
    return arrays[indices]


def driven_example_figures(result: Any, *, n: int = 4, limit: int = 6) -> dict[str, Any]:
    """One figure per significant (class, concept): most and least driven examples with presence maps.

    Parameters
    ----------
    result : concepts.scoring.ScoreResult
        A score or report result that keeps its model (computed in this session).
    n : int
        Examples per row.
    limit : int
        At most this many (class, concept) figures, strongest |UBS| first.

    Returns
    -------
    dict
        Caption -> matplotlib Figure (empty when nothing is significant in a convolutional layer).

    Examples
    --------
    >>> figures = driven_example_figures(report, n=3, limit=1)
    >>> list(figures)  # caption -> Figure
    ["Class 'other': the examples most (top) and least (bottom) driven by concept 'horizontal' in ..."]
    """
    from .explain_plots import plot_driven_examples

    figures: dict[str, Any] = {}
    if not driven_rows(result, limit=limit):
        return figures
    frame = result.per_example()
    for cls, concept, layer in driven_rows(result, limit=limit):
        maps = result.concept_maps(cls, concept=concept, layer=layer, kind="presence")
        source = result._context.classes[cls].images
        panels = []
        for which in ("most", "least"):
            rows = result_rows(frame, cls, concept, layer, n, which)
            idx = rows["index"].to_numpy(dtype=int)
            labels = [f"{name}\nS={s:+.2g}" for name, s in zip(display_names(rows["image"]), rows["sensitivity"])]
            images, chosen = _images(source, idx), maps[idx]
            if chosen.ndim == 4:  # volumes: the axial slice through each map's largest |value|
                from .volume_maps import axial_slices

                images, chosen = axial_slices(images, chosen)
            panels.append((images, chosen, labels))
        caption = (f"Class '{cls}': the examples most (top) and least (bottom) driven by concept '{concept}' in "
                   f"layer '{layer}', with its presence map (red: concept expressed; S: sensitivity)")
        figures[caption] = plot_driven_examples(panels[0], panels[1],
                                                title=f"{concept} · {layer} · class {cls}")
    return figures


def result_rows(frame: pd.DataFrame, cls: str, concept: str, layer: str, n: int, which: str) -> pd.DataFrame:
    from .per_example import driven_examples

    return driven_examples(frame, class_name=cls, concept=concept, layer=layer, n=n, which=which)


def _pairs(result: Any, n: int, limit: int) -> list[tuple[tuple[str, str, str], pd.DataFrame, pd.DataFrame]]:
    rows = driven_rows(result, limit=limit)
    if not rows:
        return []
    frame = result.per_example()
    return [(key, result_rows(frame, *key, n, "most"), result_rows(frame, *key, n, "least")) for key in rows]


def driven_examples_html(result: Any, *, n: int = 4, limit: int = 6) -> str:
    """An HTML fragment: per significant concept, a table of its most and least driven examples.

    Every string from the user (class, concept, layer, file names) is escaped.

    Examples
    --------
    >>> fragment = driven_examples_html(report, limit=1)
    >>> fragment.splitlines()[0]
    '<h3>horizontal · conv2 · class other</h3>'
    """
    pairs = _pairs(result, n, limit)
    if not pairs:
        return ('<p class="muted">No concept is significant in a convolutional layer, so no examples are '
                "listed.</p>\n")
    parts = []
    columns = ["image", "sensitivity", "positive_share", "presence"]
    for (cls, concept, layer), most, least in pairs:
        parts.append(f"<h3>{html.escape(f'{concept} · {layer} · class {cls}')}</h3>")
        for label, rows in (("most driven", most), ("least driven", least)):
            shown = rows[columns].assign(image=display_names(rows["image"]))
            parts.append(f"<p>{html.escape(label)}</p>" + shown.to_html(index=False, escape=True, border=0,
                                                                        float_format=lambda v: f"{v:.3g}"))
    return "\n".join(parts) + "\n"


def display_names(files: Any) -> list[str]:
    """Short names for image files: their file names where those say which file is meant (one folder),
    else their paths below the folder they share (``patient01/a.png``, ``patient02/a.png``).

    Examples
    --------
    >>> display_names(["d/c/p1/a.png", "d/c/p2/a.png"]), display_names(["d/c/a.png", "d/c/b.png"])
    (['p1/a.png', 'p2/a.png'], ['a.png', 'b.png'])
    """
    paths = [Path(str(f)) for f in files]
    if len({p.parent for p in paths}) <= 1:
        return [p.name for p in paths]
    try:
        common = Path(os.path.commonpath([str(p.parent) for p in paths]))
        return [str(p.relative_to(common)) for p in paths]
    except ValueError:      # no common folder (different drives): the full paths
        return [str(p) for p in paths]


def driven_examples_text(result: Any, *, n: int = 3, limit: int = 6) -> list[str]:
    """Plain lines for a console: per significant concept, its most and least driven files.

    Examples
    --------
    >>> print("\\n".join(driven_examples_text(report, n=2, limit=2)))
    horizontal in conv2, class other: most driven o009.png (-0.44), o005.png (-0.44); least driven ...
    horizontal in conv2, class striped: most driven s006.png (+0.44), s005.png (+0.44); least driven ...
    """
    lines = []
    for (cls, concept, layer), most, least in _pairs(result, n, limit):
        def names(rows: pd.DataFrame) -> str:
            return ", ".join(f"{name} ({s:+.2g})" for name, s in zip(display_names(rows["image"]), rows["sensitivity"]))
        lines.append(f"{concept} in {layer}, class {cls}: most driven {names(most)}; least driven {names(least)}")
    return lines
