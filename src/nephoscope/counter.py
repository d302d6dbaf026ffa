"""The Counter: one measurement of one resource, as plugins produce it."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

__all__ = [
    "TYPES",
    "TYPE_CUMULATIVE",
    "TYPE_DELTA",
    "TYPE_GAUGE",
    "Counter",
    "CounterType",
    "InvalidCounter",
    "Meter",
]

CounterType = Literal["cumulative", "gauge", "delta"]

#: Grows since the resource began (CPU time); a drop means the counter was reset.
TYPE_CUMULATIVE: Final = "cumulative"
#: A level now (memory in use).
TYPE_GAUGE: Final = "gauge"
#: The amount since the previous sample.
TYPE_DELTA: Final = "delta"
TYPES: Final = frozenset({TYPE_CUMULATIVE, TYPE_GAUGE, TYPE_DELTA})


class InvalidCounter(ValueError):
    """A Counter field has a value that cannot be metered."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


#: Volumes are stored as floats: an integer beyond this cannot be.
_FLOAT_MAX: Final = sys.float_info.max
#: Stands for "no resource_metadata given": each such counter gets a new dict.
_NEW_DICT: Final[Any] = object()


@dataclass(frozen=True, slots=True, init=False)
class Counter:
    """An immutable measurement; invalid values are refused when it is built.

    ``id`` is the message id, given by the publisher when the counter is sent.
    ``timestamp`` must be timezone-aware and is kept in UTC.
    """

    name: str
    type: CounterType
    unit: str
    volume: int | float
    user_id: str | None
    project_id: str | None
    resource_id: str
    timestamp: datetime
    resource_metadata: Mapping[str, Any] = field(default_factory=dict)
    source: str = "openstack"
    id: str | None = None

    def __init__(
        self,
        name: str,
        type: CounterType,
        unit: str,
        volume: int | float,
        user_id: str | None,
        project_id: str | None,
        resource_id: str,
        timestamp: datetime,
        resource_metadata: Mapping[str, Any] = _NEW_DICT,
        source: str = "openstack",
        id: str | None = None,
    ) -> None:
        # The __init__ dataclass writes for a frozen class sets each field with
        # object.__setattr__, which looks the slot up by name: setting it through
        # its descriptor costs a third less, for every sample the collector reads.
        s = _SLOTS
        s[0](self, name)
        s[1](self, type)
        s[2](self, unit)
        s[3](self, volume)
        s[4](self, user_id)
        s[5](self, project_id)
        s[6](self, resource_id)
        s[7](self, timestamp)
        s[8](self, {} if resource_metadata is _NEW_DICT else resource_metadata)
        s[9](self, source)
        s[10](self, id)
        self.__post_init__()

    def __post_init__(self) -> None:
        # Built for every sample on both sides of the bus: exact-type checks
        # first, the general isinstance (an ABC check for Mapping costs half a
        # microsecond) only for the unusual case.
        name = self.name
        if not (type(name) is str or isinstance(name, str)) or not name:
            raise InvalidCounter("name", "must be a non-empty string")
        if self.type not in TYPES:
            raise InvalidCounter("type", f"{self.type!r} is not one of cumulative, gauge, delta")
        unit = self.unit
        if type(unit) is not str and not isinstance(unit, str):
            raise InvalidCounter("unit", "must be a string")
        volume = self.volume
        kind = type(volume)
        if kind is float:
            if not math.isfinite(volume):
                raise InvalidCounter("volume", f"{volume!r} is not a finite number")
        elif kind is int:
            if not -_FLOAT_MAX <= volume <= _FLOAT_MAX:
                raise InvalidCounter("volume", "is beyond what a float holds")
        else:
            if isinstance(volume, bool) or not isinstance(volume, (int, float)):
                raise InvalidCounter("volume", f"{volume!r} is not a number")
            if isinstance(volume, float) and not math.isfinite(volume):
                raise InvalidCounter("volume", f"{volume!r} is not a finite number")
        resource_id = self.resource_id
        if not (type(resource_id) is str or isinstance(resource_id, str)) or not resource_id:
            raise InvalidCounter("resource_id", "must be a non-empty string")
        user_id, project_id = self.user_id, self.project_id
        if user_id is not None and type(user_id) is not str and not isinstance(user_id, str):
            raise InvalidCounter("user_id", "must be a string or None")
        if (
            project_id is not None
            and type(project_id) is not str
            and not isinstance(project_id, str)
        ):
            raise InvalidCounter("project_id", "must be a string or None")
        ts = self.timestamp
        if type(ts) is not datetime and not isinstance(ts, datetime):
            raise InvalidCounter("timestamp", f"{ts!r} is not a datetime")
        if ts.tzinfo is not UTC:
            if ts.utcoffset() is None:
                raise InvalidCounter("timestamp", "must be timezone-aware (naive datetime given)")
            object.__setattr__(self, "timestamp", ts.astimezone(UTC))
        metadata = self.resource_metadata
        if type(metadata) is not dict and not isinstance(metadata, Mapping):
            raise InvalidCounter("resource_metadata", "must be a mapping")
        source = self.source
        if not (type(source) is str or isinstance(source, str)) or not source:
            raise InvalidCounter("source", "must be a non-empty string")

    def as_dict(self) -> dict[str, Any]:
        """The counter's fields as JSON-ready values (timestamp in ISO 8601)."""
        return {
            "name": self.name,
            "type": self.type,
            "unit": self.unit,
            "volume": self.volume,
            "user_id": self.user_id,
            "project_id": self.project_id,
            "resource_id": self.resource_id,
            "timestamp": self.timestamp.isoformat(),
            "resource_metadata": dict(self.resource_metadata),
            "source": self.source,
            "id": self.id,
        }

    def with_id(self, message_id: str) -> Counter:
        """Return a copy carrying ``message_id``."""
        return replace(self, id=message_id)


#: The setter of each field's slot, in field order.
_SLOTS: Final[tuple[Callable[[Counter, Any], None], ...]] = tuple(
    vars(Counter)[f.name].__set__ for f in fields(Counter)
)


@dataclass(frozen=True, slots=True)
class Meter:
    """A meter's fixed facts, spelt once so that every counter of it agrees."""

    name: str
    type: CounterType
    unit: str
    source: str = "openstack"

    def counter(
        self,
        volume: int | float,
        resource_id: str,
        timestamp: datetime,
        metadata: Mapping[str, Any] | None = None,
        *,
        user_id: str | None = None,
        project_id: str | None = None,
    ) -> Counter:
        """A counter of this meter."""
        return Counter(
            name=self.name,
            type=self.type,
            unit=self.unit,
            volume=volume,
            user_id=user_id,
            project_id=project_id,
            resource_id=resource_id,
            timestamp=timestamp,
            resource_metadata={} if metadata is None else metadata,
            source=self.source,
        )
