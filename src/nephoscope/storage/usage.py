"""Usage per project over ``[since, until)``: instance time and size held, CPU and network used.

Instances (resources with ``instance`` samples) are read from the samples of
``instance``, ``vcpus``, ``memory``, ``disk.root.size`` and ``disk.ephemeral.size``,
whether Nova's notifications or the compute pollsters made them. The samples of
one instance at one instant are one observation. The rules:

- **Holding.** An observation's state holds from its time until the instance's
  next observation, if that comes within ``max_gap``. A longer gap, and the time
  after the last observation, are not counted: what is not observed is not
  billed, and usage never shrinks as samples arrive. (So the interval after the
  newest observation is counted once the next one comes.)
- **Start.** ``launched_at`` in the metadata, when present: nothing before it
  counts, and from it to the first observation after it the instance holds what
  that observation shows (within ``max_gap``, as any gap). Else the first
  observation.
- **End.** The earliest of ``deleted_at`` in the metadata, an observation of a
  ``compute.instance.delete.*`` event, or of state ``deleted``: nothing from it
  counts. The last observation before it holds until it (within ``max_gap``).
- **State.** An observation whose ``state`` is one of :data:`NOT_HOLDING`
  (building, deleted, soft-deleted, shelved and offloaded: nothing on a
  hypervisor) holds nothing; any other state (active, running, paused,
  stopped, ...) holds the instance's size, which stays reserved.
- **Size.** vCPUs, memory (MB) and disk (root + ephemeral GB) come from the
  ``vcpus``, ``memory``, ``disk.root.size`` and ``disk.ephemeral.size`` gauges of
  the observation, else from its metadata (``vcpus``/``flavor.vcpus``,
  ``memory_mb``/``flavor.ram``, ``flavor.disk``/``root_gb``,
  ``flavor.ephemeral``/``ephemeral_gb``), else from the previous observation.
  A resize takes effect at the first observation that shows the new size.
- **Counters.** CPU seconds (``cpu`` ns / 1e9) and network bytes in and out
  (``network.incoming.bytes``, ``network.outgoing.bytes``) are the reset-aware
  growth (:func:`nephoscope.storage.rates.increase`) of each pair of consecutive
  samples of one resource whose later sample is in the window and which are at
  most ``max_gap`` apart.
- **Window.** Everything is clipped to ``[since, until)``. Since every gap
  counts whole or not at all, the usage of two adjacent windows adds up to the
  usage of the window spanning both.

Memory and disk are in GB-hours with 1 GB = 1024 MB, as Nova counts memory.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from nephoscope.storable import check_time
from nephoscope.storage.base import Condition, SampleFilter, Store, StoredSample
from nephoscope.storage.rates import BY_RESOURCE_AND_TIME, metadata_value, steps

__all__ = [
    "DEFAULT_MAX_GAP",
    "NOT_HOLDING",
    "ProjectUsage",
    "UsageItem",
    "project_usage",
    "usage",
]

#: The longest gap between two observations that is counted (Nova audits hourly).
DEFAULT_MAX_GAP: Final = timedelta(hours=2)
#: Instance states in which it holds nothing on a hypervisor.
NOT_HOLDING: Final = frozenset({"building", "deleted", "soft-delete", "shelved_offloaded"})
INSTANCE_METERS: Final = ("instance", "vcpus", "memory", "disk.root.size", "disk.ephemeral.size")
#: Cumulative meter -> (unit of its usage, factor from the meter's unit).
COUNTERS: Final = {
    "cpu": ("s", 1e-9),
    "network.incoming.bytes": ("B", 1.0),
    "network.outgoing.bytes": ("B", 1.0),
}
#: Size fields: (gauge meter, metadata keys, first found wins).
_SIZES: Final = {
    "vcpus": ("vcpus", ("vcpus", "flavor.vcpus")),
    "memory_mb": ("memory", ("memory_mb", "flavor.ram")),
    "root_gb": ("disk.root.size", ("flavor.disk", "root_gb")),
    "ephemeral_gb": ("disk.ephemeral.size", ("flavor.ephemeral", "ephemeral_gb")),
}
_DELETE_EVENTS: Final = "compute.instance.delete."
_HOUR: Final = 3600.0


@dataclass(frozen=True, slots=True)
class UsageItem:
    """One measure of a project's usage."""

    name: str
    unit: str
    volume: float
    #: Instances (or counter resources) that contributed.
    resources: int


