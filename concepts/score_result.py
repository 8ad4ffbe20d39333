"""The answer of :func:`concepts.score`: :class:`ScoreResult`, the table with its runs, plots and maps.

:func:`concepts.report` and :func:`concepts.rank_measures` return subclasses of it
(:class:`concepts.Report`, :class:`concepts.Ranking`), so every result has the same methods.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .analysis import Outcome, summary_text
from .renames import renamed

__all__ = ["ScoreResult"]


class ScoreResult:
    """The answer of :func:`concepts.score`: one row per (class, layer, concept), with statistics.

    ``to_frame()`` gives the tidy table; ``runs`` holds the per-run scores behind every row (for
    plots of the null distribution), ``scatter`` the measure-vs-projection data of every RCV, and
    ``provenance`` what was computed how (model fingerprint, layers, target, seeds, versions).

    Examples
    --------
    >>> result = concepts.score(model, "conv2", "data/concepts/horizontal")
    >>> result.to_frame()[["class", "concept", "score", "significant"]]
         class     concept  score  significant
    0    other  horizontal    0.0         True
    1  striped  horizontal    1.0         True
    """

    def __init__(self, outcome: Outcome, context: Any = None) -> None:
        self._outcome = outcome
        self._context = context  # a concepts.maps.MapContext: the engine and inputs, for maps after scoring
        self._table = outcome.table
        self.runs = outcome.runs
        self.scatter = outcome.scatter
        self.provenance = outcome.provenance
        # The level that decided the table's ``significant`` column; plots and HTML use the same one.
        self.significance = float(self.provenance.get("significance_level", 0.05))

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        """Everything but the model context (the engine holds locks and the live model): a pickled
        result keeps its table, runs, scatter, provenance and per-example rows, but concept maps need
        a rescore (see :meth:`concept_maps`)."""
        state = self.__dict__.copy()
        state["_detached"] = state.get("_detached", False) or state.get("_context") is not None
        state["_context"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def _require_context(self) -> None:
        if self._context is None and getattr(self, "_detached", False):
            raise ValueError("This result was unpickled: the model and its inputs are not saved with it, so "
                             "concept maps need a rescore; run concepts.score(...) or concepts.report(...) again "
                             "in this session to draw them.")

    @renamed(alpha="significance")
    def plot_heatmap(self, layer: str | None = None, value: str = "ubs", *, significance: float | None = None):
        """Class × concept heatmap per layer; non-significant cells hatched (value still shown).

        ``significance``: the level that decides the hatching (default: the level of this result).
        """
        from .plots import plot_heatmap

        level = self.significance if significance is None else significance
        return plot_heatmap(self._table, layer=layer, value=value, significance=level)

    @renamed(alpha="significance")
    def plot_layer_profile(self, concept: str | None = None, value: str = "ubs", *,
                           significance: float | None = None):
        """Each concept's value across layers, one line per class, with confidence intervals.

        ``significance``: the level that decides filled vs hollow points (default: this result's level).
        """
        from .plots import plot_layer_profile

        level = self.significance if significance is None else significance
        return plot_layer_profile(self._table, concept=concept, value=value, significance=level)

    def plot_rcv_scatter(self, concept: str, layer: str):
        """Measure vs RCV projection with the fitted line and the held-out R²."""
        from .row_plots import plot_rcv_scatter

        if (layer, concept) not in self.scatter:
            known = sorted({c for _, c in self.scatter})
            raise KeyError(f"No regression concept {concept!r} in layer {layer!r}; measures in this report: {known}.")
        data = self.scatter[(layer, concept)]
        return plot_rcv_scatter(data, concept=concept, layer=layer, r2_cv=data.attrs.get("r2_cv", np.nan))

    def plot_null(self, class_name: str, layer: str, concept: str, value: str | None = None):
        """A row's concept runs against its null runs, for the statistic that was tested.

        ``value``: ``"shift"`` (per-run UBS x displacement of the concept's CAVs vs each random set's
        mean), ``"ubs"`` (per-run UBS), ``"score"`` (TCAV sign-count scores) or ``"br"`` (an RCV's Br
        vs shuffled measures); default: what the row's p-value was computed from (``test_statistic``).
        """
        from .row_plots import plot_null_distribution

        key = (class_name, layer, concept)
        if key not in self.runs:
            raise KeyError(f"No row for class {class_name!r}, layer {layer!r}, concept {concept!r}.")
        run = self.runs[key]
        title = f"{concept} · {layer} · class {class_name}"
        row = self._table[(self._table["class"] == class_name) & (self._table["layer"] == layer)
                          & (self._table["concept"] == concept)]
        if value is None:
            tested = str(row["test_statistic"].iloc[0]) if len(row) and "test_statistic" in row else "ubs"
            value = "score" if tested == "tcav_ttest" else tested
        p_value = float(row["p_value"].iloc[0]) if len(row) else None
        if value == "score":
            return plot_null_distribution(run["scores"], run["null_scores"], title=title, p_value=p_value)
        if value == "shift" and "null_shift" in run:
            return plot_null_distribution(run["shift"], run["null_shift"], title=title, p_value=p_value,
                                          xlabel="shift (UBS × displacement)", null_value=0.0,
                                          concept_label="concept vs each random set",
                                          null_label="each random set vs the others (null)")
        if value == "ubs" and "null_ubs" in run:
            return plot_null_distribution(run["ubs"], run["null_ubs"], title=title, p_value=p_value,
                                          xlabel="UBS", null_value=0.0, concept_label="concept vs each random set",
                                          null_label="each random set vs the others (null)")
        if value == "br" and "null_br" in run:
            return plot_null_distribution(run["br"], run["null_br"], title=title, p_value=p_value, xlabel="Br",
                                          null_value=0.0, concept_label="measure (full-data RCV)",
                                          null_label="shuffled measures (null)")
        raise ValueError(f"value must be 'shift', 'ubs' or 'score' for a folder concept and 'br', 'ubs' or "
                         f"'score' for a measure; got {value!r} for {concept!r}.")

    def to_frame(self) -> pd.DataFrame:
        """The tidy result table (a copy), one row per (class, layer, concept)."""
        return self._table.copy()

    # ------------------------------------------------------------------ where and for whom
    def concept_maps(self, images: Any, *, concept: str, layer: str, kind: str = "presence",
                     class_name: str | None = None, resolution: str = "input") -> np.ndarray:
        """Where a concept is expressed (``kind="presence"``) or where it moves a class's score
        (``kind="influence"``), per image, at the model's input resolution.

        Parameters
        ----------
        images : str, path, list of paths, ImageSet or numpy.ndarray
            A class name of this result (its own examples: activations and gradients of the scoring
            pass are reused, no model pass -- unless the class was streamed because it did not fit the
            ``memory_budget``, then one pass over it), a folder, files, a set, or model-ready arrays (one pass).
        concept, layer : str
            A concept of this result and a convolutional layer it was scored in.
        kind : {"presence", "influence"}
            Presence: ``Σ_c a[h,w,c] v[h,w,c]``; influence: ``Σ_c g[h,w,c] v[h,w,c]`` with ``g`` the
            gradient of ``class_name``'s target (see :mod:`concepts.maps`).
        class_name : str, optional
            The class whose target is differentiated (influence maps; optional with one class).
        resolution : {"input", "layer"}
            ``"input"``: at the input size (the model's, or for a flexible model the images' own), each
            cell at its receptive field's centre, else a half-pixel stretch (:mod:`concepts.maps`);
            ``"layer"``: raw. An array must be a batch ``(n, H, W, C)``: ``images[None]`` for one image.

        Returns
        -------
        numpy.ndarray
            ``(n, H, W)`` (2D) or ``(n, D, H, W)`` (3D) float32 maps, aligned with the model input.

        Examples
        --------
        >>> maps = result.concept_maps("striped", concept="horizontal", layer="conv2")
        >>> maps.shape  # (n examples, input height, input width)
        (12, 16, 16)
        """
        from .maps import result_concept_maps

        self._require_context()
        return result_concept_maps(self._outcome, self._context, images, concept=concept, layer=layer, kind=kind,
                                   class_name=class_name, resolution=resolution)

    @renamed(alpha="opacity")
    def plot_concept_maps(self, images: Any, *, concept: str, layer: str, kind: str = "presence",
                          class_name: str | None = None, n: int = 8,
                          opacity: float = 0.55) -> Any:  # a matplotlib Figure
        """Overlay the concept maps of the first ``n`` images on the images (one panel each).

        Arguments as in :meth:`concept_maps` (an array must be a batch: ``images[None]`` for one
        image); ``opacity`` is the opacity of the maps. Returns a matplotlib Figure with one shared
        colour scale centred at 0. For a 3D layer each volume gets a row of three orthogonal slices
        through its map's peak (:func:`concepts.volume_maps.plot_volume_maps`).

        Examples
        --------
        >>> fig = result.plot_concept_maps("striped", concept="horizontal", layer="conv2", n=4)
        >>> len(fig.axes)  # 4 panels and the colour bar
        5
        """
        from .explain_plots import plot_concept_maps
        from .maps import check_image_array

        self._require_context()
        if self._context is not None:
            # Before the first n are taken: one (H, W, C) image would otherwise be cut into rows.
            check_image_array(images, self._context.engine.input_shape)
        arrays, labels = self._images_for_display(images, n)
        # A class's own examples: maps of all of them come from the scoring pass (no model pass);
        # anything else: only the n images shown go through the model.
        own = isinstance(images, str) and self._context is not None and images in self._context.classes
        maps = self.concept_maps(images if own else arrays, concept=concept, layer=layer, kind=kind,
                                 class_name=class_name)[:len(arrays)]
        title = f"{kind} of '{concept}' in {layer}" + (f" (class {class_name})" if kind == "influence" and class_name
                                                        else "")
        return plot_concept_maps(arrays, maps, labels=labels, title=title, opacity=opacity)

    def _images_for_display(self, images: Any, n: int) -> tuple[np.ndarray, list[str]]:
        from .maps import MapContext

        self._require_context()
        if self._context is None:
            if isinstance(images, np.ndarray):
                return images[:n], [str(i) for i in range(min(n, len(images)))]
            raise ValueError("This result is not attached to a model; pass model-ready image arrays.")
        context: MapContext = self._context
        source, name = context.source(images)
        files = [Path(f).name for f in getattr(source, "files", [])] or [f"{name}[{i}]" for i in range(len(source))]
        out, total = [], 0
        for batch in source.batches(max(1, n)):
            out.append(batch)
            total += len(batch)
            if total >= n:
                break
        arrays = np.concatenate(out)[:n] if out else np.zeros((0, *[d or 0 for d in context.engine.input_shape]), np.float32)
        return arrays, files[:len(arrays)]

    def per_example(self) -> pd.DataFrame:
        """One row per (image, class, layer, concept): sensitivity, share of positive runs, presence.

        The mean ``positive_share`` over a class's images is the row's TCAV ``score``; see
        :mod:`concepts.per_example` for every column.

        Examples
        --------
        >>> rows = result.per_example()
        >>> rows.shape  # 24 class images x 1 layer x 1 concept
        (24, 12)
        >>> rows.sort_values("drive").tail(2)[["image", "class", "positive_share"]]
                                    image    class  positive_share
        22  data/classes/striped/s010.png  striped             1.0
        23  data/classes/striped/s011.png  striped             1.0
        """
        from .per_example import per_example_frame

        return per_example_frame(self._outcome)

    def driven_examples(self, class_name: str, concept: str, layer: str, n: int = 5,
                        which: str = "most") -> pd.DataFrame:
        """The ``n`` examples of ``class_name`` most (``which="most"``) or least driven by ``concept``.

        Examples
        --------
        >>> result.driven_examples("striped", "horizontal", "conv2", n=3)["class"].tolist()
        ['striped', 'striped', 'striped']
        """
        from .per_example import driven_examples

        return driven_examples(self.per_example(), class_name=class_name, concept=concept, layer=layer, n=n,
                               which=which)

    @property
    def significant(self) -> pd.DataFrame:
        """Only the rows that are significant after correction."""
        return self._table[self._table["significant"]].copy()

    def to_csv(self, path: str | os.PathLike) -> Path:
        """Write the table as CSV; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._table.to_csv(path, index=False)
        return path

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        prov = self.provenance
        return (f"<{type(self).__name__}: target {prov.get('target')}, {prov.get('n_random_runs')} random runs, "
                f"{prov.get('correction')} correction, seed {prov.get('seed')}>\n" + summary_text(self._table))

    def _repr_html_(self) -> str:
        import html

        prov = self.provenance
        head = (f"<p><b>{html.escape(type(self).__name__)}</b>: target {html.escape(str(prov.get('target')))}; "
                f"{prov.get('n_random_runs')} random runs; {html.escape(str(prov.get('correction')))} correction; "
                f"seed {prov.get('seed')}; {int(self._table['significant'].sum())} of {len(self._table)} "
                "rows significant.</p>")
        cols = ["class", "layer", "concept", "kind", "score", "null_mean", "effect", "ubs", "p_value", "q_value",
                "significant", "vector_quality"]
        return head + self._table[cols].to_html(index=False, float_format=lambda v: f"{v:.3g}")


# ------------------------------------------------------------------------------------------------ inputs
