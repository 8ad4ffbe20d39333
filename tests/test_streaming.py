"""Bounded memory: running statistics equal the full-array ones, and streamed scoring equals in-memory scoring.

Known answers:

* :class:`probes.streaming.ColumnSummary` over batches (merged in any split) gives exactly what the
  full-array functions give: TCAV scores, UBS, mean/std (NaN for a constant column, as Br needs);
* :class:`probes.streaming.UnitGradientSum` gives the same UBS null as ``ubs_null(g, method="projection")``;
* ``concepts.score`` with ``memory_budget=0`` (class examples streamed batch by batch, random activations
  memory-mapped) gives the same table and per-example rows as the default in-memory run, to 1e-9;
  the streamed run never asks the engine for a whole gradient array, and maps still work (one extra pass).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from probes.linear import tcav_scores  # noqa: E402
from probes.streaming import ColumnSummary, Projections, ProjectionSpace, UnitGradientSum  # noqa: E402
from probes.ubs import ubs_null, ubs_ratios  # noqa: E402


def _split(n: int, rng) -> list[slice]:
    cuts = np.sort(rng.choice(np.arange(1, n), size=4, replace=False))
    edges = [0, *cuts.tolist(), n]
    return [slice(a, b) for a, b in zip(edges[:-1], edges[1:])]


def test_column_summary_equals_full_array_statistics():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((57, 12))
    g[3] = 0.0  # a dead example: no UBS ratio, S exactly 0
    v = rng.standard_normal((5, 12))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    sens = g @ v.T
    sens = np.column_stack([sens, np.full(len(g), 0.7)])  # a column that does not vary
    norms = np.linalg.norm(g, axis=1)
    whole = ColumnSummary(6)
    whole.update(sens, norms, d=12)
    parts = [ColumnSummary(6) for _ in range(5)]
    for part, rows in zip(parts, _split(len(g), rng)):
        part.update(sens[rows], norms[rows], d=12)
    merged = parts[0]
    for part in parts[1:]:
        merged.merge(part)
    scores, zeros = tcav_scores(sens)
    for summary in (whole, merged):
        np.testing.assert_allclose(summary.tcav_scores()[0], scores, rtol=0, atol=0)
        np.testing.assert_allclose(summary.tcav_scores()[1], zeros, rtol=0, atol=0)
        np.testing.assert_allclose(summary.ubs(), ubs_ratios(sens, norms, 12).mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(summary.mean, sens.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(summary.std()[:5], sens[:, :5].std(axis=0, ddof=1), rtol=1e-12)
        ratio = summary.mean_over_std()
        assert np.isnan(ratio[5]) and summary.m2[5] < 1e-25  # constant: no spread beyond rounding of its mean
        np.testing.assert_allclose(ratio[:5], sens[:, :5].mean(0) / sens[:, :5].std(0, ddof=1), rtol=1e-12)
    sub = merged.columns([4, 1])
    np.testing.assert_allclose(sub.ubs(), merged.ubs()[[4, 1]])


def test_unit_gradient_sum_gives_the_projection_null():
    rng = np.random.default_rng(1)
    g = rng.standard_normal((40, 30)).astype(np.float32)
    g[7] = 0.0
    total = UnitGradientSum(30)
    for rows in _split(len(g), rng):
        total.update(g[rows])
    assert total.used == 39
    expected = ubs_null(g, n_directions=300, random_state=5, method="projection")
    np.testing.assert_allclose(total.ubs_null(300, random_state=5), expected, rtol=1e-12)


def test_projections_do_not_depend_on_the_batches():
    rng = np.random.default_rng(2)
    g = rng.standard_normal((33, 20)).astype(np.float32)
    a = rng.uniform(0, 1, (33, 20)).astype(np.float32)
    space = ProjectionSpace()
    runs = space.add(rng.standard_normal((4, 20)))
    record = space.record("c", rng.standard_normal(20), run_cols=runs, row_cols=runs, row_scale=0.8)
    one, many = Projections(space), Projections(space)
    one.update(g, a)
    for rows in _split(len(g), rng):
        many.update(g[rows], a[rows])
    # float64 products: the batches change only the last bits (BLAS blocking), not the float32 rounding.
    for name, value in one.per_example(record).items():
        np.testing.assert_allclose(value, many.per_example(record)[name], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(one.row_ratios(record), many.row_ratios(record), rtol=1e-12)
    np.testing.assert_allclose(one.per_example(record)["presence"], a.astype(float) @ space.records[0]["consensus"])


def test_memory_sizes_parse():
    from probes.memory import parse_bytes

    assert parse_bytes("2GB") == 2e9 and parse_bytes("512 MiB") == 512 * 2**20 and parse_bytes(0) == 0
    assert parse_bytes(None) == float("inf")
    with pytest.raises(ValueError, match="memory_budget"):
        parse_bytes("lots")


def test_memmap_spill_files_leave_nothing_behind(tmp_path):
    from probes.memory import memmap_allocator

    array = memmap_allocator(str(tmp_path))("act", "conv", (10, 4))
    array[:] = 3.0
    assert isinstance(array, np.memmap) and float(array.sum()) == 120.0
    assert list(tmp_path.iterdir()) == []  # unlinked at once: the mapping keeps the data alive


# ----------------------------------------------------------------------------- end to end
def _tables_equal(a, b, rtol=1e-9):
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for column in a.columns:
        if a[column].dtype.kind in "fc":
            np.testing.assert_allclose(a[column].to_numpy(float), b[column].to_numpy(float), rtol=rtol,
                                       atol=0, equal_nan=True, err_msg=column)
        else:
            assert (a[column].astype(str) == b[column].astype(str)).all(), column


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    from synthetic import build_model, make_data

    return make_data(tmp_path_factory.mktemp("planted")), build_model()


def test_streamed_scoring_equals_in_memory_scoring(planted, monkeypatch):
    import concepts
    from probes.engine import Engine

    data, model = planted
    measure = concepts.measure(lambda image: float(np.mean(image)), name="mean")
    args = (model, ["conv1", "conv2"], [data / "concepts" / "horizontal", measure])
    kwargs = dict(n_random=4, n_directions=100, progress=False, cache_dir=False, batch_size=7)
    in_memory = concepts.score(*args, **kwargs)

    gradient_arrays = []
    original = Engine._pass

    def spy(self, source, act_layers, grad_layers, *rest, **kw):
        gradient_arrays.extend(grad_layers)
        return original(self, source, act_layers, grad_layers, *rest, **kw)

    monkeypatch.setattr(Engine, "_pass", spy)
    streamed = concepts.score(*args, memory_budget=0, **kwargs)
    assert gradient_arrays == []  # no n × d gradient array was ever built
    _tables_equal(in_memory.to_frame(), streamed.to_frame())
    _tables_equal(in_memory.per_example(), streamed.per_example())
    # Maps of streamed examples fall back to one pass over them, and give the same maps.
    np.testing.assert_allclose(streamed.concept_maps("striped", concept="horizontal", layer="conv1"),
                               in_memory.concept_maps("striped", concept="horizontal", layer="conv1"), rtol=1e-6)


class _NoiseTiles:
    """A source of ``n`` seeded noise images made batch by batch (nothing of size n is ever held)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def batches(self, batch_size: int):
        for start in range(0, self.n, batch_size):
            yield np.random.default_rng(start).uniform(0, 1, (min(batch_size, self.n - start), 8, 8, 1)).astype("f4")

    @property
    def content_key(self) -> str:
        return f"noise-{self.n}"


