"""``concepts.score``: the everyday question, in one call.

*Does this model use this concept, in this layer, for these classes, and is that real?*

The three-argument call follows the folder convention (see :mod:`concepts.layout`); every part
can also be given explicitly. Folder concepts give CAVs (TCAV), continuous measures
(:func:`concepts.radiomics`, :func:`concepts.measure`) give RCVs; both land in the same table.
"""
from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from probes.cache import ActivationCache, default_cache_dir
from probes.engine import Engine
from probes.errors import InsufficientDataError
from probes.sizes import MIN_RANDOM_SETS, min_concept_images, require_size
from probes.identity import is_identified
from probes.distributed import check_client
from probes.sources import ArraySource, InMemoryImages

from .analysis import DEFAULT_CAV, DEFAULT_STATISTIC, Analysis, ClassExamples, FolderConcept, MeasureConcept, Options
from .config import Config, uses_config
from .errors import ConceptFolderError, MeasureError
from .preprocess import integer_input_preprocess
from .volumes import header_geometry, is_volume_path, model_spacing
from .layout import DataLayout, class_index_map, resolve_class
from .measures import Measure
from .image_files import list_image_files
from .screening import screen
from .score_result import ScoreResult
from .sets import ImageSet, random_sets as draw_random_sets

ConceptLike = Any  # a folder path, an ImageSet, a Measure, or a list / dict of these


def _as_layers(layer: str | Sequence[str] | None, layers: str | Sequence[str] | None = None) -> list[str]:
    """One list of layer names from a name or list and its plural keyword (duplicates dropped)."""
    names: list[str] = []
    for item in (layer, layers):
        if item is None:
            continue
        names += [item] if isinstance(item, str) else list(item)
    if not names:
        raise ValueError("Name at least one layer: score(model, 'conv2', concept) or layers=['conv1', 'conv2'].")
    return list(dict.fromkeys(names))


def _as_concept_list(concept: ConceptLike) -> list[tuple[str | None, Any]]:
    if concept is None:
        return []
    if isinstance(concept, Mapping):
        return [(str(k), v) for k, v in concept.items()]
    if isinstance(concept, (list, tuple)):
        return [(None, c) for c in concept]
    return [(None, concept)]


def _is_integer_default(preprocess: Callable | None) -> bool:
    return isinstance(preprocess, functools.partial) and preprocess.func is integer_input_preprocess


def _fits_flexible(bound: tuple | None, model_shape: tuple) -> bool:
    """A set bound to a fixed size that a model with flexible sizes takes as it is (same rank, channels)."""
    return (bound is not None and len(bound) == len(model_shape) and None not in bound
            and all(m is None or m == b for m, b in zip(model_shape, bound)))


def _bind(images: Any, input_shape: tuple, preprocess: Callable | None, name: str,
          recursive: bool = False) -> ArraySource:
    """Turn a folder, an ImageSet, a list of files or an array into a source bound to the model."""
    if isinstance(images, ImageSet):
        bound = images if _fits_flexible(images.input_shape, input_shape) else \
            images.bind(input_shape, batch_axis=False)    # (kept: the user's fixed size, for a flexible model)
        if bound.preprocess is None and _is_integer_default(preprocess):
            bound = bound._copy()
            bound.preprocess = preprocess    # the default would reach an integer input as zeros
        return bound
    if isinstance(images, np.ndarray):
        return InMemoryImages(images, name=name)
    if isinstance(images, (str, os.PathLike)):
        folder = ImageSet.from_folder(images, name=name, preprocess=preprocess, recursive=recursive)
        return folder.bind(input_shape, batch_axis=False)
    if isinstance(images, (list, tuple)) and images and isinstance(images[0], (str, os.PathLike)):
        return ImageSet(images, name=name, preprocess=preprocess).bind(input_shape, batch_axis=False)
    if isinstance(images, ArraySource):
        return images
    raise TypeError(f"Cannot use {type(images).__name__} as images for {name!r}: give a folder path, a list of "
                    "image files, an ImageSet or a numpy array of model-ready images.")


