"""Doctest fixtures for ``concepts/``: those of ``probes/conftest.py``, plus ``concepts`` itself.

See probes/conftest.py for the names an example may use (``np``, ``pd``, ``model``, ``data/``,
``model.keras``) and tests/test_doctests.py for the rule on ``# doctest: +SKIP``.
"""
from __future__ import annotations

import pytest

from probes.conftest import _doctest_environment, doctest_assets  # noqa: F401  (fixtures re-used here)

# Modules whose import needs an optional extra: not collected (so not failing) when it is missing.
collect_ignore: list[str] = []


@pytest.fixture(autouse=True)
def _concepts_namespace(doctest_namespace):
    import concepts

    doctest_namespace.setdefault("concepts", concepts)
