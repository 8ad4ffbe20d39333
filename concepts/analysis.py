"""Orchestration behind :func:`concepts.score` and :func:`concepts.report`: engine passes, caches,
progress and provenance around the array-level core in :mod:`probes`.

Three phases, so that memory does not grow with the number of class examples. Phase 1: one engine pass
per concept, random and measured image set gives the activations of every requested layer, and every
probe (CAVs, random-vs-random CAVs, RCVs and their nulls, the robustness directions) is fitted on them.
Phase 2: the class examples go through the gradient pass -- in one piece when they fit
``memory_budget``, batch by batch otherwise, or sharded over a Dask cluster -- and only their
projections on every vector are kept (:mod:`probes.streaming`): running column statistics, the
unit-gradient sum of the UBS null, and a few numbers per example. Phase 3 computes the statistics from
those. Then one multiple-comparison correction across every row computed together.

What is computed, and why, lives with the code that computes it, none of which needs an engine or
TensorFlow:

* :mod:`probes.design` -- set design: null pairs of random sets, CAV tasks and resamples, task seeds,
  the minimum-size rule;
* :mod:`probes.cav_rows` -- CAV penalty, fits, consensus and robustness directions, and the CAV rows
  (estimators and the ``"shift"`` / ``"ubs"`` / ``"score"`` statistics);
* :mod:`probes.rcv_rows` -- RCV fits and rows (Br, and its UBS fallback);
* :mod:`probes.row_stats` -- one row's test, intervals, UBS and direction agreement.

:class:`Analysis` only runs the engine, keeps the caches (CAV vectors, and the whole outcome through
:mod:`concepts.outcome_store`), shows progress, calls the core and assembles the table.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import pandas as pd

from probes.blas_threads import map_side_by_side, usable_cores
from probes.cache import ActivationCache
from probes.cache_writer import hold_writes
from probes.cav_rows import (DEFAULT_CAV, N_RESAMPLES, ROBUSTNESS_METHODS, CAVFitter, cav_rows, choose_alpha,
                             fit_cav_layer)
from probes.design import AUTO_PARTNERS, cav_tasks, flat, null_pairs, seed_for, stack_pool
from probes.engine import Engine
from probes.memory import Budget, memmap_allocator, parse_bytes, physical_memory
from probes.progress import progress
from probes.rcv_rows import fit_rcv, rcv_features, rcv_rows, use_pooling
from probes.reuse import NULL_SUMMARIES, RANDOM_VARIANCES, keep_nulls, known_nulls
from probes.row_stats import COLUMNS, DEFAULT_STATISTIC, MIN_RESAMPLE_AGREEMENT, RowSettings, total_variance
from probes.sources import hash_array
from probes.stats import adjust_pvalues
from probes.streaming import ProjectionSpace, project_batches

from .config import Config
from .image_files import resolve_files
from .outcome_store import ENCODING_VERSION, analysis_provenance, decode_outcome, encode_outcome

# Re-exported: other modules, tests and notebooks import these from here.
__all__ = ["COLUMNS", "ROBUSTNESS_METHODS", "N_RESAMPLES", "MIN_RESAMPLE_AGREEMENT", "DEFAULT_CAV",
           "DEFAULT_STATISTIC", "AUTO_PARTNERS", "Options", "FolderConcept", "MeasureConcept", "ClassExamples",
           "Outcome", "Analysis", "parse_bytes", "tcav_classifier", "summary_text"]
_null_pairs = null_pairs
_memmap_allocator = memmap_allocator
_seed_for = seed_for


#: Config options settled before an analysis runs (inputs, engine and cache); the rest are its Options.
_RESOLVED_BEFORE = frozenset({"target", "batch_size", "cache_dir", "on_error", "recursive"})


def _compat_rule(self: Any) -> None:
    if self.compat == "tcav":
        # The original procedure (Kim et al. 2018, tcav 0.2): sign-count score, Student's t-test
        # against one fixed random set's runs, no multiple-comparison correction.
        self.statistic = "score"
        self.correction = "none"


# Every knob of an analysis, with the defaults of concepts.Config (one place for defaults), plus the
# internal number of bootstrap resamples; concepts.score documents each one.
Options = dataclasses.make_dataclass(
    "Options",
    [(f.name, f.type, dataclasses.field(default=f.default)) for f in dataclasses.fields(Config)
     if f.name not in _RESOLVED_BEFORE] + [("n_boot", int, dataclasses.field(default=2000))],
    namespace={"__post_init__": _compat_rule,
               "__doc__": "Every knob of an analysis (:class:`concepts.Config`'s defaults); built by "
                          ":meth:`concepts.Config.to_options`."})
Options.__module__ = __name__  # so that it pickles (Dask workers) and prints as concepts.analysis.Options


@dataclass
class FolderConcept:
    """A concept given as a set of images (fitted as a CAV)."""

    name: str
    images: Any  # an ArraySource


@dataclass
class MeasureConcept:
    """A concept given as a continuous measure per image (fitted as an RCV)."""

    name: str
    images: Any  # an ArraySource over the measured images, aligned with ``values``
    values: np.ndarray
    description: str = ""


@dataclass
class ClassExamples:
    """The examples of one model class."""

    name: str
    index: int
    images: Any  # an ArraySource


@dataclass
class Outcome:
    """What an analysis produced: the tidy table plus the raw material behind it."""

    table: pd.DataFrame
    runs: dict[tuple[str, str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    scatter: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)
    # Material for concept maps, per-example rows and model comparison (concepts/maps.py,
    # concepts/per_example.py, concepts/comparison.py); filled in phases 1 and 3 of Analysis.run. Plain dicts
    # of numpy arrays and lists of strings, so that a JSON + npz store can hold them.
    #   vectors[(layer, concept)] = {"consensus": unit vector (d,), "pooled": bool array ()}
    #   per_example[(class, layer, concept)] = {"sensitivity", "positive_share", "presence", "ubs_ratio"}, each (n,)
    #   example_files[class] = one label per class example (its path, or "<class>[i]" for arrays)
    vectors: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    per_example: dict[tuple[str, str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    example_files: dict[str, list[str]] = field(default_factory=dict)


class _LayerPlan:
    """Phase 1's output for one layer: the projection spaces (``"flat"``; ``"pooled"`` for RCVs fitted on
    pooled channels) with every vector registered, and what the rows need from the fits."""

    def __init__(self) -> None:
        self.spaces: dict[str, ProjectionSpace] = {}
        self.cav: dict[str, Any] | None = None
        self.rcv: dict[str, dict[str, Any]] = {}

    def space(self, name: str) -> ProjectionSpace:
        return self.spaces.setdefault(name, ProjectionSpace())



class Analysis:
    """Runs one analysis: engine passes, probes, sensitivities and statistics.

    Examples
    --------
    :func:`concepts.scoring.prepare` resolves the inputs and builds the engine and the analysis:

    >>> from concepts.config import Config
    >>> from concepts.scoring import prepare
    >>> analysis, inputs = prepare(model, ["conv2"], [(None, "data/concepts/horizontal")],
    ...                            options=Config(n_random=5, progress=False).to_options(), cache_dir=False)
    >>> outcome = analysis.run(inputs["classes"], inputs["folder_concepts"], inputs["measure_concepts"],
    ...                        inputs["random_sets"])
    >>> outcome.table[["class", "layer", "concept", "significant"]]
         class  layer     concept  significant
    0    other  conv2  horizontal         True
    1  striped  conv2  horizontal         True
    """

    def __init__(self, engine: Engine, options: Options, cache: ActivationCache | None = None,
                 client: Any = None) -> None:
        self.engine = engine
        self.client = client  # a dask.distributed.Client: class examples' gradient passes are sharded over it
        self.options = options
        self.cache = cache
        self.cav_alphas: dict[str, float] = {}
        self._content_keys: dict[int, str] = {}
        self._reset_examples()

    def _key(self, source: Any) -> str:
        """A source's content key, computed once per analysis (it hashes every file)."""
        if id(source) not in self._content_keys:
            self._content_keys[id(source)] = source.content_key
        return self._content_keys[id(source)]

    # ---------------------------------------------------------------- engine passes
    def _activations(self, source: Any) -> dict[str, np.ndarray]:
        return self.engine.run(source).activations

    def _project(self, example: ClassExamples, plans: dict[str, "_LayerPlan"], budget: Budget,
                 known: dict | None = None) -> dict:
        """Phase 2 for one class: its examples' gradients (and activations, for presence) projected on every
        vector of every layer's plan, batch by batch. Returns ``{layer: {space: Projections}}``.

        With a Dask client, shards of the examples are projected on the workers (only the projections come
        back). Otherwise, when the class's activations and gradients fit in what is left of the memory budget
        they come from :meth:`Engine.run` (cached, so concept maps of these examples reuse them) and are
        projected in one piece; if not, :meth:`Engine.stream` yields one batch at a time and nothing of size
        n × d is kept. All give the same statistics (the same numbers, summed in another order)."""
        spaces = {layer: plan.spaces for layer, plan in plans.items()}
        if self.client is not None:
            from probes.distributed import project_on_cluster

            return project_on_cluster(self.client, self.engine, example.images, example.index, spaces)
        per_example = 2 * 4 * sum(max(self.engine.layer_widths[layer], 0) for layer in self.engine.layers)
        if budget.take(len(example.images) * per_example):
            result = self.engine.run(example.images, class_index=example.index)
            # Projected in the engine's batches, exactly as a streamed or sharded run projects them: a sign
            # count near S = 0 must not depend on how the rows were blocked in the matrix product.
            n, size = len(example.images), self.engine.batch_size
            batches = (({layer: result.activations[layer][i:i + size] for layer in self.engine.layers},
                        {layer: result.gradients[layer][i:i + size] for layer in self.engine.layers})
                       for i in range(0, n, size))
            return project_batches(batches, spaces, known)
        return project_batches(self.engine.stream(example.images, example.index), spaces, known)

    def _null_keys(self, example: ClassExamples, plans: dict[str, "_LayerPlan"]) -> tuple[dict, dict]:
        """Each layer's null-summary key and null columns (:mod:`probes.reuse`); none with a Dask client."""
        keys, cols = {}, {}
        for layer, plan in plans.items():
            if plan.cav is not None and self.client is None and plan.cav["null_keys"]:
                keys[layer] = NULL_SUMMARIES.key(self.engine.fingerprint, layer, self.engine.target, example.index,
                                                 self._key(example.images), self.engine.batch_size,
                                                 plan.cav["null_keys"])
                cols[layer] = plan.cav["null_cols"]
        return keys, cols

    def _random_activations(self, random_sets: Sequence[Any], tick) -> tuple[dict[str, np.ndarray], list[np.ndarray]]:
        """Activations of the distinct random images, and each random set's rows among them.

        Random sets drawn from one pool overlap; one engine pass over the union of their files
        (cached by its content like any set) replaces one pass per set, and the CAV pool holds each
        image once, so its Gram matrix grows with the distinct images, not with the sets. Sources
        that are not file-based image sets are passed through the engine one by one and stacked.
        """
        from .sets import ImageSet

        file_sets = [s for s in random_sets if isinstance(s, ImageSet)]
        same_binding = len({(tuple(s.input_shape), id(s.preprocess)) for s in file_sets}) == 1
        # Random-set activations are the one part of phase 1 that grows with the archive (many large sets):
        # beyond the memory budget they go to memory-mapped files, read back one layer at a time.
        width = sum(max(self.engine.layer_widths[layer], 0) for layer in self.engine.layers)
        if len(file_sets) != len(random_sets) or not same_binding:
            sizes = np.cumsum([0] + [len(s) for s in random_sets])
            allocate = memmap_allocator() if 4 * width * sizes[-1] > parse_bytes(self.options.memory_budget) \
                else (lambda kind, path, shape: np.empty(shape, np.float32))
            per_set = [tick(self.engine.run(s, allocate=allocate).activations) for s in random_sets]
            rows = [np.arange(sizes[j], sizes[j + 1]) for j in range(len(random_sets))]
            stacked = {}
            for layer in self.engine.layers:
                stacked[layer] = allocate("act", layer, (int(sizes[-1]), *per_set[0][layer].shape[1:]))
                for j, acts in enumerate(per_set):
                    stacked[layer][sizes[j]:sizes[j + 1]] = acts[layer]
            return stacked, rows
        first = file_sets[0]
        resolved = resolve_files(f for s in file_sets for f in s.files)
        union = sorted(set(resolved.values()))
        pool = ImageSet(union, name="random pool", preprocess=first.preprocess).bind(first.input_shape,
                                                                                     batch_axis=False)
        spill = 4 * width * len(pool) > parse_bytes(self.options.memory_budget)
        acts = self.engine.run(pool, allocate=memmap_allocator() if spill else None).activations
        position = {f: i for i, f in enumerate(union)}
        rows = [tick(np.array([position[resolved[f]] for f in s.files])) for s in file_sets]
        return acts, rows

    # ---------------------------------------------------------------- main entry
    def run(self, classes: Sequence[ClassExamples], folder_concepts: Sequence[FolderConcept],
            measure_concepts: Sequence[MeasureConcept], random_sets: Sequence[Any]) -> Outcome:
        """The analysis: phases 1-3 and the table (see the module docstring).

        Cache entries put meanwhile are written once it is done (:func:`probes.cache_writer.hold_writes`):
        on a small machine the writes compete with the matrix products for the same cores.
        """
        with hold_writes():
            return self._run(classes, folder_concepts, measure_concepts, random_sets)

    def _run(self, classes: Sequence[ClassExamples], folder_concepts: Sequence[FolderConcept],
             measure_concepts: Sequence[MeasureConcept], random_sets: Sequence[Any]) -> Outcome:
        opts = self.options
        batches_before = self.engine.n_batches_run
        result_key = self._result_key(classes, folder_concepts, measure_concepts, random_sets)
        cached = self._cached_outcome(result_key)
        if cached is not None:
            return cached
        rows: list[dict[str, Any]] = []
        self._reset_examples()
        runs: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}
        scatter: dict[tuple[str, str], pd.DataFrame] = {}

        # One bar over every image set; the engine's own per-batch bar only for sets of many batches.
        n_sets = (len(classes) + len(folder_concepts) + len(measure_concepts)
                  + (len(random_sets) if folder_concepts else 0))
        bar = progress(range(n_sets), enabled=opts.progress, desc="activations and gradients", unit="set")
        ticks = iter(bar)

        def tick(value):
            next(ticks, None)
            return value

        # Phase 1: every concept vector (CAVs, random-vs-random CAVs, RCVs and their nulls) from the concept,
        # random and measured images' activations. Nothing here depends on the class examples.
        concept_acts = {c.name: tick(self._activations(c.images)) for c in folder_concepts}
        random_acts = self._random_activations(random_sets, tick) if folder_concepts else ({}, [])
        measure_acts = {m.name: tick(self._activations(m.images)) for m in measure_concepts}
        plans = {layer: _LayerPlan() for layer in self.engine.layers}
        # The layers' CAVs side by side where memory allows (probes.blas_threads.map_side_by_side: the same
        # bits either way); what they add to the analysis is taken in layer order.
        cav_fits = map_side_by_side(
            lambda layer: self._cav_fit(layer, folder_concepts, concept_acts, random_sets, random_acts, plans[layer]),
            self.engine.layers if folder_concepts else [], self._cav_workers(folder_concepts, random_acts),
            progress=opts.progress and bool(folder_concepts), desc="concept vectors",
            costs=[_pool_width(random_acts[0], layer) for layer in self.engine.layers])
        for layer, fitted in progress(list(zip(self.engine.layers, cav_fits or [None] * len(plans))),
                                      enabled=opts.progress and bool(measure_concepts), desc="regression vectors"):
            plan = plans[layer]
            if fitted is not None:
                plan.cav, consensus, self.cav_alphas[layer] = fitted
                for name, vector in consensus.items():
                    self._vectors[(layer, name)] = {"consensus": vector, "pooled": np.array(False)}
            for measure in measure_concepts:
                plan.rcv[measure.name] = self._rcv_fit(layer, measure, measure_acts[measure.name], scatter, plan)
        del concept_acts, random_acts, measure_acts
        # Phase 2: each class's examples through the gradient pass, keeping only projections on those vectors
        # (held in memory when the whole pass fits the memory budget, streamed batch by batch otherwise).
        # The random-vs-random CAVs' columns are projected only where no earlier call (this process or the
        # store) has their summary for these examples already.
        budget = Budget(opts.memory_budget)
        projections = {}
        for c in classes:
            null_keys, null_cols = self._null_keys(c, plans)
            known = known_nulls(NULL_SUMMARIES, self.cache, null_keys, null_cols, len(c.images))
            projections[c.name] = tick(self._project(c, plans, budget, known))
            keep_nulls(NULL_SUMMARIES, self.cache, null_keys, null_cols, projections[c.name], known)
        next(ticks, None)

        # Phase 3: the statistics, from the projections only.
        settings = RowSettings(seed=opts.seed, n_boot=opts.n_boot, n_directions=opts.n_directions,
                               statistic=opts.statistic, target=self.engine.target)
        names = [c.name for c in folder_concepts]
        for layer in self.engine.layers:
            ubs_nulls: dict[str, np.ndarray] = {}  # one UBS null per class and feature space, shared by its rows
            plan = plans[layer]
            if folder_concepts:
                flat_proj = {c.name: projections[c.name][layer]["flat"] for c in classes}
                for name in names:
                    self._collect(layer, name, flat_proj, plan.cav["records"][name])
                rows += cav_rows(settings, layer, plan.cav, flat_proj, names, len(random_sets), runs, ubs_nulls,
                                 tcav_compat=opts.compat == "tcav")
            for measure in measure_concepts:
                fit = plan.rcv[measure.name]
                proj = {c.name: projections[c.name][layer][fit["space"]] for c in classes}
                self._collect(layer, measure.name, proj, fit["record"])
                rows += rcv_rows(settings, layer, measure.name, fit, proj, runs, ubs_nulls, n_random=opts.n_random)
        table = pd.DataFrame(rows, columns=COLUMNS)
        if len(table):
            table["q_value"] = adjust_pvalues(table["p_value"].to_numpy(dtype=float), method=opts.correction)
            table["significant"] = (table["q_value"] < opts.significance).fillna(False).astype(bool)
        provenance = analysis_provenance(self.engine, opts, self.cav_alphas, classes, folder_concepts,
                                         measure_concepts, random_sets)
        provenance["engine_batches"] = self.engine.n_batches_run - batches_before
        outcome = Outcome(table=table, runs=runs, scatter=scatter, provenance=provenance,
                          vectors=self._vectors, per_example=self._per_example,
                          example_files={c.name: _example_labels(c) for c in classes})
        self._store_outcome(result_key, outcome)
        return outcome

    # ---------------------------------------------------------------- whole-result cache
    def _result_key(self, classes, folder_concepts, measure_concepts, random_sets) -> str:
        """Everything that determines the outcome: model, layers, target, every image set's content,
        every measure's values, and every option except the progress bars."""
        opts = self.options
        parts = ["outcome-v2", ENCODING_VERSION, self.engine.fingerprint, self.engine.target, *self.engine.layers,
                 *[f"class:{c.name}:{c.index}:{self._key(c.images)}" for c in classes],
                 *[f"concept:{c.name}:{self._key(c.images)}" for c in folder_concepts],
                 *[f"measure:{m.name}:{self._key(m.images)}:{hash_array(np.asarray(m.values, float))}"
                   for m in measure_concepts],
                 *[f"random:{self._key(r)}" for r in random_sets],
                 repr({k: v for k, v in vars(opts).items() if k not in ("progress", "memory_budget")})]
        return ActivationCache.make_key(*parts)

    def _cached_outcome(self, key: str) -> Outcome | None:
        """The stored outcome (JSON + arrays, never pickle), or None; a bad entry is recomputed."""
        if self.cache is None:
            return None
        stored = self.cache.get_record(key)
        if stored is None:
            return None
        try:
            outcome = Outcome(**decode_outcome(*stored))
        except (KeyError, TypeError, ValueError) as exc:
            import warnings

            from probes.errors import CacheCorruptionWarning

            warnings.warn(f"Cached result {key[:16]}... cannot be decoded ({type(exc).__name__}: {exc}); it is "
                          "recomputed.", CacheCorruptionWarning, stacklevel=3)
            return None
        outcome.provenance["engine_batches"] = 0
        outcome.provenance["from_result_cache"] = True
        return outcome

    def _store_outcome(self, key: str, outcome: Outcome) -> None:
        if self.cache is None:
            return
        try:
            data, arrays = encode_outcome(outcome.table, outcome.runs, outcome.scatter, outcome.provenance,
                                          vectors=outcome.vectors, per_example=outcome.per_example,
                                          example_files=outcome.example_files)
        except TypeError:
            return  # something only code could rebuild (e.g. an object in provenance): not cached
        self.cache.put_record(key, data, arrays, meta={"kind": "outcome"})

    # ---------------------------------------------------------------- CAVs
    @property
    def _method(self) -> str:
        """The CAV estimator of the main runs: a batched family, or the user's classifier."""
        return "classifier" if self._classifier is not None else self.options.cav

    @property
    def _classifier(self) -> Any:
        if self.options.compat == "tcav":
            return tcav_classifier()
        return self.options.classifier

    def _cav_key(self, layer: str, ident: tuple, alpha: float, method: str) -> str:
        """Cache key of one CAV: the model, the layer, what the task is, and every option that changes it."""
        opts = self.options
        classifier = repr(self._classifier) if method == "classifier" else ""
        return ActivationCache.make_key("cav-v5", self.engine.fingerprint, layer, *map(str, ident), str(opts.seed),
                                        classifier, method, repr(float(opts.C)), repr(float(alpha)),
                                        str(opts.test_size), str(opts.compat))

    def _fitter(self) -> CAVFitter:
        opts = self.options
        return CAVFitter(method=self._method, C=opts.C, test_size=opts.test_size, classifier=self._classifier,
                         centre=opts.compat != "tcav", cache=self.cache)

    # ---------------------------------------------------------------- phase 1: concept vectors
    def _cav_workers(self, folder_concepts: Sequence[FolderConcept], random_acts: tuple) -> int:
        """How many layers' CAVs to fit at once: one per core, as far as half the memory budget (or of the
        machine's memory) holds a fit's working set (about its pool's activations: vectors, their cache
        entries, column blocks) for each."""
        layers = self.engine.layers
        if not folder_concepts or len(layers) < 2:
            return 1
        random_pool = random_acts[0]
        n_rows = sum(len(c.images) for c in folder_concepts) + (len(next(iter(random_pool.values())))
                                                                 if random_pool else 0)
        sizes = sorted((4 * n_rows * _pool_width(random_pool, layer) for layer in layers), reverse=True)
        # Without a budget (memory_budget=None), the machine's memory still bounds how many fits run at once.
        room = min(parse_bytes(self.options.memory_budget), physical_memory() or float("inf")) / 2
        workers = 1
        while workers < min(usable_cores(), len(sizes)) and sum(sizes[:workers + 1]) <= room:
            workers += 1
        return workers

    def _cav_fit(self, layer, folder_concepts, concept_acts, random_sets, random_acts,
                 plan) -> tuple[dict[str, Any], dict[str, np.ndarray], float]:
        """Phase 1 for the folder concepts of one layer (:func:`probes.cav_rows.fit_cav_layer`): every CAV,
        the robustness directions and the consensus vectors, registered in the layer's flat space.

        Returns the fit, the consensus vector of each concept and the ridge penalty; it changes nothing
        outside ``plan``, so that several layers may run at once."""
        opts = self.options
        random_pool, random_rows = random_acts
        # The random pool is not copied into the CAV pool: the fits read it block by block where it is.
        # What the random side of this layer is: a later call on the same random images and model (a new
        # concept) finds the layer's spread (RANDOM_VARIANCES) and the random rows' Gram tiles
        # (probes.shared_gram) by it.
        random_keys = tuple(self._key(r) for r in random_sets)
        random_side = (self.engine.fingerprint, layer, random_keys)
        pool, offsets, random_start = stack_pool(
            [(c.name, concept_acts[c.name][layer]) for c in folder_concepts], random_pool[layer], random_rows,
            copy=False, random_key=ActivationCache.make_key("random-side", self.engine.fingerprint, layer, *random_keys))
        # One pass over the random rows gives both the penalty's scale and the layer's spread.
        randoms = flat(random_pool[layer])
        variance = RANDOM_VARIANCES.get_or_compute(random_side, lambda: total_variance(randoms))
        alpha = choose_alpha(opts.alpha, opts.alpha_scale, randoms, variance=variance)
        tasks, idents, index = cav_tasks([(c.name, self._key(c.images)) for c in folder_concepts],
                                         list(random_keys), offsets, seed=opts.seed,
                                         relative=opts.relative,
                                         null_mode="star" if opts.compat == "tcav" else opts.null_pairs)
        keys = [self._cav_key(layer, ident, alpha, self._method) for ident in idents]
        fit, consensus = fit_cav_layer(pool, random_start, tasks, keys, index, [c.name for c in folder_concepts],
                                       alpha, self._fitter(), plan.space("flat"), seed=opts.seed,
                                       robustness=opts.robustness, key_for=self._cav_key, variance=variance)
        # What identifies the random side's null columns (probes.reuse): their CAVs' own keys.
        fit["null_keys"] = [keys[t] for t in index["__null__"]]
        fit["null_cols"] = fit["cols"][index["__null__"]]
        return fit, consensus, alpha

    def _rcv_fit(self, layer, measure, acts, scatter, plan) -> dict[str, Any]:
        """Phase 1 for one measure in one layer (:func:`probes.rcv_rows.fit_rcv`), plus its scatter table."""
        opts = self.options
        pooled = use_pooling(opts.pool, self.engine.layer_shapes[layer])
        x = rcv_features(acts[layer], pooled)
        fit = fit_rcv(x, measure.values, plan.space("pooled" if pooled else "flat"), name=measure.name, layer=layer,
                      n_random=opts.n_random, seed=opts.seed, pooled=pooled)
        probe, y = fit["probe"], np.asarray(measure.values, dtype=np.float64)
        # Out-of-fold predictions, so the scatter shows what the held-out R² in its title measures.
        files = [str(f) for f in getattr(measure.images, "files", range(len(y)))]
        scatter[(layer, measure.name)] = pd.DataFrame({"measure": y, "projection": probe.oof_predictions_,
                                                       "image": files})
        scatter[(layer, measure.name)].attrs["r2_cv"] = probe.r2_cv_
        self._vectors[(layer, measure.name)] = {"consensus": np.asarray(probe.vector_, dtype=np.float32),
                                                "pooled": np.array(bool(pooled))}
        return fit

    # ---------------------------------------------------------------- per-example material
    def _reset_examples(self) -> None:
        self._vectors: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self._per_example: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}

    def _collect(self, layer: str, concept: str, projections: dict[str, Any], record: int) -> None:
        """Keep each class's per-example numbers of a concept (concept maps, per-example rows)."""
        for name, proj in projections.items():
            self._per_example[(name, layer, concept)] = proj.per_example(record)


