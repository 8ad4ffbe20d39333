"""Doctest fixtures for ``concepts/``: those of ``probes/conftest.py``, plus the user-level objects.

See probes/conftest.py for the names every example may use (``np``, ``pd``, ``model``, ``data/``,
``model.keras``) and tests/test_doctests.py for the rule on ``# doctest: +SKIP``. Here also:

* ``concepts``: the package;
* ``result``: ``concepts.score(model, "conv2", "data/concepts/horizontal")``;
* ``report``: ``concepts.report(model, ["conv1", "conv2"], data="data")``.

``result`` and ``report`` are computed once per session, only when an example that runs uses the
name without assigning it. They go through the session's activation cache, so an example that
calls ``concepts.score`` or ``concepts.report`` with these arguments itself costs next to nothing
after the first one.
"""
from __future__ import annotations

import pytest

from probes.conftest import (DoctestItem, _doctest_environment, _running_examples,  # noqa: F401
                             doctest_assets, needs)

# Modules whose import needs an optional extra: not collected (so not failing) when it is missing.
collect_ignore: list[str] = []

_SHARED: dict[str, object] = {}


def _result(model):
    import concepts

    return concepts.score(model, "conv2", "data/concepts/horizontal")


def _report(model):
    import concepts

    return concepts.report(model, ["conv1", "conv2"], data="data")


@pytest.fixture(autouse=True)
def _concepts_namespace(request, doctest_namespace, doctest_assets, _doctest_environment):
    import concepts

    doctest_namespace.setdefault("concepts", concepts)
    if not isinstance(request.node, DoctestItem):
        return
    sources = _running_examples(request.node)
    for name, build in (("result", _result), ("report", _report)):
        if needs(name, sources):
            if name not in _SHARED:
                _SHARED[name] = build(doctest_assets.model)
            doctest_namespace[name] = _SHARED[name]
