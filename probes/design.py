"""Set design of a concept analysis: which fits are made, on which rows, with which seeds, and how many
images each needs.

Pure bookkeeping on indices, no statistics: the null pair design (which random sets are fitted against
each other), the CAV task list (concept-vs-random or relative tasks, then random-vs-random), the
bootstrap resamples of concept images for the robustness check, the rows of a stacked activation pool,
task seeds derived from what a task *is* (so the same pair gives the same CAV in any call and a cached
CAV stays valid), and (re-exported from :mod:`probes.sizes`) the minimum-size rule every caller
checks against.

Examples
--------
>>> null_pairs(4, "all")
[(0, 1), (0, 2), (0, 3), (1, 2), (1, 3), (2, 3)]
>>> seed_for("cav", "a", "b") == seed_for("cav", "a", "b")
True
"""
from __future__ import annotations

import hashlib
from typing import Any, Sequence

import numpy as np

from probes.linear import CAVTask
from probes.random_state import as_generator
from probes.row_stack import RowStack
# The size rule lives in probes.sizes (probes.stats needs it too, and this module imports probes.linear,
# which imports probes.stats); re-exported here with the rest of the set design.
from probes.sizes import (MIN_CONCEPT_IMAGES, MIN_MEASURE_EXAMPLES, MIN_RANDOM_SETS, min_concept_images,  # noqa: F401
                          require_size)

__all__ = ["MIN_RANDOM_SETS", "MIN_MEASURE_EXAMPLES", "MIN_CONCEPT_IMAGES", "AUTO_PARTNERS", "min_concept_images",
           "require_size", "seed_for", "null_pairs", "flat", "stack_pool", "cav_tasks", "resample_tasks"]

# ---------------------------------------------------------------- seeds
def seed_for(*parts: Any) -> int:
    """A task seed derived from what the task is, so the same pair gives the same CAV in any call.

    Parameters
    ----------
    *parts
        Anything with a stable ``str()``: the analysis seed, a label, content keys.

    Returns
    -------
    int
        In ``[0, 2**32)``, the range scikit-learn accepts.

    Examples
    --------
    >>> seed_for(0, "stats", "tumour", "conv2", "edges")
    504281705
    """
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "little")


# ---------------------------------------------------------------- null design
#: Partners of each random set in the circulant null design (``null_pairs="auto"`` beyond 21 sets).
AUTO_PARTNERS = 20


