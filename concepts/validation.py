"""Every option of ``score``, ``report``, ``rank_measures`` and ``compare`` checked before any compute.

The table :data:`PARAMETER_CONSTRAINTS` (in the style of scikit-learn's
``_parameter_constraints``) lists, per keyword, the constraints a value may satisfy; a value
passes when it satisfies any one of them; it is the one place where an option's allowed values
are written. :class:`concepts.Config` checks its options against it on construction, and
:func:`validate_options` checks the other keywords at the very top of the public entry points (and
so of the command line), so a typo costs well under a second instead
of a whole run, and the error names the keyword, the bad value, what is allowed and, for
a misspelt choice, the closest valid one.

Adding a keyword is one line in the table, e.g.::

    "compat": [StrOptions({"toolkit", "original"})],

Examples
--------
>>> validate_options({"correction": "holmes"})
Traceback (most recent call last):
...
concepts.validation.OptionError: correction='holmes' is not valid: ... Did you mean 'holm'?
"""
from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any, Callable, Iterable, Mapping

from probes.errors import ToolkitError


class OptionError(ToolkitError, ValueError):
    """A keyword argument whose value is not allowed (the message names it and what is allowed)."""


@dataclass(frozen=True)
class StrOptions:
    """One of a fixed set of strings (compared case-insensitively when ``case=False``)."""

    options: frozenset
    case: bool = True

    def __init__(self, options: Iterable[str], case: bool = True) -> None:
        object.__setattr__(self, "options", frozenset(options))
        object.__setattr__(self, "case", case)

    def accepts(self, value: Any) -> bool:
        if not isinstance(value, str):
            return False
        return value in self.options if self.case else value.lower() in {o.lower() for o in self.options}

    def describe(self) -> str:
        return "one of " + ", ".join(repr(o) for o in sorted(self.options))

    def suggest(self, value: Any) -> str | None:
        if not isinstance(value, str):
            return None
        close = difflib.get_close_matches(value.lower(), sorted(self.options), n=1, cutoff=0.6)
        return close[0] if close else None


@dataclass(frozen=True)
class Interval:
    """A number of type ``kind`` (``Integral`` or ``Real``) between ``left`` and ``right``.

    ``closed`` is ``"both"``, ``"left"``, ``"right"`` or ``"neither"``; ``None`` bounds are open.
    Booleans are never numbers here (``significance=True`` is a mistake, not 1).
    """

    kind: type
    left: float | None
    right: float | None
    closed: str = "both"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, self.kind):
            return False
        if self.kind is Real and value != value:  # NaN satisfies no bound
            return False
        if self.left is not None:
            if value < self.left or (value == self.left and self.closed in ("right", "neither")):
                return False
        if self.right is not None:
            if value > self.right or (value == self.right and self.closed in ("left", "neither")):
                return False
        return True

    def describe(self) -> str:
        what = "an integer" if self.kind is Integral else "a number"
        low = "" if self.left is None else f"{self.left} {'<=' if self.closed in ('both', 'left') else '<'} "
        high = "" if self.right is None else f" {'<=' if self.closed in ('both', 'right') else '<'} {self.right}"
        return f"{what} with {low}x{high}" if (low or high) else what


@dataclass(frozen=True)
class Kind:
    """A named check (``"boolean"``, ``"path"``, ``"callable"``, ...), described in words."""

    name: str
    check: Callable[[Any], bool]

    def accepts(self, value: Any) -> bool:
        return bool(self.check(value))

    def describe(self) -> str:
        return self.name


def _is_collection(value: Any) -> bool:
    """A list, tuple, array or pandas Index (anything sized and iterable that is not text or a mapping)."""
    return (not isinstance(value, (str, bytes, Mapping)) and hasattr(value, "__len__")
            and hasattr(value, "__iter__"))


def _is_str_list(value: Any) -> bool:
    return _is_collection(value) and all(isinstance(v, str) for v in value)


BOOLEAN = Kind("True or False", lambda v: isinstance(v, bool) or type(v).__name__ == "bool_")
NONE = Kind("None", lambda v: v is None)
PATH = Kind("a folder path", lambda v: isinstance(v, (str, os.PathLike)))
CALLABLE = Kind("a function", callable)
TEXT = Kind("text", lambda v: isinstance(v, str))
TEXT_LIST = Kind("a list of names", _is_str_list)
NAMES_OR_INDICES = Kind("a list of class names or output indices",
                        lambda v: _is_collection(v) and all(isinstance(x, (str, Integral))
                                                            and not isinstance(x, bool) for x in v))
CLASS_NAMES = Kind("a list of class names or a {name: index} dict",
                   lambda v: _is_str_list(v) or (isinstance(v, Mapping) and all(isinstance(k, str) for k in v)))
CLASSIFIER = Kind("a scikit-learn classifier (an object with fit)", lambda v: callable(getattr(v, "fit", None)))
ANYTHING = Kind("anything", lambda v: True)
MEMORY_SIZE = Kind("a size such as '2GB' or '512MiB'",
                   lambda v: isinstance(v, str) and re.fullmatch(r"\s*[0-9]*\.?[0-9]+\s*([kKmMgGtT]i?)?[bB]?\s*", v)
                   is not None)
LAYERS_PER_MODEL = Kind("a {model name: layer names} dict (compare)",
                        lambda v: isinstance(v, Mapping) and all(isinstance(k, str) and (isinstance(x, str)
                                                                 or _is_str_list(x)) for k, x in v.items()))
