"""Running statistics of class-example gradients, so the gradient pass never holds an n × d array.

The scoring statistics need the class examples' gradients only through a few quantities: their
projections on every concept vector (sensitivities), their norms (UBS ratios), and the mean unit
gradient (the UBS null). This module accumulates those per batch:

* :class:`ColumnSummary` -- per vector (column of the sensitivity matrix): how many examples, how
  many with S > 0 and S == 0 (TCAV scores), the sum of UBS ratios over examples with a non-zero
  gradient (UBS), and the mean, squared deviations and mean |S| (Br = mean/std). Batches are merged
  with Chan's parallel formula, so a constant column keeps a variance of exactly 0 (a naive sum of
  squares would leave rounding noise that :func:`mean_over_std` could mistake for spread);
* :class:`UnitGradientSum` -- ``Σ g_i/‖g_i‖`` and how many examples entered it, from which
  :func:`probes.ubs.ubs_null` draws its null (``method="projection"`` needs only ``m``).

Both merge (``a.merge(b)``), so shards computed on different machines combine into the summary of
the whole set; merging in shard order gives the same numbers whatever machine computed each shard.
Pure numpy: no TensorFlow, no ``concepts`` import. A little over 500 lines, a third of them
docstrings: the accumulators and the space they project on share one column layout.

Examples
--------
>>> s = ColumnSummary(1)
>>> s.update(np.array([[1.0], [-1.0], [0.0]]), np.array([1.0, 1.0, 1.0]), d=4)
>>> s.tcav_scores()[0].tolist(), s.tcav_scores()[1].tolist()
([0.3333333333333333], [0.3333333333333333])
"""
from __future__ import annotations

import numpy as np

from probes.errors import InputShapeError, InsufficientDataError
from probes.projection64 import Float64Rows
from probes.stats import NonFiniteValuesError
from probes.ubs import _null_by_projection, ubs_normaliser

__all__ = ["ColumnSummary", "UnitGradientSum", "ProjectionSpace", "Projections", "project_batches", "mean_over_std", "row_norms"]


def row_norms(g: np.ndarray) -> np.ndarray:
    """‖g_i‖ of each row (float32 arithmetic, returned as float64): no float64 copy of the batch.

    Examples
    --------
    >>> row_norms(np.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
    [5.0, 0.0]
    """
    g = np.asarray(g, dtype=np.float32)
    return np.sqrt(np.einsum("ij,ij->i", g, g)).astype(np.float64)


#: Relative spread below which a column of sensitivities counts as constant. Float32 gradients summed over
#: tens of thousands of activations carry rounding noise of order 1e-6 relative (6e-6 seen on a linear
#: layer followed by pooling and a dense head), which a 1e-6 bound took for spread: Br of 1e5 from noise.
BR_CONSTANT_SPREAD = 1e-4


