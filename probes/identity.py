"""Identity of inputs by content: file hashes that cannot go stale, and model fingerprints.

Every cache key of the toolkit is built from these identities, so they must change whenever
what they identify changes, and never be guessed:

* :func:`file_sha256` hashes a file's bytes; the digest is memoised per process on
  ``(path, size, mtime_ns, inode, device, ctime_ns)`` and recomputed when any of these change. A
  file modified within :data:`RACY_SECONDS` of being hashed is not memoised at all (the "racy
  clean" rule of git): a same-size rewrite inside one timestamp tick would otherwise keep the
  old digest.
* :func:`callable_identity` identifies user functions (source, defaults, closure values); the
  one rule for preprocessing functions and measure channels alike.
* :func:`model_identity` hashes a Keras model's config, every weight's bytes and the source
  code of its custom (non-Keras) layer classes. When the config cannot be obtained it returns
  ``None``: the caller must then not cache, rather than key on a guess.

Examples
--------
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "a.txt")
>>> _ = open(path, "w").write("hello")
>>> file_sha256(path)[:16]
'2cf24dba5fb0a30e'
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import threading
import time
from typing import Any

import numpy as np

#: Files changed less than this many seconds before hashing are re-hashed on every call.
RACY_SECONDS = 2.0

#: Prefix of a fingerprint that identifies nothing (see :func:`unidentified_fingerprint`).
UNIDENTIFIED_PREFIX = "unidentified-"

_CHUNK = 2 ** 20
_MEMO: dict[tuple, str] = {}
_MEMO_LOCK = threading.Lock()


def sha256_file(path: str | os.PathLike) -> str:
    """SHA-256 hex digest of a file's bytes, read in 1 MiB chunks (never memoised).

    Examples
    --------
    >>> sha256_file(__file__) == sha256_file(__file__)
    True
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _stat_key(path: str | os.PathLike, stat: os.stat_result) -> tuple:
    return (os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ino, stat.st_dev, stat.st_ctime_ns)


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes, memoised on (path, size, mtime_ns, inode, device, ctime_ns).

    A change of any of these re-hashes the file; a file whose modification is younger than
    :data:`RACY_SECONDS` is hashed again on every call, since its timestamps cannot yet prove
    that it was not rewritten in place.

    Raises
    ------
    OSError
        The file cannot be read (``FileNotFoundError``, ``PermissionError``, ...).

    Examples
    --------
    >>> file_sha256(__file__) == sha256_file(__file__)
    True
    """
    stat = os.stat(path)
    key = _stat_key(path, stat)
    digest = _MEMO.get(key)
    if digest is not None:
        return digest
    digest = sha256_file(path)
    # Timestamps after the hash was taken: the file may have changed while it was being read.
    after = os.stat(path)
    racy = time.time() - max(stat.st_mtime, stat.st_ctime) < RACY_SECONDS
    if _stat_key(path, after) == key and not racy:
        with _MEMO_LOCK:
            _MEMO[key] = digest
    return digest


def forget_files() -> None:
    """Drop every memoised file hash (tests; or after bulk changes on a file system with coarse clocks).

    Examples
    --------
    >>> forget_files()
    """
    with _MEMO_LOCK:
        _MEMO.clear()


# --------------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------------

def _code_digest(cls: type) -> str:
    """Source of a class, or (no source file, e.g. defined in a notebook) its methods' bytecode."""
    try:
        return "src:" + hashlib.sha256(inspect.getsource(cls).encode()).hexdigest()
    except (OSError, TypeError):
        digest = hashlib.sha256()
        for name, member in sorted(vars(cls).items()):
            func = getattr(member, "__func__", member)
            code = getattr(func, "__code__", None)
            if code is not None:
                digest.update(name.encode())
                digest.update(code.co_code)
                digest.update(repr(code.co_consts).encode())
        return "code:" + digest.hexdigest()


def _custom_classes(model: Any) -> list[type]:
    """Classes of the model and its layers (nested models included) not defined by Keras itself."""
    seen: dict[str, type] = {}
    stack = [model]
    visited: set[int] = set()
    while stack:
        item = stack.pop()
        if id(item) in visited:
            continue
        visited.add(id(item))
        for cls in type(item).__mro__:
            module = getattr(cls, "__module__", "") or ""
            if module.split(".")[0] in ("keras", "tensorflow", "tf_keras", "builtins", "abc"):
                continue
            seen.setdefault(f"{module}.{cls.__qualname__}", cls)
        stack.extend(getattr(item, "layers", None) or [])
    return [seen[name] for name in sorted(seen)]


def model_identity(model: Any) -> str | None:
    """SHA-256 over a Keras model's class, config, custom-layer source and weights; None if unknown.

    The config (``model.get_config()``) pins the architecture, each weight's path, dtype, shape
    and bytes pin the parameters, and the source code of every class not defined by Keras
    (custom layers, a subclassed model) pins what ``call`` does, which no config records.

    Returns
    -------
    str | None
        The hex digest, or ``None`` when ``get_config`` fails or returns something that is not
        JSON-serialisable (the caller should then compute without caching).

    Examples
    --------
    >>> import keras
    >>> a = keras.Sequential([keras.Input((4,), name="x"), keras.layers.Dense(2, name="d")], name="m")
    >>> len(model_identity(a)), model_identity(a) == model_identity(a)
    (64, True)
    >>> b = keras.models.clone_model(a)   # the same config, freshly initialised weights
    >>> model_identity(b) == model_identity(a)
    False
    >>> b.set_weights(a.get_weights())
    >>> model_identity(b) == model_identity(a)
    True
    """
    try:
        config = json.dumps(model.get_config(), sort_keys=True, default=repr)
    except Exception:
        return None
    digest = hashlib.sha256()
    digest.update(b"model-identity/v1\n")
    digest.update(f"{type(model).__module__}.{type(model).__qualname__}\n".encode())
    digest.update(f"{len(config)}:".encode())
    digest.update(config.encode())
    for cls in _custom_classes(model):
        digest.update(f"class {cls.__module__}.{cls.__qualname__} {_code_digest(cls)}\n".encode())
    for weight in model.weights:
        value = np.ascontiguousarray(np.asarray(weight.numpy()))
        digest.update(f"{weight.path}|{value.dtype.str}|{value.shape}|".encode())
        digest.update(value.data)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Functions
