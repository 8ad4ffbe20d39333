"""``concepts.report``: every class × layer × concept, comparable across layers, as a table, plots and HTML.

One engine pass per image set serves all layers and classes; folder concepts (CAVs) and measures
(RCVs) are scored together and corrected together. ``sanity=True`` repeats the analysis on a
copy of the model with re-initialised weights and on shuffled measures, and the report says
whether the findings survive (they should not).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from probes.distributed import check_client
from probes.engine import Engine, randomize_weights

from .analysis import DEFAULT_CAV, DEFAULT_STATISTIC, Analysis, MeasureConcept, Outcome
from .config import Config, uses_config
from .measures import Measure
from .report_html import HtmlPage
from .scoring import ScoreResult, _as_layers, input_provenance, map_context, prepare


class Report(ScoreResult, HtmlPage):
    """A global concept report: the tidy table, its plots (from :class:`ScoreResult`), HTML and provenance.

    Examples
    --------
    >>> rep = concepts.report(model, ["conv1", "conv2"], data="data")
    >>> fig = rep.plot_heatmap(value="ubs")
    >>> len(fig.axes)  # one panel per layer, and the colour bar
    3
    >>> small = concepts.report(model, "conv2", "data/concepts/horizontal", classes=["striped"], data="data")
    >>> written = small.save("out/")  # writes report.html, report.csv, provenance.json and the figures
    >>> sorted(path.name for path in written.values())
    ['figure_01.png', 'figure_02.png', 'figure_03.png', 'provenance.json', 'report.csv', 'report.html']
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

    # ------------------------------------------------------------------ output (to_html and save: HtmlPage)
    _page_name = "report"

    def _page(self) -> dict[str, Any]:
        """What the HTML page shows besides the figures (see :class:`concepts.report_html.HtmlPage`)."""
        notes = list(self.sanity.get("notes", []))
        skipped = self.provenance.get("skipped_images") or []
        if skipped:
            # Left out with on_error="skip": say so where it is read, not only in the provenance.
            shown = "; ".join(f"{item['path']} ({item['reason']})" for item in skipped[:20])
            notes.append(f"{len(skipped)} image file(s) could not be used and were left out (on_error='skip'): "
                         f"{shown}{' ...' if len(skipped) > 20 else ''}")
        from .report_examples import driven_examples_html

        sections = {"Cases most and least driven by each significant concept": driven_examples_html(self)}
        return dict(table=self._table, title=self.title, provenance=self.provenance, headline=self.headline,
                    notes=notes or None, significance=self.significance,
                    sections=sections if self._context is not None else None)

    def _csv_files(self) -> dict[str, tuple[str, pd.DataFrame]]:
        return {"csv": ("report.csv", self._table)}

    def _json_files(self) -> dict[str, tuple[str, Any]]:
        return {"provenance": ("provenance.json", self.provenance)}


def _shuffled(measure: MeasureConcept, seed: int) -> MeasureConcept:
    rng = np.random.default_rng(seed)
    return MeasureConcept(name=measure.name, images=measure.images, values=rng.permutation(measure.values),
                          description=f"{measure.description} (shuffled)")


#: A sanity check passes when at most this share of the significant findings (and never fewer than
#: one finding, which chance alone gives now and then) survives the control -- or no more than chance
#: explains (see :func:`_survival`).
SANITY_MAX_SURVIVING = 0.10


def _survival(table: pd.DataFrame, control: pd.DataFrame, label: str) -> tuple[dict[str, Any], str]:
    """Compare findings with a control run (randomised weights, shuffled measures): PASS or WARN, with numbers.

    A finding *survives* when the control finds it too: significant, in the same direction. A finding that
    reflects what the model learned may still be significant under the control -- a randomly initialised
    network with a random head also responds to images that differ from random ones -- but then its
    direction is a coin flip. So the check passes when the survivors are few (at most
    ``max(1, floor(SANITY_MAX_SURVIVING * n))`` of the ``n`` findings) or no more than chance explains: of
    the ``k`` findings significant under the control in either direction, about half keep their direction
    by chance, and a one-sided binomial test of the survivors against ``k / 2`` must not reject at 5 %. It
    warns when findings keep their direction more often than that: then they do not depend on what the
    model learned, and they are named.
    """
    import scipy.stats

    key = ["class", "layer", "concept"]
    found = table[table["significant"]][key + ["ubs"]]
    merged = found.merge(control[key + ["significant", "ubs"]], on=key, how="left", suffixes=("", "_control"))
    same_direction = np.sign(merged["ubs"]) == np.sign(merged["ubs_control"])
    significant_control = merged["significant"].fillna(False).astype(bool)
    surviving = significant_control & same_direction
    survived, both, n = int(surviving.sum()), int(significant_control.sum()), len(found)
    share = survived / n if n else 0.0
    allowed = max(1, int(np.floor(SANITY_MAX_SURVIVING * n)))
    chance_p = float(scipy.stats.binom.sf(survived - 1, both, 0.5)) if both else 1.0
    passed = survived <= allowed or chance_p >= 0.05
    status = "PASS" if passed else "WARN"
    criterion = (f"criterion: at most {allowed} of them, or no more than chance explains — {both} are significant "
                 f"under the control in either direction, so about {both / 2:.0f} keep their direction by chance "
                 f"(one-sided binomial p = {chance_p:.2g})")
    if n == 0:
        note = f"Sanity check ({label}): not applicable, there are no significant findings to test."
        status = "N/A"
    else:
        names = ", ".join(f"{r['class']}/{r['layer']}/{r['concept']}" for _, r in merged[surviving].head(8).iterrows())
        note = (f"Sanity check ({label}): {status} — {survived} of {n} significant findings ({share:.0%}) remain "
                f"significant in the same direction ({criterion}).")
        if survived and not passed:
            note += (f" Surviving: {names}{' …' if survived > 8 else ''}; these do not depend on what the model "
                     "learned.")
    return {"check": label, "status": status, "significant_before": n, "still_significant": survived,
            "significant_in_control": both, "chance_p": chance_p, "surviving_share": share,
            "passed": bool(passed), "collapsed": bool(passed)}, note


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