def _pool_width(random_pool: dict[str, np.ndarray], layer: str) -> int:
    """Activations per image of ``layer`` in the random pool (0 when the pool has none)."""
    acts = random_pool.get(layer)
    return 0 if acts is None or not len(acts) else int(flat(acts[:1]).shape[1])


def tcav_classifier() -> Any:
    """The CAV classifier of the original TCAV code (tcav 0.2): hinge-loss SGD with its hyper-parameters."""
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3)



def _example_labels(example: ClassExamples) -> list[str]:
    """One label per class example: its file path, or ``<class>[i]`` for in-memory images."""
    files = getattr(example.images, "files", None)
    if files is not None:
        return [str(f) for f in files]
    return [f"{example.name}[{i}]" for i in range(len(example.images))]



def summary_text(table: pd.DataFrame, *, max_rows: int = 20) -> str:
    """A short plain-text summary of a result table, significant rows first."""
    if table.empty:
        return "(no results)"
    view = table.assign(_abs=table["effect"].abs()).sort_values(["significant", "_abs"], ascending=[False, False])
    cols = ["class", "layer", "concept", "kind", "score", "null_mean", "ubs", "q_value", "significant"]
    n_sig = int(table["significant"].sum())
    head = f"{n_sig} of {len(table)} (class, layer, concept) results significant after correction"
    body = view[cols].head(max_rows).to_string(index=False, float_format=lambda v: f"{v:.3g}")
    more = f"\n... {len(table) - max_rows} more rows: use .to_frame()" if len(table) > max_rows else ""
    return f"{head}\n{body}{more}"

