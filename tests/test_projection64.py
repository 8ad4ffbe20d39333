"""Float64 projections block by block (probes.projection64) equal the plain float64 product."""
from __future__ import annotations

import numpy as np
import pytest

from probes.projection64 import KEEP_FROM, Float64Rows
from probes.streaming import Projections, ProjectionSpace


def _vectors(seed=0, d=1000):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((m, d)).astype(np.float32) for m in (3, 5, 2)]


@pytest.mark.parametrize("rows", [None, np.array([0, 4, 9, 1])])
def test_block_products_equal_the_float64_product(rows):
    blocks = _vectors()
    stacked = np.concatenate(blocks).astype(np.float64)
    chosen = stacked if rows is None else stacked[rows]
    g = np.random.default_rng(1).standard_normal((7, 1000))
    f64 = Float64Rows(blocks, rows=rows, columns=256)
    np.testing.assert_allclose(f64.project(g), g @ chosen.T, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(f64.norms, np.linalg.norm(chosen, axis=1), rtol=1e-14)


def test_kept_blocks_give_the_same_bits_as_converted_ones():
    blocks = _vectors(seed=2)
    g = np.random.default_rng(3).standard_normal((4, 1000))
    f64 = Float64Rows(blocks, columns=300)
    results = [f64.project(g) for _ in range(KEEP_FROM + 1)]
    assert f64._kept is not None
    for later in results[1:]:
        np.testing.assert_array_equal(later, results[0])


def test_a_space_projects_the_same_with_every_batching():
    rng = np.random.default_rng(4)
    space = ProjectionSpace()
    space.add(rng.standard_normal((6, 500)).astype(np.float32))
    g = rng.standard_normal((12, 500))
    whole, batched = Projections(space), Projections(space)
    whole.update(g, g)
    for start in range(0, 12, 5):
        batched.update(g[start:start + 5], g[start:start + 5])
    np.testing.assert_allclose(batched.summary.mean, whole.summary.mean, rtol=1e-14)
    np.testing.assert_array_equal(batched.summary.positive, whole.summary.positive)
