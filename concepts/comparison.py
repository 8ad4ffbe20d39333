"""``concepts.compare``: does one model use the concepts better than another?

Every model is scored on the same concepts, the same class examples and the same random sets
(one shared design: the image sets are resolved once and reused; a model with another input size
gets the same files bound to its size), each with its own multiple-comparison correction, exactly
as :func:`concepts.report` would score it alone. The models may have different layers: rows carry
each layer's **relative depth** in its model (0 = first layer after the input, 1 = the output
layer, in graph order), which is how layers of different architectures are aligned.

Per (model, class, concept), the **profile** is the concept's UBS across the model's probed layers
(UBS is comparable across layers of any width), and the **consistency statistic** is how much it
varies across layers: ``ubs_sd``, the standard deviation of the layer UBS values (0 = the same
importance in every layer), and ``ubs_rsd``, the same divided by the mean |UBS| over the layers
(scale-free: a model that barely uses a concept anywhere has a small ``ubs_sd`` but not a small
``ubs_rsd``; the notes compare models by ``ubs_rsd``). Each 95 % interval is a bootstrap over class examples, resampled jointly
for every layer (the per-example UBS ratios of the scoring pass, so nothing is recomputed); when
two models saw the same examples, the difference between them uses the same resamples (paired).
"""
from __future__ import annotations

import html as html_lib
import os
import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from probes.engine import Engine
from probes.errors import UnknownLayerError

from .analysis import DEFAULT_CAV, DEFAULT_STATISTIC, Analysis, Outcome
from .config import Config, uses_config
from .report_html import HtmlPage
from .scoring import ScoreResult, map_context, prepare

__all__ = ["compare", "Comparison", "relative_depths", "consistency_table"]

CONSISTENCY_COLUMNS = ["model", "class", "concept", "n_layers", "ubs_mean", "ubs_sd", "ubs_sd_ci_low",
                       "ubs_sd_ci_high", "ubs_rsd", "ubs_rsd_ci_low", "ubs_rsd_ci_high", "n_significant_layers",
                       "profile"]
DIFFERENCE_COLUMNS = ["model", "reference", "class", "concept", "ubs_sd_diff", "ubs_sd_diff_ci_low",
                      "ubs_sd_diff_ci_high", "ubs_rsd_diff", "ubs_rsd_diff_ci_low", "ubs_rsd_diff_ci_high",
                      "ubs_mean_diff", "ubs_mean_diff_ci_low", "ubs_mean_diff_ci_high", "paired"]


def relative_depths(engine: Engine) -> dict[str, float]:
    """Relative depth (0–1) of each probed layer: its position in the model's layer order.

    Layers are counted in graph order, nested models' layers included in place of the nested model;
    input layers are not counted. 0 is the first layer after the input, 1 the last layer.

    Parameters
    ----------
    engine : probes.engine.Engine
        An engine over the model, with the probed layers.

    Returns
    -------
    dict
        ``{layer: depth}``.

    Examples
    --------
    >>> relative_depths(Engine(model, ["conv1", "conv2"]))
    {'conv1': 0.0, 'conv2': 0.33}
    >>> relative_depths(Engine(nested_model, ["backbone/conv1", "backbone/conv2"]))
    {'backbone/conv1': 0.0, 'backbone/conv2': 0.33}
    """
    import keras

    def layer_at(path: str) -> Any:
        obj = engine.model
        for part in path.split("/"):
            obj = obj.get_layer(part)
        return obj

    order = [p for p in engine.available_layers
             if not isinstance(layer_at(p), (keras.layers.InputLayer, keras.Model))]
    last = max(len(order) - 1, 1)
    return {layer: order.index(layer) / last if layer in order else np.nan for layer in engine.layers}