def test_streamed_projection_memory_does_not_grow_with_the_examples():
    """Python-side peak allocation (numpy reports to tracemalloc) of phase 2 for 300 vs 3,000 examples: the
    difference must be the per-example numbers only, far below the 3,000 x (activations + gradients) bytes an
    in-memory pass holds (3,000 x 2 x 256 x 4 bytes = 6 MB)."""
    import tracemalloc

    import keras

    from probes.engine import Engine

    inputs = keras.Input((8, 8, 1))
    conv = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(conv)))
    engine = Engine(model, ["conv"], batch_size=50, progress=False)
    space = ProjectionSpace()
    runs = space.add(np.random.default_rng(0).standard_normal((30, 256)))
    space.record("c", np.ones(256) / 16, run_cols=runs, row_cols=runs, row_scale=1.0)
    from probes.streaming import project_batches

    project_batches(engine.stream(_NoiseTiles(50), 0), {"conv": {"flat": space}})  # trace the step once
    peaks = []
    for n in (300, 3000):
        tracemalloc.start()
        out = project_batches(engine.stream(_NoiseTiles(n), 0), {"conv": {"flat": space}})
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert out["conv"]["flat"].summary.n == n
    held = 3000 * 2 * 256 * 4
    assert peaks[1] - peaks[0] < 0.25 * held, peaks


def test_float32_rounding_noise_is_no_spread_for_br():
    # A linear layer followed by pooling and a dense head: every example's sensitivity is the same but
    # for float32 rounding (6e-6 relative was seen); Br is undefined there, not 1e5.
    from probes.streaming import BR_CONSTANT_SPREAD, mean_over_std

    mean, mean_abs = np.array([0.019, 0.019]), np.array([0.019, 0.019])
    ratio = mean_over_std(mean, np.array([6e-6 * 0.019, 1e-2 * 0.019]), mean_abs)
    assert np.isnan(ratio[0]) and ratio[1] == pytest.approx(100.0)
    assert BR_CONSTANT_SPREAD <= 1e-3    # real spreads of a tenth of a percent still count
