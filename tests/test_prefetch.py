"""Reading the next batch while the model runs (probes.prefetch) changes nothing but the time."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import probes.prefetch as prefetch
from probes.prefetch import prefetched


def test_items_come_in_order_and_are_read_on_another_thread():
    readers = []

    def source():
        for i in range(5):
            readers.append(threading.current_thread().name)
            yield i

    assert list(prefetched(source())) == [0, 1, 2, 3, 4]
    assert readers[0] == threading.current_thread().name        # the first is needed at once
    assert all(name == "probes-prefetch" for name in readers[1:])


def test_an_error_is_raised_where_its_batch_is_asked_for():
    def source():
        yield 1
        yield 2
        raise OSError("image 3 is unreadable")

    got = []
    with pytest.raises(OSError, match="image 3"):
        for item in prefetched(source()):
            got.append(item)
    assert got == [1, 2]


def test_a_consumer_that_stops_early_closes_the_source_after_the_read_in_flight():
    events = []

    def source():
        try:
            for i in range(10):
                events.append(f"read {i}")
                yield i
        finally:
            events.append("closed")

    batches = prefetched(source())
    assert next(batches) == 0
    batches.close()
    # One batch read ahead, never more, and the source closed once that read had finished.
    assert events == ["read 0", "read 1", "closed"]


def test_disabled_reads_in_the_callers_thread(monkeypatch):
    readers = []

    def source():
        for i in range(3):
            readers.append(threading.current_thread().name)
            yield i

    monkeypatch.setattr(prefetch, "PREFETCH", False)
    assert list(prefetched(source())) == [0, 1, 2]
    assert set(readers) == {threading.current_thread().name}


def test_engine_results_are_the_same_with_and_without_prefetch(monkeypatch):
    keras = pytest.importorskip("keras")
    from probes.engine import Engine
    from probes.sources import InMemoryImages

    inputs = keras.Input((12, 12, 1))
    hidden = keras.layers.Conv2D(3, 3, activation="relu", name="conv")(inputs)
    outputs = keras.layers.Dense(2, name="head")(keras.layers.Flatten()(hidden))
    model = keras.Model(inputs, outputs)
    images = InMemoryImages(np.random.default_rng(0).random((23, 12, 12, 1), dtype=np.float32))
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(prefetch, "PREFETCH", enabled)
        engine = Engine(model, ["conv"], batch_size=5, progress=False)
        results.append(engine.run(images, class_index=1))
        assert engine.n_batches_run == 5           # computed, not found in a cache
    for kind in ("activations", "gradients"):
        np.testing.assert_array_equal(getattr(results[0], kind)["conv"], getattr(results[1], kind)["conv"])