def _measure_concept(name: str, measure: Measure, default_images: Sequence[Path], input_shape: tuple,
                     preprocess: Callable | None) -> MeasureConcept:
    values = measure.values
    if values is None or len(values) == 0:
        values = measure.evaluate(default_images)
    values = values[np.isfinite(values.to_numpy(dtype=float))]
    if len(values) == 0:
        raise MeasureError(f"Measure {name!r} has no finite value on any image; see its .failures for why.")
    files = measure.check_images(values.index)
    images = ImageSet(files, name=name, preprocess=preprocess).bind(input_shape, batch_axis=False)
    return MeasureConcept(name=name, images=images, values=values.to_numpy(dtype=float),
                          description=getattr(measure, "description", ""))


def _class_examples(examples: Any, classes: Sequence[str | int] | None, class_names: Any,
                    layout: DataLayout, n_outputs: int, input_shape: tuple,
                    preprocess: Callable | None, recursive: bool = False) -> list[ClassExamples]:
    """Resolve which classes to score and the example images of each."""
    folders: dict[str, Any]
    if examples is None:
        folders = dict(layout.class_dirs)
        if not folders:
            where = f" in {str(layout.root / 'classes')!r}" if layout.root else ""
            raise ConceptFolderError(
                f"No class example folders found{where}. Put example images under data/classes/<class>/ beside "
                "data/concepts/, or pass examples={'class name': folder_or_array, ...}.")
    elif isinstance(examples, Mapping):
        folders = {str(k): v for k, v in examples.items()}
    elif isinstance(examples, (str, os.PathLike)) and any(Path(examples).glob("*/")):
        folders = {p.name: p for p in sorted(Path(examples).iterdir()) if p.is_dir() and not p.name.startswith(".")}
    else:
        if classes is None or len(classes) != 1:
            raise ValueError("examples= is one set of images: say which class they belong to with classes=[name].")
        folders = {str(classes[0]): examples}
    mapping = class_index_map(n_outputs, class_names=class_names, classes_txt=layout.classes_txt,
                              folder_names=list(folders))
    wanted = list(classes) if classes is not None else list(folders)
    result = []
    for item in wanted:
        name, index = resolve_class(item, mapping, n_outputs)
        source = folders.get(name, folders.get(str(item)))
        if source is None:
            raise ConceptFolderError(
                f"Class {name!r} has no example images: expected a folder classes/{name}/ or an entry in examples=. "
                f"Found example sets for: {sorted(folders)}.")
        result.append(ClassExamples(name=name, index=index, images=_bind(source, input_shape, preprocess, name,
                                                                                recursive)))
    return result


def _random_sets(random: Any, layout: DataLayout, n_sets: int, set_size: int, seed: int, input_shape: tuple,
                 preprocess: Callable | None, exclude: Sequence[Path]) -> list[ArraySource]:
    if random is None:
        if layout.random_dir is None:
            where = f" {str(layout.root / 'random')!r}" if layout.root else " data/random/ beside data/concepts/"
            raise ConceptFolderError(
                f"No random counterexample images found: expected a folder{where}, holding images (a pool that is "
                "split into seeded random sets) or one sub-folder per random set. Or pass random=folder.")
        random = layout.random_dir
    if isinstance(random, (str, os.PathLike)):
        # Bound afterwards: the model's shape has no batch axis (bind reads a leading None as a flexible depth).
        drawn = draw_random_sets(random, n_sets, set_size, seed=seed, preprocess=preprocess, exclude=exclude)
        return [s.bind(input_shape, batch_axis=False) for s in drawn]
    sets = [_bind(s, input_shape, preprocess, f"random_{i:03d}") for i, s in enumerate(random)]
    if len(sets) < n_sets:
        raise InsufficientDataError(
            f"{len(sets)} random sets were given but n_random={n_sets} are needed. Give more sets or lower "
            "n_random.")
    return sets[:n_sets]


