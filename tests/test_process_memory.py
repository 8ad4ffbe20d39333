"""forget_process_memory: the toolkit's per-process memories are emptied, and answers do not change."""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import concepts  # noqa: E402
from concepts.process_memory import forget_process_memory  # noqa: E402
from probes import cav_tasks, identity  # noqa: E402
from probes.reuse import NULL_SUMMARIES, RANDOM_VARIANCES  # noqa: E402
from probes.shared_gram import SHARED_GRAM, SharedRows  # noqa: E402
from probes.streaming import ColumnSummary  # noqa: E402
from synthetic import build_model, make_data  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("memory"), n_class=10, n_concept=12, n_pool=60)


def test_every_memory_is_emptied(data):
    from concepts import image_files, screening, sets

    NULL_SUMMARIES.put("a" * 64, ColumnSummary(1))
    RANDOM_VARIANCES.get_or_compute(("m", "l", ("k",)), lambda: 1.0)
    SHARED_GRAM.keep_tiles(SharedRows(0, 2, np.arange(2), "k"), [(0, 1)], {(0, 2, 0, 2): np.eye(2)})
    concepts.score(build_model(), ["conv1"], [data / "concepts" / "horizontal"], n_random=3, n_directions=100,
                   progress=False, cache_dir=False)
    assert identity._MEMO and image_files._LISTINGS and screening._MEMO and cav_tasks._SPLITS._entries
    forget_process_memory()
    assert NULL_SUMMARIES.get("a" * 64) is None
    assert SHARED_GRAM.tiles(SharedRows(0, 2, np.arange(2), "k"), [(0, 1)]) == {}
    assert RANDOM_VARIANCES.get_or_compute(("m", "l", ("k",)), lambda: 2.0) == 2.0
    assert not identity._MEMO and not sets._CONTENT_KEYS and not image_files._LISTINGS and not screening._MEMO
    assert not cav_tasks._SPLITS._entries
    RANDOM_VARIANCES.clear()


def test_answers_do_not_depend_on_what_the_process_remembers(data):
    model = build_model()

    def table(name):
        result = concepts.score(model, ["conv1", "conv2"], [data / "concepts" / name], n_random=4,
                                n_directions=100, progress=False, cache_dir=False)
        return result.to_frame().select_dtypes("number").to_numpy()

    forget_process_memory()
    fresh = table("vertical")
    table("horizontal")               # leaves the random side in the process's memories
    remembered = table("vertical")    # finds it there
    forget_process_memory()
    again = table("vertical")
    np.testing.assert_array_equal(remembered, fresh)
    np.testing.assert_array_equal(again, fresh)
