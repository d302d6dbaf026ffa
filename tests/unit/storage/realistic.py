"""Host-like samples for size and speed checks: many resources and meters, repeating metadata."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

from nephoscope.counter import Counter

METERS: list[tuple[str, str, str]] = [
    ("cpu", "cumulative", "ns"),
    ("cpu_util", "gauge", "%"),
    ("vcpus", "gauge", "vcpu"),
    ("memory", "gauge", "MB"),
    ("memory.usage", "gauge", "MB"),
    ("memory.resident", "gauge", "MB"),
    ("disk.read.bytes", "cumulative", "B"),
    ("disk.write.bytes", "cumulative", "B"),
    ("disk.read.requests", "cumulative", "request"),
    ("disk.write.requests", "cumulative", "request"),
    ("disk.usage", "gauge", "B"),
    ("disk.allocation", "gauge", "B"),
    ("network.incoming.bytes", "cumulative", "B"),
    ("network.outgoing.bytes", "cumulative", "B"),
    ("network.incoming.packets", "cumulative", "packet"),
    ("network.outgoing.packets", "cumulative", "packet"),
    ("network.incoming.bytes.rate", "gauge", "B/s"),
    ("network.outgoing.bytes.rate", "gauge", "B/s"),
    ("instance", "gauge", "instance"),
    ("compute.instance.booting.time", "gauge", "sec"),
]
START = datetime(2025, 3, 1, tzinfo=UTC)


def realistic_samples(
    count: int, resources: int = 50, seed: int = 7, interval: float = 10.0
) -> Iterator[Counter]:
    """``count`` counters: every meter of every resource each ``interval`` seconds."""
    rng = random.Random(seed)
    owners = [
        (uuid.UUID(int=rng.getrandbits(128)).hex, f"project-{i % 7}") for i in range(resources)
    ]
    resource_ids = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(resources)]
    metadata = [
        {
            "display_name": f"vm-{i:03d}",
            "flavor": {"name": "m1.small", "vcpus": 1, "ram": 2048, "disk": 20},
            "host": f"compute-{i % 4}",
            "image_ref": "cirros-0.6.2",
            "instance_type": "m1.small",
            "status": "active",
        }
        for i in range(resources)
    ]
    totals = [[0] * len(METERS) for _ in range(resources)]
    produced = 0
    cycle = 0
    while True:
        moment = START + timedelta(seconds=cycle * interval)
        for r, resource_id in enumerate(resource_ids):
            if rng.random() < 0.002:
                # Now and then a resource changes state: new metadata from then on.
                metadata[r] = {**metadata[r], "status": rng.choice(["active", "paused"])}
            user_id, project_id = owners[r]
            for m, (name, kind, unit) in enumerate(METERS):
                if produced == count:
                    return
                volume: float
                if kind == "cumulative":
                    totals[r][m] += rng.randrange(0, 10_000_000)
                    volume = totals[r][m]
                else:
                    volume = round(rng.uniform(0, 4096), 2)
                yield Counter(
                    name=name,
                    type=kind,  # type: ignore[arg-type]
                    unit=unit,
                    volume=volume,
                    user_id=user_id,
                    project_id=project_id,
                    resource_id=resource_id,
                    timestamp=moment + timedelta(microseconds=rng.randrange(0, 900_000)),
                    # A copy each, as a collector gets it: parsed from each message.
                    resource_metadata=dict(metadata[r]),
                    source="openstack",
                    id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                )
                produced += 1
        cycle += 1