def prepare(model: Any, layers: Sequence[str], concept_list: list[tuple[str | None, Any]], *, data: Any = None,
            examples: Any = None, classes: Sequence[str | int] | None = None, class_names: Any = None,
            random: Any = None, target: str = "logit", preprocess: Callable | None = None, batch_size: int = 32,
            cache_dir: str | os.PathLike | bool | None = None, options: Options, output: int | str | None = None,
            extra_inputs: Mapping[str, Any] | None = None, on_error: str = "raise",
            recursive: bool = False) -> tuple[Analysis, dict[str, Any]]:
    """Resolve every input of an analysis and build the engine (shared by ``score`` and ``report``).

    ``model`` may be a path (``.keras``/``.h5``); the loaded model is ``analysis.engine.model``. Every
    image file of the call is screened first (:func:`concepts.screening.screen`): bad ones raise one
    error naming them all, or with ``on_error="skip"`` are left out and listed in
    ``inputs["skipped_images"]``.
    """
    cache = _cache(cache_dir)
    engine = Engine(model, layers, target=target, batch_size=batch_size, cache=cache, progress=options.progress,
                    output=output, extra_inputs=extra_inputs)
    if not is_identified(engine.fingerprint):
        # The engine warned once; nothing of this model may reach a shared store under a guessed key.
        cache = engine.cache = ActivationCache(None)
    input_shape = tuple(engine.input_shape)
    if preprocess is None and np.issubdtype(np.dtype(engine.input_dtype), np.integer):
        # Keras casts the input to its dtype: the default's [0, 1] floats would reach a uint8 model as 0.
        preprocess = functools.partial(integer_input_preprocess, dtype=engine.input_dtype)

    layout = DataLayout.from_root(data) if data is not None else DataLayout(root=None)
    folder_concepts: list[FolderConcept] = []
    measure_specs: list[tuple[str, Measure]] = []
    for name, item in concept_list:
        if isinstance(item, Measure):
            measure_specs.append((name or item.name, item))
            if layout.root is None:   # a measure computed on <data>/classes finds <data> like a concept folder
                layout = DataLayout.beside_images(item.images)
            continue
        if isinstance(item, (str, os.PathLike)):
            path = Path(item)
            if layout.root is None:
                layout = DataLayout.beside_concept(path)
            if not path.exists() and layout.root is not None and (layout.root / "concepts" / path).is_dir():
                path = layout.root / "concepts" / path
            folder_concepts.append(FolderConcept(name or path.name, _bind(path, input_shape, preprocess,
                                                                           name or path.name, recursive)))
        else:
            label = name or getattr(item, "name", None) or f"concept_{len(folder_concepts)}"
            folder_concepts.append(FolderConcept(label, _bind(item, input_shape, preprocess, label)))
    if not folder_concepts and not measure_specs:
        raise ValueError("Give at least one concept: a folder of images, an ImageSet or a measure.")
    names = [c.name for c in folder_concepts] + [n for n, _ in measure_specs]
    if len(set(names)) != len(names):
        raise ValueError(f"Concept names must be distinct; got {names}. Pass a dict {{name: concept}} to rename.")
    if options.relative and len(folder_concepts) < 2:
        raise ValueError("relative=True compares each concept with the others: give at least two folder concepts.")

    class_sets = _class_examples(examples, classes, class_names, layout, engine.n_outputs, input_shape, preprocess,
                                 recursive)
    skipped = _screen_inputs(folder_concepts, class_sets, random if random is not None else layout.random_dir,
                             on_error)
    bad = set(skipped)
    if bad:
        for item in [*folder_concepts, *class_sets]:
            if isinstance(item.images, ImageSet):
                item.images = item.images._copy(files=[f for f in item.images.files if str(f) not in bad])
    min_images = min_concept_images(options.test_size)
    for concept in folder_concepts:
        require_size(len(concept.images), min_images,
                     f"Concept {concept.name!r} has {{n}} images; with test_size={options.test_size} a CAV needs at "
                     "least {minimum} (two held-out images per side). Add images to the concept folder (20 or more "
                     "is typical).")
    require_size(options.n_random, MIN_RANDOM_SETS, "n_random={n}: at least {minimum} random sets are needed for a "
                 "test (10 or more is recommended).")

    example_files = [f for c in class_sets for f in getattr(c.images, "files", [])]
    measures = [_measure_concept(n, m, example_files, input_shape, preprocess) for n, m in measure_specs]

    random_sets: list[ArraySource] = []
    if folder_concepts:
        set_size = max(len(c.images) for c in folder_concepts)
        exclude = [f for c in folder_concepts for f in getattr(c.images, "files", [])] + example_files
        exclude += [Path(f) for f in bad]
        random_sets = _random_sets(random, layout, options.n_random, set_size, options.seed, input_shape,
                                   preprocess, exclude)
    _warn_of_mixed_volume_scales([(f"class {c.name!r}", c.images) for c in class_sets]
                                 + [(f"concept {c.name!r}", c.images) for c in folder_concepts]
                                 + [("the random images", s) for s in random_sets[:1]], input_shape)
    analysis = Analysis(engine, options, cache=cache)
    inputs = {"classes": class_sets, "folder_concepts": folder_concepts, "measure_concepts": measures,
              "random_sets": random_sets, "layout": layout, "preprocess": preprocess, "recursive": recursive,
              "skipped_images": [{"path": path, "reason": reason} for path, reason in sorted(skipped.items())]}
    return analysis, inputs


