"""A constructed metering history with hand-checked usage, for the usage tests on every store.

Project ``p1``'s instance ``vm-a``, on 2026-03-02 (UTC):

- 10:20:00 launched (``launched_at``); Nova's ``create.end`` is sampled at 10:20:04
  with 1 vCPU, 2048 MB, 20 GB root disk.
- The compute pollster samples it every ten minutes from 10:30 (state
  ``running``, sizes in its metadata). From 11:00 it shows the resized flavor:
  2 vCPUs, 4096 MB, 40 GB.
- 11:45:00 ``delete.start``; a pollster sample straggles in at 11:50 and Nova's
  hourly audit (``exists``, state ``deleted``, ``deleted_at`` 11:45) at 12:00.
- ``cpu`` (ns) every ten minutes from 10:30, reset at 11:00 (the resize reboots it);
  ``network.incoming.bytes`` reset at 11:00 too, and ``network.outgoing.bytes``
  on the same vNIC every half hour.

Project ``p2``'s instance ``vm-b`` (4 vCPUs, 8192 MB, 80 GB) runs all along,
seen by the pollster every ten minutes from 10:00 to 12:00, with its own cpu.

Expected usage of ``p1`` over [10:00, 12:00), by hand: held from 10:20:00 to
11:45:00 = 85 min, of which 40 min at the old size and 45 min at the new one:

- instance: 85/60 h
- vcpus: (40 x 1 + 45 x 2)/60 = 130/60 vCPU-h
- memory: (40 x 2 + 45 x 4)/60 = 260/60 GB-h
- disk: (40 x 20 + 45 x 40)/60 = 2600/60 GB-h
- cpu: 60 + 60 + 20 (after the reset) + 4 x 120 = 620 s
- network in: 4000 + 4000 + 500 (after the reset) + 2000 = 10500 B; out: 300 + 600 = 900 B
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from typing import Any

from nephoscope.counter import Counter

DAY = datetime(2026, 3, 2, tzinfo=UTC)
VNIC = "instance-00000001-vm-a-tap0"
_ids = itertools.count()


def at(hhmm: str, seconds: int = 0) -> datetime:
    hours, minutes = hhmm.split(":")
    return DAY + timedelta(hours=int(hours), minutes=int(minutes), seconds=seconds)


def sample(
    name: str,
    volume: float,
    when: datetime,
    metadata: dict[str, Any],
    *,
    resource_id: str = "vm-a",
    project_id: str = "p1",
    kind: str = "gauge",
    unit: str = "",
) -> Counter:
    return Counter(
        name=name,
        type=kind,  # type: ignore[arg-type]
        unit=unit or {"instance": "instance", "vcpus": "vcpu", "memory": "MB"}.get(name, "GB"),
        volume=volume,
        user_id="u1" if project_id == "p1" else "u2",
        project_id=project_id,
        resource_id=resource_id,
        timestamp=when,
        resource_metadata=metadata,
        source="openstack",
        id=f"h{next(_ids):05d}",
    )


def notification(
    event: str, when: datetime, vcpus: int, ram: int, disk: int, **extra: Any
) -> list[Counter]:
    """The gauges Nephoscope's ``instance`` notification plugin makes of one Nova event."""
    metadata = {
        "event_type": f"compute.instance.{event}",
        "state": "active",
        "launched_at": "2026-03-02 10:20:00.000000",
        "deleted_at": "",
        "flavor_name": f"m{vcpus}",
        **extra,
    }
    return [
        sample("instance", 1, when, metadata),
        sample("vcpus", vcpus, when, metadata),
        sample("memory", ram, when, metadata),
        sample("disk.root.size", disk, when, metadata),
        sample("disk.ephemeral.size", 0, when, metadata),
    ]


def polled(
    when: datetime,
    vcpus: int,
    ram: int,
    disk: int,
    *,
    resource_id: str = "vm-a",
    project_id: str = "p1",
    state: str = "running",
) -> list[Counter]:
    """The compute pollster's ``instance``, ``vcpus`` and ``memory`` of one cycle."""
    metadata = {
        "state": state,
        "vcpus": vcpus,
        "memory_mb": ram,
        "flavor": {"name": f"m{vcpus}", "vcpus": vcpus, "ram": ram, "disk": disk, "ephemeral": 0},
    }
    where = {"resource_id": resource_id, "project_id": project_id}
    return [
        sample("instance", 1, when, metadata, **where),
        sample("vcpus", vcpus, when, metadata, **where),
        sample("memory", ram, when, metadata, **where),
    ]