@dataclass(frozen=True, slots=True)
class ProjectUsage:
    project_id: str | None
    since: datetime
    until: datetime
    max_gap: timedelta
    items: tuple[UsageItem, ...]

    def as_dict(self) -> dict[str, Any]:
        """The API's and ``nephoscope usage --json``'s shape."""
        return {
            "project_id": self.project_id,
            "start": self.since.astimezone(UTC).replace(tzinfo=None).isoformat(),
            "end": self.until.astimezone(UTC).replace(tzinfo=None).isoformat(),
            "max_gap": self.max_gap.total_seconds(),
            "usage": {
                item.name: {"volume": item.volume, "unit": item.unit, "resources": item.resources}
                for item in self.items
            },
        }


@dataclass(frozen=True, slots=True)
class _Holding:
    """What an instance holds from one observation on."""

    holds: bool = True
    vcpus: float = 0.0
    memory_mb: float = 0.0
    root_gb: float = 0.0
    ephemeral_gb: float = 0.0


_ENDED: Final = _Holding(holds=False)


@dataclass(slots=True)
class _Totals:
    """Seconds-weighted sums for one project."""

    seconds: float = 0.0
    vcpu_seconds: float = 0.0
    mb_seconds: float = 0.0
    gb_seconds: float = 0.0
    instances: set[str] = field(default_factory=set)
    counters: dict[str, float] = field(default_factory=lambda: dict.fromkeys(COUNTERS, 0.0))
    counted: dict[str, set[str]] = field(default_factory=lambda: {name: set() for name in COUNTERS})

    def items(self) -> tuple[UsageItem, ...]:
        held = len(self.instances)
        return (
            UsageItem("instance", "instance-hour", self.seconds / _HOUR, held),
            UsageItem("vcpus", "vcpu-hour", self.vcpu_seconds / _HOUR, held),
            UsageItem("memory", "GB-hour", self.mb_seconds / 1024 / _HOUR, held),
            UsageItem("disk", "GB-hour", self.gb_seconds / _HOUR, held),
            *(
                UsageItem(name, unit, self.counters[name] * factor, len(self.counted[name]))
                for name, (unit, factor) in COUNTERS.items()
            ),
        )


def _shifted(moment: datetime, by: timedelta) -> datetime:
    """``moment + by``, held within the datetimes Python can represent."""
    try:
        return moment + by
    except OverflowError:
        return (datetime.max if by > timedelta(0) else datetime.min).replace(tzinfo=UTC)


#: The largest vCPU count, memory or disk size read from metadata.
MAX_SIZE: Final = 1e15


def usage(
    store: Store,
    since: datetime,
    until: datetime,
    project_id: str | None = None,
    max_gap: timedelta = DEFAULT_MAX_GAP,
) -> list[ProjectUsage]:
    """Usage of ``project_id`` (one entry, zeros when none), or of every project with any."""
    before, after = _shifted(since, -max_gap), _shifted(until, max_gap)
    instances = store.samples(
        SampleFilter(project_id=project_id, since=before, until=after),
        limit=None,
        where=Condition("meter", "in", INSTANCE_METERS),
        orderby=[("resource_id", False), ("timestamp", False)],
    )
    counters = store.samples(
        SampleFilter(project_id=project_id, since=before, until=until),
        limit=None,
        where=Condition("meter", "in", tuple(COUNTERS)),
        orderby=[("meter", False), *BY_RESOURCE_AND_TIME],
    )
    totals = project_usage(instances, counters, since, until, max_gap)
    if project_id is not None:
        totals.setdefault(project_id, _Totals())
    return [
        ProjectUsage(project, since, until, max_gap, totals[project].items())
        for project in sorted(totals, key=lambda p: (p is not None, p or ""))
    ]


def project_usage(
    instance_samples: Iterable[StoredSample],
    counter_samples: Iterable[StoredSample],
    since: datetime,
    until: datetime,
    max_gap: timedelta = DEFAULT_MAX_GAP,
) -> dict[str | None, _Totals]:
    """Totals by project: ``instance_samples`` ordered by resource, then time (reaching
    ``max_gap`` beyond the window on both sides), ``counter_samples`` by meter, resource,
    then time (from ``max_gap`` before the window)."""
    totals: dict[str | None, _Totals] = defaultdict(_Totals)
    for (resource_id, project_id), samples in _by_instance(instance_samples):
        held = totals[project_id]
        if _add_instance(held, samples, since, until, max_gap):
            held.instances.add(resource_id)
    for step in steps(counter_samples):
        if since <= step.later.timestamp < until and step.seconds <= max_gap.total_seconds():
            used = totals[step.later.project_id]
            used.counters[step.later.name] += step.delta
            used.counted[step.later.name].add(step.later.resource_id)
    return {project: t for project, t in totals.items() if _any(t)}


