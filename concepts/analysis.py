"""The computation behind :func:`concepts.score` and :func:`concepts.report`.

One engine pass per image set gives the activations of every requested layer (and, for class
examples, the gradients of the target); every probe is then fitted on those cached arrays, and
every concept vector, random ones included, is projected on the gradients with one matrix
product per (class, layer). Nothing here touches TensorFlow: that is the engine's job.

Statistics per (class, layer, concept):

* folder concepts (CAVs): ``n_random`` concept-vs-random CAVs (one per seeded random set) and
  random-vs-random CAVs (every unordered pair, or a circulant design). The estimator is the
  difference of means (``cav="mean"``, the *pattern* in which the concept is expressed) by
  default; ``"logistic"``, ``"svm"``, ``"ridge"`` or any scikit-learn classifier are options.
  Each random set gets its mean statistic against the others; the concept's mean statistic over
  its runs is tested as one more draw from that distribution (a two-sided t prediction test,
  :func:`probes.stats.prediction_test`), so the null is exactly "another set of random images in
  place of the concept".

  The statistic (``statistic=``) is, per run, ``"shift"`` (default): the run's UBS times how far
  the concept's mean activation lies from the counterexamples' mean along the vector, in units
  of the layer's spread -- the first-order change of the class score between the two sides, in
  UBS units; ``"ubs"``: the run's UBS (direction only); or ``"score"``: the TCAV sign-count score.
  Why "shift": a unit vector forgets how different the two sides are, so a random pair whose
  small, noisy mean difference happens to point along the class gradient weighs as much as a
  concept that moves the activations far along it; where every example has the same gradient (a
  layer followed only by pooling and a linear head) that noise decides the test. Keeping the
  displacement restores the power there and the exchangeability under the null is untouched.
  The choice of estimator and statistic, and the evidence, are in ``docs/validation.md``.

  Why not Welch between concept runs and null runs, as the original TCAV code does: every
  concept run shares the same concept set, so the set's own idiosyncrasy never enters the
  run-to-run variance, and noise "concepts" come out significant far above the nominal rate.
  ``compat="tcav"`` still runs that procedure, to reproduce published numbers.
* continuous measures (RCVs): the full-data RCV gives R², fold angle, Br and UBS; its Br is
  tested against the Br of ``n_random`` RCVs fitted on shuffled measures (same prediction test;
  held-out R² is not clipped at 0, so the null keeps its spread); the RCVs of the five
  cross-validation training folds (80 % subsamples) give the score's interval. Where every
  example has the same gradient along the vector, Br is undefined (NaN): the row then tests the
  RCV's UBS against the shuffled-measure RCVs' UBS, and ``test_statistic`` says so;
* ``ubs`` is the UBS of the consensus vector (normalised mean of the concept CAVs, or the RCV),
  with a bootstrap interval over class examples and ``ubs_p`` from sampled random directions;
* ``direction_agreement`` / ``fragile``: the row's direction checked against the other estimator
  families and CAVs on resampled concept images (fold RCVs for measures);
* one multiple-comparison correction across every row computed together.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from probes.cache import ActivationCache
from probes.engine import Engine
from probes.errors import InsufficientDataError
from probes.linear import CAVTask, fit_cav_batch, sensitivities, tcav_scores
from probes.progress import progress
from probes.sources import hash_array
from probes.regression import RegressionProbe, pool_activations, pool_gradients, shuffled_fits
from probes.stats import adjust_pvalues, bootstrap_ci, bootstrap_diff_ci, prediction_test, student_t_pvalue
from probes.ubs import ubs_null, ubs_pvalue, ubs_ratios

from .outcome_store import ENCODING_VERSION, decode_outcome, encode_outcome

COLUMNS = [
    "class", "layer", "concept", "kind", "score", "score_ci_low", "score_ci_high", "null_mean", "effect",
    "effect_ci_low", "effect_ci_high", "p_value", "q_value", "significant", "vector_quality", "n_examples",
    "n_random", "target", "seed", "zero_fraction", "d", "ubs", "ubs_ci_low", "ubs_ci_high", "ubs_p",
    "r2_cv", "fold_angle_deg", "br", "test_statistic", "direction_agreement", "fragile",
]

#: Estimator families refitted to check each row's direction (``direction_agreement``): one of each kind
#: (pattern, max-margin-like filter, least-squares filter). The SVMs are left out: in the validation study
#: they point the same way as logistic regression in every case, at several times its cost.
ROBUSTNESS_METHODS = ("mean", "logistic", "ridge")
#: Bootstrap resamples of a concept's images refitted for the same check.
N_RESAMPLES = 10
#: A row is ``fragile`` when an alternative estimator reverses its direction, or when fewer than this
#: share of the concept-image resamples agree with it.
MIN_RESAMPLE_AGREEMENT = 0.8


#: The CAV estimator used when none is named (chosen by the validation study, docs/validation.md).
DEFAULT_CAV = "mean"
#: The test statistic used when none is named (same study).
DEFAULT_STATISTIC = "shift"


@dataclass
class Options:
    """Every knob of an analysis; :func:`concepts.score` documents each one."""

    n_random: int = 20
    null_pairs: str = "auto"
    statistic: str = DEFAULT_STATISTIC
    relative: bool = False
    seed: int = 0
    classifier: Any = None
    cav: str = DEFAULT_CAV
    C: float = 1.0
    alpha: float | str = "auto"
    alpha_scale: float = 0.1
    test_size: float = 0.3
    correction: str = "holm"
    significance: float = 0.05
    n_directions: int = 1000
    pool: str | bool = "auto"
    n_boot: int = 2000
    progress: bool = True
    compat: str | None = None
    robustness: bool = True

    def __post_init__(self) -> None:
        if self.compat == "tcav":
            # The original procedure (Kim et al. 2018, tcav 0.2): sign-count score, Student's t-test
            # against one fixed random set's runs, no multiple-comparison correction.
            self.statistic = "score"
            self.correction = "none"


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
    # concepts/per_example.py, concepts/comparison.py); filled by Analysis._record_* below. Plain dicts
    # of numpy arrays and lists of strings, so that a JSON + npz store can hold them.
    #   vectors[(layer, concept)] = {"consensus": unit vector (d,), "pooled": bool array ()}
    #   per_example[(class, layer, concept)] = {"sensitivity", "positive_share", "presence", "ubs_ratio"}, each (n,)
    #   example_files[class] = one label per class example (its path, or "<class>[i]" for arrays)
    vectors: dict[tuple[str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    per_example: dict[tuple[str, str, str], dict[str, np.ndarray]] = field(default_factory=dict)
    example_files: dict[str, list[str]] = field(default_factory=dict)


def _seed_for(*parts: Any) -> int:
    """A task seed derived from what the task is, so the same pair gives the same CAV in any call."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _flat(array: np.ndarray) -> np.ndarray:
    return np.asarray(array).reshape(len(array), -1)


