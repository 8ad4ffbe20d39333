"""UBS: concept sensitivity in units of a typical random direction (after Yeche et al., iMIMIC 2019).

**Provenance.** The paper introduces a metric "with improved scaling to high-dimensional spaces,
allowing comparison across multiple layers", named after Uniform sampling on the surface of the
unit Ball (UBS). Its full text and code are not publicly available, so *the original formula is not
known to us*. This module implements the definition of ``methods.md`` §5, which follows that
description; results should be reported as "UBS as defined by this toolkit", not as a
reproduction of the paper.

**What is computed.** For class examples with gradients ``g_i = ∂z_k/∂a_l`` (flattened, length
``d``) and a unit concept vector ``v`` (CAV or RCV) of the same layer:

* the typical sensitivity along a random direction is ``ρ_i = E_u |g_i·u| = ‖g_i‖ c_d``, with ``u``
  uniform on the unit sphere of ℝ^d and ``c_d = Γ(d/2) / (√π Γ((d+1)/2)) ≈ √(2/(πd))``
  (:func:`ubs_normaliser`);
* ``UBS(v) = mean_i (g_i·v) / ρ_i`` — how many times more the class score moves along the concept
  than along a typical random direction, with sign. Examples whose gradient is exactly zero (dead
  units, saturated outputs) have no defined ratio and are left out; ``n_used`` says how many remain.

**Why it is comparable across layers.** The raw directional derivative ``g·u`` along a random
direction shrinks like ``‖g‖/√d``, so raw sensitivities of layers of different widths are not on the
same scale. Dividing by ``ρ_i`` removes both ``‖g_i‖`` and the ``1/√d``: if ``v`` is itself a random
direction, each ratio has mean 0 and variance ``1/(d c_d²)``, which tends to π/2 (1.52 for d = 16,
1.559 for d = 64, 1.5706 for d = 4096, π/2 = 1.5708) whatever the layer. ``d`` is the nominal
width: a layer whose channels are redundant (duplicated, strongly correlated) has fewer independent
directions, and UBS of a direction within them grows like ``√d`` for the same information
(duplicating every channel multiplies it by √2).

**Null distribution and p-value.** M directions ``u_j`` are sampled uniformly on the sphere
(normalised Gaussians, seeded) and scored exactly like the concept:
``p = (1 + #{j : |UBS(u_j)| ≥ |UBS(v)|}) / (M + 1)``. Because UBS is linear in ``v``,
``UBS(v) = v·m / c_d`` with ``m = mean_i g_i/‖g_i‖``; the module uses that identity so that
scoring any number of vectors or null directions is one matrix–vector product, and null
directions are generated in chunks so memory stays bounded for d ≈ 250 000. (The same identity
shows the null's spread is ``‖m‖ / (c_d √d)``: it grows when the class gradients agree with one
another, which is a property of the model, not of the layer width.) This null is "a direction drawn
uniformly from the whole layer": a CAV lies where the images vary, which is where the gradients live
too, so a random set's CAV already tends to beat it. The concept test of a result row compares with
random sets' CAVs instead (:mod:`probes.row_stats`); this p-value screens a direction only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import poch

from probes.errors import InputShapeError
from probes.random_state import as_generator
from probes.stats import monte_carlo_pvalue

__all__ = ["ubs_normaliser", "sample_directions", "ubs_scores", "ubs_null", "ubs_pvalue", "ubs_test",
           "UBSResult"]

# Rows of gradients converted to float64 at a time when computing the mean unit gradient.
_ROW_CHUNK_BYTES = 32 * 2**20
# Cap on one chunk of float32 random directions (256 × 250 000 would otherwise be 256 MB).
_DIRECTION_CHUNK_BYTES = 64 * 2**20


def ubs_normaliser(d: int) -> float:
    """``c_d = E|u_1| = Γ(d/2) / (√π Γ((d+1)/2))`` for ``u`` uniform on the unit sphere of ℝ^d.

    Computed as ``1 / (√π · poch(d/2, 1/2))``, where ``poch(x, 1/2) = Γ(x+½)/Γ(x)`` is evaluated
    directly: ``Γ(d/2)`` itself overflows for d > 340, and the difference of two ``gammaln`` values
    of size ~d·log d cancels (relative error 2e-9 at d = 10^7, 1e-6 at 10^9); ``poch`` stays at
    machine precision for any width. ``c_d ≈ √(2/(πd)) (1 + 1/(4d))`` for large d.

    Examples
    --------
    >>> round(ubs_normaliser(2), 6) == round(2 / np.pi, 6)
    True
    >>> ubs_normaliser(10**7) > 0
    True
    """
    d = int(d)
    if d < 1:
        raise InputShapeError(f"the dimension must be a positive integer; got {d}.")
    return float(1.0 / (np.sqrt(np.pi) * poch(d / 2, 0.5)))


def _sample(rng: np.random.Generator, d: int, n: int) -> np.ndarray:
    u = rng.standard_normal((n, d), dtype=np.float32)
    # Norms in float64: a float32 sum of 10^5 squares loses digits we would then divide by.
    norms = np.sqrt(np.einsum("ij,ij->i", u, u, dtype=np.float64))
    u /= norms[:, None].astype(np.float32)
    return u


def sample_directions(d: int, n: int, random_state=None) -> np.ndarray:
    """``n`` directions uniform on the unit sphere of ℝ^d, as a float32 array ``(n, d)``.

    Normalised standard Gaussian vectors (rotation invariant, hence uniform). ``random_state`` is an
    int, ``None``, a ``numpy.random.Generator`` or a ``RandomState``. The rows are drawn in order
    from one stream, so ``ubs_null(g, n, seed)`` scores exactly ``sample_directions(d, n, seed)``.

    Examples
    --------
    >>> u = sample_directions(5, 3, random_state=0)
    >>> u.shape, bool(np.allclose(np.linalg.norm(u, axis=1), 1, atol=1e-6))
    ((3, 5), True)
    """
    if int(d) < 1 or int(n) < 0:
        raise InputShapeError(f"need d >= 1 and n >= 0; got d={d}, n={n}.")
    return _sample(as_generator(random_state), int(d), int(n))


def _mean_unit_gradient(gradients) -> tuple[np.ndarray, int]:
    """``m = mean_i g_i/‖g_i‖`` over non-zero gradients (float64, length d) and how many were used."""
    G = gradients if isinstance(gradients, np.ndarray) else np.asarray(gradients)
    if G.ndim != 2:
        raise InputShapeError(
            f"gradients must be 2-D (n_examples, d); got shape {G.shape}. Flatten each example's "
            "gradient with g.reshape(len(g), -1).")
    n, d = G.shape
    total = np.zeros(d)
    used = 0
    step = max(1, _ROW_CHUNK_BYTES // (8 * max(d, 1)))
    for i in range(0, n, step):
        block = np.asarray(G[i:i + step], dtype=np.float64)
        if not np.all(np.isfinite(block)):
            raise InputShapeError("gradients contain NaN or infinite values; check the model and inputs.")
        norms = np.linalg.norm(block, axis=1)
        keep = norms > 0  # a zero gradient has no defined ratio (ρ_i = 0): leave the example out
        total += (block[keep] / norms[keep, None]).sum(axis=0)
        used += int(keep.sum())
    if used == 0:
        return np.full(d, np.nan), 0
    return total / used, used


def _unit_rows(vectors, d: int) -> np.ndarray:
    V = np.asarray(vectors, dtype=np.float64)
    if V.ndim == 1:
        V = V[None, :]
    if V.ndim != 2 or V.shape[1] != d:
        raise InputShapeError(
            f"vectors must have shape (m, {d}) to match the gradients; got {np.shape(vectors)}.")
    norms = np.linalg.norm(V, axis=1)
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise InputShapeError("every concept vector must be finite and non-zero.")
    # UBS is defined for unit vectors; normalising here makes a raw coef_ usable as is.
    return V / norms[:, None]


def ubs_scores(gradients, vectors) -> np.ndarray:
    """UBS of each concept vector: ``mean_i (g_i·v) / (‖g_i‖ c_d)`` over examples with ``g_i ≠ 0``.

    ``gradients`` is ``(n_examples, d)``; ``vectors`` is ``(m, d)`` or ``(d,)`` (one vector) and is
    normalised to unit length. Returns an array of shape ``(m,)``, all NaN when every gradient is
    zero.

    Examples
    --------
    >>> g = np.array([[1.0, 0.0], [2.0, 0.0]])
    >>> ubs_scores(g, np.array([[1.0, 0.0], [0.0, 1.0]]))  # 1 / c_2 = π/2 along the gradient
    array([1.57079633, 0.        ])
    """
    m_vec, _ = _mean_unit_gradient(gradients)
    return _scores_from_mean(m_vec, vectors)


def _scores_from_mean(m_vec: np.ndarray, vectors) -> np.ndarray:
    d = m_vec.shape[0]
    V = _unit_rows(vectors, d)
    # mean_i (g_i·v)/(‖g_i‖ c_d) = v·m / c_d: one matrix-vector product for every vector.
    return (V @ m_vec) / ubs_normaliser(d)


def ubs_ratios(sensitivities: np.ndarray, gradient_norms: np.ndarray, d: int) -> np.ndarray:
    """Per-example UBS ratios ``(g_i·v) / (‖g_i‖ c_d)`` from directional derivatives already computed.

    ``sensitivities`` is ``(n, m)`` (or ``(n,)``) for ``m`` unit vectors, ``gradient_norms`` the
    ``(n,)`` norms ‖g_i‖, ``d`` the width. Examples with a zero gradient are dropped (their ratio is
    undefined), so the result has one row per remaining example; its column means are the UBS of
    each vector, equal to :func:`ubs_scores` without a second pass over the gradients.

    Examples
    --------
    >>> g = np.array([[3.0, 4.0], [0.0, 0.0]]); v = np.array([[1.0, 0.0]])
    >>> ubs_ratios(g @ v.T, np.linalg.norm(g, axis=1), 2).shape
    (1, 1)
    """
    sens = np.asarray(sensitivities, dtype=np.float64)
    norms = np.asarray(gradient_norms, dtype=np.float64)
    keep = norms > 0
    scale = norms[keep] * ubs_normaliser(int(d))
    return sens[keep] / (scale[:, None] if sens.ndim == 2 else scale)


def ubs_null(gradients, n_directions: int = 1000, random_state=None, chunk: int = 256,
             method: str = "directions") -> np.ndarray:
    """UBS of ``n_directions`` random unit directions: the null distribution, shape ``(n_directions,)``.

    ``method="directions"`` (default) samples whole directions in ℝ^d. ``method="projection"``
    draws the same distribution exactly at O(1) cost per direction instead of O(d): UBS(u) =
    (m·u)/c_d depends on u only through its component along m (the mean unit gradient), and the
    component of a uniform unit vector along any fixed axis is z/√(z² + χ²_{d-1}) with z standard
    normal. For d = 250 000 and 1,000 directions that is microseconds instead of seconds.

    Directions are drawn at most ``chunk`` at a time, and never more than 64 MB of float32 at a
    time (67 directions for d = 250 000), and scored immediately, so memory stays bounded for any
    width and any number of directions. The chunking does not change the values. Same seed, same
    directions as :func:`sample_directions`.

    Examples
    --------
    >>> g = np.random.default_rng(0).standard_normal((20, 64))
    >>> null = ubs_null(g, 500, random_state=0)
    >>> null.shape, bool(abs(null.mean()) < 0.1)
    ((500,), True)
    """
    if int(n_directions) < 1 or int(chunk) < 1:
        raise InputShapeError(f"n_directions and chunk must be positive; got {n_directions}, {chunk}.")
    m_vec, used = _mean_unit_gradient(gradients)
    if method == "projection":
        return _null_by_projection(m_vec, used, int(n_directions), random_state)
    if method != "directions":
        raise ValueError(f"method must be 'directions' or 'projection', not {method!r}.")
    return _null_from_mean(m_vec, used, int(n_directions), random_state, int(chunk))


def _null_by_projection(m_vec: np.ndarray, used: int, n_directions: int, random_state) -> np.ndarray:
    d = m_vec.shape[0]
    if used == 0:
        return np.full(n_directions, np.nan)
    rng = as_generator(random_state)
    z = rng.standard_normal(n_directions)
    rest = rng.chisquare(d - 1, n_directions) if d > 1 else np.zeros(n_directions)
    component = z / np.sqrt(z * z + rest)
    return component * float(np.linalg.norm(m_vec)) / ubs_normaliser(d)


def _null_from_mean(m_vec: np.ndarray, used: int, n_directions: int, random_state, chunk: int) -> np.ndarray:
    d = m_vec.shape[0]
    if used == 0:
        return np.full(n_directions, np.nan)
    c_d = ubs_normaliser(d)
    chunk = max(1, min(chunk, _DIRECTION_CHUNK_BYTES // (4 * d)))
    m32 = m_vec.astype(np.float32)
    rng = as_generator(random_state)
    out = np.empty(n_directions)
    for start in range(0, n_directions, chunk):
        size = min(chunk, n_directions - start)
        u = _sample(rng, d, size)
        out[start:start + size] = (u @ m32).astype(np.float64) / c_d
    return out


def ubs_pvalue(observed, null) -> float | np.ndarray:
    """Two-sided Monte-Carlo p-value ``(1 + #{|null| ≥ |observed|}) / (M + 1)`` of a UBS.

    :func:`probes.stats.monte_carlo_pvalue` with ``two_sided=True``, so the same NaN rule: NaN
    observations or a NaN null give NaN. ``observed`` may be a scalar (returns a float) or an array.

    Examples
    --------
    >>> ubs_pvalue(3.0, np.array([-4.0, 1.0, 2.0, 0.5]))
    0.4
    """
    if np.asarray(null).size == 0:
        raise InputShapeError("the null distribution is empty.")
    return monte_carlo_pvalue(observed, null, two_sided=True)


@dataclass
class UBSResult:
    """Everything :func:`ubs_test` computed.

    Attributes: ``scores`` (m,) UBS of each concept vector; ``p_values`` (m,) against ``null``;
    ``null`` (M,) UBS of the random directions; ``normaliser`` c_d; ``d`` layer width; ``n_used``
    examples with a non-zero gradient.

    Examples
    --------
    >>> r = UBSResult(np.zeros(1), np.ones(1), np.zeros(3), 0.5, 3, 10)
    >>> r.d
    3
    """

    scores: np.ndarray
    p_values: np.ndarray
    null: np.ndarray
    normaliser: float
    d: int
    n_used: int


def ubs_test(gradients, vectors, n_directions: int = 1000, random_state=None) -> UBSResult:
    """UBS of every concept vector, its null distribution from random directions, and p-values.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> g = rng.standard_normal((30, 100)) + 0.5   # gradients share a direction (1, ..., 1)
    >>> res = ubs_test(g, np.ones(100), n_directions=200, random_state=0)
    >>> bool(res.scores[0] > 5), bool(res.p_values[0] == 1 / 201)
    (True, True)
    """
    if int(n_directions) < 1:
        raise InputShapeError(f"n_directions must be positive; got {n_directions}.")
    m_vec, used = _mean_unit_gradient(gradients)  # one pass over the gradients for everything
    d = m_vec.shape[0]
    scores = _scores_from_mean(m_vec, vectors)
    null = _null_from_mean(m_vec, used, int(n_directions), random_state, 256)
    p = np.asarray(ubs_pvalue(scores, null), dtype=np.float64).reshape(scores.shape)
    return UBSResult(scores=scores, p_values=p, null=null, normaliser=ubs_normaliser(d), d=d, n_used=used)
