"""Small pieces the notification plugins, the definitions and the listener share.

Event-type patterns, oslo.messaging timestamps, volumes given as text, counter
ids that stay the same when a notification is delivered twice, and a log
limiter for failures that would otherwise repeat on every message.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
import re
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Final

__all__ = [
    "compile_event_types",
    "parse_timestamp",
    "stable_counter_id",
    "to_number",
]

#: Characters that only a regular expression uses: a pattern with one of them is
#: read as a regular expression (Ceilometer's shipped ``meters.yaml`` has
#: ``compute.instance.(?!create.start|update).*``); others are shell wildcards.
_REGEX_ONLY: Final = re.compile(r"[()|+^$\\{}]")


def compile_event_types(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A predicate telling whether an event type matches one of ``patterns``.

    A pattern is a shell wildcard (``compute.instance.*``, ``volume.create.?nd``),
    matched against the whole event type. A pattern using regular-expression
    syntax (parentheses, ``|``, ``+``, ``^``, ``$``, ``\\``, braces) is a Python
    regular expression matched from the start of the event type, as Ceilometer
    matches every pattern. Raises ``ValueError`` naming a pattern that does not compile.
    """
    parts: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str) or not pattern:
            raise ValueError(f"event type pattern {pattern!r} is not a non-empty string")
        if _REGEX_ONLY.search(pattern):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(
                    f"event type {pattern!r} is not a valid regular expression: {exc}"
                ) from None
            parts.append(f"(?:{pattern})")
        else:
            parts.append(fnmatch.translate(pattern))
    if not parts:
        return lambda _event_type: False
    matcher = re.compile("|".join(parts)).match
    return lambda event_type: matcher(event_type) is not None


def parse_timestamp(value: Any) -> datetime:
    """A timestamp as OpenStack writes them, timezone-aware in UTC.

    oslo.messaging writes naive UTC (``2024-05-01 12:00:00.123456``); services
    write ISO 8601 with ``T``, ``Z`` or an offset. Naive times are UTC.
    Raises ``ValueError`` for anything else.
    """
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        moment = datetime.fromisoformat(value.strip())
    else:
        raise ValueError(f"{value!r} is not a timestamp")
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def to_number(value: Any) -> int | float:
    """A volume as a number: numbers stay, numeric text is converted.

    ``"17"`` gives 17 and ``"2.5"`` gives 2.5 (Ceilometer would pass the text
    on). Raises ``ValueError`` for booleans, non-finite numbers and other text.
    """
    kind = type(value)
    if kind is int:
        return int(value)
    if kind is float:
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not a finite number")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"{value!r} is not a number") from None
        if not math.isfinite(number):
            raise ValueError(f"{value!r} is not a finite number")
        return number
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return to_number(int(value) if isinstance(value, int) else float(value))
    raise ValueError(f"{value!r} is not a number")


def stable_counter_id(notification_id: str, moment: datetime, name: str, resource_id: str) -> str:
    """A UUIDv7 for one counter of one notification, the same on every delivery.

    Its time part is the counter's timestamp (milliseconds), so ids stay ordered
    by time as the publisher's own are; its 74 other bits come from a digest of
    the notification's ``message_id``, the meter and the resource. A
    notification delivered twice, or replayed from the dead-letter queue, gives
    counters with the same ids, and the store keeps each once.
    """
    digest = hashlib.blake2b(
        f"{notification_id}\x00{name}\x00{resource_id}".encode(), digest_size=10
    ).hexdigest()
    millis = f"{max(0, int(moment.timestamp() * 1000)) & 0xFFFF_FFFF_FFFF:012x}"
    # Version nibble 7; the variant's two top bits 10 (8, 9, a or b).
    variant = _VARIANT[int(digest[4], 16) & 3]
    return f"{millis[:8]}-{millis[8:]}-7{digest[1:4]}-{variant}{digest[5:8]}-{digest[8:]}"


_VARIANT: Final = "89ab"