def _bootstrap_counts(n: int, n_boot: int, seed: int) -> np.ndarray:
    """``(n_boot, n)`` multinomial counts: how often each example is drawn in each resample."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def _profile_matrix(outcome: Outcome, cls: str, concept: str, layers: Sequence[str]) -> np.ndarray:
    """``(n_examples, n_layers)`` per-example UBS ratios (NaN where a gradient is zero)."""
    return np.stack([np.asarray(outcome.per_example[(cls, layer, concept)]["ubs_ratio"], dtype=np.float64)
                     for layer in layers], axis=1)


def _resampled_means(ratios: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """``(n_boot, n_layers)`` UBS of each layer in each resample (NaN ratios left out, as in the table)."""
    valid = np.isfinite(ratios)
    total = counts @ np.where(valid, ratios, 0.0)
    weight = counts @ valid.astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / weight


def _sd(values: np.ndarray) -> np.ndarray:
    """Standard deviation across layers (last axis), ddof=1; 0 for a single layer."""
    if values.shape[-1] < 2:
        return np.zeros(values.shape[:-1])
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample with < 2 defined layers: NaN, dropped later
        return np.nanstd(values, axis=-1, ddof=1)


def _rsd(values: np.ndarray) -> np.ndarray:
    """Spread across layers relative to the mean |UBS| (last axis); NaN where every UBS is 0."""
    with np.errstate(invalid="ignore", divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        scale = np.nanmean(np.abs(values), axis=-1)
        return np.where(scale > 0, _sd(values) / scale, np.nan)


def _interval(samples: np.ndarray) -> tuple[float, float]:
    samples = samples[np.isfinite(samples)]
    if samples.size == 0:
        return np.nan, np.nan
    return float(np.percentile(samples, 2.5)), float(np.percentile(samples, 97.5))


def consistency_table(frame: pd.DataFrame, outcomes: Mapping[str, Outcome], *, n_boot: int = 1000,
                      seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per (model, class, concept): the profile across depth and its consistency, and model differences.

    Parameters
    ----------
    frame : pandas.DataFrame
        The tidy comparison table (:meth:`Comparison.to_frame`).
    outcomes : mapping
        ``{model: Outcome}`` with per-example UBS ratios.
    n_boot : int
        Bootstrap resamples of the class examples.
    seed : int
        Seeds the resamples (the same resamples for every model, layer and concept of a class).

    Returns
    -------
    tuple of pandas.DataFrame
        The consistency table (:data:`CONSISTENCY_COLUMNS`) and the differences of every model from
        the first (:data:`DIFFERENCE_COLUMNS`).

    Examples
    --------
    >>> consistency, differences = consistency_table(comparison.to_frame(), comparison.outcomes)
    >>> consistency.shape, differences.shape  # 2 models x 2 classes x 2 concepts; nested vs planted
    ((8, 13), (4, 14))
    """
    models = list(outcomes)
    rows, diffs = [], []
    boot: dict[tuple[str, str, str], tuple[np.ndarray, np.ndarray]] = {}
    for cls in dict.fromkeys(frame["class"]):
        files = {m: outcomes[m].example_files.get(cls, []) for m in models}
        n = len(next(iter(files.values())))
        counts = _bootstrap_counts(n, n_boot, seed) if n else np.zeros((0, 0))
        for model in models:
            part = frame[(frame["model"] == model) & (frame["class"] == cls)]
            for concept in dict.fromkeys(part["concept"]):
                sub = part[part["concept"] == concept].sort_values("depth", kind="stable")
                layers = list(sub["layer"])
                ubs = sub["ubs"].to_numpy(dtype=float)
                ratios = _profile_matrix(outcomes[model], cls, concept, layers)
                own = counts if len(ratios) == n else _bootstrap_counts(len(ratios), n_boot, seed)
                means = _resampled_means(ratios, own)
                sd_samples, rsd_samples = _sd(means), _rsd(means)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # a resample with no defined layer
                    boot[(model, cls, concept)] = (sd_samples, rsd_samples, np.nanmean(means, axis=1))
                low, high = _interval(sd_samples)
                rlow, rhigh = _interval(rsd_samples)
                rows.append({"model": model, "class": cls, "concept": concept, "n_layers": len(layers),
                             "ubs_mean": float(np.nanmean(ubs)) if len(ubs) else np.nan,
                             "ubs_sd": float(_sd(ubs[None, :])[0]), "ubs_sd_ci_low": low, "ubs_sd_ci_high": high,
                             "ubs_rsd": float(_rsd(ubs[None, :])[0]), "ubs_rsd_ci_low": rlow,
                             "ubs_rsd_ci_high": rhigh,
                             "n_significant_layers": int(sub["significant"].sum()),
                             "profile": " ".join(f"{la}:{u:+.2f}" for la, u in zip(layers, ubs))})
        reference = models[0]
        for model in models[1:]:
            paired = files[model] == files[reference]
            for concept in dict.fromkeys(frame[(frame["class"] == cls) & (frame["model"] == model)]["concept"]):
                if (reference, cls, concept) not in boot or (model, cls, concept) not in boot:
                    continue
                ref_row = next(r for r in rows if (r["model"], r["class"], r["concept"]) == (reference, cls, concept))
                row = next(r for r in rows if (r["model"], r["class"], r["concept"]) == (model, cls, concept))
                sd_a, rsd_a, mean_a = boot[(model, cls, concept)]
                sd_b, rsd_b, mean_b = boot[(reference, cls, concept)]
                if not paired:  # different examples: independent resamples, so pair them at random
                    order = np.random.default_rng(seed + 1).permutation(len(sd_b))
                    sd_b, rsd_b, mean_b = sd_b[order], rsd_b[order], mean_b[order]
                sd_lo, sd_hi = _interval(sd_a - sd_b)
                rsd_lo, rsd_hi = _interval(rsd_a - rsd_b)
                mean_lo, mean_hi = _interval(mean_a - mean_b)
                diffs.append({"model": model, "reference": reference, "class": cls, "concept": concept,
                              "ubs_sd_diff": row["ubs_sd"] - ref_row["ubs_sd"], "ubs_sd_diff_ci_low": sd_lo,
                              "ubs_sd_diff_ci_high": sd_hi, "ubs_rsd_diff": row["ubs_rsd"] - ref_row["ubs_rsd"],
                              "ubs_rsd_diff_ci_low": rsd_lo, "ubs_rsd_diff_ci_high": rsd_hi, "ubs_mean_diff": row["ubs_mean"] - ref_row["ubs_mean"],
                              "ubs_mean_diff_ci_low": mean_lo, "ubs_mean_diff_ci_high": mean_hi, "paired": paired})
    return (pd.DataFrame(rows, columns=CONSISTENCY_COLUMNS), pd.DataFrame(diffs, columns=DIFFERENCE_COLUMNS))


