"""``concepts.report``: every class × layer × concept, comparable across layers, as a table, plots and HTML.

One engine pass per image set serves all layers and classes; folder concepts (CAVs) and measures
(RCVs) are scored together and corrected together. ``sanity=True`` repeats the analysis on a
copy of the model with re-initialised weights and on shuffled measures, and the report says
whether the findings survive (they should not).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from probes.engine import Engine, randomize_weights

from .analysis import DEFAULT_CAV, DEFAULT_STATISTIC, Analysis, MeasureConcept, Options, Outcome
from .measures import Measure
from .scoring import ScoreResult, map_context, prepare


class Report(ScoreResult):
    """A global concept report: the tidy table, its plots (from :class:`ScoreResult`), HTML and provenance.

    Example:
        >>> rep = concepts.report(model, ["conv1", "conv2"], data="data")  # doctest: +SKIP
        >>> rep.plot_heatmap(value="ubs")  # doctest: +SKIP
        >>> rep.save("out/")  # writes report.html, report.csv and the figures  # doctest: +SKIP
    """

    def __init__(self, outcome: Outcome, *, sanity: dict[str, Any] | None = None, headline: str | None = None,
                 title: str = "Concept report", context: Any = None) -> None:
        super().__init__(outcome, context=context)
        self.sanity = sanity or {}
        self.headline = headline
        self.title = title

    def figures(self) -> dict[str, Any]:
        """Every standard figure of the report, keyed by caption."""
        figs: dict[str, Any] = {}
        table = self._table
        if table.empty:
            return figs
        figs["UBS per class × concept, each layer (hatched: not significant after correction)"] = \
            self.plot_heatmap(value="ubs")
        figs["TCAV score per class × concept, each layer (0.5 = no preference)"] = self.plot_heatmap(value="score")
        if table["layer"].nunique() > 1:
            figs["UBS of each concept across layers, with 95% bootstrap intervals"] = self.plot_layer_profile()
        for (layer, concept) in self.scatter:
            figs[f"Measure '{concept}' vs its regression concept vector in layer '{layer}'"] = \
                self.plot_rcv_scatter(concept, layer)
        figs.update(self._example_figures())
        return figs

    def _example_figures(self) -> dict[str, Any]:
        """Most and least driven examples of each significant concept, with presence maps."""
        from .report_examples import driven_example_figures

        return driven_example_figures(self)

    # ------------------------------------------------------------------ output
    def to_html(self, path: str | os.PathLike | None = None, *, figures: dict[str, Any] | None = None) -> str:
        """Render the self-contained HTML report; write it to ``path`` when given. Returns the HTML.

        ``figures`` (caption -> Figure or PNG bytes) defaults to :meth:`figures`.
        """
        from .html import render_html, write_html

        notes = list(self.sanity.get("notes", []))
        figures = self.figures() if figures is None else figures
        from .report_examples import driven_examples_html

        sections = {"Cases most and least driven by each significant concept": driven_examples_html(self)}
        html = render_html(self._table, title=self.title, figures=figures, provenance=self.provenance,
                           headline=self.headline, notes=notes or None, alpha=self.significance,
                           sections=sections if self._context is not None else None)
        if path is not None:
            write_html(path, html)
        return html

    def save(self, out_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``report.html``, ``report.csv``, ``provenance.json`` and every figure as PNG into ``out_dir``."""
        from .plots import figure_to_png_bytes

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = {"csv": self.to_csv(out / "report.csv")}
        # Rendered to PNG once: the same bytes go into the HTML and into the figure files.
        figures = {caption: figure_to_png_bytes(fig) for caption, fig in self.figures().items()}
        html = self.to_html(figures=figures)
        (out / "report.html").write_text(html, encoding="utf-8")
        written["html"] = out / "report.html"
        (out / "provenance.json").write_text(json.dumps(self.provenance, indent=2, default=str), encoding="utf-8")
        written["provenance"] = out / "provenance.json"
        for i, (caption, png_bytes) in enumerate(figures.items()):
            png = out / f"figure_{i + 1:02d}.png"
            png.write_bytes(png_bytes)
            written[caption] = png
        return written


