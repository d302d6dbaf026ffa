"""Ceilometer's complex query (``POST /v2/query/samples``): a JSON filter, orderby and limit.

The filter is JSON text: ``{"and": [...]}``, ``{"or": [...]}``, ``{"not": {...}}`` or
``{op: {field: value}}`` with op among ``= != < <= > >= =< => in like``.
"""

from __future__ import annotations

import json
import math
from typing import Any, Final

from nephoscope.api.auth import Principal
from nephoscope.api.errors import ClientError
from nephoscope.api.guard import shorten
from nephoscope.api.query import check_text, parse_time
from nephoscope.config import ApiLimits
from nephoscope.storable import MAX_ID_LENGTH
from nephoscope.storage.base import (
    CONDITION_FIELDS,
    Condition,
    Expression,
    Junction,
    SampleFilter,
    Store,
    StoredSample,
)

__all__ = ["parse_filter", "parse_orderby", "run_complex_query"]

#: Nesting a filter may have: deeper is refused, never a recursion error.
MAX_DEPTH: Final = 32
#: ``like`` conditions in one filter, and characters in each pattern: a pattern is
#: matched against every value it reaches at a cost of both lengths multiplied,
#: inside one step the database cannot interrupt.
MAX_LIKES: Final = 4
MAX_LIKE_PATTERN: Final = 128
DEFAULT_LIMIT: Final = 100
MAX_LIMIT: Final = 1_000_000
_OPERATORS: Final = {
    "=": "=",
    "!=": "!=",
    "<": "<",
    "<=": "<=",
    "=<": "<=",
    ">": ">",
    ">=": ">=",
    "=>": ">=",
    "in": "in",
    "like": "like",
}
_ALIASES: Final = {
    "counter_name": "meter",
    "resource": "resource_id",
    "project": "project_id",
    "user": "user_id",
    "id": "message_id",
    "counter_volume": "volume",
    "counter_type": "type",
    "counter_unit": "unit",
}


def _loads(text: str, what: str) -> Any:
    check_text(text, what, None)
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ClientError(f"{what} is not valid JSON: {shorten(str(exc), 200)}") from None


def _field(name: Any) -> str:
    if not isinstance(name, str):
        raise ClientError(f"field {shorten(repr(name), 100)} is not a string")
    check_text(name, "field", MAX_ID_LENGTH + len("resource_metadata."))
    lowered = _ALIASES.get(name.lower(), name)
    if lowered.startswith("resource_metadata."):
        lowered = "metadata." + lowered[len("resource_metadata.") :]
    if lowered.startswith("metadata."):
        parts = lowered[len("metadata.") :].split(".")
        if not all(part and '"' not in part and "\\" not in part for part in parts):
            raise ClientError(f"{name!r} is not a usable metadata key")
        return lowered
    if lowered not in CONDITION_FIELDS:
        raise ClientError(
            f"Unknown field {name!r}: use {', '.join(CONDITION_FIELDS)} or resource_metadata.<key>"
        )
    return lowered


