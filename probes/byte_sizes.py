"""Sizes in bytes written as text (``"2GB"``, ``"512 MiB"``, ``"1.5GiB"``): the one parser of the toolkit.

:func:`size_in_bytes` reads a number with an optional decimal (kB, MB, GB, TB: powers of 1000)
or binary (KiB, MiB, GiB, TiB: powers of 1024) unit, case and spaces ignored. The two callers
wrap it with their own meaning of "no limit" and their own messages: :func:`parse_size` (the
store's size cap, re-exported by :mod:`probes.cache`) and :func:`probes.memory.parse_bytes`
(the analysis' memory budget).
"""
from __future__ import annotations

import re

__all__ = ["size_in_bytes", "parse_size"]

_SIZE = re.compile(r"([0-9]*\.?[0-9]+)([KMGT]I?)?B?")
_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}


def size_in_bytes(text: str) -> float | None:
    """Bytes written in ``text``, or None when it is not a size.

    Parameters
    ----------
    text : str
        A number of bytes, optionally with a unit: ``"2GB"``, ``"500 mb"``, ``"1.5GiB"``, ``"3k"``.

    Returns
    -------
    float | None
        The size in bytes (not rounded), or None for anything else.

    Examples
    --------
    >>> size_in_bytes("2GB"), size_in_bytes("1.5 KiB"), size_in_bytes("12"), size_in_bytes("2 gigs")
    (2000000000.0, 1536.0, 12.0, None)
    """
    match = _SIZE.fullmatch(str(text).upper().replace(" ", "").strip())
    if not match:
        return None
    unit = match.group(2) or ""
    base = 1024 if unit.endswith("I") else 1000
    return float(match.group(1)) * base ** _POWERS[unit[:1]]


def parse_size(text: str | int | float | None, *, what: str = "size") -> int | None:
    """Bytes from ``"2GB"``, ``"500 MB"``, ``"1.5GiB"`` or a number; ``None``/``""``/``"none"`` mean no cap.

    Parameters
    ----------
    text : str | int | float | None
        The size.
    what : str, default='size'
        What the size is, for the error message.

    Returns
    -------
    int | None
        Bytes, or None for no cap (also ``"0"``, ``"off"``, ``"unlimited"``).

    Raises
    ------
    ValueError
        The text is not a size; the message names ``what`` and shows valid examples.

    Examples
    --------
    >>> parse_size("2GB"), parse_size("1.5 KiB"), parse_size(None)
    (2000000000, 1536, None)
    """
    if text is None:
        return None
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        if text < 0:
            raise ValueError(f"{what} must not be negative, got {text!r}.")
        return int(text)
    cleaned = str(text).strip().upper().replace(" ", "")
    if cleaned in ("", "NONE", "0", "OFF", "UNLIMITED"):
        return None
    size = size_in_bytes(cleaned)
    if size is None:
        raise ValueError(f"{what}={text!r} is not a size; write e.g. '2GB', '500MB', '1.5GiB' or a number of bytes.")
    return int(size)
