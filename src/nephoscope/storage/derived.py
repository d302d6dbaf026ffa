"""Derived meters: ``cpu_util`` and the ``*.rate`` meters, computed from a cumulative meter.

Nothing derived is stored. A derived sample is made at query time from each
pair of consecutive samples of one resource's source meter (both matching the
query; see :mod:`nephoscope.storage.rates` for the reset-aware growth), stamped
at the later sample's time, with the later sample's owner, source and metadata.
When the store holds samples under a derived meter's name (a Ceilometer agent
with its rate transformers feeds the collector), those are served instead.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Final

import orjson

from nephoscope.counter import TYPE_GAUGE
from nephoscope.storage.base import (
    Aggregate,
    SampleFilter,
    Statistic,
    Store,
    StoredSample,
    check_statistics_args,
)
from nephoscope.storage.rates import (
    NotCumulative,
    Step,
    check_cumulative,
    metadata_value,
    ordered_samples,
    steps,
    with_rates,
)

__all__ = [
    "DERIVED_METERS",
    "DerivedMeter",
    "cpu_count",
    "derive",
    "derived_meter",
    "derived_samples",
    "derived_statistics",
    "meter_statistics",
    "summarise",
]

#: Metadata keys that give a ``cpu`` sample's vCPUs, first found wins: the
#: compute pollster's online vCPUs (what Ceilometer's cpu_util divided by), then
#: the flavor's.
CPU_COUNT_KEYS: Final = ("cpu_number", "vcpus", "flavor.vcpus")
#: Predecessors looked up one by one before reading more samples instead.
MAX_LOOKUPS: Final = 16


@dataclass(frozen=True, slots=True)
class DerivedMeter:
    """A gauge computed from the steps of a cumulative ``source`` meter."""

    name: str
    source: str
    unit: str
    description: str
    value: Callable[[Step], float]


def cpu_count(metadata: Mapping[str, Any]) -> float:
    """The vCPUs a ``cpu`` sample's metadata names (see :data:`CPU_COUNT_KEYS`), else 1.

    A count below one is no vCPU count: dividing by 1e-300 overflowed the statistics.
    """
    for key in CPU_COUNT_KEYS:
        value = metadata_value(metadata, key)
        if isinstance(value, int | float) and not isinstance(value, bool) and value >= 1:
            return float(value)
    return 1.0


def _cpu_util(step: Step) -> float:
    vcpus = cpu_count(step.later.resource_metadata)
    return step.delta / (step.seconds * 1e9 * vcpus) * 100.0


def _per_second(step: Step) -> float:
    return step.delta / step.seconds


def _rate(source: str, unit: str, what: str) -> DerivedMeter:
    return DerivedMeter(f"{source}.rate", source, unit, f"{what} per second", _per_second)


DERIVED_METERS: Final[Mapping[str, DerivedMeter]] = {
    meter.name: meter
    for meter in (
        DerivedMeter(
            "cpu_util",
            "cpu",
            "%",
            "CPU time used over time elapsed, per vCPU, in percent",
            _cpu_util,
        ),
        _rate("network.incoming.bytes", "B/s", "Bytes received"),
        _rate("network.outgoing.bytes", "B/s", "Bytes sent"),
        _rate("network.incoming.packets", "packet/s", "Packets received"),
        _rate("network.outgoing.packets", "packet/s", "Packets sent"),
        _rate("disk.read.bytes", "B/s", "Bytes read"),
        _rate("disk.write.bytes", "B/s", "Bytes written"),
        _rate("disk.read.requests", "request/s", "Read requests"),
        _rate("disk.write.requests", "request/s", "Write requests"),
        _rate("disk.device.read.bytes", "B/s", "Bytes read from one disk"),
        _rate("disk.device.write.bytes", "B/s", "Bytes written to one disk"),
        _rate("disk.device.read.requests", "request/s", "Read requests to one disk"),
        _rate("disk.device.write.requests", "request/s", "Write requests to one disk"),
    )
}


def derived_meter(store: Store, query: SampleFilter) -> DerivedMeter | None:
    """The derived meter ``query.meter`` names, unless the store holds samples of that name."""
    meter = DERIVED_METERS.get(query.meter or "")
    if meter is None:
        return None
    stored = store.meters(SampleFilter(meter=meter.name, project_id=query.project_id))
    return None if stored else meter


def derive(meter: DerivedMeter, samples: Iterable[StoredSample]) -> list[StoredSample]:
    """The derived samples of source ``samples`` ordered by resource, then time."""
    return [
        StoredSample(
            message_id=f"{step.later.message_id}+{meter.name}",
            name=meter.name,
            type=TYPE_GAUGE,
            unit=meter.unit,
            volume=meter.value(step),
            user_id=step.later.user_id,
            project_id=step.later.project_id,
            resource_id=step.later.resource_id,
            timestamp=step.later.timestamp,
            recorded_at=step.later.recorded_at,
            resource_metadata=step.later.resource_metadata,
            source=step.later.source,
        )
        for step in steps(samples)
    ]


def _newest_first(samples: Iterable[StoredSample]) -> list[StoredSample]:
    return sorted(samples, key=lambda s: (s.timestamp, s.message_id), reverse=True)


def derived_samples(
    store: Store, meter: DerivedMeter, query: SampleFilter, limit: int | None
) -> list[StoredSample]:
    """The newest ``limit`` derived samples matching ``query`` (all with None), newest first.

    With a limit, only the newest source samples are read, more each round until
    the answer is sure. Every source sample newer than the oldest one read is
    read, so a derived sample can be missing only at a resource's oldest read
    sample (its predecessor was not read); where that sample is newer than the
    ``limit``-th derived sample, its predecessor is looked up, if few need it.
    """
    source = replace(query, meter=meter.source)
    if limit is None:
        return _newest_first(derive(meter, ordered_samples(store, source)))
    fetch = 4 * limit + 16
    while True:
        newest = store.samples(source, limit=fetch)
        ordered = sorted(newest, key=lambda s: (s.resource_id, s.project_id or "", s.timestamp))
        made = _newest_first(derive(meter, ordered))
        if len(newest) < fetch:
            return made[:limit]
        if len(made) >= limit:
            cut = made[limit - 1].timestamp
            oldest: dict[tuple[str, str | None], StoredSample] = {}
            for sample in ordered:
                oldest.setdefault((sample.resource_id, sample.project_id), sample)
            open_ends = [s for s in oldest.values() if s.timestamp > cut]
            if len(open_ends) <= MAX_LOOKUPS:
                for sample in open_ends:
                    before = replace(
                        source,
                        resource_id=sample.resource_id,
                        project_id=sample.project_id or source.project_id,
                        until=sample.timestamp,
                    )
                    made.extend(derive(meter, [*store.samples(before, limit=1), sample]))
                return _newest_first(made)[:limit]
        fetch *= 4


def derived_statistics(
    store: Store,
    meter: DerivedMeter,
    query: SampleFilter,
    period: int | None = None,
    groupby: Sequence[str] = (),
    aggregates: Sequence[Aggregate] = (),
) -> list[Statistic]:
    """Statistics of a derived meter, as :meth:`Store.statistics` gives a stored one's."""
    check_statistics_args(period, groupby, aggregates)  # before reading any sample
    made = derive(meter, ordered_samples(store, replace(query, meter=meter.source)))
    return summarise(made, query.since, period, groupby, aggregates)