def _warn_of_mixed_volume_scales(sets: Sequence[tuple[str, Any]], input_shape: tuple) -> None:
    """Warn when the default preprocessing would show the volumes of different sets to the model at
    different physical scales or orientations (within one set it is an error already)."""
    if len(input_shape) != 4:
        return
    seen = []
    for label, source in sets:
        files = getattr(source, "files", None)
        if not files or getattr(source, "preprocess", None) is not None or not is_volume_path(files[0]):
            continue
        try:
            geometry = header_geometry(Path(files[0]))
        except Exception:   # noqa: BLE001 - an unreadable file is named when its set is read
            continue
        seen.append((label, files[0], model_spacing(geometry, input_shape), geometry.direction))
    if len(seen) < 2:
        return
    _, _, spacing, direction = seen[0]
    if all(np.allclose(s, spacing, rtol=0.01) and np.allclose(d, direction, atol=1e-3) for _, _, s, d in seen[1:]):
        return
    listing = "; ".join(f"{label} (e.g. {str(path)!r}): spacing {tuple(round(v, 3) for v in s)} mm, direction "
                        f"{tuple(round(v, 3) for v in d)}" for label, path, s, d in seen)
    warnings.warn(
        "The model sees the volumes of these sets at different physical scales or orientations after the "
        f"default resampling to its input {input_shape}: {listing}. A concept vector then also separates the "
        "scales, which can look like a concept. Resample the volumes to one spacing and orientation first, or "
        "pass a preprocess= that resamples to a fixed spacing.", UserWarning, stacklevel=3)


def _screen_inputs(folder_concepts: Sequence[FolderConcept], class_sets: Sequence[ClassExamples], random: Any,
                   on_error: str) -> dict[str, str]:
    """Screen every image file of the call at once (one error lists them all); ``{path: problem}``."""
    named: dict[str, list] = {}
    for concept in folder_concepts:
        named[f"concept {concept.name!r}"] = list(getattr(concept.images, "files", []))
    for example in class_sets:
        named[f"class {example.name!r}"] = list(getattr(example.images, "files", []))
    if isinstance(random, (str, os.PathLike)) and Path(random).is_dir():
        named[f"random {str(random)!r}"] = list_image_files(random, recursive=True)
    elif isinstance(random, (list, tuple)):
        named["random sets"] = [f for s in random if isinstance(s, ImageSet) for f in s.files]
    return screen(named, on_error)