def _shuffled(measure: MeasureConcept, seed: int) -> MeasureConcept:
    rng = np.random.default_rng(seed)
    return MeasureConcept(name=measure.name, images=measure.images, values=rng.permutation(measure.values),
                          description=f"{measure.description} (shuffled)")


#: A sanity check passes when at most this share of the significant findings (and never fewer than
#: one finding, which chance alone gives now and then) survives the control.
SANITY_MAX_SURVIVING = 0.10


def _survival(table: pd.DataFrame, control: pd.DataFrame, label: str) -> tuple[dict[str, Any], str]:
    """Compare findings with a control run (randomised weights, shuffled measures): PASS or WARN, with numbers.

    A finding survives when the control finds it too: significant, in the same direction. The check
    passes when at most ``SANITY_MAX_SURVIVING`` (10 %) of the findings survive. Findings that
    survive randomised weights are not necessarily wrong -- a randomly initialised convolution
    still responds to edges and contrast -- but they do not show that the *trained* model uses the
    concept, so they are named.
    """
    key = ["class", "layer", "concept"]
    found = table[table["significant"]][key + ["ubs"]]
    merged = found.merge(control[key + ["significant", "ubs"]], on=key, how="left", suffixes=("", "_control"))
    same_direction = np.sign(merged["ubs"]) == np.sign(merged["ubs_control"])
    surviving = merged["significant"].fillna(False).astype(bool) & same_direction
    survived = int(surviving.sum())
    n = len(found)
    share = survived / n if n else 0.0
    allowed = max(1, int(np.floor(SANITY_MAX_SURVIVING * n)))
    passed = survived <= allowed
    status = "PASS" if passed else "WARN"
    criterion = f"criterion: at most {allowed} ({SANITY_MAX_SURVIVING:.0%}, at least one) may survive"
    if n == 0:
        note = f"Sanity check ({label}): not applicable, there are no significant findings to test."
        status = "N/A"
    else:
        names = ", ".join(f"{r['class']}/{r['layer']}/{r['concept']}" for _, r in merged[surviving].head(8).iterrows())
        note = (f"Sanity check ({label}): {status} — {survived} of {n} significant findings ({share:.0%}) remain "
                f"significant in the same direction ({criterion}).")
        if survived:
            note += (f" Surviving: {names}{' …' if survived > 8 else ''}; these do not show that the trained model "
                     "uses the concept (an untrained network can respond to it too).")
    return {"check": label, "status": status, "significant_before": n, "still_significant": survived,
            "surviving_share": share, "passed": bool(passed), "collapsed": bool(passed)}, note


def concept_list_for(concepts: Any, measures: Sequence[Measure] | None,
                     data: str | os.PathLike | None) -> list[tuple[str | None, Any]]:
    """``(name or None, concept)`` pairs from report-style arguments (default: every folder under
    ``<data>/concepts``), measures last. Shared by :func:`report` and :func:`concepts.compare`."""
    from .layout import DataLayout

    concept_list: list[tuple[str | None, Any]]
    if concepts is None:
        if data is None:
            raise ValueError("Give concepts=[...] or data= (a folder with a concepts/ sub-folder).")
        concept_list = [(name, path) for name, path in DataLayout.from_root(data).concept_dirs.items()]
    elif isinstance(concepts, Mapping):
        concept_list = [(str(k), v) for k, v in concepts.items()]
    elif isinstance(concepts, (list, tuple)):
        concept_list = [(None, c) for c in concepts]
    else:
        concept_list = [(None, concepts)]
    return concept_list + [(None, m) for m in (measures or [])]