def meter_statistics(
    store: Store,
    query: SampleFilter,
    period: int | None = None,
    groupby: Sequence[str] = (),
    aggregates: Sequence[Aggregate] = (),
    *,
    rate: bool = False,
) -> list[Statistic]:
    """Statistics of ``query.meter`` as the API and the CLI answer them.

    Of its stored samples, or of a derived meter's (``cpu_util``...) where none
    are stored under that name; with ``rate`` added to each ``aggregate`` that has
    one (see :func:`~nephoscope.storage.rates.with_rates`) when ``rate`` is asked.
    Raises :class:`~nephoscope.storage.rates.NotCumulative` for a rate of a meter
    that is not cumulative, ValueError for a bad period, groupby or aggregate.
    """
    derived = derived_meter(store, query)
    if rate:
        if derived is not None:
            raise NotCumulative(f"rate needs a cumulative meter: {derived.name} is a derived gauge")
        check_cumulative(store, query)
    if derived is not None:
        stats = derived_statistics(store, derived, query, period, groupby, aggregates)
    else:
        stats = store.statistics(query, period, groupby=groupby, aggregates=aggregates)
    if rate:
        stats = with_rates(stats, ordered_samples(store, query), groupby)
    return stats


def _group_value(value: Any) -> str | None:
    # As the SQL store shows a groupby value: text, whole numbers without ".0".
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return str(int(value))
    if isinstance(value, int | float):
        return str(value)
    return orjson.dumps(value).decode()