def _use_pooling(pool: str | bool, shape: tuple) -> bool:
    if pool == "auto":
        return len(shape) >= 3  # (H, W, C) or deeper: convolutional feature maps
    return bool(pool)


AUTO_PARTNERS = 20


def _null_pairs(n_sets: int, mode: str) -> list[tuple[int, int]]:
    """Random-vs-random pairs, each unordered pair at most once.

    ``"all"``: every pair (each set meets the other ``n_sets - 1``); ``"ring"``: each set against the
    next (two partners each); ``"auto"``: every pair up to 21 sets, beyond that a circulant design
    in which each set meets its ``AUTO_PARTNERS`` nearest neighbours around a circle, so the number
    of fits grows linearly with ``n_sets`` while each set's mean still averages 20 comparisons.
    """
    if n_sets < 3:
        raise InsufficientDataError(f"{n_sets} random sets: at least 3 are needed for a null distribution.")
    if mode == "auto":
        mode = "all" if n_sets <= AUTO_PARTNERS + 1 else "circulant"
    if mode == "all":
        return [(i, j) for i in range(n_sets) for j in range(i + 1, n_sets)]
    if mode == "ring":
        return [(i, (i + 1) % n_sets) for i in range(n_sets)]
    if mode == "star":   # the original TCAV null: one fixed random set against each of the others
        return [(0, j) for j in range(1, n_sets)]
    if mode == "circulant":
        return [(i, (i + k) % n_sets) for i in range(n_sets) for k in range(1, AUTO_PARTNERS // 2 + 1)]
    raise ValueError(f"null_pairs must be 'auto', 'all' or 'ring', not {mode!r}.")


def _set_means(values: np.ndarray, pairs: Sequence[tuple[int, int]], n_sets: int, flipped: np.ndarray) -> np.ndarray:
    """Each random set's mean statistic against the other random sets it was paired with.

    A pair (i, j) is fitted once, oriented towards i; ``flipped`` holds the statistic seen from j
    (for the sign-count score ``1 - score - zeros``, for UBS ``-ubs``). These per-set means are the
    null sample that a concept's mean statistic is compared with (see :meth:`Analysis._row`).
    """
    total = np.zeros(n_sets)
    count = np.zeros(n_sets)
    for (i, j), value, other in zip(pairs, values, flipped):
        total[i] += value
        total[j] += other
        count[i] += 1
        count[j] += 1
    return total / np.maximum(count, 1)


class Analysis:
    """Runs one analysis: engine passes, probes, sensitivities and statistics.

    Example:
        >>> outcome = Analysis(engine, options).run(class_sets, folder_concepts, [], random_sets)  # doctest: +SKIP
    """

    def __init__(self, engine: Engine, options: Options, cache: ActivationCache | None = None) -> None:
        self.engine = engine
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

    def _gradients(self, example: ClassExamples) -> dict[str, np.ndarray]:
        result = self.engine.run(example.images, class_index=example.index)
        self._class_acts[example.name] = result.activations  # same pass: presence scores (_record_*)
        return result.gradients

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
        if len(file_sets) != len(random_sets) or not same_binding:
            per_set = [tick(self._activations(s)) for s in random_sets]
            sizes = np.cumsum([0] + [len(s) for s in random_sets])
            rows = [np.arange(sizes[j], sizes[j + 1]) for j in range(len(random_sets))]
            return {layer: np.concatenate([a[layer] for a in per_set]) for layer in self.engine.layers}, rows
        first = file_sets[0]
        union = sorted({Path(f).resolve() for s in file_sets for f in s.files})
        pool = ImageSet(union, name="random pool", input_shape=first.input_shape, preprocess=first.preprocess)
        acts = self._activations(pool)
        position = {f: i for i, f in enumerate(union)}
        rows = [tick(np.array([position[Path(f).resolve()] for f in s.files])) for s in file_sets]
        return acts, rows

    # ---------------------------------------------------------------- main entry
    def run(self, classes: Sequence[ClassExamples], folder_concepts: Sequence[FolderConcept],
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

        grads = {c.name: tick(self._gradients(c)) for c in classes}
        concept_acts = {c.name: tick(self._activations(c.images)) for c in folder_concepts}
        random_acts = self._random_activations(random_sets, tick) if folder_concepts else ({}, [])
        measure_acts = {m.name: tick(self._activations(m.images)) for m in measure_concepts}
        next(ticks, None)

        for layer in progress(self.engine.layers, enabled=opts.progress, desc="layers"):
            ubs_nulls: dict[str, np.ndarray] = {}
            if folder_concepts:
                rows += self._cav_layer(layer, classes, grads, folder_concepts, concept_acts, random_sets,
                                        random_acts, runs, ubs_nulls)
            for measure in measure_concepts:
                rows += self._rcv_layer(layer, classes, grads, measure, measure_acts[measure.name], runs,
                                        scatter, ubs_nulls)

        table = pd.DataFrame(rows, columns=COLUMNS)
        if len(table):
            table["q_value"] = adjust_pvalues(table["p_value"].to_numpy(dtype=float), method=opts.correction)
            table["significant"] = (table["q_value"] < opts.significance).fillna(False).astype(bool)
        provenance = self._provenance(classes, folder_concepts, measure_concepts, random_sets)
        provenance["engine_batches"] = self.engine.n_batches_run - batches_before
        outcome = Outcome(table=table, runs=runs, scatter=scatter, provenance=provenance,
                          vectors=self._vectors, per_example=self._per_example,
                          example_files={c.name: _example_labels(c) for c in classes})
        self._class_acts = {}
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
                 repr({k: v for k, v in vars(opts).items() if k != "progress"})]
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
    def _cav_tasks(self, folder_concepts: Sequence[FolderConcept], random_sets: Sequence[Any],
                   offsets: dict[str, np.ndarray], layer: str,
                   alpha: float) -> tuple[list[CAVTask], list[str], dict]:
        """Concept-vs-random (or relative) tasks per concept, then the random-vs-random null tasks."""
        opts = self.options
        tasks: list[CAVTask] = []
        keys: list[str] = []
        index: dict[str, Any] = {}
        fingerprint = self.engine.fingerprint
        for concept in folder_concepts:
            pos = offsets[f"c:{concept.name}"]
            index[concept.name] = []
            others = [o for o in folder_concepts if o.name != concept.name]
            for j, random_set in enumerate(random_sets):
                if opts.relative:
                    neg = np.concatenate([offsets[f"c:{o.name}"] for o in others])
                    ident = ("rel", self._key(concept.images), *[self._key(o.images) for o in others], j)
                else:
                    neg = offsets[f"r:{j}"]
                    ident = ("cav", self._key(concept.images), self._key(random_set))
                index[concept.name].append(len(tasks))
                tasks.append(CAVTask(pos=pos, neg=neg, seed=_seed_for(opts.seed, *ident)))
                keys.append(self._cav_key(fingerprint, layer, ident, alpha, self._method))
        pairs = _null_pairs(len(random_sets), "star" if opts.compat == "tcav" else opts.null_pairs)
        index["__null__"] = []
        index["__pairs__"] = pairs
        for i, j in pairs:
            ident = ("cav", self._key(random_sets[i]), self._key(random_sets[j]))
            index["__null__"].append(len(tasks))
            tasks.append(CAVTask(pos=offsets[f"r:{i}"], neg=offsets[f"r:{j}"], seed=_seed_for(opts.seed, *ident)))
            keys.append(self._cav_key(fingerprint, layer, ident, alpha, self._method))
        return tasks, keys, index

    @property
    def _method(self) -> str:
        """The CAV estimator of the main runs: a batched family, or the user's classifier."""
        return "classifier" if self._classifier is not None else self.options.cav

    @property
    def _classifier(self) -> Any:
        if self.options.compat == "tcav":
            return tcav_classifier()
        return self.options.classifier

    def _cav_key(self, fingerprint: str, layer: str, ident: tuple, alpha: float, method: str) -> str:
        opts = self.options
        classifier = repr(self._classifier) if method == "classifier" else ""
        return ActivationCache.make_key("cav-v5", fingerprint, layer, *map(str, ident), str(opts.seed), classifier,
                                        method, repr(float(opts.C)), repr(float(alpha)), str(opts.test_size),
                                        str(opts.compat))

    def _alpha(self, pool: np.ndarray) -> float:
        """The ridge penalty of the default CAV classifier for this layer.

        ``alpha="auto"`` scales ``alpha_scale`` by the total variance of the random sets'
        activations (the mean squared distance of an activation vector from their mean), so the same
        setting regularises a 64-channel and a 14,400-unit layer alike. Only the random sets count,
        so a random pair's CAV does not depend on which concepts share the call (and a cached one
        stays valid). A number is used as it is (as in ``RidgeClassifier(alpha)``).
        """
        opts = self.options
        if opts.alpha != "auto":
            if isinstance(opts.alpha, str) or not float(opts.alpha) > 0:
                raise ValueError(f"alpha must be 'auto' or a positive number, not {opts.alpha!r}.")
            return float(opts.alpha)
        return max(opts.alpha_scale * _total_variance(pool), 1e-12)

    def _fit_cavs(self, pool: np.ndarray, tasks: list[CAVTask], keys: list[str], alpha: float,
                  method: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Fit the CAVs that are not cached yet, all in one batch; return vectors, accuracies and shifts
        (how far each task's concept side lies from its counterexample side along the vector)."""
        opts = self.options
        d = pool.shape[1]
        vectors = np.empty((len(tasks), d), dtype=np.float32)
        accuracies = np.empty(len(tasks), dtype=np.float64)
        shifts = np.empty(len(tasks), dtype=np.float64)
        missing = []
        for t, key in enumerate(keys):
            stored = self.cache.get(key) if self.cache is not None else None
            if stored is not None and stored.shape == (d + 2,):
                vectors[t], accuracies[t], shifts[t] = stored[:d], stored[d], stored[d + 1]
            else:
                missing.append(t)
        if missing:
            custom = method == "classifier"
            batch = fit_cav_batch(pool, [tasks[t] for t in missing], method="ridge" if custom else method,
                                  alpha=alpha, C=opts.C, test_size=opts.test_size,
                                  classifier=self._classifier if custom else None,
                                  centre=opts.compat != "tcav", progress=False)
            for row, t in enumerate(missing):
                vectors[t] = batch.vectors[row]
                # Rounded like the cached copy, so a cache hit reproduces a fresh fit exactly.
                accuracies[t] = np.float32(batch.accuracies[row])
                shifts[t] = np.float32(batch.shifts[row])
                if self.cache is not None:
                    self.cache.put(keys[t], np.append(batch.vectors[row], np.float32([batch.accuracies[row],
                                                                                     batch.shifts[row]])),
                                   meta={"kind": "cav"})
        return vectors, accuracies, shifts

    def _cav_layer(self, layer, classes, grads, folder_concepts, concept_acts, random_sets, random_acts,
                   runs, ubs_nulls) -> list[dict[str, Any]]:
        opts = self.options
        blocks, offsets, start = [], {}, 0
        for concept in folder_concepts:
            block = _flat(concept_acts[concept.name][layer])
            offsets[f"c:{concept.name}"] = np.arange(start, start + len(block))
            blocks.append(block)
            start += len(block)
        random_pool, random_rows = random_acts
        random_start = start
        blocks.append(_flat(random_pool[layer]))
        for j, rows in enumerate(random_rows):
            offsets[f"r:{j}"] = random_start + rows
        pool = np.concatenate(blocks).astype(np.float32, copy=False)
        alpha = self._alpha(pool[random_start:])
        tasks, keys, index = self._cav_tasks(folder_concepts, random_sets, offsets, layer, alpha)
        self.cav_alphas[layer] = alpha
        vectors, accuracies, shifts = self._fit_cavs(pool, tasks, keys, alpha, self._method)
        # The layer's scale: the typical distance of a random activation from the random mean.
        spread = float(np.sqrt(_total_variance(pool[random_start:]))) or 1.0
        alternatives = self._alternative_directions(pool, tasks, keys, index, folder_concepts, alpha) \
            if opts.robustness else {}
        del pool
        self._record_cav_examples(layer, classes, grads, folder_concepts, index, vectors)

        rows = []
        for example in classes:
            g = _flat(grads[example.name][layer])
            sens = sensitivities(g, vectors)  # every CAV, null ones included, in one product
            scores, zeros = tcav_scores(sens)
            ratios = ubs_ratios(sens, _row_norms(g), g.shape[1])  # UBS from the same product
            per_run_ubs = ratios.mean(axis=0) if len(ratios) else np.full(len(vectors), np.nan)
            nul, pairs, n_sets = index["__null__"], index["__pairs__"], len(random_sets)
            null = _set_means(scores[nul], pairs, n_sets, 1.0 - scores[nul] - zeros[nul])
            null_ubs = _set_means(per_run_ubs[nul], pairs, n_sets, -per_run_ubs[nul])
            # "shift": the UBS of each run scaled by how far its concept side moved along the vector (in
            # units of the layer's spread), i.e. the first-order change of the class score between the two
            # sides' mean activations. Seen from its other side a pair's vector flips but its shift does
            # not (both the vector and the displacement flip), so its value flips.
            per_run_shift = per_run_ubs * shifts / spread
            null_shift = _set_means(per_run_shift[nul], pairs, n_sets, -per_run_shift[nul])
            for concept in folder_concepts:
                idx = index[concept.name]
                # The consensus vector is the normalised mean of the (unit) concept CAVs, so its
                # directional derivatives are the mean of theirs over the mean's norm.
                mean_norm = float(np.linalg.norm(vectors[idx].astype(np.float64).mean(axis=0))) or 1.0
                consensus_ratios = ratios[:, idx].mean(axis=1) / mean_norm
                test_p = None
                if opts.compat == "tcav":
                    # The original procedure: Student's t-test between the concept runs' scores and
                    # the scores of one fixed random set against each other random set.
                    statistic, null_statistics, name = float(np.mean(scores[idx])), scores[nul], "tcav_ttest"
                    test_p = student_t_pvalue(scores[idx], scores[nul])
                elif opts.statistic == "ubs":
                    statistic, null_statistics, name = float(np.mean(per_run_ubs[idx])), null_ubs, "ubs"
                elif opts.statistic == "shift":
                    statistic, null_statistics, name = float(np.mean(per_run_shift[idx])), null_shift, "shift"
                else:
                    statistic, null_statistics, name = float(np.mean(scores[idx])), null, "score"
                row = self._row(example, layer, concept.name, "cav", g, consensus_ratios, scores[idx],
                                scores[nul] if opts.compat == "tcav" else null,
                                quality=float(np.mean(accuracies[idx])), zero_fraction=float(zeros[idx].mean()),
                                ubs_nulls=ubs_nulls, runs=runs, statistic=statistic,
                                null_statistics=null_statistics, p_value=test_p)
                row["test_statistic"] = name
                row.update(_agreement(row["ubs"], g, alternatives.get(concept.name)))
                rows.append(row)
                runs[(example.name, layer, concept.name)].update(ubs=per_run_ubs[idx], null_ubs=null_ubs,
                                                                 shift=per_run_shift[idx], null_shift=null_shift)
        return rows

    def _alternative_directions(self, pool: np.ndarray, tasks: list[CAVTask], keys: list[str], index: dict,
                                folder_concepts: Sequence[FolderConcept], alpha: float) -> dict[str, dict]:
        """Directions a different analyst could have got, per concept, to check the row's sign against.

        * every other batched estimator family, fitted on the same concept tasks: the normalised mean of
          its CAVs (``alternatives``);
        * ``N_RESAMPLES`` CAVs of the row's own estimator on bootstrap resamples of the concept's images,
          each against one random set in turn (``resamples``).
        """
        opts = self.options
        concept_tasks = [t for c in folder_concepts for t in index[c.name]]
        others = [m for m in ROBUSTNESS_METHODS if m != self._method]
        fitted = {}
        for method in others:
            method_keys = [self._cav_key(self.engine.fingerprint, "", ("alt", keys[t]), alpha, method)
                           for t in concept_tasks]
            vecs, _, _ = self._fit_cavs(pool, [tasks[t] for t in concept_tasks], method_keys, alpha, method)
            fitted[method] = dict(zip(concept_tasks, vecs))
        resample_tasks, resample_keys, owners = [], [], []
        for concept in folder_concepts:
            idx = index[concept.name]
            rng = np.random.default_rng(_seed_for(opts.seed, "resample", concept.name))
            pos = tasks[idx[0]].pos
            for b in range(N_RESAMPLES):
                drawn = np.sort(rng.choice(pos, size=len(pos), replace=True))
                task = tasks[idx[b % len(idx)]]
                resample_tasks.append(CAVTask(pos=drawn, neg=task.neg, seed=_seed_for(task.seed, "resample", b)))
                resample_keys.append(self._cav_key(self.engine.fingerprint, "", ("resample", keys[idx[b % len(idx)]],
                                                   hash_array(drawn)), alpha, self._method))
                owners.append(concept.name)
        resampled, _, _ = self._fit_cavs(pool, resample_tasks, resample_keys, alpha, self._method)
        out = {}
        for concept in folder_concepts:
            idx = index[concept.name]
            means = np.stack([np.mean([fitted[m][t] for t in idx], axis=0) for m in others]) if others else \
                np.zeros((0, pool.shape[1]), np.float32)
            mine = np.array([o == concept.name for o in owners])
            out[concept.name] = {"alternatives": means.astype(np.float32), "names": others,
                                 "resamples": resampled[mine]}
        return out

    # ---------------------------------------------------------------- RCVs
    def _rcv_layer(self, layer, classes, grads, measure, acts, runs, scatter, ubs_nulls) -> list[dict[str, Any]]:
        opts = self.options
        shape = self.engine.layer_shapes[layer]
        pooled = _use_pooling(opts.pool, shape)
        x = pool_activations(np.asarray(acts[layer])) if pooled else _flat(acts[layer])
        x = np.asarray(x, dtype=np.float32)
        y = np.asarray(measure.values, dtype=np.float64)
        n = len(y)
        if n < 10:
            raise InsufficientDataError(
                f"Measure {measure.name!r} has {n} usable images; a regression concept vector needs at least 10 "
                "(5-fold cross-validation). Measure more images.")
        probe = RegressionProbe(cv=5, random_state=opts.seed).fit(x, y)
        # Concept runs: the RCVs of the five training folds (80 % subsamples, fitted anyway for the
        # held-out R²). Null runs: RCVs on shuffled measures, which share every eigendecomposition.
        concept_vectors = probe.fold_vectors_
        null_r2, null_vectors = shuffled_fits(x, y, opts.n_random, cv=5,
                                              random_state=_seed_for(opts.seed, "rcv-null", measure.name, layer))
        # Out-of-fold predictions, so the scatter shows what the held-out R² in its title measures.
        files = [str(f) for f in getattr(measure.images, "files", range(n))]
        scatter[(layer, measure.name)] = pd.DataFrame({"measure": y, "projection": probe.oof_predictions_,
                                                       "image": files})
        scatter[(layer, measure.name)].attrs["r2_cv"] = probe.r2_cv_
        self._record_rcv_examples(layer, classes, grads, measure.name, probe.vector_, concept_vectors, pooled)

        rows = []
        for example in classes:
            g = np.asarray(grads[example.name][layer])
            g = pool_gradients(g) if pooled else _flat(g)
            s_concept = sensitivities(g, concept_vectors)
            s_null = sensitivities(g, null_vectors)
            br_null = null_r2 * _mean_over_std(s_null)
            s_full = sensitivities(g, probe.vector_[None, :])[:, 0]
            ratios = ubs_ratios(s_full, _row_norms(g), g.shape[1])
            scores, zeros = tcav_scores(s_concept)
            null_scores, _ = tcav_scores(s_null)
            br = float(probe.r2_cv_ * _mean_over_std(s_full[:, None])[0])
            statistic, null_statistics, name = br, br_null, "br"
            if not np.isfinite(br) or np.isfinite(br_null).sum() < 3:
                # Br is undefined where every example moves identically along the vector (a layer followed
                # only by pooling and a linear head): test the RCV's UBS against the shuffled-measure RCVs'.
                null_ratios = ubs_ratios(s_null, _row_norms(g), g.shape[1])
                statistic, null_statistics, name = float(ratios.mean()), null_ratios.mean(axis=0), "ubs"
            row = self._row(example, layer, measure.name, "rcv", g, ratios, scores, null_scores,
                            quality=float(probe.r2_cv_), zero_fraction=float(zeros.mean()), ubs_nulls=ubs_nulls,
                            runs=runs, statistic=statistic, null_statistics=null_statistics, pooled=pooled)
            row.update(r2_cv=float(probe.r2_cv_), fold_angle_deg=float(probe.fold_angle_deg_), br=br,
                       test_statistic=name)
            row.update(_agreement(row["ubs"], g, {"alternatives": np.zeros((0, g.shape[1]), np.float32),
                                                  "names": [], "resamples": concept_vectors}))
            runs[(example.name, layer, measure.name)].update(br=np.array([br]), null_br=br_null)
            if name == "ubs":
                runs[(example.name, layer, measure.name)].update(ubs=np.array([statistic]), null_ubs=null_statistics)
            row["n_random"] = int(opts.n_random)
            rows.append(row)
        return rows

    # ---------------------------------------------------------------- per-example material
    def _reset_examples(self) -> None:
        self._vectors: dict[tuple[str, str], dict[str, np.ndarray]] = {}
        self._per_example: dict[tuple[str, str, str], dict[str, np.ndarray]] = {}
        self._class_acts: dict[str, dict[str, np.ndarray]] = {}

    def _record_cav_examples(self, layer: str, classes, grads, folder_concepts, index, vectors) -> None:
        """Consensus vector of each folder concept (normalised mean of its CAVs) and, per class example,
        its directional derivative, the share of concept runs with a positive one, its presence
        (activation · consensus) and its UBS ratio. Uses the arrays of the scoring pass only."""
        for concept in folder_concepts:
            runs = np.asarray(vectors[index[concept.name]], dtype=np.float64)
            mean = runs.mean(axis=0)
            consensus = mean / (np.linalg.norm(mean) or 1.0)
            self._vectors[(layer, concept.name)] = {"consensus": consensus.astype(np.float32),
                                                    "pooled": np.array(False)}
            for example in classes:
                self._record_one(example, layer, concept.name, _flat(grads[example.name][layer]),
                                 _flat(self._class_acts[example.name][layer]), consensus, runs)

    def _record_rcv_examples(self, layer: str, classes, grads, name: str, vector, fold_vectors,
                             pooled: bool) -> None:
        """As :meth:`_record_cav_examples` for a measure: the full-data RCV is the consensus, its
        fold RCVs the runs (as in the row's score); pooled layers work in channel space."""
        self._vectors[(layer, name)] = {"consensus": np.asarray(vector, dtype=np.float32),
                                        "pooled": np.array(bool(pooled))}
        for example in classes:
            g, a = np.asarray(grads[example.name][layer]), np.asarray(self._class_acts[example.name][layer])
            g, a = (pool_gradients(g), pool_activations(a)) if pooled else (_flat(g), _flat(a))
            self._record_one(example, layer, name, g, a, np.asarray(vector, dtype=np.float64),
                             np.asarray(fold_vectors, dtype=np.float64))

    def _record_one(self, example, layer: str, concept: str, g: np.ndarray, a: np.ndarray,
                    consensus: np.ndarray, runs: np.ndarray) -> None:
        from probes.ubs import ubs_normaliser

        run_sens = sensitivities(g, runs)
        norms = _row_norms(g)
        sens = sensitivities(g, consensus)
        with np.errstate(divide="ignore", invalid="ignore"):  # a zero gradient has no UBS ratio: NaN
            ratio = np.where(norms > 0, sens / (norms * ubs_normaliser(g.shape[1])), np.nan)
        self._per_example[(example.name, layer, concept)] = {
            "sensitivity": sens, "positive_share": (run_sens > 0).mean(axis=1),
            "presence": sensitivities(a, consensus), "ubs_ratio": ratio}

    # ---------------------------------------------------------------- one row
    def _row(self, example, layer, concept, kind, g, ratios, scores, null_scores, *, quality, zero_fraction,
             ubs_nulls, runs, statistic, null_statistics=None, pooled=False, p_value=None) -> dict[str, Any]:
        """One table row. The test asks whether this concept's ``statistic`` (its mean UBS, TCAV score or
        Br) is an outlier among the same statistic of null concepts (random sets, shuffled measures).
        ``ratios`` are the per-example UBS ratios of the row's vector."""
        opts = self.options
        seed = _seed_for(opts.seed, "stats", example.name, layer, concept)
        null_statistics = np.asarray(null_scores if null_statistics is None else null_statistics, dtype=float)
        null_statistics = null_statistics[np.isfinite(null_statistics)]
        p = np.nan  # undefined statistic (e.g. Br where S does not vary): no test, never significant
        if p_value is not None:
            p = p_value
        elif np.isfinite(statistic) and null_statistics.size >= 3:
            _, p = prediction_test(statistic, null_statistics)
        score_lo, score_hi = bootstrap_ci(scores, n_boot=opts.n_boot, random_state=seed)
        eff_lo, eff_hi = bootstrap_diff_ci(scores, null_scores, n_boot=opts.n_boot, random_state=seed + 1)
        ubs, ubs_lo, ubs_hi, ubs_p = self._ubs(g, ratios, ubs_nulls, f"{example.name}|{pooled}", seed)
        runs[(example.name, layer, concept)] = {"scores": np.asarray(scores), "null_scores": np.asarray(null_scores)}
        return {
            "class": example.name, "layer": layer, "concept": concept, "kind": kind,
            "score": float(np.mean(scores)), "score_ci_low": score_lo, "score_ci_high": score_hi,
            "null_mean": float(np.mean(null_scores)), "effect": float(np.mean(scores) - np.mean(null_scores)),
            "effect_ci_low": eff_lo, "effect_ci_high": eff_hi, "p_value": float(p), "q_value": np.nan,
            "significant": False, "vector_quality": quality, "n_examples": int(len(g)),
            "n_random": int(len(scores)), "target": self.engine.target, "seed": opts.seed,
            "zero_fraction": zero_fraction, "d": int(g.shape[1]), "ubs": ubs, "ubs_ci_low": ubs_lo,
            "ubs_ci_high": ubs_hi, "ubs_p": ubs_p, "r2_cv": np.nan, "fold_angle_deg": np.nan, "br": np.nan,
            "test_statistic": opts.statistic, "direction_agreement": np.nan, "fragile": False,
        }

    def _ubs(self, g: np.ndarray, ratios: np.ndarray, nulls: dict[str, np.ndarray], null_key: str,
             seed: int) -> tuple[float, float, float, float]:
        """UBS from per-example ratios, its bootstrap interval over examples, and its p-value."""
        opts = self.options
        if len(ratios) == 0:
            return np.nan, np.nan, np.nan, np.nan
        if null_key not in nulls:
            nulls[null_key] = ubs_null(g, n_directions=opts.n_directions,
                                       random_state=_seed_for(opts.seed, "ubs", null_key), method="projection")
        lo, hi = bootstrap_ci(ratios, n_boot=opts.n_boot, random_state=seed + 2)
        return float(ratios.mean()), lo, hi, float(ubs_pvalue(ratios.mean(), nulls[null_key]))

    # ---------------------------------------------------------------- provenance
    def _provenance(self, classes, folder_concepts, measure_concepts, random_sets) -> dict[str, Any]:
        import keras
        import sklearn

        import tensorflow as tf

        opts = self.options
        return {
            "model_fingerprint": self.engine.fingerprint,
            "layers": {layer: {"shape": list(self.engine.layer_shapes[layer]),
                               "width": int(self.engine.layer_widths[layer])} for layer in self.engine.layers},
            "target": self.engine.target_description,
            "classes": {c.name: {"output_index": c.index, "n_examples": len(c.images)} for c in classes},
            "concepts": {**{c.name: {"kind": "cav", "n_images": len(c.images)} for c in folder_concepts},
                         **{m.name: {"kind": "rcv", "n_images": len(m.values), "measure": m.description}
                            for m in measure_concepts}},
            "random_sets": {"n_sets": len(random_sets), "null_pairs": opts.null_pairs,
                            "set_sizes": [len(s) for s in random_sets]},
            "seed": opts.seed, "n_random_runs": opts.n_random, "relative": opts.relative,
            "test": f"two-sided t prediction test of the concept's mean {opts.statistic} among the random sets' "
                    "(or shuffled measures') values",
            "test_statistic": opts.statistic,
            "classifier": "ridge least-squares (dual, default)" if opts.classifier is None else repr(opts.classifier),
            "alpha": opts.alpha, "alpha_scale": opts.alpha_scale, "cav_alpha_per_layer": dict(self.cav_alphas),
            "test_size": opts.test_size, "correction": opts.correction,
            "significance_level": opts.significance, "ubs_directions": opts.n_directions,
            "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
                         "scikit-learn": sklearn.__version__, "pandas": pd.__version__},
        }


def tcav_classifier() -> Any:
    """The CAV classifier of the original TCAV code (tcav 0.2): hinge-loss SGD with its hyper-parameters."""
    from sklearn.linear_model import SGDClassifier

    return SGDClassifier(alpha=0.01, max_iter=1000, tol=1e-3)


def _agreement(row_ubs: float, g: np.ndarray, directions: dict | None) -> dict[str, Any]:
    """``direction_agreement`` and ``fragile`` of a row from the directions a different analyst could get.

    Each alternative direction (another estimator family's consensus CAV, a CAV on resampled concept
    images, or an RCV fitted on one cross-validation fold) gives the sign of its UBS for the same class
    examples; the agreement is the share of them whose sign matches the row's ``ubs``. The row is fragile
    when any alternative estimator reverses it, or when fewer than ``MIN_RESAMPLE_AGREEMENT`` of the
    resamples agree.
    """
    if directions is None or not np.isfinite(row_ubs) or row_ubs == 0:
        return {"direction_agreement": np.nan, "fragile": False}
    sign = np.sign(row_ubs)
    norms, d = _row_norms(g), g.shape[1]

    def signs(vectors: np.ndarray) -> np.ndarray:
        if len(vectors) == 0:
            return np.zeros(0)
        return np.sign(ubs_ratios(sensitivities(g, vectors), norms, d).mean(axis=0))

    estimator_signs = signs(directions["alternatives"])
    resample_signs = signs(directions["resamples"])
    agree = np.concatenate([estimator_signs, resample_signs]) == sign
    resample_share = float(np.mean(resample_signs == sign)) if len(resample_signs) else 1.0
    fragile = bool(np.any(estimator_signs != sign) or resample_share < MIN_RESAMPLE_AGREEMENT)
    return {"direction_agreement": float(agree.mean()) if agree.size else np.nan, "fragile": fragile}


def _example_labels(example: ClassExamples) -> list[str]:
    """One label per class example: its file path, or ``<class>[i]`` for in-memory images."""
    files = getattr(example.images, "files", None)
    if files is not None:
        return [str(f) for f in files]
    return [f"{example.name}[{i}]" for i in range(len(example.images))]


def _row_norms(g: np.ndarray) -> np.ndarray:
    """‖g_i‖ of each example's gradient (float32 arithmetic, no float64 copy of the gradients)."""
    g = np.asarray(g, dtype=np.float32)
    return np.sqrt(np.einsum("ij,ij->i", g, g)).astype(np.float64)


def _total_variance(x: np.ndarray, block: int = 1 << 22) -> float:
    """Sum of the column variances of ``x`` (mean squared distance from the mean row), in float32
    column blocks: a float64 copy of a wide pool costs more than the fits it scales."""
    x = np.asarray(x, dtype=np.float32)
    width = max(1, block // max(len(x), 1))
    total = 0.0
    for c0 in range(0, x.shape[1], width):
        part = x[:, c0:c0 + width]
        part = part - part.mean(axis=0)
        total += float(np.vdot(part, part))
    return total / max(len(x), 1)


def _mean_over_std(sens: np.ndarray) -> np.ndarray:
    """mean(S)/std(S) over examples for each column.

    NaN where S does not vary across examples (relative spread below 1e-6): then every example's
    target moves identically along the vector, as in a layer followed only by pooling and a linear
    head, and the ratio (hence Br) is undefined rather than huge.
    """
    sens = np.asarray(sens, dtype=np.float64)
    mean = sens.mean(axis=0)
    std = sens.std(axis=0, ddof=1) if len(sens) > 1 else np.zeros_like(mean)
    scale = np.abs(sens).mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(std > 1e-6 * scale, mean / std, np.nan)
    return out


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

