"""Per-example explanations: which class examples does a concept drive, and how strongly?

A row of the global table summarises a concept over all examples of a class. This module unfolds it:
one row per (image, class, layer, concept), from the arrays the scoring pass already computed (see
``Outcome.per_example``), so nothing is run through the model again.

Columns of :func:`per_example_frame`:

* ``sensitivity``: the directional derivative of the class target along the concept's consensus
  vector (the normalised mean of its CAVs, or the RCV) at this image: how much the class score
  moves when the image's representation moves along the concept;
* ``positive_share``: the share of the concept's runs (one CAV per random set, or the RCVs of the
  cross-validation folds) along which the target rises. Its mean over a class's images is exactly
  the row's TCAV ``score``;
* ``presence``: the activation of the image itself projected on the consensus vector (for a pooled
  RCV, the channel means projected on the RCV): how much of the concept the image shows;
* ``ubs_ratio``: ``sensitivity / (‖g‖ c_d)``, the image's share of the row's UBS (their mean over the
  class's images with a non-zero gradient is the row's ``ubs``);
* ``drive``: ``sensitivity`` signed by the direction of the row (the sign of its ``ubs``), so that
  "most driven" means "moved most in the direction the concept moves the class overall".
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = ["EXAMPLE_COLUMNS", "per_example_frame", "driven_examples"]

EXAMPLE_COLUMNS = ["image", "index", "class", "layer", "concept", "kind", "sensitivity", "positive_share",
                   "presence", "ubs_ratio", "drive", "significant"]


def per_example_frame(outcome: Any) -> pd.DataFrame:
    """One row per (image, class, layer, concept) of an analysis outcome.

    Parameters
    ----------
    outcome : concepts.analysis.Outcome
        What :class:`concepts.analysis.Analysis` returned (``result._outcome`` of a score or report).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`EXAMPLE_COLUMNS`; ``index`` is the image's position among its class's examples.

    Examples
    --------
    >>> frame = per_example_frame(result._outcome)
    >>> frame.groupby(["class", "layer", "concept"])["positive_share"].mean()  # the TCAV scores
    class    layer  concept
    other    conv2  horizontal    0.0
    striped  conv2  horizontal    1.0
    Name: positive_share, dtype: float64
    """
    table = outcome.table
    if not outcome.per_example and len(table):
        raise ValueError("This result holds no per-example material (it was computed or cached by an older "
                         "version of the toolkit). Rerun the analysis to get per-example rows.")
    lookup = {}
    if len(table):
        lookup = {(r["class"], r["layer"], r["concept"]): (r["kind"], r["ubs"], bool(r["significant"]))
                  for _, r in table[["class", "layer", "concept", "kind", "ubs", "significant"]].iterrows()}
    frames = []
    for (cls, layer, concept), arrays in outcome.per_example.items():
        kind, ubs, significant = lookup.get((cls, layer, concept), ("", np.nan, False))
        n = len(arrays["sensitivity"])
        files = outcome.example_files.get(cls, [f"{cls}[{i}]" for i in range(n)])
        direction = np.sign(ubs) if np.isfinite(ubs) and ubs != 0 else 1.0
        frames.append(pd.DataFrame({
            "image": files, "index": np.arange(n), "class": cls, "layer": layer, "concept": concept, "kind": kind,
            "sensitivity": arrays["sensitivity"], "positive_share": arrays["positive_share"],
            "presence": arrays["presence"], "ubs_ratio": arrays["ubs_ratio"],
            "drive": direction * np.asarray(arrays["sensitivity"], dtype=float), "significant": significant}))
    if not frames:
        return pd.DataFrame(columns=EXAMPLE_COLUMNS)
    return pd.concat(frames, ignore_index=True)[EXAMPLE_COLUMNS]


def driven_examples(frame: pd.DataFrame, *, class_name: str, concept: str, layer: str, n: int = 5,
                    which: str = "most") -> pd.DataFrame:
    """The ``n`` examples of a class most (or least) driven by a concept in a layer.

    Parameters
    ----------
    frame : pandas.DataFrame
        The output of :func:`per_example_frame`.
    class_name, concept, layer : str
        Which row of the global table to unfold.
    n : int
        How many examples: a whole number >= 1 (a Python or numpy integer); anything else raises
        ``ValueError`` (``n=-1`` would otherwise mean "all but the last", ``n=2.9`` be cut to 2).
    which : {"most", "least"}
        ``"most"``: the largest ``drive`` first; ``"least"``: the smallest first. Equal drives are
        ordered by ``presence``.

    Returns
    -------
    pandas.DataFrame
        ``n`` rows of ``frame`` (fewer when the class has fewer examples).

    Examples
    --------
    >>> rows = driven_examples(result.per_example(), class_name="striped", concept="horizontal",
    ...                        layer="conv2", n=3)
    >>> rows[["class", "concept", "drive"]]  # the planted model: the same drive for every striped image
          class     concept     drive
    18  striped  horizontal  0.440717
    17  striped  horizontal  0.440717
    13  striped  horizontal  0.440717
    """
    if which not in ("most", "least"):
        raise ValueError(f"which must be 'most' or 'least', not {which!r}.")
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"n must be a whole number of examples (e.g. n=5), not {n!r} "
                         f"({type(n).__name__}); pass n=int(...) to round it yourself.")
    if n < 1:
        raise ValueError(f"n must be at least 1 (how many examples to return), not {n}.")
    rows = frame[(frame["class"] == class_name) & (frame["concept"] == concept) & (frame["layer"] == layer)]
    if rows.empty:
        known = sorted(set(zip(frame["class"], frame["layer"], frame["concept"])))
        raise KeyError(f"No per-example rows for class {class_name!r}, layer {layer!r}, concept {concept!r}; "
                       f"(class, layer, concept) available: {known}.")
    # Ties in drive (in a layer followed only by pooling and a linear head every example has the same
    # sensitivity) are broken by how much of the concept the image shows.
    ascending = which == "least"
    return rows.sort_values(["drive", "presence"], ascending=[ascending, ascending], kind="stable").head(int(n))
