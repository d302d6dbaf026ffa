"""Ceilometer's simple query (``q.field``, ``q.op``, ``q.value``, ``q.type``) read into a filter.

As in Ceilometer, only ``timestamp`` takes ordering operators; the other fields
take ``eq``. Tenancy is applied here: a caller without the admin role is held to
its own project whatever the query says.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from nephoscope import storable
from nephoscope.api.auth import Principal
from nephoscope.api.errors import ClientError
from nephoscope.config import ApiLimits
from nephoscope.storable import MAX_ID_LENGTH
from nephoscope.storage.base import SampleFilter

__all__ = ["OPERATORS", "TYPES", "Query", "convert", "parse_time", "read_query"]

OPERATORS: Final = ("lt", "le", "eq", "ne", "ge", "gt")
TYPES: Final = ("", "integer", "float", "string", "boolean", "datetime")
#: Plain fields a query may name, by endpoint kind, besides ``metadata.*``.
SAMPLE_FIELDS: Final = (
    "timestamp",
    "resource_id",
    "project_id",
    "user_id",
    "source",
    "meter",
    "message_id",
)
#: Ceilometer's old names for the same fields.
_ALIASES: Final = {
    "resource": "resource_id",
    "project": "project_id",
    "user": "user_id",
    "counter_name": "meter",
    "id": "message_id",
}
_INT_RE: Final = re.compile(r"[+-]?\d+")
_FLOAT_RE: Final = re.compile(r"[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?")
_INT_LIMIT: Final = 2**63
#: Digits of the longest integer a query compares with (2**63 has 19).
_INT_DIGITS: Final = 20
_ONE_US: Final = timedelta(microseconds=1)
_EARLIEST: Final = datetime(1, 1, 2, tzinfo=UTC)
_LATEST: Final = datetime(9999, 12, 30, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Query:
    """A read query: the filter, and whether it can match anything at all."""

    filter: SampleFilter
    #: False when the conditions contradict (two values for one field, another
    #: tenant's project): the answer is empty without asking the store.
    possible: bool = True


def check_text(value: str, what: str, limit: int | None = MAX_ID_LENGTH) -> str:
    """Refuse text no store holds (NUL characters, lone surrogates), or longer than
    ``limit`` characters (names, ids and metadata keys: Ceilometer's 255)."""
    problem = storable.check_text(value, limit)
    if problem is not None:
        raise ClientError(f"{what}: {problem}")
    return value


def parse_time(value: str, what: str = "timestamp") -> datetime:
    """An ISO 8601 time; naive is UTC. Raises :class:`ClientError`.

    Times beyond the calendar's ends once in UTC (``0001-01-01T00:00+14:00``) are
    taken as its first and last days: no sample is stored there.
    """
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ClientError(f"{what}: {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    else:
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:
            return _EARLIEST if moment.year == 1 else _LATEST
    # Keep a microsecond of room either side, so le/gt never overflow.
    return min(max(moment, _EARLIEST), _LATEST)


def convert(value: str, kind: str, field: str) -> str | int | float | bool | datetime:
    """``value`` as ``kind`` (Ceilometer's ``q.type``); an empty kind guesses it."""
    if kind not in TYPES:
        raise ClientError(
            f"Invalid input for field/attribute type. Value: '{kind}'. "
            f"the data type {kind} is not supported. The supported data type list is: "
            "integer, float, string, boolean, datetime"
        )
    try:
        if kind == "string":
            return value
        if kind == "integer":
            if len(value.strip().lstrip("+-")) > _INT_DIGITS:
                raise ValueError(value)
            number = int(value.strip())
            if abs(number) >= _INT_LIMIT:
                raise ValueError(value)
            return number
        if kind == "float":
            real = float(value)
            if not math.isfinite(real):
                raise ValueError(value)
            return real
        if kind == "boolean":
            lowered = value.strip().lower()
            if lowered in ("true", "1", "yes", "on", "t", "y"):
                return True
            if lowered in ("false", "0", "no", "off", "f", "n"):
                return False
            raise ValueError(value)
        if kind == "datetime":
            return parse_time(value, field)
    except (ValueError, ClientError):
        raise ClientError(
            f"Unable to convert the value {value} from field {field} to the expected data "
            f"type {kind}."
        ) from None
    # No type: guess as Ceilometer does (integer, float, boolean, else string).
    if len(value) <= _INT_DIGITS + 1 and _INT_RE.fullmatch(value) and abs(int(value)) < _INT_LIMIT:
        return int(value)
    if _FLOAT_RE.fullmatch(value) and math.isfinite(float(value)):
        return float(value)
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    return value


def read_query(
    principal: Principal,
    fields: Sequence[str],
    ops: Sequence[str],
    values: Sequence[str],
    types: Sequence[str],
    *,
    limits: ApiLimits,
    allowed: Sequence[str] = SAMPLE_FIELDS,
    base: SampleFilter | None = None,
) -> Query:
    """Read the ``q.*`` lists into a :class:`Query` the ``principal`` may ask."""
    if len(values) != len(fields) or len(ops) > len(fields) or len(types) > len(fields):
        raise ClientError(
            "q.field, q.op, q.value and q.type must give one entry per condition "
            f"({len(fields)} field(s), {len(values)} value(s))"
        )
    if len(fields) > limits.max_conditions:
        raise ClientError(
            f"{len(fields)} q conditions: at most {limits.max_conditions} "
            "(api.limits.max_conditions)"
        )
    ops = [*ops, *[""] * (len(fields) - len(ops))]
    types = [*types, *[""] * (len(fields) - len(types))]
    flt = base or SampleFilter()
    possible = True
    plain: dict[str, Any] = {}
    if flt.meter is not None:
        plain["meter"] = flt.meter
    metadata: dict[str, str | int | float | bool] = {}
    for field, op, value, kind in zip(fields, ops, values, types, strict=True):
        check_text(field, "q.field", MAX_ID_LENGTH + len("resource_metadata."))
        check_text(value, f"q.value of {field}", limits.max_value_length)
        op = op or "eq"
        if op not in OPERATORS:
            raise ClientError(
                f"Invalid input for field/attribute op. Value: '{op}'. "
                f"unimplemented operator for {field}"
            )
        typed = convert(value, kind, field)
        name = _ALIASES.get(field, field)
        if name.startswith("resource_metadata."):
            name = "metadata." + name[len("resource_metadata.") :]
        if name.startswith("metadata."):
            key = name[len("metadata.") :]
            if not key or any(not part or '"' in part or "\\" in part for part in key.split(".")):
                raise ClientError(f"q.field: {field!r} is not a usable metadata key")
            if op != "eq":
                raise ClientError(f"operator {op} is not supported for field {field}: only eq")
            if isinstance(typed, datetime):
                typed = value
            if key in metadata and metadata[key] != typed:
                possible = False
            metadata[key] = typed
            continue
        if name not in allowed:
            raise ClientError(
                f'Unknown argument: "{field}": unrecognized field in query, '
                f"valid keys: {', '.join(sorted(allowed))}, metadata.<key>"
            )
        if name == "timestamp":
            moment = typed if isinstance(typed, datetime) else parse_time(value, field)
            if op == "ne":
                raise ClientError("operator ne is not supported for field timestamp")
            since, until = flt.since, flt.until
            if op in ("gt", "ge", "eq"):
                low = moment + _ONE_US if op == "gt" else moment
                since = low if since is None else max(since, low)
            if op in ("lt", "le", "eq"):
                high = moment if op == "lt" else moment + _ONE_US
                until = high if until is None else min(until, high)
            flt = replace(flt, since=since, until=until)
            continue
        if op != "eq":
            raise ClientError(f"operator {op} is not supported for field {field}: only eq")
        if name in plain and plain[name] != value:
            possible = False
        plain[name] = value
    flt = replace(flt, metadata=tuple(sorted(metadata.items())), **plain)
    if flt.since is not None and flt.until is not None and flt.since >= flt.until:
        possible = False
    return scoped(principal, Query(flt, possible))


def scoped(principal: Principal, query: Query) -> Query:
    """Hold a caller without the admin role to its own project."""
    if principal.is_admin:
        return query
    flt = query.filter
    if flt.project_id is not None and flt.project_id != principal.project_id:
        return Query(replace(flt, project_id=principal.project_id), possible=False)
    return Query(replace(flt, project_id=principal.project_id), query.possible)
