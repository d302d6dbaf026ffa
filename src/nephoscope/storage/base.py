"""What every store driver offers: the records it takes and gives, and its interface."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

from nephoscope.counter import Counter

__all__ = [
    "AGGREGATE_FUNCTIONS",
    "CARDINALITY_FIELDS",
    "GROUPBY_FIELDS",
    "MAX_PERIOD",
    "Aggregate",
    "Condition",
    "DeadLetter",
    "Expression",
    "Junction",
    "MeterInfo",
    "ResourceInfo",
    "SampleFilter",
    "Statistic",
    "Store",
    "StoreStatus",
    "StoredDeadLetter",
    "StoredSample",
    "WriteResult",
    "check_statistics_args",
]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message the collector could not store, kept with its reason and raw body."""

    reason: str
    body: bytes
    received_at: datetime
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """What one ``write_batch`` did."""

    stored: int
    duplicates: int
    dead_letters: int


#: Statistics functions a store computes (Ceilometer's ``aggregate.func``).
AGGREGATE_FUNCTIONS: tuple[str, ...] = (
    "avg",
    "sum",
    "min",
    "max",
    "count",
    "stddev",
    "cardinality",
)
#: Fields ``cardinality`` counts the distinct values of (its ``aggregate.param``).
CARDINALITY_FIELDS: tuple[str, ...] = ("resource_id", "user_id", "project_id", "source")
#: Fields statistics may be grouped by, besides ``metadata.<key>`` (dotted for nested keys).
GROUPBY_FIELDS: tuple[str, ...] = ("user_id", "project_id", "resource_id", "source")

#: One aggregate asked of ``statistics``: function and parameter (``cardinality`` only).
Aggregate = tuple[str, str | None]
#: The longest statistics period: ten years of seconds.
MAX_PERIOD: Final = 10 * 366 * 86_400


def check_statistics_args(
    period: int | None, groupby: Sequence[str], aggregates: Sequence[Aggregate]
) -> None:
    """Raise ValueError, saying what is wrong, unless every store can compute statistics
    with these arguments (see :meth:`Store.statistics`)."""
    if period is not None and not 0 < period <= MAX_PERIOD:
        raise ValueError(f"period must be 1 to {MAX_PERIOD} seconds, not {period}")
    for name in groupby:
        if name not in GROUPBY_FIELDS and not (
            name.startswith("metadata.") and len(name) > len("metadata.")
        ):
            raise ValueError(
                f"cannot group by {name!r}: use {', '.join(GROUPBY_FIELDS)} or metadata.<key>"
            )
    for func, param in aggregates:
        if func not in AGGREGATE_FUNCTIONS:
            raise ValueError(f"unknown aggregate function {func!r}")
        if func == "cardinality" and param not in CARDINALITY_FIELDS:
            raise ValueError(f"cardinality needs a parameter among {', '.join(CARDINALITY_FIELDS)}")


@dataclass(frozen=True, slots=True)
class SampleFilter:
    """Which samples a query is about. ``since`` is inclusive, ``until`` exclusive.

    ``metadata`` holds (key, value) pairs a sample's resource metadata must
    equal, a nested key dotted (``image.name``); a value keeps its JSON type
    (``"1"`` does not match ``1``).
    """

    meter: str | None = None
    resource_id: str | None = None
    project_id: str | None = None
    user_id: str | None = None
    source: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    message_id: str | None = None
    metadata: tuple[tuple[str, str | int | float | bool], ...] = ()


#: Fields a :class:`Condition` may test, besides ``metadata.<key>``.
CONDITION_FIELDS: tuple[str, ...] = (
    "meter",
    "type",
    "unit",
    "resource_id",
    "project_id",
    "user_id",
    "source",
    "message_id",
    "timestamp",
    "volume",
)
#: Operators of a :class:`Condition` (``in`` takes a sequence, ``like`` SQL wildcards).
CONDITION_OPERATORS: tuple[str, ...] = ("=", "!=", "<", "<=", ">", ">=", "in", "like")


@dataclass(frozen=True, slots=True)
class Condition:
    """``field op value``: a timestamp value is a datetime, a volume a number."""

    field: str
    op: str
    value: Any


@dataclass(frozen=True, slots=True)
class Junction:
    """``and``/``or`` of its operands, or ``not`` of its one operand."""

    op: str
    operands: tuple[Condition | Junction, ...]


