"""Rates of cumulative meters, from samples ordered by resource and time.

A cumulative counter only grows while its resource lives; a drop means it was
reset (a reboot, an agent restart), and the new value is then what grew since
the reset. So the growth between two consecutive samples of one resource is
``current - previous``, or ``current`` after a drop: never negative.

The ``rate`` aggregate of a statistic: each pair of consecutive samples of a
resource gives a growth over an elapsed time, attributed to the period (and
groupby bucket) of the pair's later sample; a statistic's rate is the sum over
the resources in it of (sum of growths / sum of elapsed seconds). Both samples
of a pair must match the query, so the first sample of each resource in the
range only opens its series.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

import orjson

from nephoscope.counter import TYPE_CUMULATIVE
from nephoscope.storage.base import SampleFilter, Statistic, Store, StoredSample

__all__ = [
    "RATE",
    "NotCumulative",
    "Step",
    "check_cumulative",
    "increase",
    "metadata_value",
    "ordered_samples",
    "steps",
    "with_rates",
]

#: The aggregate function name (``aggregate.func=rate``).
RATE: Final = "rate"
#: Ordering that puts each resource's samples together, oldest first.
#: One series' samples together, oldest first: a resource id shared by projects is
#: a series per project, never paired across them.
BY_RESOURCE_AND_TIME: Final = (("resource_id", False), ("project_id", False), ("timestamp", False))


class NotCumulative(ValueError):
    """A rate was asked of a meter that is not cumulative."""


@dataclass(frozen=True, slots=True)
class Step:
    """What one resource's counter did between two consecutive samples."""

    earlier: StoredSample
    later: StoredSample
    #: Growth, reset-aware: never negative.
    delta: float
    #: Seconds from the earlier sample to the later; always above zero.
    seconds: float


def increase(previous: float, current: float) -> float:
    """How much a counter grew from ``previous`` to ``current``; a drop is a reset."""
    if current >= previous:
        return current - previous
    return max(current, 0.0)


def steps(samples: Iterable[StoredSample]) -> Iterator[Step]:
    """Each pair of consecutive samples of one resource's meter in one project, from
    samples ordered by (meter,) resource, project, then time.

    Samples of another project never pair, and only cumulative samples do: a
    member posting samples on a resource id another project also meters, or a
    gauge under a cumulative meter's name, changes nothing of the others' figures.

    A sample at the same instant as its resource's previous one is skipped: it
    spans no time, and which of the two is right cannot be told.
    """
    previous: StoredSample | None = None
    for sample in samples:
        if sample.type != TYPE_CUMULATIVE:
            continue
        if (
            previous is not None
            and previous.resource_id == sample.resource_id
            and previous.name == sample.name
            and previous.project_id == sample.project_id
        ):
            seconds = (sample.timestamp - previous.timestamp).total_seconds()
            if seconds <= 0:
                continue
            yield Step(previous, sample, increase(previous.volume, sample.volume), seconds)
        previous = sample


def ordered_samples(store: Store, query: SampleFilter) -> list[StoredSample]:
    """Every sample matching ``query``, each resource's together and oldest first."""
    return store.samples(query, limit=None, orderby=BY_RESOURCE_AND_TIME)


def check_cumulative(store: Store, query: SampleFilter) -> None:
    """Raise :class:`NotCumulative` if the series of ``query.meter`` the query may see
    (whatever its time range) are there and none is cumulative.

    Rates are of the cumulative series only (see :func:`steps`): a series of another
    type under the same name, which any member can post, does not stop them.
    """
    visible = SampleFilter(meter=query.meter, project_id=query.project_id)
    kinds = {meter.type for meter in store.meters(visible)}
    if kinds and TYPE_CUMULATIVE not in kinds:
        shown = ", ".join(sorted(kinds))
        raise NotCumulative(f"rate needs a cumulative meter: {query.meter} is {shown}")


def metadata_value(metadata: Mapping[str, Any], key: str) -> Any:
    """The value at dotted ``key`` of resource metadata, None when absent."""
    value: Any = metadata
    for part in key.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _field_value(sample: StoredSample, name: str) -> Any:
    if name.startswith("metadata."):
        return metadata_value(sample.resource_metadata, name[len("metadata.") :])
    return getattr(sample, name)


def _renderings(value: Any) -> tuple[str | None, ...]:
    """How a store may show a groupby value: SQLite and PostgreSQL render JSON
    booleans, whole floats and objects differently."""
    if value is None or isinstance(value, str):
        return (value,)
    if isinstance(value, bool):
        return ("true", "1") if value else ("false", "0")
    if isinstance(value, int | float):
        shown = {str(value), format(Decimal(repr(value)), "f")}
        if isinstance(value, float) and value.is_integer():
            shown.add(str(int(value)))
        return tuple(shown)
    compact = orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
    return (compact, orjson.dumps(value).decode(), str(value))


@dataclass(slots=True)
class _Accumulator:
    #: (resource id, project) -> [sum of growths, sum of seconds]
    resources: dict[tuple[str, str | None], list[float]]

    def add(self, step: Step) -> None:
        later = step.later
        totals = self.resources.setdefault((later.resource_id, later.project_id), [0.0, 0.0])
        totals[0] += step.delta
        totals[1] += step.seconds

    def rate(self) -> float:
        return math.fsum(delta / seconds for delta, seconds in self.resources.values())


def with_rates(
    stats: Sequence[Statistic], samples: Iterable[StoredSample], groupby: Sequence[str] = ()
) -> list[Statistic]:
    """``stats`` with ``rate`` added to each one's ``aggregate`` that holds a pair of samples.

    ``samples`` are the statistics' samples ordered by resource, then time;
    ``groupby`` the statistics' groupby fields. A statistic whose period holds
    no pair of one resource's samples gets no ``rate``.
    """
    # Statistics are found by unit, period start and groupby values as the store shows them.
    by_key: dict[tuple[Any, ...], int] = {}
    for index, stat in enumerate(stats):
        window = stat.period_start if stat.period else None
        by_key[(stat.unit, window, *(stat.groupby.get(name) for name in groupby))] = index
    periodic = sorted(
        {(s.period_start, s.period_end) for s in stats if s.period and s.period_start is not None},
        key=lambda w: w[0],
    )
    starts = [start for start, _ in periodic]
    found: dict[int, _Accumulator] = {}
    for step in steps(samples):
        window = _window(step.later.timestamp, periodic, starts) if periodic else None
        if periodic and window is None:
            continue
        values = [_renderings(_field_value(step.later, name)) for name in groupby]
        matched = {
            by_key[key]
            for combination in itertools.product(*values)
            if (key := (step.later.unit, window, *combination)) in by_key
        }
        for index in matched:
            found.setdefault(index, _Accumulator({})).add(step)
    return [
        replace(stat, aggregate={**stat.aggregate, RATE: found[index].rate()})
        if index in found
        else stat
        for index, stat in enumerate(stats)
    ]


def _window(
    moment: datetime, windows: Sequence[tuple[datetime | None, datetime | None]], starts: list[Any]
) -> datetime | None:
    index = bisect.bisect_right(starts, moment) - 1
    if index < 0:
        return None
    start, end = windows[index]
    return start if end is None or moment < end else None