def mean_over_std(mean: np.ndarray, std: np.ndarray, mean_abs: np.ndarray) -> np.ndarray:
    """``mean/std`` per column, NaN where the column does not vary (std ≤ 1e-4 · mean |S|).

    Where every example moves identically along a vector (a layer followed only by pooling and a
    linear head) the ratio, hence Br, is undefined rather than huge.

    Examples
    --------
    >>> mean_over_std(np.array([1.0, 1.0]), np.array([2.0, 0.0]), np.array([1.0, 1.0])).tolist()
    [0.5, nan]
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(std > BR_CONSTANT_SPREAD * mean_abs, mean / std, np.nan)


class ColumnSummary:
    """Running per-column statistics of a sensitivity matrix ``S`` (examples × vectors).

    Parameters
    ----------
    k : int
        Number of columns (vectors).

    Examples
    --------
    >>> s = ColumnSummary(2)
    >>> s.update(np.array([[1.0, 2.0]]), np.array([1.0]), d=2)
    >>> s.update(np.array([[3.0, 2.0]]), np.array([1.0]), d=2)
    >>> s.mean.tolist(), s.std().tolist()
    ([2.0, 2.0], [1.4142135623730951, 0.0])
    """

    def __init__(self, k: int) -> None:
        self.k = int(k)
        self.n = 0
        self.used = 0  # examples with a non-zero gradient (those with a UBS ratio)
        self.positive = np.zeros(self.k, np.int64)
        self.zero = np.zeros(self.k, np.int64)
        self.ratio_sum = np.zeros(self.k)
        self.mean = np.zeros(self.k)
        self.m2 = np.zeros(self.k)
        self.abs_sum = np.zeros(self.k)

    def update(self, sens: np.ndarray, norms: np.ndarray, d: int) -> None:
        """Add a batch: its sensitivities ``(b, k)`` and gradient norms ``(b,)`` in a ``d``-wide space."""
        sens = np.asarray(sens, dtype=np.float64)
        if sens.ndim != 2 or sens.shape[1] != self.k or len(norms) != len(sens):
            raise InputShapeError(f"expected sensitivities (b, {self.k}) and b norms; got {sens.shape} and "
                                  f"{np.shape(norms)}.")
        b = len(sens)
        if b == 0:
            return
        if not np.all(np.isfinite(sens)):
            raise NonFiniteValuesError("sensitivities contain NaN or infinite values.")
        norms = np.asarray(norms, dtype=np.float64)
        keep = norms > 0
        self.positive += (sens > 0).sum(axis=0)
        self.zero += (sens == 0).sum(axis=0)
        self.ratio_sum += (sens[keep] / (norms[keep, None] * ubs_normaliser(int(d)))).sum(axis=0)
        self.used += int(keep.sum())
        self.abs_sum += np.abs(sens).sum(axis=0)
        batch_mean = sens.mean(axis=0)
        batch_m2 = ((sens - batch_mean) ** 2).sum(axis=0)
        self._combine(b, batch_mean, batch_m2)

    def _combine(self, b: int, batch_mean: np.ndarray, batch_m2: np.ndarray) -> None:
        # Chan et al.'s pairwise update: exact for constant columns, stable for any batch sizes.
        n = self.n + b
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * (b / n)
        self.m2 = self.m2 + batch_m2 + delta * delta * (self.n * b / n)
        self.n = n

    def merge(self, other: "ColumnSummary") -> "ColumnSummary":
        """Fold in the summary of another shard (in place; returns self)."""
        if other.k != self.k:
            raise InputShapeError(f"cannot merge summaries of {self.k} and {other.k} columns.")
        if other.n == 0:
            return self
        self.positive += other.positive
        self.zero += other.zero
        self.ratio_sum += other.ratio_sum
        self.used += other.used
        self.abs_sum += other.abs_sum
        self._combine(other.n, other.mean, other.m2)
        return self

    def tcav_scores(self) -> tuple[np.ndarray, np.ndarray]:
        """(share with S > 0, share with S == 0) per column, as :func:`probes.linear.tcav_scores`."""
        if self.n == 0:
            raise InsufficientDataError(
                "no class example reached the gradient pass (the summary of sensitivities is empty), so "
                "there is no TCAV score to compute: give every class at least one example image (a "
                "non-empty classes/<class>/ folder or array in examples=).")
        return self.positive / self.n, self.zero / self.n

    def ubs(self) -> np.ndarray:
        """UBS per column: the mean ratio over examples with a non-zero gradient (NaN when none)."""
        if self.used == 0:
            return np.full(self.k, np.nan)
        return self.ratio_sum / self.used

    def std(self) -> np.ndarray:
        """Sample standard deviation (ddof=1) per column; 0 with fewer than two examples."""
        if self.n < 2:
            return np.zeros(self.k)
        return np.sqrt(np.maximum(self.m2, 0.0) / (self.n - 1))

    def mean_over_std(self) -> np.ndarray:
        """mean(S)/std(S) per column, NaN where S does not vary (see :func:`mean_over_std`)."""
        return mean_over_std(self.mean, self.std(), self.abs_sum / max(self.n, 1))

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Every field as arrays (for a store; :meth:`from_arrays` restores it exactly).

        Examples
        --------
        >>> s = ColumnSummary(1); s.update(np.array([[2.0]]), np.array([1.0]), d=1)
        >>> ColumnSummary.from_arrays(s.to_arrays()).mean.tolist()
        [2.0]
        """
        out = {name: np.array(getattr(self, name)) for name in ("positive", "zero", "ratio_sum", "mean", "m2",
                                                                "abs_sum")}
        out["counts"] = np.array([self.n, self.used], np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "ColumnSummary":
        """The summary :meth:`to_arrays` gave."""
        out = cls(len(arrays["mean"]))
        out.n, out.used = (int(v) for v in arrays["counts"])
        for name in ("positive", "zero", "ratio_sum", "mean", "m2", "abs_sum"):
            setattr(out, name, np.array(arrays[name]))
        return out

    def columns(self, idx) -> "ColumnSummary":
        """A summary of a subset of the columns (a view for the statistics of one group of vectors)."""
        idx = np.asarray(idx, dtype=np.int64)
        out = ColumnSummary(len(idx))
        out.n, out.used = self.n, self.used
        for name in ("positive", "zero", "ratio_sum", "mean", "m2", "abs_sum"):
            setattr(out, name, getattr(self, name)[idx].copy())
        return out


class UnitGradientSum:
    """``Σ_i g_i/‖g_i‖`` over examples with a non-zero gradient: what the UBS null needs.

    Examples
    --------
    >>> u = UnitGradientSum(2); u.update(np.array([[3.0, 4.0], [0.0, 0.0]]))
    >>> u.total.tolist(), u.used
    ([0.6, 0.8], 1)
    """

    def __init__(self, d: int) -> None:
        self.d = int(d)
        self.total = np.zeros(self.d)
        self.used = 0

    def update(self, g: np.ndarray) -> None:
        """Add a batch of flattened gradients ``(b, d)``."""
        block = np.asarray(g, dtype=np.float64)
        if block.ndim != 2 or block.shape[1] != self.d:
            raise InputShapeError(f"expected gradients (b, {self.d}); got {block.shape}.")
        norms = np.sqrt(np.einsum("ij,ij->i", block, block))
        # A NaN or infinity makes its row's norm non-finite; only then is every value looked at.
        if not np.all(np.isfinite(norms)) and not np.all(np.isfinite(block)):
            raise InputShapeError("gradients contain NaN or infinite values; check the model and inputs.")
        keep = norms > 0  # a zero gradient has no defined ratio: left out, as in probes.ubs
        # sum_i g_i / |g_i| as one vector-matrix product: no copy of the batch.
        weights = np.divide(1.0, norms, out=np.zeros_like(norms), where=keep)
        self.total += weights @ block
        self.used += int(keep.sum())

    def merge(self, other: "UnitGradientSum") -> "UnitGradientSum":
        """Fold in another shard's sum (in place; returns self)."""
        self.total += other.total
        self.used += other.used
        return self

    def ubs_null(self, n_directions: int = 1000, random_state=None) -> np.ndarray:
        """UBS of ``n_directions`` random directions, as ``ubs_null(g, method="projection")``."""
        mean = self.total / self.used if self.used else np.full(self.d, np.nan)
        return _null_by_projection(mean, self.used, int(n_directions), random_state)


class ProjectionSpace:
    """The vectors of one layer in one feature space (flat, or pooled channels) that class-example gradients
    are projected on, plus the concepts whose per-example numbers are kept.

    Built in phase 1 (:meth:`add` returns the columns a block of vectors gets, :meth:`record` declares a
    concept), then consumed by :class:`Projections` in phase 2.

    Examples
    --------
    >>> space = ProjectionSpace()
    >>> space.add(np.eye(3)[:2]).tolist(), space.add(np.eye(3)[2:]).tolist()
    ([0, 1], [2])
    """

    def __init__(self) -> None:
        self._blocks: list[np.ndarray] = []
        self.k = 0
        self.records: list[dict] = []
        self._matrix: np.ndarray | None = None
        self._matrix64: np.ndarray | None = None
        self._float64: Float64Rows | None = None

    def add(self, vectors: np.ndarray) -> np.ndarray:
        """Register vectors ``(m, d)``; returns their column indices in the sensitivity matrix."""
        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2:
            raise InputShapeError(f"vectors must be 2-D (m, d); got shape {vectors.shape}.")
        cols = np.arange(self.k, self.k + len(vectors))
        if len(vectors):
            self._blocks.append(vectors)
        self.k += len(vectors)
        self._matrix = self._matrix64 = self._float64 = None
        return cols

    def record(self, name: str, consensus: np.ndarray, *, run_cols, row_cols, row_scale: float) -> int:
        """Keep per-example numbers of a concept: directional derivative and presence (activation ·
        ``consensus``), share of the runs ``run_cols`` with a positive derivative, UBS ratio along the
        consensus, and the row's ratios (mean over ``row_cols`` of the UBS ratios, over ``row_scale``)."""
        cons_col = int(self.add(np.asarray(consensus)[None, :])[0])
        self.records.append({"name": name, "consensus": np.asarray(consensus), "cons_col": cons_col,
                             "run_cols": np.asarray(run_cols), "row_cols": np.asarray(row_cols),
                             "row_scale": float(row_scale)})
        return len(self.records) - 1

    def __getstate__(self) -> dict:
        # Sent to Dask workers: the vectors once, not also their stacked and float64 copies.
        state = dict(self.__dict__)
        state["_matrix"] = state["_matrix64"] = state["_float64"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        state.pop("_norms64", None)        # pickled by a version that kept the norms apart
        state.setdefault("_float64", None)
        self.__dict__.update(state)

    def float64_rows(self, rows: np.ndarray | None = None) -> Float64Rows:
        """The registered vectors (or some of them), for float64 products block by block: no float64
        copy of every vector (:mod:`probes.projection64`). Without ``rows`` the same object is returned
        until :meth:`add` is called again.

        Examples
        --------
        >>> space = ProjectionSpace(); _ = space.add(np.eye(2))
        >>> space.float64_rows().project(np.array([[2.0, 3.0]])).tolist()
        [[2.0, 3.0]]
        """
        if rows is not None:
            return Float64Rows(self._blocks, rows=rows)
        if self._float64 is None:
            self._float64 = Float64Rows(self._blocks)
        return self._float64

    @property
    def matrix(self) -> np.ndarray:
        """All registered vectors stacked, ``(k, d)`` float32."""
        if self._matrix is None:
            self._matrix = np.concatenate(self._blocks) if self._blocks else np.zeros((0, 0), np.float32)
        return self._matrix

    @property
    def norms64(self) -> np.ndarray:
        """‖v‖ of each registered vector (float64); computed once (by :meth:`float64_rows`), not once per batch."""
        return self.float64_rows().norms

    @property
    def matrix64(self) -> np.ndarray:
        """:attr:`matrix` in float64 (the vectors as the fits rounded them to float32)."""
        if self._matrix64 is None:
            # Straight from the registered blocks: no float32 stack on the way (a wide layer's
            # vectors are hundreds of megabytes).
            self._matrix64 = (self._matrix.astype(np.float64) if self._matrix is not None or not self._blocks
                              else np.concatenate(self._blocks, axis=0, dtype=np.float64))
        return self._matrix64


class Projections:
    """Phase 2 accumulator for one class in one :class:`ProjectionSpace`: feed it batches of flattened
    gradients and activations; it keeps a :class:`ColumnSummary` of every vector, the
    :class:`UnitGradientSum`, and a few numbers per example for each recorded concept -- O(n · concepts)
    memory, never O(n · d).

    Examples
    --------
    >>> space = ProjectionSpace(); _ = space.add(np.eye(2))
    >>> proj = Projections(space); proj.update(np.array([[1.0, -2.0]]), np.zeros((1, 2)))
    >>> proj.summary.tcav_scores()[0].tolist()
    [1.0, 0.0]

    Columns whose summary over the same examples is known already are not projected again:

    >>> again = Projections(space, known=(np.array([1]), proj.summary.columns([1])))
    >>> again.update(np.array([[1.0, -2.0]]), np.zeros((1, 2)))
    >>> again.summary.tcav_scores()[0].tolist()
    [1.0, 0.0]
    """

    def __init__(self, space: ProjectionSpace,
                 known: tuple[np.ndarray, ColumnSummary] | None = None) -> None:
        self.space = space
        self.d: int | None = None
        self.unit: UnitGradientSum | None = None
        self._kept: list[dict[str, list]] = [{k: [] for k in ("sensitivity", "positive_share", "presence",
                                                              "ubs_ratio", "row")} for _ in space.records]
        # ``known``: columns whose summary over these same examples was computed before (the random-vs-random
        # CAVs' columns, reused across calls by probes.reuse) and the summary: they are not projected again.
        self._known = None if known is None else (np.asarray(known[0], dtype=np.int64), known[1])
        self._active: np.ndarray | None = None
        self._position: np.ndarray | None = None
        if self._known is not None:
            mask = np.ones(space.k, bool)
            mask[self._known[0]] = False
            self._active = np.flatnonzero(mask)
            self._position = np.full(space.k, -1, np.int64)
            self._position[self._active] = np.arange(len(self._active))
            if np.any(self._position[[c for r in space.records for c in (r["cons_col"], *r["run_cols"],
                                                                          *r["row_cols"])]] < 0):
                raise InputShapeError("a recorded concept's columns cannot be among the known columns.")
        self._summary = ColumnSummary(space.k if self._active is None else len(self._active))
        self._full: ColumnSummary | None = None
        self._rows64: Float64Rows | None = None   # the projected (not known) rows of the space

    @property
    def summary(self) -> ColumnSummary:
        """The :class:`ColumnSummary` of every column of the space (known columns included)."""
        if self._known is None:
            return self._summary
        if self._full is None:
            cols, known = self._known
            if known.n != self._summary.n or known.used != self._summary.used:
                raise InputShapeError(f"the known columns' summary covers {known.n} examples, these projections "
                                      f"{self._summary.n}.")
            full = ColumnSummary(self.space.k)
            full.n, full.used = self._summary.n, self._summary.used
            for name in ("positive", "zero", "ratio_sum", "mean", "m2", "abs_sum"):
                values = getattr(full, name)
                values[self._active] = getattr(self._summary, name)
                values[cols] = getattr(known, name)
            self._full = full
        return self._full

    def _col(self, cols):
        """Columns of the space as columns of the projected (unknown) part."""
        return cols if self._position is None else self._position[cols]

    def update(self, g: np.ndarray, a: np.ndarray) -> None:
        """Add a batch: gradients ``g`` and activations ``a``, both ``(b, d)`` in this space."""
        # Projections in float64: each example's value is then the same whatever batch it came in (a float32
        # product's rounding depends on how the product is blocked), so streamed and in-memory runs agree to
        # ~1e-15, and shards computed on different machines merge into the same numbers.
        g = np.asarray(g, dtype=np.float64)
        a = np.asarray(a, dtype=np.float64)
        if self.d is None:
            self.d = int(g.shape[1])
            self.unit = UnitGradientSum(self.d)
        if self._active is None:
            rows64 = self.space.float64_rows()
        else:
            if self._rows64 is None:  # the projected part of the space (the known columns are not projected)
                self._rows64 = self.space.float64_rows(self._active)
            rows64 = self._rows64
        k = rows64.k if self.space.k else 0
        sens = rows64.project(g) if k else np.zeros((len(g), 0))
        vnorms = rows64.norms if k else np.zeros(0)
        norms = row_norms(g)
        # A directional derivative below float64 rounding of the product (|S| < 1e-12 ‖g‖‖v‖) is zero: its sign
        # would be rounding noise, decided by how BLAS blocks and threads the product, and would make the
        # sign-count score differ between machines. Counted as exactly zero (``zero_fraction``) instead.
        if k:
            sens[np.abs(sens) < 1e-12 * norms[:, None] * vnorms[None, :]] = 0.0
        self._summary.update(sens, norms, self.d)
        self._full = None
        self.unit.update(g)
        c_d = ubs_normaliser(self.d)
        keep = norms > 0
        records = self.space.records
        presence = a @ np.stack([np.asarray(r["consensus"], np.float64) for r in records]).T if records else None
        for j, (record, kept) in enumerate(zip(records, self._kept)):
            cons = sens[:, self._col(record["cons_col"])]
            with np.errstate(divide="ignore", invalid="ignore"):  # a zero gradient has no UBS ratio: NaN
                kept["ubs_ratio"].append(np.where(keep, cons / (norms * c_d), np.nan))
            kept["sensitivity"].append(cons)
            kept["positive_share"].append((sens[:, self._col(record["run_cols"])] > 0).mean(axis=1))
            kept["presence"].append(presence[:, j])
            ratios = sens[keep][:, self._col(record["row_cols"])] / (norms[keep, None] * c_d)
            kept["row"].append(ratios.mean(axis=1) / record["row_scale"])

    def merge(self, other: "Projections") -> "Projections":
        """Append another shard's examples (the shard that comes after this one); in place, returns self."""
        if other.d is None:
            return self
        if self.d is None:
            self.d, self.unit = other.d, UnitGradientSum(other.d)
        self._summary.merge(other._summary)
        self._full = None
        self.unit.merge(other.unit)
        for mine, theirs in zip(self._kept, other._kept):
            for name, parts in theirs.items():
                mine[name].extend(parts)
        return self

    def __getstate__(self) -> dict:
        # The space (every vector, possibly tens of MB) stays where it is: a shard computed on a worker sends
        # back only its own numbers and is re-attached to the space with :meth:`attach`.
        state = dict(self.__dict__)
        state["space"] = None
        state["_rows64"] = None
        return state

    def attach(self, space: ProjectionSpace) -> "Projections":
        """Re-attach the space after unpickling (returns self)."""
        self.space = space
        return self

    def _joined(self, record: int, name: str) -> np.ndarray:
        parts = self._kept[record][name]
        return np.concatenate(parts) if parts else np.zeros(0)

    def per_example(self, record: int) -> dict[str, np.ndarray]:
        """``sensitivity``, ``positive_share``, ``presence`` and ``ubs_ratio`` per example (in order)."""
        return {name: self._joined(record, name) for name in ("sensitivity", "positive_share", "presence",
                                                              "ubs_ratio")}

    def row_ratios(self, record: int) -> np.ndarray:
        """The row's per-example UBS ratios (examples with a non-zero gradient only)."""
        return self._joined(record, "row")


def project_batches(batches, spaces: dict[str, dict[str, ProjectionSpace]],
                    known: dict[str, dict[str, tuple[np.ndarray, ColumnSummary]]] | None = None
                    ) -> dict[str, dict[str, Projections]]:
    """Phase 2's loop: feed ``(activations, gradients)`` batches (dicts by layer, as
    :meth:`probes.engine.Engine.stream` yields them) to one :class:`Projections` per layer and space
    (``"flat"``: flattened features; ``"pooled"``: channels, activations averaged and gradients summed over
    positions, as :func:`probes.regression.pool_activations`/:func:`~probes.regression.pool_gradients`).
    ``known[layer][space]``: columns whose summary is already known (see :class:`Projections`).

    Examples
    --------
    >>> space = ProjectionSpace(); _ = space.add(np.eye(2))
    >>> out = project_batches([({"l": np.ones((3, 2))}, {"l": np.ones((3, 2))})], {"l": {"flat": space}})
    >>> out["l"]["flat"].summary.n
    3
    """
    from probes.regression import pool_activations, pool_gradients

    known = known or {}
    state = {layer: {name: Projections(space, known.get(layer, {}).get(name)) for name, space in by_space.items()}
             for layer, by_space in spaces.items()}
    for acts, grads in batches:
        for layer, by_space in state.items():
            g, a = np.asarray(grads[layer]), np.asarray(acts[layer])
            for name, proj in by_space.items():
                if name == "pooled":
                    proj.update(pool_gradients(g), pool_activations(a))
                else:
                    proj.update(g.reshape(len(g), -1), a.reshape(len(a), -1))
    return state
