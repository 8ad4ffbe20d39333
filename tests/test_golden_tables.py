"""The same seed gives the same tables: fixed scenarios against the frozen copies in tests/golden/.

This guards the architecture and speed work (issues 12 and 13): moving code must not move numbers.
Floats must agree to 1e-6 relative; everything else exactly.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from golden_tables import GOLDEN, comparable, scenarios

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    return scenarios(tmp_path_factory.mktemp("golden"))


@pytest.mark.parametrize("name", ["score", "score_ubs_ridge", "report", "rank_measures"])
def test_table_matches_frozen_copy(tables, name):
    frozen = pd.read_json(GOLDEN / f"{name}.json", orient="split", precise_float=True)
    got = comparable(tables[name])
    assert list(got.columns) == list(frozen.columns), "the table's columns changed"
    assert len(got) == len(frozen), "the table's rows changed"
    for column in frozen.columns:
        want, have = frozen[column].to_numpy(), got[column].to_numpy()
        if pd.api.types.is_numeric_dtype(frozen[column]) and not pd.api.types.is_bool_dtype(frozen[column]):
            np.testing.assert_allclose(have.astype(float), want.astype(float), rtol=1e-6, atol=1e-9,
                                       equal_nan=True, err_msg=f"{name}: column {column!r} moved")
        else:
            assert [str(v) for v in have] == [str(v) for v in want], f"{name}: column {column!r} changed"
