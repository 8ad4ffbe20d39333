"""What repeated ``concepts.score`` calls in one process may skip, and what they must still notice.

Each test has a known answer: an entry kept in memory is served without the loader, and stops
being served as soon as the entry is removed or its files change; a changed folder is listed again.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from probes import cache as cache_mod
from probes.cache import Store
from probes.errors import CacheCorruptionWarning


@pytest.fixture(params=["background", "sync"])
def write_mode(request, monkeypatch):
    if request.param == "sync":
        monkeypatch.setenv("CONCEPTS_CACHE_SYNC", "1")
    return request.param


def test_a_zero_dimensional_array_round_trips(tmp_path, write_mode):
    store = Store(tmp_path)
    key = Store.make_key("scalar")
    store.put(key, np.float64(2.5))
    with warnings.catch_warnings():
        warnings.simplefilter("error", CacheCorruptionWarning)
        got = Store(tmp_path).get(key)  # from disk, as another process reads it
    assert got.shape == () and got.dtype == np.float64 and float(got) == 2.5
