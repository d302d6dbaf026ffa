"""The shipped definitions and the instance plugin against recorded-style notifications.

Each fixture in tests/fixtures/notifications is a notification as a service
sends it (legacy Nova, Cinder, Glance v2, Neutron, ceilometermiddleware,
Keystone CADF). The tables below say, by hand, what each must give.
"""

from __future__ import annotations

from typing import Any

import pytest
from tests.unit.notification.helpers import INSTANCE, PROJECT, USER, load, processor, v1, v2

from nephoscope.counter import Counter

IMAGE = "c1a9b3e2-7d44-4f0a-9a61-1f2e3d4c5b6a"
VOLUME = "2b6f3e91-4a7c-4d1e-9f80-6c5b4a3d2e10"
NODE = "compute-1_compute-1.example.org"
RECEIVER_PROJECT = "b0a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"
RECEIVER_USER = "5e4d3c2b1a0948f7e6d5c4b3a2918070"

Row = tuple[str, str, str, float, str, str | None, str | None]


def instance_rows(user: str | None = USER) -> list[Row]:
    return [
        ("instance", "gauge", "instance", 1, INSTANCE, PROJECT, user),
        ("memory", "gauge", "MB", 2048, INSTANCE, PROJECT, user),
        ("vcpus", "gauge", "vcpu", 1, INSTANCE, PROJECT, user),
        ("disk.root.size", "gauge", "GB", 20, INSTANCE, PROJECT, user),
        ("disk.ephemeral.size", "gauge", "GB", 0, INSTANCE, PROJECT, user),
        ("instance:m1.small", "gauge", "instance", 1, INSTANCE, PROJECT, user),
    ]


def neutron_rows(kind: str, meter: str, unit: str, resource: str, action: str) -> list[Row]:
    return [
        (meter, "gauge", unit, 1, resource, PROJECT, USER),
        (f"{meter}.{action}", "delta", unit, 1, resource, PROJECT, USER),
    ]


def node(name: str, kind: str, unit: str, volume: float) -> Row:
    return (f"compute.node.cpu.{name}", kind, unit, volume, NODE, None, None)


EXPECTED: dict[str, list[Row]] = {
    "compute.instance.create.end": [
        *instance_rows(),
        ("compute.instance.booting.time", "gauge", "sec", 16.0, INSTANCE, PROJECT, USER),
    ],
    "compute.instance.exists": instance_rows(),
    "compute.instance.delete.start": instance_rows(),
    "compute.metrics.update": [
        node("frequency", "gauge", "MHz", 2400),
        node("user.time", "cumulative", "ns", 17428130000000),
        node("kernel.time", "cumulative", "ns", 5203140000000),
        node("idle.time", "cumulative", "ns", 281093300000000),
        node("iowait.time", "cumulative", "ns", 901220000000),
        node("kernel.percent", "gauge", "percent", 1.55),
        node("idle.percent", "gauge", "percent", 93.06),
        node("user.percent", "gauge", "percent", 5.12),
        node("iowait.percent", "gauge", "percent", 0.27),
        node("percent", "gauge", "percent", 6.94),
    ],
    "volume.create.end": [("volume.size", "gauge", "GB", 10, VOLUME, PROJECT, USER)],
    "volume.exists": [("volume.size", "gauge", "GB", 10, VOLUME, PROJECT, USER)],
    "snapshot.create.end": [
        ("snapshot.size", "gauge", "GB", 10, "7e8f9a0b-1c2d-4e3f-8a4b-5c6d7e8f9a01", PROJECT, USER)
    ],
    "backup.create.end": [
        ("backup.size", "gauge", "GB", 10, "9c0d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e22", PROJECT, USER)
    ],
    "image.upload": [("image.size", "gauge", "B", 2361393152, IMAGE, PROJECT, USER)],
    "image.send": [
        ("image.download", "delta", "B", 2361393152, IMAGE, RECEIVER_PROJECT, RECEIVER_USER),
        # Served out of the owner's image; the user is the one who downloaded it.
        ("image.serve", "delta", "B", 2361393152, IMAGE, PROJECT, RECEIVER_USER),
    ],
    "network.create.end": neutron_rows(
        "network", "network", "network", "a3b4c5d6-e7f8-4a9b-8c0d-1e2f3a4b5c6d", "create"
    ),
    "network.update.end": neutron_rows(
        "network", "network", "network", "a3b4c5d6-e7f8-4a9b-8c0d-1e2f3a4b5c6d", "update"
    ),
    "subnet.create.end": neutron_rows(
        "subnet", "subnet", "subnet", "b4c5d6e7-f8a9-4b0c-9d1e-2f3a4b5c6d7e", "create"
    ),
    "subnet.update.end": neutron_rows(
        "subnet", "subnet", "subnet", "b4c5d6e7-f8a9-4b0c-9d1e-2f3a4b5c6d7e", "update"
    ),
    "port.create.end": neutron_rows(
        "port", "port", "port", "c5d6e7f8-a9b0-4c1d-8e2f-3a4b5c6d7e8f", "create"
    ),
    "port.update.end": neutron_rows(
        "port", "port", "port", "c5d6e7f8-a9b0-4c1d-8e2f-3a4b5c6d7e8f", "update"
    ),
    "router.create.end": neutron_rows(
        "router", "router", "router", "e7f8a9b0-c1d2-4e3f-9a4b-5c6d7e8f9a01", "create"
    ),
    "router.update.end": neutron_rows(
        "router", "router", "router", "e7f8a9b0-c1d2-4e3f-9a4b-5c6d7e8f9a01", "update"
    ),
    "floatingip.create.end": neutron_rows(
        "floatingip", "ip.floating", "ip", "f8a9b0c1-d2e3-4f4a-8b5c-6d7e8f9a0b12", "create"
    ),
    "floatingip.update.end": neutron_rows(
        "floatingip", "ip.floating", "ip", "f8a9b0c1-d2e3-4f4a-8b5c-6d7e8f9a0b12", "update"
    ),
    "l3.meter": [
        ("bandwidth", "delta", "B", 1048576, "1e2f3a4b-5c6d-4e7f-8a9b-0c1d2e3f4a5b", PROJECT, None)
    ],
    "objectstore.http.request": [
        ("storage.objects.outgoing.bytes", "delta", "B", 524288, f"AUTH_{PROJECT}", PROJECT, USER),
        ("storage.objects.incoming.bytes", "delta", "B", 0, f"AUTH_{PROJECT}", PROJECT, USER),
        ("storage.api.request", "delta", "request", 1, f"AUTH_{PROJECT}", PROJECT, USER),
    ],
    "identity.authenticate.success": [
        ("identity.authenticate.success", "delta", "user", 1, USER, None, USER)
    ],
    "identity.authenticate.failure": [
        (
            "identity.authenticate.failure",
            "delta",
            "user",
            1,
            "4f3e2d1c0b0a49f8e7d6c5b4a3928170",
            None,
            "4f3e2d1c0b0a49f8e7d6c5b4a3928170",
        )
    ],
    "identity.authenticate.pending": [
        (
            "identity.authenticate.pending",
            "delta",
            "user",
            1,
            "1c0b0a49f8e7d6c5b4a39281704f3e2d",
            None,
            "1c0b0a49f8e7d6c5b4a39281704f3e2d",
        )
    ],
}


