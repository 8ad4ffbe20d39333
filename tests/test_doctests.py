"""Docs that run: the rules for the ``>>>`` examples in the docstrings of concepts/ and probes/.

``python -m pytest`` runs every example (setup.cfg: ``--doctest-modules``, testpaths ``concepts``
and ``probes``; the names an example may use are set up in probes/conftest.py: ``np``, ``pd``,
``concepts``, the planted ``model``, a ``data/`` folder and ``model.keras`` in a fresh working
directory). An example that cannot run cheaply on a 2-core CI machine without GPU or network (a
real pretrained backbone, a GPU, a Dask cluster, a big dataset, minutes of compute) keeps
``# doctest: +SKIP``, and says why in a comment just before the directive on the same line, e.g.
``model = keras.applications.DenseNet121()  # downloads ImageNet weights  # doctest: +SKIP``.

Every other example must run and pass.
"""
from __future__ import annotations

import configparser
import re

import pytest

from test_docstring_style import ROOT, modules

SKIP_DIRECTIVE = re.compile(r"#\s*doctest:\s*[^\n'\"]*\+SKIP")
REASON = re.compile(r"#\s*(?!doctest:)\S[^#]*#\s*doctest:")


def skipped_without_reason(source: str) -> list[str]:
    """Source lines of examples that are skipped without a reason comment before the directive."""
    bad = []
    # Read as text, not imported: modules that need an optional extra are checked too.
    for line in source.splitlines():
        stripped = line.strip()
        example = stripped.startswith((">>>", "..."))
        if example and SKIP_DIRECTIVE.search(stripped) and not REASON.search(stripped):
            bad.append(stripped)
    return bad


def test_reason_detector():
    assert skipped_without_reason('    >>> f()  # doctest: +SKIP\n') == [">>> f()  # doctest: +SKIP"]
    assert skipped_without_reason('    >>> f()  # needs a GPU  # doctest: +SKIP\n') == []
    assert skipped_without_reason('    >>> f()  # doctest: +ELLIPSIS\n') == []


@pytest.mark.parametrize("module", modules())
def test_skipped_examples_say_why(module):
    bad = skipped_without_reason((ROOT / module).read_text(encoding="utf-8"))
    shown = "\n".join(f"  {line}" for line in bad)
    assert not bad, (f"{module}: examples skipped without a reason. Make them run (probes/conftest.py "
                     "provides a model and a data folder), or write the reason: "
                     f"`>>> call()  # needs X  # doctest: +SKIP`.\n{shown}")



def test_pytest_collects_the_doctests():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    section = config["tool:pytest"]
    assert "--doctest-modules" in section["addopts"].split()
    assert {"tests", "concepts", "probes"} <= set(section["testpaths"].split())