def null_pairs(n_sets: int, mode: str) -> list[tuple[int, int]]:
    """Random-vs-random pairs, each unordered pair at most once.

    ``"all"``: every pair (each set meets the other ``n_sets - 1``); ``"ring"``: each set against the
    next (two partners each); ``"star"``: the original TCAV null, one fixed random set against each of
    the others; ``"auto"``: every pair up to 21 sets, beyond that a circulant design in which each set
    meets its ``AUTO_PARTNERS`` nearest neighbours around a circle, so the number of fits grows
    linearly with ``n_sets`` while each set's mean still averages 20 comparisons.

    Parameters
    ----------
    n_sets : int
        Number of random sets (at least ``MIN_RANDOM_SETS``).
    mode : str
        ``"auto"``, ``"all"``, ``"ring"``, ``"star"`` or ``"circulant"``.

    Returns
    -------
    list of (int, int)
        Pairs ``(i, j)``; each is fitted once, oriented towards ``i``.

    Examples
    --------
    >>> null_pairs(3, "ring")
    [(0, 1), (1, 2), (2, 0)]
    >>> len(null_pairs(30, "auto")) == 30 * AUTO_PARTNERS // 2
    True
    """
    require_size(n_sets, MIN_RANDOM_SETS, "{n} random sets: at least {minimum} are needed for a null distribution.")
    if mode == "auto":
        mode = "all" if n_sets <= AUTO_PARTNERS + 1 else "circulant"
    if mode == "all":
        return [(i, j) for i in range(n_sets) for j in range(i + 1, n_sets)]
    if mode == "ring":
        return [(i, (i + 1) % n_sets) for i in range(n_sets)]
    if mode == "star":
        return [(0, j) for j in range(1, n_sets)]
    if mode == "circulant":
        return [(i, (i + k) % n_sets) for i in range(n_sets) for k in range(1, AUTO_PARTNERS // 2 + 1)]
    raise ValueError(f"null_pairs must be 'auto', 'all' or 'ring', not {mode!r}.")


# ---------------------------------------------------------------- the activation pool
def flat(array: np.ndarray) -> np.ndarray:
    """``array`` as rows ``(n, -1)`` (a view when it can be).

    Examples
    --------
    >>> flat(np.zeros((2, 3, 4))).shape
    (2, 12)
    """
    return np.asarray(array).reshape(len(array), -1)


def stack_pool(concept_blocks: Sequence[tuple[str, np.ndarray]], random_pool: np.ndarray,
               random_rows: Sequence[np.ndarray], *, copy: bool = True, random_key: str | None = None
               ) -> tuple[np.ndarray | RowStack, dict[str, np.ndarray], int]:
    """One float32 pool of flattened activations, concept images first, then the distinct random images.

    Parameters
    ----------
    concept_blocks : sequence of (name, array)
        Each folder concept's activations ``(n_c, ...)``.
    random_pool : numpy.ndarray
        The distinct random images' activations ``(n_r, ...)``.
    random_rows : sequence of numpy.ndarray
        Each random set's rows in ``random_pool`` (random sets drawn from one pool overlap; the pool
        holds each image once, so the Gram matrix grows with the distinct images, not with the sets).
    copy : bool
        True: one new array. False: a :class:`probes.row_stack.RowStack` over the given arrays (no
        copy of the random pool; what the CAV fits read block by block anyway).
    random_key : str, optional
        With ``copy=False``: a content key of ``random_pool`` (model, layer, random images), so that the
        Gram tiles among the random rows are kept between calls (:mod:`probes.shared_gram`).

    Returns
    -------
    pool : numpy.ndarray or RowStack
        ``(n, d)`` float32.
    offsets : dict
        Pool rows of ``"c:<name>"`` for each concept and ``"r:<j>"`` for each random set.
    random_start : int
        First row of the random images (``pool[random_start:]`` is the random pool).

    Examples
    --------
    >>> pool, offsets, start = stack_pool([("a", np.ones((2, 3)))], np.zeros((3, 3)), [np.array([0, 2])])
    >>> pool.shape, offsets["r:0"].tolist(), start
    ((5, 3), [2, 4], 2)
    """
    blocks, offsets, start = [], {}, 0
    for name, acts in concept_blocks:
        block = flat(acts)
        offsets[f"c:{name}"] = np.arange(start, start + len(block))
        blocks.append(block)
        start += len(block)
    blocks.append(flat(random_pool))
    for j, rows in enumerate(random_rows):
        offsets[f"r:{j}"] = start + rows
    if not copy:
        return RowStack(blocks, keys=[None] * (len(blocks) - 1) + [random_key]), offsets, start
    return np.concatenate(blocks).astype(np.float32, copy=False), offsets, start


# ---------------------------------------------------------------- CAV tasks
def cav_tasks(concepts: Sequence[tuple[str, str]], random_keys: Sequence[str], offsets: dict[str, np.ndarray], *,
              seed: int, relative: bool = False, null_mode: str = "auto"
              ) -> tuple[list[CAVTask], list[tuple], dict[str, Any]]:
    """Concept-vs-random (or relative) tasks per concept, then the random-vs-random null tasks.

    Parameters
    ----------
    concepts : sequence of (name, content key)
        The folder concepts; the content key names the images (it enters the task's identity).
    random_keys : sequence of str
        Content key of each random set.
    offsets : dict
        Pool rows, as :func:`stack_pool` returns them.
    seed : int
        The analysis seed.
    relative : bool
        Each concept against the union of the other concepts (one task per random set, so the runs
        count stays the same) instead of against each random set.
    null_mode : str
        The null design (:func:`null_pairs`).

    Returns
    -------
    tasks : list of CAVTask
    idents : list of tuple
        What each task is (its seed, and the caller's cache key, derive from it).
    index : dict
        Task numbers of each concept's runs (by name), of the null runs (``"__null__"``) and the null
        pairs (``"__pairs__"``).

    Examples
    --------
    >>> offsets = {"c:a": np.arange(4), "r:0": np.arange(4, 8), "r:1": np.arange(8, 12), "r:2": np.arange(12, 16)}
    >>> tasks, idents, index = cav_tasks([("a", "ka")], ["k0", "k1", "k2"], offsets, seed=0)
    >>> index["a"], index["__null__"], idents[0]
    ([0, 1, 2], [3, 4, 5], ('cav', 'ka', 'k0'))
    """
    tasks: list[CAVTask] = []
    idents: list[tuple] = []
    index: dict[str, Any] = {}
    for name, key in concepts:
        pos = offsets[f"c:{name}"]
        index[name] = []
        others = [(o, k) for o, k in concepts if o != name]
        for j, random_key in enumerate(random_keys):
            if relative:
                neg = np.concatenate([offsets[f"c:{o}"] for o, _ in others])
                ident = ("rel", key, *[k for _, k in others], j)
            else:
                neg = offsets[f"r:{j}"]
                ident = ("cav", key, random_key)
            index[name].append(len(tasks))
            tasks.append(CAVTask(pos=pos, neg=neg, seed=seed_for(seed, *ident)))
            idents.append(ident)
    pairs = null_pairs(len(random_keys), null_mode)
    index["__null__"] = []
    index["__pairs__"] = pairs
    for i, j in pairs:
        ident = ("cav", random_keys[i], random_keys[j])
        index["__null__"].append(len(tasks))
        tasks.append(CAVTask(pos=offsets[f"r:{i}"], neg=offsets[f"r:{j}"], seed=seed_for(seed, *ident)))
        idents.append(ident)
    return tasks, idents, index


def resample_tasks(tasks: Sequence[CAVTask], index: dict[str, Any], concept_names: Sequence[str], *, seed: int,
                   n_resamples: int) -> list[tuple[str, int, CAVTask]]:
    """CAV tasks on bootstrap resamples of each concept's images, each against one random set in turn.

    Parameters
    ----------
    tasks, index
        As :func:`cav_tasks` returns them.
    concept_names : sequence of str
    seed : int
        The analysis seed.
    n_resamples : int
        Resamples per concept.

    Returns
    -------
    list of (owner, source task, task)
        The concept each resample belongs to, the concept run whose counterexamples it reuses, and the
        task (concept rows drawn with replacement, sorted).

    Examples
    --------
    >>> offsets = {"c:a": np.arange(4), "r:0": np.arange(4, 8), "r:1": np.arange(8, 12), "r:2": np.arange(12, 16)}
    >>> tasks, _, index = cav_tasks([("a", "ka")], ["k0", "k1", "k2"], offsets, seed=0)
    >>> [(owner, source) for owner, source, _ in resample_tasks(tasks, index, ["a"], seed=0, n_resamples=4)]
    [('a', 0), ('a', 1), ('a', 2), ('a', 0)]
    """
    out = []
    for name in concept_names:
        idx = index[name]
        rng = as_generator(seed_for(seed, "resample", name))
        pos = tasks[idx[0]].pos
        for b in range(n_resamples):
            drawn = np.sort(rng.choice(pos, size=len(pos), replace=True))
            source = idx[b % len(idx)]
            task = tasks[source]
            out.append((name, source, CAVTask(pos=drawn, neg=task.neg, seed=seed_for(task.seed, "resample", b))))
    return out