# --------------------------------------------------------------------------------------------------

def _value_token(value: Any, depth: int) -> str:
    """A stable text token for a value bound into a function (argument, default, closure cell)."""
    if isinstance(value, np.ndarray):
        from probes.sources import hash_array

        return f"ndarray:{hash_array(value)}"
    if callable(value) and not isinstance(value, type) and depth < 4:
        return callable_identity(value, _depth=depth + 1)
    return repr(value)


def _function_code(func: Any) -> str:
    """Source digest of a function or class; its bytecode when there is no source; else its repr."""
    try:
        return "src:" + hashlib.sha256(inspect.getsource(func).encode()).hexdigest()
    except (OSError, TypeError):
        code = getattr(func, "__code__", None)
        if code is not None:  # e.g. defined at an interactive prompt: no source file
            return "code:" + hashlib.sha256(code.co_code + repr(code.co_consts).encode()).hexdigest()
        return "repr:" + repr(func)


def callable_identity(fn: Any, *, _depth: int = 0) -> str:
    """A string identifying a user function in cache keys (preprocessing, measure channels).

    The one rule for every cache key that depends on user code: module and qualified name, the
    SHA-256 of the source code (of the bytecode and constants when there is no source file, e.g.
    at an interactive prompt; ``repr`` for builtins), default arguments, keyword defaults and
    closure values (arrays by content, nested functions recursively); a
    :func:`functools.partial` adds its bound arguments; a callable object is named by its class
    and adds its attributes. Editing the code or binding other values changes the identity;
    renaming a module does too (a harmless cache miss).

    Parameters
    ----------
    fn : callable
        The function, method, partial or callable object.

    Returns
    -------
    str
        The identity (not a digest: callers hash it into their keys).

    Examples
    --------
    >>> def factory(k):
    ...     return lambda x: x * k
    >>> callable_identity(factory(1)) != callable_identity(factory(2))
    True
    >>> callable_identity(factory(1)) == callable_identity(factory(1))
    True
    """
    if isinstance(fn, functools.partial):
        args = ",".join(_value_token(a, _depth) for a in fn.args)
        kwargs = ",".join(f"{k}={_value_token(v, _depth)}" for k, v in sorted(fn.keywords.items()))
        return f"partial({callable_identity(fn.func, _depth=_depth + 1)};{args};{kwargs})"
    # Functions, builtins and methods name themselves; a callable object is named by its class.
    func = fn if hasattr(fn, "__qualname__") else type(fn)
    module = getattr(func, "__module__", None) or "?"
    qualname = getattr(func, "__qualname__", None) or type(func).__name__
    extras = []
    raw = inspect.unwrap(fn) if inspect.isfunction(fn) else fn
    if inspect.isfunction(raw):
        # Same source with other defaults or closure values (a factory's inner function) must differ.
        if raw.__defaults__:
            extras.append("defaults=" + ",".join(_value_token(v, _depth) for v in raw.__defaults__))
        if raw.__kwdefaults__:
            extras.append("kwdefaults=" + ",".join(f"{k}={_value_token(v, _depth)}"
                                                   for k, v in sorted(raw.__kwdefaults__.items())))
        if raw.__closure__:
            cells = []
            for cell in raw.__closure__:
                try:
                    cells.append(_value_token(cell.cell_contents, _depth))
                except ValueError:  # an empty cell
                    cells.append("<empty>")
            extras.append("closure=" + ",".join(cells))
    elif not inspect.ismethod(fn):
        # A callable object: its attributes configure it.
        state = getattr(fn, "__dict__", None)
        if state:
            extras.append("state=" + ",".join(f"{k}={_value_token(v, _depth)}"
                                              for k, v in sorted(state.items())))
    return ";".join([f"{module}.{qualname}", _function_code(func), *extras])


def unidentified_fingerprint() -> str:
    """A fingerprint that matches nothing else, for a model whose identity cannot be established.

    Examples
    --------
    >>> a, b = unidentified_fingerprint(), unidentified_fingerprint()
    >>> a != b and is_identified(a) is False
    True
    """
    return UNIDENTIFIED_PREFIX + os.urandom(16).hex()


def is_identified(fingerprint: str) -> bool:
    """False for a fingerprint from :func:`unidentified_fingerprint` (results must not be cached).

    Examples
    --------
    >>> is_identified("ab" * 32)
    True
    """
    return not str(fingerprint).startswith(UNIDENTIFIED_PREFIX)


@functools.lru_cache(maxsize=1)
def package_version() -> str:
    """The installed version of ``concepts-toolkit`` (``"unknown"`` when it is not installed).

    It enters every cache key, so an upgrade never reuses results computed by older code. Looked
    up once per process (the metadata scan costs about a millisecond, and every key needs it).

    Examples
    --------
    >>> isinstance(package_version(), str)
    True
    """
    try:
        from importlib.metadata import version

        return version("concepts-toolkit")
    except Exception:
        return "unknown"


__all__ = ["RACY_SECONDS", "UNIDENTIFIED_PREFIX", "callable_identity",
           "file_sha256", "forget_files", "is_identified",
           "model_identity", "package_version", "sha256_file", "unidentified_fingerprint"]