def _group(sample: StoredSample, name: str) -> str | None:
    if name.startswith("metadata."):
        return _group_value(metadata_value(sample.resource_metadata, name[len("metadata.") :]))
    return _group_value(getattr(sample, name))


def summarise(
    samples: Iterable[StoredSample],
    since: datetime | None = None,
    period: int | None = None,
    groupby: Sequence[str] = (),
    aggregates: Sequence[Aggregate] = (),
) -> list[Statistic]:
    """Statistics of ``samples`` with the store's rules: buckets of ``period`` seconds from
    ``since`` (else from the first sample), only those holding samples, split by unit and
    ``groupby``, oldest first."""
    check_statistics_args(period, groupby, aggregates)
    chosen = list(samples)
    if not chosen:
        return []
    start = since if since is not None else min(s.timestamp for s in chosen)
    buckets: dict[tuple[Any, ...], list[StoredSample]] = defaultdict(list)
    for sample in chosen:
        index = (sample.timestamp - start) // timedelta(seconds=period) if period else 0
        groups = tuple(_group(sample, name) for name in groupby)
        buckets[(index, sample.unit, groups)].append(sample)
    stats = []
    for (index, unit, groups), members in sorted(
        buckets.items(),
        key=lambda item: (item[0][0], item[0][1], *((g is not None, g or "") for g in item[0][2])),
    ):
        volumes = [s.volume for s in members]
        first = min(s.timestamp for s in members)
        last = max(s.timestamp for s in members)
        mean = math.fsum(volumes) / len(volumes)
        if period:
            period_start = start + index * timedelta(seconds=period)
            period_end = period_start + timedelta(seconds=period)
        else:
            period_start, period_end = first, last
        stats.append(
            Statistic(
                unit=unit,
                count=len(members),
                min=min(volumes),
                max=max(volumes),
                sum=math.fsum(volumes),
                avg=mean,
                duration_start=first,
                duration_end=last,
                period=period or 0,
                period_start=period_start,
                period_end=period_end,
                groupby=dict(zip(groupby, groups, strict=True)),
                aggregate=_aggregates(members, volumes, mean, aggregates),
            )
        )
    return stats


def _aggregates(
    members: Sequence[StoredSample],
    volumes: Sequence[float],
    mean: float,
    aggregates: Sequence[Aggregate],
) -> dict[str, float]:
    """The asked aggregates of one statistic (already checked by check_statistics_args)."""
    computed: dict[str, float] = {}
    for func, param in dict.fromkeys(aggregates):
        if func == "cardinality":
            field = str(param)
            computed[f"cardinality/{field}"] = float(len({getattr(s, field) for s in members}))
        elif func == "stddev":
            mean_square = math.fsum(v * v for v in volumes) / len(volumes)
            computed["stddev"] = math.sqrt(max(0.0, mean_square - mean * mean))
        else:
            computed[func] = {
                "avg": mean,
                "sum": math.fsum(volumes),
                "min": min(volumes),
                "max": max(volumes),
                "count": float(len(volumes)),
            }[func]
    return computed