def rows(counters: list[Counter]) -> list[Row]:
    return [
        (
            c.name,
            c.type,
            c.unit,
            round(c.volume, 6) if isinstance(c.volume, float) else c.volume,
            c.resource_id,
            c.project_id,
            c.user_id,
        )
        for c in counters
    ]


def test_every_fixture_has_expectations() -> None:
    from tests.unit.notification.helpers import fixture_paths

    assert sorted(p.stem for p in fixture_paths()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
@pytest.mark.parametrize("envelope", [v1, v2], ids=["oslo-v1", "oslo-v2"])
def test_fixture_gives_exactly_the_expected_counters(name: str, envelope: Any) -> None:
    outcome = processor().process_body(envelope(load(name)))
    assert outcome.status == "metered"
    assert outcome.problems == []
    assert (outcome.skipped, outcome.duplicates) == (0, 0)
    assert sorted(rows(outcome.counters)) == sorted(EXPECTED[name])
    # Every counter is stamped with the notification's time, unless the definition says.
    for counter in outcome.counters:
        assert counter.timestamp.tzinfo is not None
        assert counter.source == "openstack"
        assert counter.id is not None


def metadata(name: str, meter: str) -> dict[str, Any]:
    (counter,) = [c for c in processor().process(load(name)).counters if c.name == meter]
    return dict(counter.resource_metadata)


def test_instance_metadata_has_ceilometers_instance_keys() -> None:
    meta = metadata("compute.instance.exists", "memory")
    assert meta == {
        "event_type": "compute.instance.exists",
        "host": "compute-1",
        "flavor_id": "2",
        "flavor_name": "m1.small",
        "display_name": "web-1",
        "state": "active",
        "availability_zone": "nova",
        "launched_at": "2024-05-01T11:02:14.000000",
        "created_at": "2024-05-01 11:01:58+00:00",
        "deleted_at": "",
        "image_ref": IMAGE,
    }


def test_booting_time_keeps_reserved_user_metadata() -> None:
    meta = metadata("compute.instance.create.end", "compute.instance.booting.time")
    assert meta["flavor_name"] == "m1.small"
    # Nova metadata "metering.stack" becomes user_metadata.stack; "role" is not reserved.
    assert meta["user_metadata"] == {"stack": "web-tier"}


def test_volume_metadata_uses_filters_and_indexes() -> None:
    created = metadata("volume.create.end", "volume.size")
    assert created["image_id"] == IMAGE  # $.payload.glance_metadata[?key=image_id].value
    assert "instance_id" not in created  # no attachment yet: nothing selected, key left out
    attached = metadata("volume.exists", "volume.size")
    assert attached["instance_id"] == INSTANCE  # $.payload.volume_attachment[0].server_id
    assert attached["status"] == "in-use"


def test_node_metrics_take_their_timestamp_and_source_from_the_metric() -> None:
    outcome = processor().process(load("compute.metrics.update"))
    (frequency,) = [c for c in outcome.counters if c.name == "compute.node.cpu.frequency"]
    assert frequency.timestamp.isoformat() == "2024-05-01T12:00:00.123456+00:00"
    assert frequency.resource_metadata == {
        "event_type": "compute.metrics.update",
        "host": "compute.compute-1",
        "source": "libvirt.LibvirtDriver",
    }


def test_neutron_metadata_reads_keys_with_colons() -> None:
    meta = metadata("network.create.end", "network")
    assert meta["router_external"] is False
    assert meta["admin_state_up"] is True
    assert meta["name"] == "private"
    assert metadata("network.update.end", "network")["name"] == "private-renamed"


def test_swift_measurements_give_one_counter_each_with_the_request_metadata() -> None:
    meta = metadata("objectstore.http.request", "storage.objects.outgoing.bytes")
    assert meta["container"] == "photos" and meta["object"] == "cat.jpg"
