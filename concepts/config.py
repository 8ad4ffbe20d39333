"""``concepts.Config``: every analysis option, with one default each, validated once.

:func:`concepts.score`, :func:`concepts.report`, :func:`concepts.rank_measures`,
:func:`concepts.compare` and the ``concepts`` command build a :class:`Config` from their keywords
(through :func:`uses_config`), so a name means the same thing and has the same default
everywhere, and a bad value fails before any compute with a message that says how to fix it.

Examples
--------
>>> settings = Config(n_random=50, correction="bh")
>>> settings
Config(n_random=50, correction='bh')
>>> settings.replace(seed=3).seed
3
"""
from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

from .validation import OptionError, check_option, validate_options

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["Config", "uses_config"]


@dataclass(frozen=True, kw_only=True, repr=False)
class Config:
    """Every analysis option of ``score``, ``report``, ``rank_measures``, ``compare`` and the CLI.

    :func:`concepts.score` documents each option. A ``Config`` holds a reusable setting: pass it as
    ``config=`` to any of those functions. **Precedence:** a keyword given explicitly in the call
    wins over the ``config``; the ``config`` wins over the defaults below. Every value is checked
    on construction (and by :meth:`replace`) against :data:`concepts.validation.PARAMETER_CONSTRAINTS`.

    The inputs of a call (model, layers, concepts, ``data``, ``examples``, ``classes``, ``random``,
    ``preprocess``, ``output``, ``extra_inputs``, ``client``) are not options and stay keywords of
    the functions.

    Vocabulary rules of the public API:

    * ``significance`` is a significance level, everywhere (tables, plots, HTML);
    * ``alpha`` is only the ridge penalty of ``cav="ridge"`` (scikit-learn's name for a ridge
      penalty), never a level; the former ``alpha=`` for a level (in plots and HTML) and for an
      overlay's opacity (now ``opacity=``) still work with a ``FutureWarning``;
    * ``seed`` seeds every user-facing ``concepts`` function; ``random_state`` appears only on the
      scikit-learn-style estimators of ``probes`` (where scikit-learn's convention rules);
    * a singular name takes one item or a list (``score(model, layer, concept)``), a plural one a
      list (``report(model, layers, concepts)``, ``rank_measures(model, layers, table)``), and
      ``score`` also accepts the plural keywords ``layers=`` and ``concepts=``.

    Examples
    --------
    >>> fast = Config(n_random=6, progress=False)
    >>> fast
    Config(n_random=6, progress=False)
    >>> Config(n_randoms=6)
    Traceback (most recent call last):
    ...
    concepts.validation.OptionError: Unknown option 'n_randoms' for concepts.Config. Did you mean 'n_random'? ...
    """

    n_random: int = 20
    null_pairs: str = "auto"
    statistic: str = "shift"
    relative: bool = False
    target: str = "logit"
    seed: int = 0
    batch_size: int = 32
    classifier: Any = None
    cav: str = "mean"
    C: float = 1.0
    compat: str | None = None
    robustness: bool = True
    alpha: float | str = "auto"
    alpha_scale: float = 0.1
    test_size: float = 0.3
    correction: str = "holm"
    significance: float = 0.05
    n_directions: int = 1000
    pool: str | bool = "auto"
    cache_dir: str | os.PathLike | bool | None = None
    progress: bool = True
    on_error: str = "raise"
    recursive: bool = False
    memory_budget: int | str | None = "2GB"

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            _check(field.name, getattr(self, field.name))

    # ------------------------------------------------------------------ building and changing
    @classmethod
    def names(cls) -> list[str]:
        """The option names, in declaration order.

        Examples
        --------
        >>> "significance" in Config.names()
        True
        """
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def default(cls, name: str) -> Any:
        """The default of option ``name`` (the one default every public function shares).

        Examples
        --------
        >>> Config.default("n_random")
        20
        """
        _check_names(cls, [name])
        return next(f.default for f in dataclasses.fields(cls) if f.name == name)

    def replace(self, **changes: Any) -> "Config":
        """A copy with ``changes`` applied (validated like a new ``Config``).

        Examples
        --------
        >>> Config(seed=1).replace(n_random=30)
        Config(n_random=30, seed=1)
        """
        _check_names(type(self), changes)
        return dataclasses.replace(self, **changes)

    def changed(self) -> dict[str, Any]:
        """The options that differ from their defaults, ``{name: value}``.

        Examples
        --------
        >>> Config(seed=2).changed()
        {'seed': 2}
        """
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if getattr(self, f.name) != f.default}

    def to_options(self) -> Any:
        """The internal :class:`concepts.analysis.Options` of an analysis with these settings."""
        from .analysis import Options

        known = {f.name for f in dataclasses.fields(Options)}
        return Options(**{name: getattr(self, name) for name in self.names() if name in known})

    def __repr__(self) -> str:
        # Only what differs from the defaults: the setting that makes this config special.
        return "Config(" + ", ".join(f"{k}={v!r}" for k, v in self.changed().items()) + ")"