class Comparison(HtmlPage):
    """Several models scored on one shared design: tidy table, profiles, consistency, figures, HTML.

    ``results[model]`` is each model's :class:`~concepts.scoring.ScoreResult` (maps, per-example
    rows and plots work there as for a single model).

    Examples
    --------
    >>> cmp = concepts.compare({"planted": model, "nested": nested_model},
    ...                        layers={"planted": ["conv1", "conv2"],
    ...                                "nested": ["backbone/conv1", "backbone/conv2"]}, data="data")
    >>> cmp.consistency()[["model", "class", "concept", "n_significant_layers", "profile"]].head(2)
         model  class     concept  n_significant_layers                    profile
    0  planted  other  horizontal                     2  conv1:-19.12 conv2:-27.06
    1  planted  other    vertical                     2  conv1:+16.48 conv2:+25.81
    >>> page = cmp.to_html("comparison/compare.html", figures={})  # save("comparison/") adds CSVs and figures
    >>> page.startswith("<!DOCTYPE html>")
    True
    """

    def __init__(self, results: Mapping[str, ScoreResult], depths: Mapping[str, Mapping[str, float]], *,
                 n_boot: int = 1000, seed: int = 0, title: str = "Model comparison") -> None:
        self.results = dict(results)
        self.depths = {m: dict(d) for m, d in depths.items()}
        self.title = title
        self.seed = seed
        self.n_boot = n_boot
        self._consistency: tuple[pd.DataFrame, pd.DataFrame] | None = None

    @property
    def models(self) -> list[str]:
        """Model names, in the order given."""
        return list(self.results)

    @property
    def outcomes(self) -> dict[str, Outcome]:
        """``{model: Outcome}`` behind each result."""
        return {m: r._outcome for m, r in self.results.items()}

    def to_frame(self) -> pd.DataFrame:
        """The tidy table: every model's rows, with ``model``, ``depth`` and ``depth_rank`` columns.

        ``depth`` is the layer's relative depth in its model; ``depth_rank`` its position among the
        model's probed layers (0 = shallowest probed, 1 = deepest).
        """
        frames = []
        for model, result in self.results.items():
            table = result.to_frame()
            depth = self.depths[model]
            ranked = sorted(depth, key=depth.get)
            rank = {la: (i / max(len(ranked) - 1, 1)) for i, la in enumerate(ranked)}
            table.insert(0, "model", model)
            table.insert(3, "depth", table["layer"].map(depth).astype(float))
            table.insert(4, "depth_rank", table["layer"].map(rank).astype(float))
            frames.append(table)
        return pd.concat(frames, ignore_index=True)

    def consistency(self) -> pd.DataFrame:
        """Per (model, class, concept): number of layers, mean UBS, ``ubs_sd`` (variation across
        layers) and ``ubs_rsd`` (the same over the mean |UBS|) with bootstrap intervals, significant
        layers, and the profile as text."""
        return self._tables()[0].copy()

    def differences(self) -> pd.DataFrame:
        """Each model minus the first one, per (class, concept): ``ubs_sd``, ``ubs_rsd`` and mean UBS, with
        bootstrap intervals (paired when both saw the same examples)."""
        return self._tables()[1].copy()

    def aligned(self, value: str = "ubs") -> pd.DataFrame:
        """The first model's layers, each with every other model's layer nearest in relative depth.

        One row per (class, concept, reference layer): ``depth``, then ``<model>_layer`` and
        ``<model>_<value>`` per model, and ``<model>_diff`` (minus the reference).
        """
        frame = self.to_frame()
        reference = self.models[0]
        out = []
        ref_rows = frame[frame["model"] == reference]
        for _, row in ref_rows.iterrows():
            item = {"class": row["class"], "concept": row["concept"], "depth": row["depth"],
                    f"{reference}_layer": row["layer"], f"{reference}_{value}": row[value]}
            for model in self.models[1:]:
                cand = frame[(frame["model"] == model) & (frame["class"] == row["class"])
                             & (frame["concept"] == row["concept"])]
                if cand.empty:
                    continue
                best = cand.iloc[int(np.argmin(np.abs(cand["depth"].to_numpy(float) - row["depth"])))]
                item[f"{model}_layer"] = best["layer"]
                item[f"{model}_{value}"] = best[value]
                item[f"{model}_diff"] = best[value] - row[value]
            out.append(item)
        return pd.DataFrame(out)

    def _tables(self) -> tuple[pd.DataFrame, pd.DataFrame]:
        if self._consistency is None:
            self._consistency = consistency_table(self.to_frame(), self.outcomes, n_boot=self.n_boot, seed=self.seed)
        return self._consistency

    # ------------------------------------------------------------------ figures and pages
    def plot_heatmaps(self, value: str = "ubs", class_name: str | None = None):
        """Side-by-side heatmaps (one per model) of concept × layer, layers by relative depth."""
        from .explain_plots import plot_comparison_heatmaps

        return plot_comparison_heatmaps(self.to_frame(), value=value, class_name=class_name)

    def plot_profiles(self, value: str = "ubs", class_name: str | None = None):
        """Each concept's profile across relative depth, one line per model."""
        from .explain_plots import plot_comparison_profiles

        return plot_comparison_profiles(self.to_frame(), value=value, class_name=class_name)

    def figures(self) -> dict[str, Any]:
        """Heatmaps and profiles for every class, keyed by caption."""
        figs: dict[str, Any] = {}
        for cls in dict.fromkeys(self.to_frame()["class"]):
            figs[f"UBS per concept and layer, each model side by side, class '{cls}' (hatched: not significant)"] = \
                self.plot_heatmaps(class_name=cls)
            figs[f"UBS across relative depth, one line per model, class '{cls}'"] = self.plot_profiles(class_name=cls)
        return figs

    def notes(self) -> list[str]:
        """Plain sentences: which model's concepts are more consistent across layers (by ``ubs_rsd``)."""
        sentences = []
        for _, d in self.differences().iterrows():
            lo, hi = d["ubs_rsd_diff_ci_low"], d["ubs_rsd_diff_ci_high"]
            if np.isfinite(lo) and (lo > 0 or hi < 0):
                verdict = "less" if lo > 0 else "more"
                sentences.append(f"Class '{d['class']}', concept '{d['concept']}': model '{d['model']}' is {verdict} "
                                 f"consistent across layers than '{d['reference']}' (difference in relative UBS "
                                 f"spread {d['ubs_rsd_diff']:+.2f}, 95% interval {lo:+.2f} to {hi:+.2f}).")
        if not sentences:
            sentences.append("No model differs from the first in how consistently it uses a concept across layers "
                             "(every 95% interval of the difference in relative UBS spread contains 0).")
        return sentences

    # ------------------------------------------------------------------ to_html and save: HtmlPage
    _page_name = "compare"

    def _page(self) -> dict[str, Any]:
        """What the HTML page shows besides the figures (see :class:`concepts.report_html.HtmlPage`)."""
        fmt = {"float_format": lambda v: f"{v:.3g}", "index": False, "border": 0, "escape": True}
        sections = {"Consistency across layers (per model, class and concept)":
                    '<div class="tablewrap">' + self.consistency().to_html(**fmt) + "</div>",
                    "Differences from the first model": '<div class="tablewrap">'
                    + self.differences().to_html(**fmt) + "</div>",
                    "Layers aligned by relative depth": '<div class="tablewrap">'
                    + self.aligned().to_html(**fmt) + "</div>"}
        provenance = {"models": {m: {"layers": {la: round(d, 3) for la, d in self.depths[m].items()},
                                     **r.provenance} for m, r in self.results.items()},
                      "bootstrap": {"n_boot": self.n_boot, "seed": self.seed}}
        return dict(table=self.to_frame(), title=self.title, provenance=provenance,
                    headline=f"Models compared: {', '.join(self.models)}", notes=self.notes(),
                    significance=self.results[self.models[0]].significance, sections=sections)

    def _csv_files(self) -> dict[str, tuple[str, pd.DataFrame]]:
        return {name: (f"{name}.csv", frame) for name, frame in (
            ("compare", self.to_frame()), ("consistency", self.consistency()), ("differences", self.differences()))}

    def __repr__(self) -> str:
        view = self.consistency()[["model", "class", "concept", "ubs_mean", "ubs_sd", "ubs_sd_ci_low",
                                   "ubs_sd_ci_high", "profile"]]
        return (f"<Comparison of {', '.join(self.models)}>\n"
                + view.to_string(index=False, float_format=lambda v: f"{v:.3g}"))

    def _repr_html_(self) -> str:
        return (f"<p><b>Comparison</b> of {html_lib.escape(', '.join(self.models))}</p>"
                + self.consistency().to_html(index=False, float_format=lambda v: f"{v:.3g}"))


