"""The seed's InstanceNotifications plugin on its three Nova events."""

from __future__ import annotations

import pytest
from tests.unit.notification.helpers import INSTANCE, PROJECT, USER, load

from nephoscope.notification.instance import InstanceNotifications
from nephoscope.plugin import NS_NOTIFICATION, NotificationBase, load_plugins


def test_it_is_the_built_in_entry_point() -> None:
    loaded = load_plugins(NS_NOTIFICATION, NotificationBase, names=["instance"])
    assert isinstance(loaded.plugins["instance"], InstanceNotifications)


def test_event_types_are_the_seeds() -> None:
    assert InstanceNotifications().get_event_types() == [
        "compute.instance.create.end",
        "compute.instance.exists",
        "compute.instance.delete.start",
    ]


@pytest.mark.parametrize(
    "event",
    ["compute.instance.create.end", "compute.instance.exists", "compute.instance.delete.start"],
)
def test_six_gauges_with_the_owner(event: str) -> None:
    counters = list(InstanceNotifications().process_notification(load(event)))
    assert [(c.name, c.unit, c.volume) for c in counters] == [
        ("instance", "instance", 1),
        ("memory", "MB", 2048),
        ("vcpus", "vcpu", 1),
        ("disk.root.size", "GB", 20),
        ("disk.ephemeral.size", "GB", 0),
        ("instance:m1.small", "instance", 1),
    ]
    for counter in counters:
        assert (counter.user_id, counter.project_id, counter.resource_id) == (
            USER,
            PROJECT,
            INSTANCE,
        )
        assert counter.type == "gauge"
        assert counter.resource_metadata["event_type"] == event


def test_the_notification_time_stamps_the_counters() -> None:
    (first, *_) = InstanceNotifications().process_notification(load("compute.instance.exists"))
    assert first.timestamp.isoformat() == "2024-05-01T12:00:03.271941+00:00"


def test_no_flavor_meter_without_a_flavor_name() -> None:
    message = load("compute.instance.exists")
    del message["payload"]["instance_type"]
    names = [c.name for c in InstanceNotifications().process_notification(message)]
    assert "instance" in names and not [n for n in names if n.startswith("instance:")]


@pytest.mark.parametrize("key", ["instance_id", "memory_mb"])
def test_a_payload_without_what_it_needs_raises(key: str) -> None:
    message = load("compute.instance.exists")
    del message["payload"][key]
    with pytest.raises(KeyError):
        list(InstanceNotifications().process_notification(message))
