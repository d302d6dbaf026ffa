"""What a sample may hold so that every store keeps it and every reader gets it back.

The collector dead-letters, and the API answers 400 to, a sample outside these
rules: once stored, a value no JSON reader takes back (an integer of 400 digits,
a lone surrogate) or a time the calendar cannot shift by a period would break
every read that touches it, for every project sharing the resource.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

__all__ = [
    "EARLIEST",
    "LATEST",
    "MAX_ID_LENGTH",
    "MAX_METADATA_DEPTH",
    "MAX_VOLUME",
    "check_metadata",
    "check_text",
    "check_time",
]

#: Longest meter name, unit, id, source and metadata key, in characters (Ceilometer's
#: columns are 255 wide).
MAX_ID_LENGTH: Final = 255
#: Deepest nesting of objects and lists in resource metadata.
MAX_METADATA_DEPTH: Final = 32
#: Sample times are from the Unix epoch (included) to the year 9000 (excluded):
#: a statistics period (at most ten years) always fits after any of them.
EARLIEST: Final = datetime(1970, 1, 1, tzinfo=UTC)
LATEST: Final = datetime(9000, 1, 1, tzinfo=UTC)
#: Largest volume, either sign: statistics sum volumes and their squares in
#: doubles, which a few volumes near the float maximum (1e308) would overflow.
MAX_VOLUME: Final = 1e100
#: Integers every reader of stored JSON takes back exactly: signed or unsigned 64 bits.
_INT_MIN: Final = -(2**63)
_INT_MAX: Final = 2**64 - 1


def check_text(value: str, limit: int | None = MAX_ID_LENGTH) -> str | None:
    """Why ``value`` cannot be stored as text (or None when it can).

    Refused: NUL characters (PostgreSQL text and jsonb hold none), lone
    surrogates (not UTF-8) and, with ``limit``, more than ``limit`` characters.
    """
    if limit is not None and len(value) > limit:
        return f"longer than {limit} characters"
    if "\x00" in value:
        return "NUL characters are not allowed"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return "not valid UTF-8 (a lone surrogate)"
    return None


def check_time(moment: datetime) -> str | None:
    """Why a sample cannot be stamped ``moment`` (an aware datetime), or None."""
    if not EARLIEST <= moment < LATEST:
        return (
            f"{moment.isoformat()} is outside {EARLIEST.date().isoformat()} to "
            f"{LATEST.date().isoformat()} (UTC)"
        )
    return None


def check_metadata(document: Mapping[str, Any]) -> str | None:
    """Why resource metadata cannot be stored and read back as it is, or None.

    Keys are text of at most :data:`MAX_ID_LENGTH` characters; values are text,
    booleans, null, finite floats, 64-bit integers (signed or unsigned), and
    lists and objects of those, nested at most :data:`MAX_METADATA_DEPTH` deep.
    """
    return _check_object(document, "", 1)


def _check_object(document: Mapping[str, Any], path: str, depth: int) -> str | None:
    for key, value in document.items():
        if type(key) is not str:
            return f"{path}{key!r}: keys are text"
        if len(key) > MAX_ID_LENGTH or not key.isascii() or "\x00" in key:
            problem = check_text(key)
            if problem is not None:
                return f"{path}{key[:40]!r}: key {problem}"
        # The common values pass here without a call: every sample has a few.
        kind = type(value)
        if kind is str:
            if value.isascii() and "\x00" not in value:
                continue
        elif kind is bool or value is None or (kind is int and _INT_MIN <= value <= _INT_MAX):
            continue
        problem = _check_value(value, f"{path}{key}", depth)
        if problem is not None:
            return problem
    return None


def _check_value(value: Any, where: str, depth: int) -> str | None:
    kind = type(value)
    if kind is str:
        problem = check_text(value, None)
        return None if problem is None else f"{where}: {problem}"
    if kind is bool or value is None:
        return None
    if kind is int:
        return None if _INT_MIN <= value <= _INT_MAX else f"{where}: integer outside 64 bits"
    if kind is float:
        return None if math.isfinite(value) else f"{where}: {value} is not a finite number"
    if kind is dict or kind is list or kind is tuple or isinstance(value, Mapping):
        if depth >= MAX_METADATA_DEPTH:
            return f"{where}: nested deeper than {MAX_METADATA_DEPTH} levels"
        if kind is list or kind is tuple:
            for index, item in enumerate(value):
                problem = _check_value(item, f"{where}[{index}]", depth + 1)
                if problem is not None:
                    return problem
            return None
        return _check_object(value, f"{where}.", depth + 1)
    return f"{where}: a {kind.__name__} is not JSON"