CONFIG = Kind("a concepts.Config", lambda v: type(v).__name__ == "Config" and hasattr(v, "replace"))
DASK_CLIENT = Kind("a dask.distributed.Client", lambda v: callable(getattr(v, "submit", None))
                   and callable(getattr(v, "scheduler_info", None)))

#: Keyword -> allowed forms. A value is valid when it satisfies any one of them.
PARAMETER_CONSTRAINTS: dict[str, list[Any]] = {
    "layer": [TEXT, TEXT_LIST, NONE],
    "layers": [TEXT, TEXT_LIST, LAYERS_PER_MODEL, NONE],
    "data": [PATH, NONE],
    "classes": [NAMES_OR_INDICES, NONE],
    "class_names": [CLASS_NAMES, NONE],
    "columns": [TEXT_LIST, NONE],
    "n_random": [Interval(Integral, 3, None, "left")],
    "null_pairs": [StrOptions({"auto", "all", "ring", "circulant"})],
    "statistic": [StrOptions({"shift", "ubs", "score"})],
    "relative": [BOOLEAN],
    "recursive": [BOOLEAN],
    "target": [StrOptions({"logit", "log_prob", "prob"})],
    "seed": [Interval(Integral, 0, None, "left")],
    "preprocess": [CALLABLE, NONE],
    "batch_size": [Interval(Integral, 1, None, "left")],
    "classifier": [CLASSIFIER, NONE],
    "cav": [StrOptions({"mean", "logistic", "svm", "svm_hinge", "ridge"})],
    "C": [Interval(Real, 0, None, "neither")],
    "compat": [StrOptions({"tcav"}), NONE],
    "robustness": [BOOLEAN],
    "output": [TEXT, Interval(Integral, 0, None, "left"), NONE],
    "extra_inputs": [ANYTHING],
    "alpha": [StrOptions({"auto"}), Interval(Real, 0, None, "neither")],
    "alpha_scale": [Interval(Real, 0, None, "neither")],
    "test_size": [Interval(Real, 0, 1, "neither")],
    "correction": [StrOptions({"holm", "bh", "fdr_bh", "bonferroni", "none"}, case=False)],
    "significance": [Interval(Real, 0, 1, "neither")],
    "n_directions": [Interval(Integral, 1, None, "left")],
    "pool": [StrOptions({"auto"}), BOOLEAN],
    "sanity": [BOOLEAN],
    "cache_dir": [PATH, BOOLEAN, NONE],
    "progress": [BOOLEAN],
    "on_error": [StrOptions({"raise", "skip"})],
    "memory_budget": [Interval(Real, 0, None, "left"), MEMORY_SIZE, NONE],
    "client": [DASK_CLIENT, NONE],
    "n_boot": [Interval(Integral, 1, None, "left")],
    "config": [CONFIG, NONE],
    "title": [TEXT],
    "headline": [TEXT, NONE],
    # Checked where they are resolved, with messages about the folders they name:
    "model": [ANYTHING], "concept": [ANYTHING], "concepts": [ANYTHING], "measures": [ANYTHING],
    "examples": [ANYTHING], "random": [ANYTHING], "table": [ANYTHING], "models": [ANYTHING],
}


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_option(name: str, value: Any) -> None:
    """Raise :class:`OptionError` unless ``value`` satisfies a constraint of keyword ``name``.

    Examples
    --------
    >>> check_option("pool", "auto")
    >>> check_option("pool", "avg")
    Traceback (most recent call last):
    ...
    concepts.validation.OptionError: pool='avg' is not valid: ... 'auto' or True or False.
    """
    constraints = PARAMETER_CONSTRAINTS.get(name)
    if constraints is None:
        known = difflib.get_close_matches(name, sorted(PARAMETER_CONSTRAINTS), n=1)
        hint = f" Did you mean {known[0]!r}?" if known else ""
        raise OptionError(f"Unknown option {name!r}.{hint}")
    if any(c.accepts(value) for c in constraints):
        return
    allowed = " or ".join(c.describe() for c in constraints)
    message = f"{name}={_show(value)} is not valid: expected {allowed}."
    for c in constraints:
        suggestion = c.suggest(value) if isinstance(c, StrOptions) else None
        if suggestion is not None:
            message += f" Did you mean {suggestion!r}?"
            break
    raise OptionError(message)


def validate_options(options: Mapping[str, Any]) -> None:
    """Check every keyword in ``options`` against :data:`PARAMETER_CONSTRAINTS`; raise on the first bad one.

    Call it first in a public function with ``locals()``-like mapping of its keywords (the
    positional ``model`` and any keyword not in the table are reported as unknown options).

    Raises
    ------
    OptionError
        A value is not allowed; the message names the keyword, the value, what is
        allowed and the closest valid choice.

    Examples
    --------
    >>> validate_options({"n_random": 20, "correction": "bh", "significance": 0.05})
    >>> validate_options({"significance": 5})
    Traceback (most recent call last):
    ...
    concepts.validation.OptionError: significance=5 is not valid: expected a number with 0 < x < 1.
    """
    for name, value in options.items():
        check_option(name, value)


__all__ = ["Interval", "Kind", "OptionError", "PARAMETER_CONSTRAINTS", "StrOptions", "check_option",
           "validate_options"]
