"""One docstring style, numpydoc (as scikit-learn): no Google-style section headers in docstrings.

A Google header is a line ``Args:``, ``Returns:``, ``Raises:``, ``Example:``, ... alone at the
docstring's indentation. numpydoc writes the section name underlined instead::

    Parameters
    ----------
    name : type
        What it is.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("concepts", "probes")

GOOGLE_HEADER = re.compile(
    r"^(\s*)(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Other Parameters|Attributes|"
    r"Returns?|Yields?|Raises|Warns|Examples?|Notes?|Warnings?|See Also|References|Todo)\s*:\s*$",
    re.IGNORECASE)


def modules() -> list[str]:
    return sorted(path.relative_to(ROOT).as_posix() for package in PACKAGES
                  for path in (ROOT / package).rglob("*.py") if "__pycache__" not in path.parts)


def google_headers(source: str) -> list[tuple[int, str]]:
    """(line, header) of each Google-style section header at a docstring's own indentation."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if not node.body:
            continue
        first = node.body[0]
        if not (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)):
            continue
        doc = first.value
        for number in range(doc.lineno + 1, doc.end_lineno + 1):
            match = GOOGLE_HEADER.match(lines[number - 1])
            if match and len(match.group(1)) == doc.col_offset:
                found.append((number, lines[number - 1].strip()))
    return found


def test_detector_finds_google_and_spares_numpydoc():
    google = ('def f(x):\n    """Sum.\n\n    Args:\n        x: a number.\n\n'
              '    Example:\n        >>> f(1)\n    """\n')
    numpydoc = ('def f(x):\n    """Sum.\n\n    Parameters\n    ----------\n    x : int\n        A number.\n\n'
                '    Examples\n    --------\n    >>> f(1)\n    """\n')
    prose = ('def f(x):\n    """Sum.\n\n    The result, for example: 3.\n'
             '        Returns: not a header here\n    """\n')
    assert google_headers(google) == [(4, "Args:"), (7, "Example:")]
    assert google_headers(numpydoc) == []
    assert google_headers(prose) == []


@pytest.mark.parametrize("module", modules())
def test_numpydoc_sections_only(module):
    headers = google_headers((ROOT / module).read_text(encoding="utf-8"))
    shown = "\n".join(f"  {module}:{line}: {header}" for line, header in headers)
    assert not headers, (f"Google-style docstring sections in {module}; write numpydoc sections "
                         f"(``Parameters`` underlined with dashes, ``name : type`` entries):\n{shown}")