def _check(name: str, value: Any) -> None:
    """:func:`check_option`, with the option's default named as a value that works."""
    try:
        check_option(name, value)
    except OptionError as exc:
        default = next(f.default for f in dataclasses.fields(Config) if f.name == name)
        raise OptionError(f"{exc} The default is {name}={default!r}.") from None


def _check_names(cls: type, names: Any) -> None:
    valid = [f.name for f in dataclasses.fields(cls)]
    for name in names:
        if name not in valid:
            close = difflib.get_close_matches(name, valid, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise OptionError(f"Unknown option {name!r} for concepts.Config.{hint} The options are: "
                              f"{', '.join(valid)}.")


def _init_with_clear_errors(init: Callable[..., None]) -> Callable[..., None]:
    """Unknown or positional options raise an :class:`OptionError` naming the closest option."""
    @functools.wraps(init)
    def __init__(self: Config, *args: Any, **options: Any) -> None:
        if args:
            raise OptionError("Config takes options by name, e.g. Config(n_random=50, seed=1).")
        _check_names(type(self), options)
        init(self, **options)

    return __init__


Config.__init__ = _init_with_clear_errors(Config.__init__)  # type: ignore[method-assign]


def uses_config(function: F) -> F:
    """Resolve a public function's options into one validated :class:`Config` before it runs.

    The decorated function has a ``config`` keyword and an explicit keyword for (some of) the
    options. In the call, explicit keywords win over ``config``, which wins over the defaults; the
    function then receives ``config`` set to the resolved :class:`Config` (and every option keyword
    set to its resolved value), and every other keyword is validated with
    :func:`concepts.validation.validate_options`, all before any compute.

    Parameters
    ----------
    function : callable
        A function whose signature has ``config`` and whose option defaults equal ``Config``'s.

    Returns
    -------
    callable
        The wrapped function, with the same signature.

    Examples
    --------
    >>> @uses_config
    ... def run(data: str | None = None, *, n_random: int = 20, config: Config | None = None) -> int:
    ...     return config.n_random
    >>> run(config=Config(n_random=40)), run(n_random=7, config=Config(n_random=40))
    (40, 7)
    """
    signature = inspect.signature(function)
    options = [name for name in signature.parameters if name in set(Config.names())]

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(*args, **kwargs)
        explicit = dict(bound.arguments)
        base = explicit.pop("config", None)
        if base is not None and not isinstance(base, Config):
            raise OptionError(f"config={type(base).__name__} is not valid: expected a concepts.Config, e.g. "
                              "config=concepts.Config(n_random=50).")
        given = {name: explicit[name] for name in options if name in explicit}
        for name, value in given.items():  # the option's own message, before anything else is checked
            _check(name, value)
        settings = (base or Config()).replace(**given)
        validate_options({k: v for k, v in explicit.items() if k not in options and k != "model"})
        bound.apply_defaults()
        arguments: Mapping[str, Any] = bound.arguments
        resolved = {**arguments, **{name: getattr(settings, name) for name in options}, "config": settings}
        return function(**resolved)

    return wrapper  # type: ignore[return-value]