#: A complex query's filter (Ceilometer's ``/v2/query/samples``).
Expression = Condition | Junction


@dataclass(frozen=True, slots=True)
class StoredSample:
    message_id: str
    name: str
    type: str
    unit: str
    volume: float
    user_id: str | None
    project_id: str | None
    resource_id: str
    timestamp: datetime
    recorded_at: datetime
    resource_metadata: Mapping[str, Any]
    source: str


@dataclass(frozen=True, slots=True)
class MeterInfo:
    """A meter as seen on one resource (Ceilometer's ``/v2/meters`` row)."""

    name: str
    type: str
    unit: str
    resource_id: str
    user_id: str | None
    project_id: str | None
    source: str


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    resource_id: str
    user_id: str | None
    project_id: str | None
    source: str
    first_sample_timestamp: datetime
    last_sample_timestamp: datetime
    metadata: Mapping[str, Any]
    meters: tuple[str, ...] = ()


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which
# doubles the cost of building the thousands a grouped statistics query returns.
@dataclass(slots=True)
class Statistic:
    """Aggregates of one meter over one period (the whole range when no period is asked).

    Times are timezone-aware UTC. ``groupby`` and ``aggregate`` are read-only: the
    statistics of one answer may share them (a group's statistics share its
    ``groupby``).
    """

    unit: str
    count: int
    min: float
    max: float
    sum: float
    avg: float
    #: First and last sample timestamps inside the period.
    duration_start: datetime
    duration_end: datetime
    period: int = 0
    period_start: datetime | None = None
    period_end: datetime | None = None
    groupby: Mapping[str, Any] = field(default_factory=dict)
    #: The aggregates asked for, by name (``cardinality/resource_id`` for a parameter).
    aggregate: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredDeadLetter:
    id: int
    received_at: datetime
    reason: str
    body: bytes
    message_id: str | None


@dataclass(frozen=True, slots=True)
class StoreStatus:
    url: str
    samples: int
    resources: int
    dead_letters: int
    last_sample_timestamp: datetime | None
    last_recorded_at: datetime | None
    schema_revision: str | None


class Store(Protocol):
    """A store driver. Drivers are entry points in ``nephoscope.storage`` named by URL scheme."""

    def upgrade(self) -> None:
        """Bring the schema to the newest migration."""

    def schema_revisions(self) -> tuple[str | None, str | None]:
        """The schema revision of the database, and the newest this code knows."""

    def write_batch(
        self, samples: Sequence[Counter], dead_letters: Sequence[DeadLetter] = ()
    ) -> WriteResult:
        """Store samples (each with its ``id``) and dead letters in one transaction.

        A sample whose message id is stored already, or repeated in the batch, is
        counted as a duplicate and not stored again.
        """

    def samples(
        self,
        query: SampleFilter,
        limit: int | None = 100,
        *,
        where: Expression | None = None,
        orderby: Sequence[tuple[str, bool]] = (),
    ) -> list[StoredSample]:
        """Samples matching ``query`` (and ``where``), newest first.

        ``orderby`` lists (field, descending) pairs of :data:`CONDITION_FIELDS`
        (``message_id`` excepted) to sort by instead.
        """

    def meters(self, query: SampleFilter) -> list[MeterInfo]:
        """Distinct meter/resource pairs matching ``query``."""

    def resources(self, query: SampleFilter) -> list[ResourceInfo]:
        """Resources with samples matching ``query``."""

    def statistics(
        self,
        query: SampleFilter,
        period: int | None = None,
        groupby: Sequence[str] = (),
        aggregates: Sequence[Aggregate] = (),
    ) -> list[Statistic]:
        """count/min/max/sum/avg of ``query.meter`` per ``period`` seconds (or over the range).

        ``groupby`` names :data:`GROUPBY_FIELDS` or ``metadata.<key>``; ``aggregates``
        adds :data:`AGGREGATE_FUNCTIONS` to each statistic's ``aggregate``.
        """

    def dead_letters(self, limit: int = 100) -> list[StoredDeadLetter]:
        """The newest dead letters."""

    def expire(self, now: datetime | None = None) -> int:
        """Delete samples older than the retention policy allows; return how many.

        Deletes in bounded transactions, so writers are never held up for long.
        """

    def status(self) -> StoreStatus:
        """Counts and freshness, for ``nephoscope status``."""

    def close(self) -> None:
        """Release connections."""