@uses_config
def report(model: Any, layers: str | Sequence[str], concepts: Any = None, classes: Sequence[str | int] | None = None, *,
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
           title: str = "Concept report", headline: str | None = None, progress: bool = True,
           on_error: str = "raise", recursive: bool = False, memory_budget: int | str | None = "2GB",
           client: Any = None, config: Config | None = None) -> Report:
    """Score every class × layer × concept in one pass and return a :class:`Report`.

    Parameters
    ----------
    model : Any
        A Keras 3 model, or the path of one saved as ``.keras``/``.h5``.
    layers : str | Sequence[str]
        Layer names or ``outer/inner`` paths, in model order (one name is a list of one).
    concepts : Any, default=None
        Folder concepts (paths, names of folders under ``<data>/concepts``, ImageSets) and/or
        measures; default: every folder under ``<data>/concepts``.
    classes : Sequence[str | int] | None, default=None
        Classes to report (names or indices); default every class folder.
    data : str | os.PathLike | None, default=None
        The data folder following the convention (``classes/``, ``concepts/``, ``random/``).
    measures : Sequence[Measure] | None, default=None
        Continuous concept measures (``concepts.radiomics(...)``, ``concepts.measure(...)``).
    sanity : bool, default=False
        Also run on randomised weights and shuffled measures; the HTML says whether findings survive.
    title, headline : str
        Shown at the top of the HTML page.
    on_error : str, default='raise'
        ``"raise"`` (default) or ``"skip"`` unusable image files; skipped files are listed in
        the provenance and the report.
    recursive : bool, default=False
        Also use images in sub-folders of class and concept folders (one per patient, say).
    config : Config | None, default=None
        A :class:`concepts.Config` with a reusable setting of the options (``relative`` too);
        keywords given explicitly in the call win over it.

    Notes
    -----
    Other arguments: as in :func:`concepts.score`.

    Examples
    --------
    >>> rep = concepts.report(model, ["conv1", "conv2"], data="data")
    >>> rep.to_frame()[["class", "layer", "concept", "score", "significant"]].head(3)
         class  layer     concept  score  significant
    0    other  conv1  horizontal    0.0         True
    1    other  conv1    vertical    1.0         True
    2  striped  conv1  horizontal    1.0         True
    >>> checked = concepts.report(model, "conv2", data="data",
    ...                           sanity=True)  # reruns on random weights: seconds  # doctest: +SKIP
    >>> bh = concepts.report(model, "conv2", data="data", config=concepts.Config(correction="bh"))
    >>> repr(bh).splitlines()[0]
    "<Report: target logit: ... (softmax bypassed), 20 random runs, bh correction, seed 0>"
    """
    assert config is not None  # resolved by @uses_config from the keywords above
    layers = _as_layers(layers)
    concept_list = concept_list_for(concepts, measures, data)
    options = config.to_options()
    kwargs = dict(data=data, examples=examples, classes=classes, class_names=class_names, random=random,
                  target=config.target, preprocess=preprocess, batch_size=config.batch_size,
                  cache_dir=config.cache_dir, options=options, output=output, extra_inputs=extra_inputs,
                  on_error=config.on_error, recursive=config.recursive)
    analysis, inputs = prepare(model, layers, concept_list, **kwargs)
    check_client(client, analysis.engine)
    analysis.client = client
    run_args = (inputs["classes"], inputs["folder_concepts"], inputs["measure_concepts"], inputs["random_sets"])
    outcome = analysis.run(*run_args)
    outcome.provenance.update(input_provenance(inputs))

    sanity_info: dict[str, Any] = {}
    if sanity:
        checks, notes = [], []
        # The same inputs through a copy of the model with re-initialised weights: only the engine
        # changes, so the resolved image sets, measures and random sets are reused as they are.
        random_engine = Engine(randomize_weights(analysis.engine.model, seed=config.seed), layers,
                               target=config.target, batch_size=config.batch_size, cache=analysis.cache,
                               progress=config.progress, output=output, extra_inputs=extra_inputs)
        control_outcome = Analysis(random_engine, options, cache=analysis.cache, client=client).run(*run_args)
        info, note = _survival(outcome.table, control_outcome.table, "randomised model weights")
        checks.append(info)
        notes.append(note)
        if inputs["measure_concepts"]:
            shuffled = [_shuffled(m, config.seed) for m in inputs["measure_concepts"]]
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
