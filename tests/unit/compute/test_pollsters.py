"""Each compute pollster on libvirt's test driver: meters, volumes, resources and owners."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest
from tests.unit.compute.testdriver import (
    BY_UUID,
    CPU_TIME_NS,
    DB,
    DISK_ALLOCATION,
    DISK_CAPACITY,
    PLAIN,
    RUNNING,
    URI,
    WEB,
    WHEN,
    Expected,
    Manager,
    inspector,
    new_context,
    require_libvirt,
    settings,
)

from nephoscope.compute.discovery import discover_instances
from nephoscope.compute.inspector import LibvirtInspector
from nephoscope.compute.pollsters import (
    ComputePollster,
    CPUPollster,
    DiskInfoPollster,
    DiskIOPollster,
    InstancePollster,
    MemoryStatsPollster,
    NetworkPollster,
)
from nephoscope.counter import Counter
from nephoscope.plugin import NS_POLL_COMPUTE, PollingContext, PollsterBase, load_plugins

ALL_POLLSTERS: dict[str, type[ComputePollster]] = {
    "instance": InstancePollster,
    "cpu": CPUPollster,
    "memory_stats": MemoryStatsPollster,
    "disk": DiskIOPollster,
    "disk_info": DiskInfoPollster,
    "net": NetworkPollster,
}


def cycle(manager: Manager) -> PollingContext:
    """A polling cycle whose resources are what discovery finds now."""
    return new_context(discover_instances(manager))


def poll(pollster: PollsterBase, manager: Manager | None = None) -> list[Counter]:
    manager = manager or Manager(inspector(), settings())
    return list(pollster.get_counters(manager, cycle(manager)))  # type: ignore[arg-type]


def by_key(counters: Iterable[Counter]) -> dict[tuple[str, str], Counter]:
    """Counters keyed by (resource id, meter name); fails on a duplicate."""
    keyed: dict[tuple[str, str], Counter] = {}
    for c in counters:
        key = (c.resource_id, c.name)
        assert key not in keyed, f"two counters for {key}"
        keyed[key] = c
    return keyed


def owner(c: Counter) -> tuple[str | None, str | None]:
    return (c.user_id, c.project_id)


def expected_owner(e: Expected) -> tuple[str | None, str | None]:
    return (e.user_id, e.project_id)


def test_entry_points_name_every_pollster() -> None:
    loaded = load_plugins(NS_POLL_COMPUTE, PollsterBase)
    assert not loaded.failed and not loaded.unusable
    assert {name: type(p) for name, p in loaded.plugins.items()} == ALL_POLLSTERS


@pytest.mark.parametrize("name", sorted(ALL_POLLSTERS))
def test_counters_are_declared_and_owned_by_their_instance(name: str) -> None:
    cls = ALL_POLLSTERS[name]
    counters = poll(cls())
    assert {c.name for c in counters} == set(cls.meters)
    for c in counters:
        instance_id = c.resource_metadata["instance_id"]
        assert c.resource_id.startswith(instance_id) or instance_id in c.resource_id
        assert owner(c) == expected_owner(BY_UUID[instance_id])
        assert c.timestamp == WHEN and c.source == "openstack"


def test_instance_pollster_says_each_instance_exists_with_its_size() -> None:
    got = by_key(poll(InstancePollster()))
    assert len(got) == 3 * len(RUNNING)
    for e in RUNNING:
        instance, vcpus, memory = (got[e.uuid, n] for n in ("instance", "vcpus", "memory"))
        assert (instance.type, instance.unit, instance.volume) == ("gauge", "instance", 1)
        assert (vcpus.type, vcpus.unit, vcpus.volume) == ("gauge", "vcpu", e.vcpus)
        assert (memory.type, memory.unit, memory.volume) == ("gauge", "MB", e.memory_mb)
        assert instance.resource_metadata["display_name"] == e.display_name


def test_cpu_pollster_reports_the_cpu_time_of_each_instance() -> None:
    # The test the seed's guide says CPUPollster never had.
    counters = poll(CPUPollster())
    assert sorted(c.resource_id for c in counters) == sorted(BY_UUID)
    for c in counters:
        e = BY_UUID[c.resource_id]
        assert (c.name, c.type, c.unit) == ("cpu", "cumulative", "ns")
        assert c.volume == CPU_TIME_NS  # the test driver's getCPUStats total
        assert c.resource_metadata["cpu_number"] == e.online_vcpus
        assert c.resource_metadata["display_name"] == e.display_name
        assert owner(c) == expected_owner(e)


def test_memory_stats_come_from_the_balloon() -> None:
    got = by_key(poll(MemoryStatsPollster()))
    for e in RUNNING:
        if e.current_mib is None:
            # No balloon: libvirt gives no memory statistics, and none are invented.
            assert not [k for k in got if k[0] == e.uuid]
            continue
        # The test driver reports available = currentMemory and usable = rss = half of it.
        usage, resident, available = (
            got[e.uuid, n] for n in ("memory.usage", "memory.resident", "memory.available")
        )
        assert (usage.type, usage.unit, usage.volume) == ("gauge", "MB", e.current_mib / 2)
        assert (resident.type, resident.unit, resident.volume) == ("gauge", "MB", e.current_mib / 2)
        assert (available.unit, available.volume) == ("MB", e.current_mib)
    assert got[DB.uuid, "memory.available"].volume == 6144  # ballooned below its 8192 MB


def test_disk_io_per_device_and_summed_per_instance() -> None:
    got = by_key(poll(DiskIOPollster()))
    per_device = ("read.bytes", "write.bytes", "read.requests", "write.requests")
    for e in RUNNING:
        for suffix in per_device:
            unit = "B" if suffix.endswith("bytes") else "request"
            devices = [got[f"{e.uuid}-{d}", f"disk.device.{suffix}"] for d in e.disks]
            total = got[e.uuid, f"disk.{suffix}"]
            for disk, c in zip(e.disks, devices, strict=True):
                assert (c.type, c.unit) == ("cumulative", unit)
                assert isinstance(c.volume, int) and c.volume > 0
                assert c.resource_metadata["disk_name"] == disk
            assert (total.type, total.unit) == ("cumulative", unit)
            # One reading per cycle: the sum is exactly the devices' sum.
            assert total.volume == sum(c.volume for c in devices)
            assert total.resource_metadata["device"] == list(e.disks)
    # The empty CD drive of web-1 is not reported.
    assert not [k for k in got if k[0] == f"{WEB.uuid}-hdc"]


def test_disk_counts_grow_between_cycles() -> None:
    manager = Manager(inspector(), settings())
    first = by_key(DiskIOPollster().get_counters(manager, cycle(manager)))  # type: ignore[arg-type]
    second = by_key(DiskIOPollster().get_counters(manager, cycle(manager)))  # type: ignore[arg-type]
    assert first.keys() == second.keys()
    assert all(second[k].volume >= first[k].volume for k in first)


def test_disk_info_per_device() -> None:
    got = by_key(poll(DiskInfoPollster()))
    assert len(got) == 2 * sum(len(e.disks) for e in RUNNING)
    for e in RUNNING:
        for disk in e.disks:
            capacity = got[f"{e.uuid}-{disk}", "disk.device.capacity"]
            allocation = got[f"{e.uuid}-{disk}", "disk.device.allocation"]
            assert (capacity.type, capacity.unit, capacity.volume) == ("gauge", "B", DISK_CAPACITY)
            assert (allocation.type, allocation.unit, allocation.volume) == (
                "gauge",
                "B",
                DISK_ALLOCATION,
            )
            assert owner(capacity) == expected_owner(e)


def test_network_per_vnic() -> None:
    got = by_key(poll(NetworkPollster()))
    meters = [
        f"network.{direction}.{what}"
        for direction in ("incoming", "outgoing")
        for what in ("bytes", "packets", "packets.drop", "packets.error")
    ]
    assert len(got) == len(meters) * sum(len(e.nics) for e in RUNNING)
    for e in RUNNING:
        for tap, mac in e.nics:
            resource_id = f"{e.domain}-{e.uuid}-{tap}"
            for name in meters:
                c = got[resource_id, name]
                unit = "B" if name.endswith("bytes") else "packet"
                assert (c.type, c.unit) == ("cumulative", unit)
                assert isinstance(c.volume, int) and c.volume >= 0
                assert owner(c) == expected_owner(e)
                metadata = c.resource_metadata
                assert (metadata["name"], metadata["mac"], metadata["instance_id"]) == (
                    tap,
                    mac,
                    e.uuid,
                )
    filtered = got[f"{WEB.domain}-{WEB.uuid}-tap4c01000a-1b", "network.incoming.bytes"]
    assert filtered.resource_metadata["fref"] == "nova-instance-instance-00000001-fa163e4c010a"
    assert filtered.resource_metadata["vnic_name"] == filtered.resource_metadata["fref"]
    assert filtered.resource_metadata["parameters"] == {"ip": "10.0.0.11"}
    plain = got[f"plain-{PLAIN.uuid}-testnet0", "network.outgoing.bytes"]
    assert plain.resource_metadata["vnic_name"] == "testnet0"
    assert owner(plain) == (None, None)


class CountingConnection:
    """Passes every call to a real test-driver connection, counting domain lookups."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self.lookups = 0

    def lookupByUUIDString(self, uuid: str) -> Any:
        self.lookups += 1
        return self._connection.lookupByUUIDString(uuid)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def test_all_pollsters_of_a_cycle_share_one_reading() -> None:
    libvirt = require_libvirt()
    connections: list[CountingConnection] = []

    def connect(uri: str) -> CountingConnection:
        connections.append(CountingConnection(libvirt.openReadOnly(uri)))
        return connections[-1]

    manager = Manager(LibvirtInspector(URI, connect), settings())
    context = cycle(manager)
    for cls in ALL_POLLSTERS.values():
        assert list(cls().get_counters(manager, context))  # type: ignore[arg-type]
    (connection,) = connections
    assert connection.lookups == len(RUNNING), "each domain is read once per cycle"