def _layers_per_model(models: Mapping[str, Any], layers: Any) -> dict[str, list[str]]:
    if isinstance(layers, Mapping):
        missing = [m for m in models if m not in layers]
        if missing:
            raise ValueError(f"layers= names no layers for model(s) {missing}; give layers={{model name: [layer, "
                             "...]}} for every model, or one list of layer names that every model has.")
        unknown = [m for m in layers if m not in models]
        if unknown:
            raise ValueError(f"layers= names model(s) {unknown} that are not among the models {list(models)}.")
        result = {m: [layers[m]] if isinstance(layers[m], str) else list(layers[m]) for m in models}
    elif isinstance(layers, str):
        result = {m: [layers] for m in models}
    else:
        result = {m: list(layers) for m in models}
    for model, names in result.items():
        if not names:
            raise ValueError(f"Model {model!r} has no layer to score; name at least one.")
    return result


@uses_config
def compare(models: Mapping[str, Any], layers: Mapping[str, Sequence[str]] | Sequence[str], concepts: Any = None,
            classes: Sequence[str | int] | None = None, *, data: str | os.PathLike | None = None,
            measures: Sequence[Any] | None = None, examples: Any = None,
            class_names: Sequence[str] | Mapping[str, int] | None = None, random: Any = None, n_random: int = 20,
            null_pairs: str = "auto", statistic: str = DEFAULT_STATISTIC, target: str = "logit", seed: int = 0,
            preprocess: Callable | None = None, batch_size: int = 32, classifier: Any = None,
            cav: str = DEFAULT_CAV, C: float = 1.0, compat: str | None = None, robustness: bool = True,
            alpha: float | str = "auto", alpha_scale: float = 0.1, test_size: float = 0.3,
            correction: str = "holm", significance: float = 0.05, n_directions: int = 1000,
            pool: str | bool = "auto", n_boot: int = 1000, cache_dir: str | os.PathLike | bool | None = None,
            title: str = "Model comparison", progress: bool = True, config: Config | None = None) -> Comparison:
    """Score the same concepts on the same images for several models, and compare them.

    Parameters
    ----------
    models : mapping
        ``{name: keras.Model}``, at least two (the first is the reference for differences).
    layers : mapping or sequence
        ``{name: [layer, ...]}`` per model (in model order), or one list every model has.
    concepts, classes, data, measures, examples, class_names, random, n_random, null_pairs, statistic, target,
    seed, preprocess, batch_size, classifier, cav, C, compat, robustness, alpha, alpha_scale, test_size,
    correction, significance,
    n_directions, pool, cache_dir, progress
        As in :func:`concepts.report` (each model gets its own correction, as in its own report).
    n_boot : int
        Bootstrap resamples for the consistency intervals.
    title : str
        Title of the HTML page.
    config : concepts.Config, optional
        A reusable setting of the analysis options (``on_error`` and ``memory_budget`` too); keywords
        given explicitly in the call win over it.

    Returns
    -------
    Comparison
        ``to_frame()`` (tidy, with a ``model`` column), ``consistency()``, ``differences()``,
        ``aligned()``, figures, ``to_html()`` and ``save()``.

    Examples
    --------
    >>> cmp = concepts.compare({"planted": model, "nested": nested_model},
    ...                        layers={"planted": ["conv1", "conv2"],
    ...                                "nested": ["backbone/conv1", "backbone/conv2"]}, data="data")
    >>> cmp.to_frame().groupby("model", sort=False)["significant"].sum()
    model
    planted    8
    nested     8
    Name: significant, dtype: int64
    >>> settings = concepts.Config(correction="bh")
    >>> same = concepts.compare({"a": model, "b": model}, ["conv2"], data="data", config=settings)
    >>> float(same.differences()["ubs_mean_diff"].abs().max())  # one model under two names: no difference
    0.0
    """
    from .reporting import concept_list_for

    assert config is not None  # resolved by @uses_config from the keywords above

    if not isinstance(models, Mapping) or len(models) < 2:
        raise ValueError("compare() needs a dict of at least two models, e.g. {'baseline': model_a, "
                         "'candidate': model_b}; to compare a model with itself, pass it under two names.")
    names = [str(m) for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"Model names must be distinct; got {names}.")
    per_model = _layers_per_model(models, layers)
    concept_list = concept_list_for(concepts, measures, data)
    options = config.to_options()
    kwargs = dict(data=data, examples=examples, classes=classes, class_names=class_names, random=random,
                  target=config.target, preprocess=preprocess, batch_size=config.batch_size,
                  cache_dir=config.cache_dir, options=options, on_error=config.on_error,
                  recursive=config.recursive)
    results: dict[str, ScoreResult] = {}
    depths: dict[str, dict[str, float]] = {}
    shared: tuple[Analysis, dict[str, Any]] | None = None
    for name, model in models.items():
        name = str(name)
        try:
            if shared is not None and _same_input(shared[0].engine, model):
                # One shared design: the resolved classes, concepts, measures and random sets of the first
                # model serve every model with the same input, so nothing is drawn or measured twice.
                engine = Engine(model, per_model[name], target=config.target, batch_size=config.batch_size,
                                cache=shared[0].cache, progress=config.progress)
                analysis, inputs = Analysis(engine, options, cache=shared[0].cache), shared[1]
            else:
                # Another input size: the same seeded draw over the same folders, bound to this model.
                analysis, inputs = prepare(model, per_model[name], concept_list, **kwargs)
                shared = shared or (analysis, inputs)
        except UnknownLayerError as exc:
            # Saved models are often all called 'functional': say which of the compared ones it is.
            raise UnknownLayerError(f"In the comparison, model {name!r}: {exc.args[0]}") from None
        outcome = analysis.run(inputs["classes"], inputs["folder_concepts"], inputs["measure_concepts"],
                               inputs["random_sets"])
        results[name] = ScoreResult(outcome, context=map_context(analysis, inputs, preprocess))
        depths[name] = relative_depths(analysis.engine)
    return Comparison(results, depths, n_boot=n_boot, seed=config.seed, title=title)


def _same_input(engine: Engine, model: Any) -> bool:
    shape = tuple(model.inputs[0].shape[1:]) if getattr(model, "inputs", None) else None
    return shape == tuple(engine.input_shape)


__all__ += ["CONSISTENCY_COLUMNS", "DIFFERENCE_COLUMNS"]
