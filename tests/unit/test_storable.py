"""The rules of what a store keeps: metadata passes exactly when it reads back unchanged."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from nephoscope.storable import (
    EARLIEST,
    LATEST,
    MAX_ID_LENGTH,
    MAX_METADATA_DEPTH,
    check_metadata,
    check_text,
    check_time,
)

texts = st.text(st.characters(codec=None), max_size=8) | st.sampled_from(
    ["\x00", "a\ud800", "\udfff", "é☃", "k" * 256, "k" * 255]
)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 10**400])
    | st.floats()
    | texts
)
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=12,
)


def depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    return 0


def same(a: Any, b: Any) -> bool:
    """Equal as JSON values are: NaN equal to nothing, int and float kept apart."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b and not math.isnan(a)
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def keys_and_texts(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(t for v in value.values() for t in keys_and_texts(v))]
    if isinstance(value, list):
        return [t for v in value for t in keys_and_texts(v)]
    return [value] if isinstance(value, str) else []


def keys(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in keys(v)]
    return []


@given(st.dictionaries(texts, documents, max_size=4))
def test_metadata_passes_exactly_when_it_reads_back_unchanged(document: dict[str, Any]) -> None:
    try:
        reads_back = same(orjson.loads(orjson.dumps(document)), document)
    except (TypeError, orjson.JSONDecodeError):
        reads_back = False
    storable = (
        reads_back
        and depth(document) <= MAX_METADATA_DEPTH
        and not any("\x00" in text for text in keys_and_texts(document))
        and all(len(key) <= MAX_ID_LENGTH for key in keys(document))
    )
    problem = check_metadata(document)
    assert (problem is None) == storable, problem


def test_nesting_is_bounded() -> None:
    document: dict[str, Any] = {"v": 1}
    for _ in range(MAX_METADATA_DEPTH - 1):
        document = {"d": document}
    assert check_metadata(document) is None
    assert "deeper" in (check_metadata({"d": document}) or "")
    assert "deeper" in (check_metadata({"l": [[[[document]]]]}) or "")


def test_text() -> None:
    assert check_text("x" * 255) is None
    assert "255" in (check_text("x" * 256) or "")
    assert check_text("x" * 256, None) is None
    assert "NUL" in (check_text("a\x00") or "")
    assert "surrogate" in (check_text("a\ud800") or "")


def test_time_range() -> None:
    assert check_time(EARLIEST) is None
    assert check_time(LATEST - timedelta(microseconds=1)) is None
    assert check_time(LATEST) is not None
    assert check_time(EARLIEST - timedelta(microseconds=1)) is not None
    assert check_time(datetime(2026, 1, 1, tzinfo=UTC)) is None
