"""oslo.messaging notification envelopes, the format OpenStack services put on the bus.

Version 1 is the message itself as JSON; version 2 wraps it as
``{"oslo.version": "2.0", "oslo.message": "<the message as a JSON string>"}``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from nephoscope.messaging.errors import RejectedMessage

__all__ = ["OSLO_MESSAGE", "OSLO_VERSION", "decode_envelope", "encode_notification"]

OSLO_VERSION: Final = "oslo.version"
OSLO_MESSAGE: Final = "oslo.message"
_ENVELOPE_VERSION: Final = "2.0"


def oslo_timestamp(moment: datetime | None = None) -> str:
    """A timestamp as oslo.messaging writes one: naive UTC, space-separated."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.replace(tzinfo=None).isoformat(sep=" ")


def encode_notification(
    payload: Any,
    *,
    event_type: str,
    priority: str,
    publisher_id: str,
    message_id: str | None = None,
) -> bytes:
    """Serialise a notification in an oslo.messaging v2 envelope."""
    message = {
        "message_id": message_id or str(uuid.uuid4()),
        "publisher_id": publisher_id,
        "event_type": event_type,
        "priority": priority,
        "payload": payload,
        "timestamp": oslo_timestamp(),
    }
    return orjson.dumps(
        {OSLO_VERSION: _ENVELOPE_VERSION, OSLO_MESSAGE: orjson.dumps(message).decode()}
    )


def decode_envelope(
    body: bytes | str | Mapping[str, Any], loads: Callable[[Any], Any] = orjson.loads
) -> dict[str, Any]:
    """Return the notification inside a v1 or v2 envelope.

    Raises :class:`RejectedMessage` for a body that is not JSON, not an object,
    or an envelope of an unknown version.
    """
    if isinstance(body, Mapping):
        data: Any = dict(body)
    else:
        try:
            data = loads(body)
        # Decode errors are ValueErrors; the standard library's reader also
        # recurses past its limit on deep nesting.
        except (ValueError, RecursionError) as exc:
            raise RejectedMessage(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RejectedMessage(f"body is a JSON {type(data).__name__}, not an object")
    if OSLO_MESSAGE not in data:
        return data
    version = data.get(OSLO_VERSION)
    if not isinstance(version, str) or version.split(".")[0] != "2":
        raise RejectedMessage(f"unsupported oslo envelope version {version!r}")
    inner = data[OSLO_MESSAGE]
    try:
        message = loads(inner) if isinstance(inner, (str, bytes)) else inner
    except (ValueError, RecursionError) as exc:
        raise RejectedMessage(f"oslo.message is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise RejectedMessage("oslo.message is not a JSON object")
    return message
