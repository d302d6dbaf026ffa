"""Meter messages: Counters in Ceilometer's wire format, signed, and back.

A meter message carries Ceilometer's field names, so a Ceilometer collector can
read ours and a Ceilometer agent can feed our collector.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Final

import orjson

from nephoscope.counter import Counter, InvalidCounter
from nephoscope.messaging.errors import RejectedMessage
from nephoscope.signing import SIGNATURE_FIELD, compute_signature, verify_signature
from nephoscope.storable import (
    MAX_ID_LENGTH,
    MAX_VOLUME,
    check_metadata,
    check_text,
    check_time,
)

__all__ = ["METERING_EVENT_TYPE", "counter_to_message", "message_to_counter"]

#: event_type and priority of the notifications that carry meter messages.
METERING_EVENT_TYPE: Final = "metering"
METERING_PRIORITY: Final = "SAMPLE"

_JSON_OPTIONS: Final = orjson.OPT_NON_STR_KEYS
_TEXT_FIELDS: Final = ("counter_name", "counter_type", "counter_unit", "resource_id")
#: Text fields a store keeps, checked against :func:`nephoscope.storable.check_text`.
_STORED_TEXT: Final = (
    "message_id",
    "counter_name",
    "counter_unit",
    "resource_id",
    "user_id",
    "project_id",
    "source",
)
#: Counter field -> meter message field, where they differ.
_WIRE_NAMES: Final = {
    "name": "counter_name",
    "type": "counter_type",
    "unit": "counter_unit",
    "volume": "counter_volume",
}


# Floats are left out: NaN would not survive JSON as it is signed.
_PLAIN = frozenset({str, int, bool, type(None)})


def _json_safe(metadata: Mapping[str, Any]) -> dict[str, Any]:
    # Sign exactly what the collector will decode: tuples become lists, datetimes
    # strings, int keys text. Otherwise the signature would not survive the bus.
    if not metadata:
        return {}
    if (
        type(metadata) is dict
        and _PLAIN.issuperset(map(type, metadata.values()))
        and all(type(k) is str for k in metadata)
    ):
        return metadata  # already what JSON gives back
    result = orjson.loads(orjson.dumps(metadata, option=_JSON_OPTIONS))
    assert isinstance(result, dict)
    return result


@lru_cache(maxsize=256)
def _isoformat(moment: datetime) -> str:
    # A cycle stamps all its counters with one timestamp: format it once.
    return moment.isoformat()


def counter_to_message(
    counter: Counter, secret: str, message_id: str | None = None
) -> dict[str, Any]:
    """Return the signed meter message for a counter, with ``message_id`` or its own ``id``."""
    message_id = message_id or counter.id
    if message_id is None:
        raise ValueError("a counter needs its message id before it is sent")
    message: dict[str, Any] = {
        "source": counter.source,
        "counter_name": counter.name,
        "counter_type": counter.type,
        "counter_unit": counter.unit,
        "counter_volume": counter.volume,
        "user_id": counter.user_id,
        "user_name": None,
        "project_id": counter.project_id,
        "project_name": None,
        "resource_id": counter.resource_id,
        "timestamp": _isoformat(counter.timestamp),
        "resource_metadata": _json_safe(counter.resource_metadata),
        "message_id": message_id,
        "monotonic_time": None,
    }
    message[SIGNATURE_FIELD] = compute_signature(message, secret, json_values=True)
    return message


def _parse_timestamp(value: Any) -> datetime:
    if not isinstance(value, str):
        raise RejectedMessage(f"timestamp: {value!r} is not an ISO 8601 string")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise RejectedMessage(f"timestamp: {value!r} is not an ISO 8601 string") from None
    # Ceilometer's agents send naive UTC timestamps; read them as UTC.
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    elif moment.tzinfo is not UTC:
        try:
            moment = moment.astimezone(UTC)
        except OverflowError:  # 0001-01-01T00:00+14:00 is before year 1 in UTC
            raise RejectedMessage(f"timestamp: {value!r} is outside the calendar") from None
    problem = check_time(moment)
    if problem is not None:
        raise RejectedMessage(f"timestamp: {problem}")
    return moment


def _check_stored_text(message: Mapping[str, Any]) -> None:
    for key in _STORED_TEXT:
        value = message.get(key)
        # Short ASCII without NUL is the rule: checked without a call.
        if type(value) is str and (
            len(value) > MAX_ID_LENGTH or not value.isascii() or "\x00" in value
        ):
            problem = check_text(value)
            if problem is not None:
                raise RejectedMessage(f"{key}: {problem}")


def _parse_volume(value: Any) -> int | float:
    if isinstance(value, bool):
        raise RejectedMessage(f"counter_volume: {value!r} is not a number")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise RejectedMessage(f"counter_volume: {value!r} is not a number") from None
        if math.isfinite(number) and number.is_integer() and "." not in value:
            return int(number)
        return number
    raise RejectedMessage(f"counter_volume: {value!r} is not a number")


def _optional_text(message: Mapping[str, Any], key: str) -> str | None:
    value = message.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise RejectedMessage(f"{key}: {value!r} is not a string")


def message_to_counter(message: Any, secret: str) -> Counter:
    """Verify and read one meter message; raise :class:`RejectedMessage` with the reason."""
    if type(message) is not dict:
        raise RejectedMessage(f"meter message is a JSON {type(message).__name__}, not an object")
    message_id = message.get("message_id")
    if type(message_id) is not str or not message_id:
        raise RejectedMessage("message_id: missing or not a string")
    try:
        verified = verify_signature(message, secret, json_values=True)
    except UnicodeEncodeError:
        raise RejectedMessage("a string holds a lone surrogate (not UTF-8)", message_id) from None
    if not verified:
        reason = "bad signature" if SIGNATURE_FIELD in message else "no message_signature"
        raise RejectedMessage(reason, message_id)
    get: Callable[[str], Any] = message.get
    try:
        name, kind = get("counter_name"), get("counter_type")
        unit, resource_id = get("counter_unit"), get("resource_id")
        if (
            type(name) is not str
            or type(kind) is not str
            or type(unit) is not str
            or type(resource_id) is not str
        ):
            for key in _TEXT_FIELDS:
                if type(get(key)) is not str:
                    raise RejectedMessage(f"{key}: missing or not a string")
        _check_stored_text(message)
        metadata = get("resource_metadata")
        if metadata is None:
            metadata = {}
        elif type(metadata) is not dict:
            raise RejectedMessage("resource_metadata: not an object")
        elif metadata:
            problem = check_metadata(metadata)
            if problem is not None:
                raise RejectedMessage(f"resource_metadata: {problem}")
        volume = get("counter_volume")
        if type(volume) is not int and type(volume) is not float:
            volume = _parse_volume(volume)
        if volume > MAX_VOLUME or volume < -MAX_VOLUME:  # NaN: refused by Counter
            raise RejectedMessage(f"counter_volume: beyond ±{MAX_VOLUME:g}")
        user_id = get("user_id")
        if user_id is not None and type(user_id) is not str:
            user_id = _optional_text(message, "user_id")
        project_id = get("project_id")
        if project_id is not None and type(project_id) is not str:
            project_id = _optional_text(message, "project_id")
        # Positional: a call with keywords costs more, once per sample.
        return Counter(
            name,
            kind,
            unit,
            volume,
            user_id,
            project_id,
            resource_id,
            _parse_timestamp(get("timestamp")),
            metadata,
            get("source") or "openstack",
            message_id,
        )
    except RejectedMessage as exc:
        exc.message_id = message_id
        raise
    except InvalidCounter as exc:
        raise RejectedMessage(
            f"{_WIRE_NAMES.get(exc.field, exc.field)}: {exc.reason}", message_id
        ) from None