class _FilterReader:
    """Reads one filter, counting its expressions against ``api.limits``."""

    def __init__(self, limits: ApiLimits) -> None:
        self.limits = limits
        self.nodes = 0
        self.likes = 0

    def count(self, nodes: int) -> None:
        self.nodes += nodes
        if self.nodes > self.limits.max_filter_nodes:
            raise ClientError(
                f"the filter has more than {self.limits.max_filter_nodes} expressions "
                "(api.limits.max_filter_nodes)"
            )

    def value(self, field: str, value: Any) -> Any:
        if field == "timestamp":
            if not isinstance(value, str):
                raise ClientError("timestamp values are ISO 8601 strings")
            return parse_time(check_text(value, field, self.limits.max_value_length))
        if isinstance(value, str):
            check_text(value, field, self.limits.max_value_length)
        if field == "volume" or field.startswith("metadata."):
            if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 2**63:
                raise ClientError(f"{field}: {shorten(str(value), 40)} is too large")
            if isinstance(value, float) and not math.isfinite(value):
                raise ClientError(f"{field}: {value} compares with nothing")
            if field == "volume" and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise ClientError("volume values are numbers")
            if not isinstance(value, (str, int, float, bool)):
                raise ClientError(f"{field}: values are strings, numbers or booleans")
            return value
        if not isinstance(value, str):
            raise ClientError(f"{field} values are strings")
        return value

    def expression(self, node: Any, depth: int = 0) -> Expression:
        if depth > MAX_DEPTH:
            raise ClientError(f"the filter is nested deeper than {MAX_DEPTH} levels")
        self.count(1)
        if not isinstance(node, dict) or len(node) != 1:
            raise ClientError(
                f"{shorten(json.dumps(node), 200)} is not an expression of one operator"
            )
        ((op, operand),) = node.items()
        op = str(op).lower()
        if op in ("and", "or"):
            if not isinstance(operand, list) or not operand:
                raise ClientError(f"{op} takes a non-empty list of expressions")
            self.count(len(operand))  # refused before any operand is read
            self.nodes -= len(operand)
            return Junction(op, tuple(self.expression(item, depth + 1) for item in operand))
        if op == "not":
            return Junction("not", (self.expression(operand, depth + 1),))
        if op not in _OPERATORS:
            raise ClientError(
                f"Unknown operator {shorten(op, 40)!r}: use and, or, not, {', '.join(_OPERATORS)}"
            )
        if not isinstance(operand, dict) or len(operand) != 1:
            raise ClientError(f"{op} takes one field and its value")
        ((name, value),) = operand.items()
        field = _field(name)
        kind = _OPERATORS[op]
        if kind == "in":
            if not isinstance(value, list) or not value:
                raise ClientError("in takes a non-empty list of values")
            if len(value) > self.limits.max_in_values:
                raise ClientError(
                    f"in takes at most {self.limits.max_in_values} values "
                    "(api.limits.max_in_values)"
                )
            self.count(len(value))
            return Condition(field, "in", tuple(self.value(field, v) for v in value))
        if kind == "like":
            if not isinstance(value, str):
                raise ClientError("like takes a string pattern")
            self.likes += 1
            if self.likes > MAX_LIKES or len(value) > MAX_LIKE_PATTERN:
                raise ClientError(
                    f"at most {MAX_LIKES} like conditions in a filter, each pattern at most "
                    f"{MAX_LIKE_PATTERN} characters"
                )
        if field == "message_id" and kind not in ("=", "!=", "in"):
            raise ClientError("message_id takes =, != and in")
        if field.startswith("metadata.") and isinstance(value, bool) and kind not in ("=", "!="):
            raise ClientError("booleans take = and !=")
        if kind == "like" and field in ("timestamp", "volume"):
            raise ClientError(f"like compares text, not {field}")
        return Condition(field, kind, self.value(field, value))


def parse_filter(text: str | None, limits: ApiLimits) -> Expression | None:
    """The filter JSON text as an :data:`Expression`; raises :class:`ClientError`."""
    if text is None or not text.strip():
        return None
    return _FilterReader(limits).expression(_loads(text, "filter"))


def parse_orderby(text: str | None) -> list[tuple[str, bool]]:
    """``[{"timestamp": "desc"}, ...]`` as (field, descending) pairs."""
    if text is None or not text.strip():
        return []
    data = _loads(text, "orderby")
    if not isinstance(data, list) or len(data) > len(CONDITION_FIELDS):
        raise ClientError(
            f"orderby is a list of {{field: asc|desc}}, at most {len(CONDITION_FIELDS)}"
        )
    order = []
    for item in data:
        if not isinstance(item, dict) or len(item) != 1:
            raise ClientError("orderby is a list of {field: asc|desc}")
        ((name, direction),) = item.items()
        field = _field(name)
        if field.startswith("metadata.") or field == "message_id":
            raise ClientError(f"cannot order by {name}")
        if not isinstance(direction, str) or direction.lower() not in ("asc", "desc"):
            shown = shorten(repr(direction), 40)
            raise ClientError(f"orderby direction {shown} is not asc or desc")
        order.append((field, direction.lower() == "desc"))
    return order


def run_complex_query(
    store: Store,
    caller: Principal,
    filter_text: str | None,
    orderby_text: str | None,
    limit: int | None,
    limits: ApiLimits,
) -> list[StoredSample]:
    """The samples a complex query asks for, held to the caller's project."""
    where = parse_filter(filter_text, limits)
    orderby = parse_orderby(orderby_text)
    if limit is not None and not 1 <= limit <= MAX_LIMIT:
        raise ClientError(f"Limit must be positive (and at most {MAX_LIMIT})")
    base = SampleFilter() if caller.is_admin else SampleFilter(project_id=caller.project_id)
    try:
        return store.samples(base, limit or DEFAULT_LIMIT, where=where, orderby=orderby)
    except ValueError as exc:
        raise ClientError(str(exc)) from None