def input_provenance(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """What input resolution decided, for the provenance: skipped images and how sets were balanced.

    Examples
    --------
    >>> input_provenance({"skipped_images": [], "folder_concepts": [], "random_sets": []})["skipped_images"]
    []
    """
    concept_sizes = {c.name: len(c.images) for c in inputs.get("folder_concepts", [])}
    random_sizes = [len(s) for s in inputs.get("random_sets", [])]
    info: dict[str, Any] = {"skipped_images": list(inputs.get("skipped_images", []))}
    if concept_sizes and random_sizes:
        sizes = set(concept_sizes.values()) | set(random_sizes)
        info["set_balancing"] = {
            "concept_sizes": concept_sizes, "random_set_sizes": random_sizes,
            "rule": ("sets of unequal size: each CAV is fitted on a balanced, seeded sub-sample (the larger side "
                     "sub-sampled to the smaller)") if len(sizes) > 1 else "all sets have the same size"}
    return info


def _cache(cache_dir: str | os.PathLike | bool | None) -> ActivationCache:
    if cache_dir is False:
        return ActivationCache(None)
    if cache_dir is None or cache_dir is True:
        return ActivationCache(default_cache_dir())
    return ActivationCache(cache_dir)


@uses_config
def score(model: Any, layer: str | Sequence[str] | None = None, concept: ConceptLike = None, *,
          layers: Sequence[str] | None = None, concepts: ConceptLike = None,
          data: str | os.PathLike | None = None, examples: Any = None,
          classes: Sequence[str | int] | None = None, class_names: Sequence[str] | Mapping[str, int] | None = None,
          random: Any = None, n_random: int = 20, null_pairs: str = "auto", statistic: str = DEFAULT_STATISTIC,
          relative: bool = False,
          target: str = "logit", output: int | str | None = None, extra_inputs: Mapping[str, Any] | None = None,
          seed: int = 0, preprocess: Callable | None = None, batch_size: int = 32,
          classifier: Any = None, cav: str = DEFAULT_CAV, C: float = 1.0, compat: str | None = None,
          robustness: bool = True,
          alpha: float | str = "auto", alpha_scale: float = 0.1,
          test_size: float = 0.3, correction: str = "holm",
          significance: float = 0.05, n_directions: int = 1000, pool: str | bool = "auto",
          cache_dir: str | os.PathLike | bool | None = None, progress: bool = True,
          on_error: str = "raise", recursive: bool = False, memory_budget: int | str | None = "2GB",
          client: Any = None, config: Config | None = None) -> ScoreResult:
    """Score how a model uses a concept in a layer, for each class, with a significance test.

    Parameters
    ----------
    model : Any
        A Keras 3 model (Sequential, functional, with nested models at any depth, e.g. a
        ``keras.applications`` backbone in a head), or the path of one saved as ``.keras``/``.h5``.
    layer : str | Sequence[str] | None, default=None
        A layer name, an ``"outer/inner"`` path into a nested model, or a list of them
        (:func:`concepts.layers` lists them and suggests where to probe).
    concept : ConceptLike, default=None
        A concept folder (``data/concepts/striped``), an :class:`~concepts.sets.ImageSet`, a
        :class:`~concepts.measures.Measure` (continuous concept → RCV), or a list/dict of these.
    layers : Sequence[str] | None, default=None
        The plural spelling of ``layer`` (more layers, scored in the same pass over the images).
    concepts : ConceptLike, default=None
        The plural spelling of ``concept`` (more concepts, scored after those of ``concept``).
    data : str | os.PathLike | None, default=None
        The data folder (default: two levels above the first concept folder).
    examples : Any, default=None
        Class examples; default ``<data>/classes/<class>/``. A dict ``{class: folder | array}``.
    classes : Sequence[str | int] | None, default=None
        Which classes to score (names or output indices); default every class folder.
    class_names : Sequence[str] | Mapping[str, int] | None, default=None
        Class names in output order (list) or ``{name: index}`` with a distinct integer index per class;
        default ``classes.txt``. A one-unit (sigmoid) output takes one class: ``{"malignant": 0}``.
    random : Any, default=None
        Counterexamples: a folder (pool or one sub-folder per set) or a list of sets; default
        ``<data>/random``.
    n_random : int, default=20
        Number of seeded random sets, hence of concept-vs-random runs (default 20, at least
        3; no hidden cap). More sets estimate the null's spread better and give more power.
    null_pairs : str, default='auto'
        Random-vs-random runs: ``"auto"`` (default: every unordered pair up to 21 sets, then
        each set against its 20 nearest neighbours on a circle, so the cost grows linearly),
        ``"all"`` (every pair) or ``"ring"`` (each set against the next: fewest fits, most
        conservative test).
    statistic : str, default=DEFAULT_STATISTIC
        What the significance test compares with the random concepts: ``"shift"`` (default: each
        run's UBS times how far the concept's images lie from the counterexamples along its vector;
        powerful even where all examples share one gradient direction), ``"ubs"`` (direction only)
        or ``"score"`` (the TCAV sign-count score); measures use Br.
    relative : bool, default=False
        Compare each folder concept with the union of the other concepts instead of random sets.
    target : str, default='logit'
        ``"logit"`` (pre-softmax, default), ``"log_prob"`` or ``"prob"``.
    output : int | str | None, default=None
        The output to explain in a multi-output model: its name (the layer producing it) or
        index. The softmax/sigmoid bypass applies to that output.
    extra_inputs : Mapping[str, Any] | None, default=None
        Values for the model's non-image inputs, ``{input name: values}``: one array of
        the input's per-example shape (used for every image), or per-example values keyed by
        image file path (a dict, or a pandas Series/DataFrame indexed by path; every image the
        analysis reads needs a row, random images included).
    seed : int, default=0
        Seeds every random choice (random sets, splits, bootstrap, UBS directions).
    preprocess : Callable | None, default=None
        ``callable(image, input_shape) -> array`` replacing the documented default
        (:func:`concepts.sets.default_preprocess`).
    batch_size : int, default=32
        Images per engine pass (bounds memory).
    classifier : Any, default=None
        Any scikit-learn linear classifier for the CAVs (one fit per CAV: slow); overrides ``cav``.
    cav : str, default=DEFAULT_CAV
        The CAV estimator, solved for every CAV of a layer at once on one shared Gram matrix:
        ``"logistic"`` (L2 logistic regression, ``LogisticRegression(C=C)``), ``"svm"`` (linear SVM,
        squared hinge, ``LinearSVC(C=C)``), ``"svm_hinge"`` (hinge loss), ``"ridge"`` (least squares,
        ``RidgeClassifier(alpha)``) or ``"mean"`` (difference of means, FastCAV / pattern CAV). The
        default was chosen by the validation study in ``docs/validation.md``.
    C : float, default=1.0
        Inverse regularisation strength of ``cav="logistic"`` and the SVMs (scikit-learn's ``C``).
    compat : str | None, default=None
        ``"tcav"`` runs the original TCAV procedure instead (hinge-loss ``SGDClassifier(alpha=0.01,
        max_iter=1000, tol=1e-3)`` CAVs on raw activations, sign-count score, Student's t-test between
        the concept runs and one fixed random set's runs, no correction) so that published numbers can
        be reproduced; its false-positive rate is above nominal (see ``docs/validation.md``).
    robustness : bool, default=True
        Refit each concept with the other estimator families and on resampled concept images
        to fill ``direction_agreement`` and ``fragile`` (default on).
    alpha : float | str, default='auto'
        Ridge penalty of ``cav="ridge"``: ``"auto"`` (default) is ``alpha_scale`` times the
        layer's total activation variance, so layers of any width and scale are regularised alike; a
        number gives exactly ``sklearn.linear_model.RidgeClassifier(alpha)``.
    alpha_scale : float, default=0.1
        The factor of ``alpha="auto"``.
    test_size : float, default=0.3
        Held-out fraction for CAV accuracy.
    correction : str, default='holm'
        ``"holm"`` (default), ``"bh"`` (Benjamini–Hochberg), ``"bonferroni"`` or ``"none"``.
    significance : float, default=0.05
        Level for the ``significant`` column (on corrected q-values).
    n_directions : int, default=1000
        Random unit directions for the UBS null.
    pool : str | bool, default='auto'
        Global average pooling of convolutional activations for RCVs (``"auto"``: on for conv layers).
    cache_dir : str | os.PathLike | bool | None, default=None
        Activation cache folder (default ``$CONCEPTS_CACHE_DIR`` or ``~/.cache/concepts-toolkit``;
        ``False`` keeps everything in memory).
    progress : bool, default=True
        Show progress bars.
    on_error : str, default='raise'
        What to do with image files that are empty, truncated or cannot be decoded:
        ``"raise"`` (default: one error lists every such file, before any compute) or
        ``"skip"`` (leave them out with a warning; they are listed in ``provenance["skipped_images"]``).
    recursive : bool, default=False
        Also use images in sub-folders of class and concept folders (``classes/tumour/patient01/*.png``).
        Without it such images are left out with a warning that counts them.
    memory_budget : int | str | None, default='2GB'
        RAM for the arrays that grow with the data (default ``"2GB"``; a number of bytes,
        a size such as ``"512MB"``/``"8GiB"``, or None for no limit). A class whose activations and
        gradients fit in what is left is held in memory (and cached, so its concept maps need no
        further pass); a larger one is streamed batch by batch, keeping only its projections on the
        concept vectors, so peak memory stays flat however many examples it has (its maps then cost
        one pass). Random-set activations beyond the budget go to memory-mapped temporary files.
        The results are the same either way.
    client : Any, default=None
        A ``dask.distributed.Client``: the class examples' gradient passes are sharded over its
        workers (each rebuilds the model once from its config and weights; image files must be
        readable at the same paths on the workers); only projections travel back, and the table is
        the one a local run gives. Concept and random activations are computed here, once.
    config : Config | None, default=None
        A :class:`concepts.Config` holding a reusable setting of the options above (``n_random``
        to ``memory_budget``, every one but the inputs); a keyword given explicitly in the call
        wins over it, and it wins over the defaults.

    Returns
    -------
    ScoreResult
        A :class:`ScoreResult`; ``result.to_frame()`` is the tidy table.

    Raises
    ------
    OptionError
        An option has a value that is not allowed (checked before anything is computed).

    Examples
    --------
    >>> import keras, concepts
    >>> model = keras.models.load_model("model.keras")
    >>> result = concepts.score(model, "conv2", "data/concepts/horizontal")
    >>> print(result)
    <ScoreResult: target logit: pre-softmax output of layer 'head' (softmax bypassed), 20 random runs, holm
    correction, seed 0>
    2 of 2 (class, layer, concept) results significant after correction
      class layer    concept kind  score  null_mean   ubs  q_value  significant
      other conv2 horizontal  cav      0        0.5 -27.1 ...         True
    striped conv2 horizontal  cav      1        0.5  27.1 ...         True
    >>> quiet = concepts.Config(progress=False)
    >>> both = concepts.score(model, ["conv1", "conv2"], concepts=["data/concepts/horizontal", "data/concepts/vertical"],
    ...                       config=quiet)
    >>> both.to_frame().groupby("layer")["significant"].sum()
    layer
    conv1    4
    conv2    4
    Name: significant, dtype: int64
    """
    assert config is not None  # resolved by @uses_config from the keywords above
    analysis, inputs = prepare(model, _as_layers(layer, layers), _as_concept_list(concept) + _as_concept_list(concepts),
                               data=data, examples=examples, classes=classes, class_names=class_names, random=random,
                               target=config.target, preprocess=preprocess, batch_size=config.batch_size,
                               cache_dir=config.cache_dir, options=config.to_options(), output=output,
                               extra_inputs=extra_inputs, on_error=config.on_error, recursive=config.recursive)
    check_client(client, analysis.engine)
    analysis.client = client
    outcome = analysis.run(inputs["classes"], inputs["folder_concepts"], inputs["measure_concepts"],
                           inputs["random_sets"])
    outcome.provenance.update(input_provenance(inputs))
    return ScoreResult(outcome, context=map_context(analysis, inputs, preprocess))


def map_context(analysis: Analysis, inputs: dict[str, Any], preprocess: Callable | None) -> Any:
    """What a result keeps to draw concept maps later: the engine (and its cache) and the inputs."""
    from .maps import MapContext

    input_shape = tuple(analysis.engine.input_shape)
    preprocess = inputs.get("preprocess", preprocess)      # what prepare chose (an integer input's default)
    recursive = inputs.get("recursive", False)
    return MapContext(engine=analysis.engine, classes={c.name: c for c in inputs["classes"]},
                      bind=lambda images, name: _bind(images, input_shape, preprocess, name, recursive))