def _any(totals: _Totals) -> bool:
    return bool(totals.seconds or any(totals.counted.values()))


def _by_instance(
    samples: Iterable[StoredSample],
) -> Iterable[tuple[tuple[str, str | None], list[StoredSample]]]:
    for resource_id, group in itertools.groupby(samples, key=lambda s: s.resource_id):
        by_project: dict[str | None, list[StoredSample]] = defaultdict(list)
        for sample in group:
            by_project[sample.project_id].append(sample)
        for project_id, owned in by_project.items():
            if any(s.name == "instance" for s in owned):
                yield (resource_id, project_id), owned


def _add_instance(
    totals: _Totals,
    samples: Sequence[StoredSample],
    since: datetime,
    until: datetime,
    max_gap: timedelta,
) -> float:
    """Add one instance's held time and sizes to ``totals``; return its seconds."""
    points, launched, ended = _timeline(samples)
    start = max(since, launched) if launched is not None else since
    end = min(until, ended) if ended is not None else until
    held = 0.0
    for (at, holding), (following, _) in itertools.pairwise(points):
        if not holding.holds or following - at > max_gap:
            continue
        seconds = (min(following, end) - max(at, start)).total_seconds()
        if seconds <= 0:
            continue
        held += seconds
        totals.seconds += seconds
        totals.vcpu_seconds += holding.vcpus * seconds
        totals.mb_seconds += holding.memory_mb * seconds
        totals.gb_seconds += (holding.root_gb + holding.ephemeral_gb) * seconds
    return held


def _timeline(
    samples: Sequence[StoredSample],
) -> tuple[list[tuple[datetime, _Holding]], datetime | None, datetime | None]:
    """One instance's observations as (time, holding from then on), with its launch and end."""
    points: list[tuple[datetime, _Holding]] = []
    launched: list[datetime] = []
    ended: list[datetime] = []
    holding = _Holding()
    for at, group in itertools.groupby(samples, key=lambda s: s.timestamp):
        observed = list(group)
        holding = _observe(holding, observed)
        points.append((at, holding))
        for sample in observed:
            metadata = sample.resource_metadata
            launched.extend(_times(metadata, "launched_at"))
            ended.extend(_times(metadata, "deleted_at"))
            event = metadata.get("event_type")
            if metadata.get("state") == "deleted" or (
                isinstance(event, str) and event.startswith(_DELETE_EVENTS)
            ):
                ended.append(at)
    launch = min(launched, default=None)
    end = min(ended, default=None)
    if launch is not None:
        # From launch, the first observation after it tells what the instance holds.
        after = [holding for at, holding in points if at >= launch]
        if after:
            points.append((launch, after[0]))
    if end is not None:
        points.append((end, _ENDED))
    points.sort(key=lambda point: point[0])
    return points, launch, end


def _observe(previous: _Holding, samples: Sequence[StoredSample]) -> _Holding:
    """What the instance holds from these samples (of one instant) on."""
    sizes: dict[str, float] = {}
    gauges: dict[str, float] = {}
    holds = True
    for sample in samples:
        metadata = sample.resource_metadata
        if metadata.get("state") in NOT_HOLDING:
            holds = False
        for name, (gauge, keys) in _SIZES.items():
            if sample.name == gauge:
                gauges[name] = float(sample.volume)
            if name not in sizes:
                found = _number(metadata, keys)
                if found is not None:
                    sizes[name] = found
    return replace(previous, holds=holds, **{**sizes, **gauges})


def _number(metadata: Mapping[str, Any], keys: Sequence[str]) -> float | None:
    for key in keys:
        value = metadata_value(metadata, key)
        # A size no machine has (or below zero) is not one: it would overflow the
        # totals (1e308 vCPUs) or take from them.
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value) if 0 <= value <= MAX_SIZE else None
    return None


def _times(metadata: Mapping[str, Any], key: str) -> list[datetime]:
    """The time at ``key`` (Nova writes ``2026-03-02 10:20:00.000000`` or ISO 8601), if any."""
    value = metadata.get(key)
    if not isinstance(value, str) or not value.strip():
        return []
    try:
        moment = datetime.fromisoformat(value.strip())
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: beyond year 1 or 9999 in UTC
        return []
    # A time no sample could carry says nothing of when an instance ran.
    return [] if check_time(moment) else [moment]