def counter(
    name: str, volume: float, when: datetime, *, resource_id: str = "vm-a", project_id: str = "p1"
) -> Counter:
    unit = "ns" if name == "cpu" else "B"
    return sample(
        name,
        volume,
        when,
        {"cpu_number": 2},
        resource_id=resource_id,
        project_id=project_id,
        kind="cumulative",
        unit=unit,
    )


def history() -> list[Counter]:
    samples: list[Counter] = []
    samples += notification("create.end", at("10:20", 4), 1, 2048, 20)
    for minute in ("10:30", "10:40", "10:50"):
        samples += polled(at(minute), 1, 2048, 20)
    for minute in ("11:00", "11:10", "11:20", "11:30", "11:40"):
        samples += polled(at(minute), 2, 4096, 40)
    samples += notification("delete.start", at("11:45"), 2, 4096, 40)
    samples += polled(at("11:50"), 2, 4096, 40, state="shutdown")
    samples += notification(
        "exists", at("12:00"), 2, 4096, 40, state="deleted", deleted_at="2026-03-02T11:45:00"
    )
    cpu = [50, 110, 170, 20, 140, 260, 380, 500]
    for minute, seconds in zip(
        ("10:30", "10:40", "10:50", "11:00", "11:10", "11:20", "11:30", "11:40"), cpu, strict=True
    ):
        samples.append(counter("cpu", seconds * 10**9, at(minute)))
    for minute, volume in zip(
        ("10:30", "10:40", "10:50", "11:00", "11:10"), (1000, 5000, 9000, 500, 2500), strict=True
    ):
        samples.append(counter("network.incoming.bytes", volume, at(minute), resource_id=VNIC))
    for minute, volume in zip(("10:30", "11:00", "11:30"), (100, 400, 1000), strict=True):
        samples.append(counter("network.outgoing.bytes", volume, at(minute), resource_id=VNIC))
    for step in range(13):
        when = at("10:00") + timedelta(minutes=10 * step)
        samples += polled(when, 4, 8192, 80, resource_id="vm-b", project_id="p2")
        samples.append(counter("cpu", step * 30 * 10**9, when, resource_id="vm-b", project_id="p2"))
    return samples


#: p1 over [10:00, 12:00): usage name -> (volume, unit, resources).
P1_WHOLE = {
    "instance": (85 / 60, "instance-hour", 1),
    "vcpus": (130 / 60, "vcpu-hour", 1),
    "memory": (260 / 60, "GB-hour", 1),
    "disk": (2600 / 60, "GB-hour", 1),
    "cpu": (620.0, "s", 1),
    "network.incoming.bytes": (10500.0, "B", 1),
    "network.outgoing.bytes": (900.0, "B", 1),
}
#: p1 over [10:30, 11:30): 30 min at each size; the cpu pair ending 10:30 has no start.
P1_MIDDLE = {
    "instance": (1.0, "instance-hour", 1),
    "vcpus": (1.5, "vcpu-hour", 1),
    "memory": (3.0, "GB-hour", 1),
    "disk": (30.0, "GB-hour", 1),
    "cpu": (60 + 60 + 20 + 120 + 120.0, "s", 1),
    "network.incoming.bytes": (10500.0, "B", 1),
    "network.outgoing.bytes": (300.0, "B", 1),
}
#: p2 over [10:00, 12:00): two hours at 4 vCPUs, 8 GB, 80 GB; cpu 11 x 30 s (12:00 is out).
P2_WHOLE = {
    "instance": (2.0, "instance-hour", 1),
    "vcpus": (8.0, "vcpu-hour", 1),
    "memory": (16.0, "GB-hour", 1),
    "disk": (160.0, "GB-hour", 1),
    "cpu": (330.0, "s", 1),
    "network.incoming.bytes": (0.0, "B", 0),
    "network.outgoing.bytes": (0.0, "B", 0),
}