def report(model: Any, layers: Sequence[str], concepts: Any = None, classes: Sequence[str | int] | None = None, *,
           data: str | os.PathLike | None = None, measures: Sequence[Measure] | None = None, examples: Any = None,
           class_names: Sequence[str] | Mapping[str, int] | None = None, random: Any = None, n_random: int = 20,
           null_pairs: str = "auto", statistic: str = DEFAULT_STATISTIC, target: str = "logit", seed: int = 0,
           output: int | str | None = None, extra_inputs: Mapping[str, Any] | None = None,
           preprocess: Callable | None = None,
           batch_size: int = 32, classifier: Any = None, cav: str = DEFAULT_CAV, C: float = 1.0, compat: str | None = None,
           robustness: bool = True,
           alpha: float | str = "auto",
           alpha_scale: float = 0.1, test_size: float = 0.3,
           correction: str = "holm", significance: float = 0.05, n_directions: int = 1000,
           pool: str | bool = "auto", sanity: bool = False, cache_dir: str | os.PathLike | bool | None = None,
           title: str = "Concept report", headline: str | None = None, progress: bool = True) -> Report:
    """Score every class × layer × concept in one pass and return a :class:`Report`.

    Args:
        model: a Keras 3 model, or the path of one saved as ``.keras``/``.h5``.
        layers: layer names or ``outer/inner`` paths, in model order.
        concepts: folder concepts (paths, names of folders under ``<data>/concepts``, ImageSets) and/or
            measures; default: every folder under ``<data>/concepts``.
        classes: classes to report (names or indices); default every class folder.
        data: the data folder following the convention (``classes/``, ``concepts/``, ``random/``).
        measures: continuous concept measures (``concepts.radiomics(...)``, ``concepts.measure(...)``).
        sanity: also run on randomised weights and shuffled measures; the HTML says whether findings survive.
        title, headline: shown at the top of the HTML page.
        Other arguments: as in :func:`concepts.score`.

    Example:
        >>> rep = concepts.report(model, ["conv1", "conv2", "conv3"], data="data", sanity=True)  # doctest: +SKIP
        >>> rep.save("report/")  # doctest: +SKIP
    """
    concept_list = concept_list_for(concepts, measures, data)
    options = Options(n_random=n_random, null_pairs=null_pairs, statistic=statistic, seed=seed,
                      classifier=classifier, cav=cav, C=C, compat=compat, robustness=robustness,
                      alpha=alpha, alpha_scale=alpha_scale,
                      test_size=test_size, correction=correction, significance=significance,
                      n_directions=n_directions, pool=pool, progress=progress)
    kwargs = dict(data=data, examples=examples, classes=classes, class_names=class_names, random=random,
                  target=target, preprocess=preprocess, batch_size=batch_size, cache_dir=cache_dir, options=options,
                  output=output, extra_inputs=extra_inputs)
    analysis, inputs = prepare(model, list(layers), concept_list, **kwargs)
    run_args = (inputs["classes"], inputs["folder_concepts"], inputs["measure_concepts"], inputs["random_sets"])
    outcome = analysis.run(*run_args)

    sanity_info: dict[str, Any] = {}
    if sanity:
        checks, notes = [], []
        # The same inputs through a copy of the model with re-initialised weights: only the engine
        # changes, so the resolved image sets, measures and random sets are reused as they are.
        random_engine = Engine(randomize_weights(analysis.engine.model, seed=seed), list(layers), target=target,
                               batch_size=batch_size, cache=analysis.cache, progress=progress, output=output,
                               extra_inputs=extra_inputs)
        control_outcome = Analysis(random_engine, options, cache=analysis.cache).run(*run_args)
        info, note = _survival(outcome.table, control_outcome.table, "randomised model weights")
        checks.append(info)
        notes.append(note)
        if inputs["measure_concepts"]:
            shuffled = [_shuffled(m, seed) for m in inputs["measure_concepts"]]
            shuffled_outcome = analysis.run(inputs["classes"], [], shuffled, [])
            info, note = _survival(outcome.table[outcome.table["kind"] == "rcv"], shuffled_outcome.table,
                                   "shuffled measures")
            checks.append(info)
            notes.append(note)
        sanity_info = {"checks": checks, "notes": notes,
                       "randomised_table": control_outcome.table}
        outcome.provenance["sanity_checks"] = checks
    return Report(outcome, sanity=sanity_info, headline=headline, title=title,
                  context=map_context(analysis, inputs, preprocess))
