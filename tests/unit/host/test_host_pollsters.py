"""Host pollsters against a fake psutil: names, types, units, volumes, resources."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from types import SimpleNamespace

import pytest
from tests.unit.host.fakes import (
    CPU_FIRST,
    CPU_FIRST_BUSY_NS,
    CPU_SECOND,
    HOST,
    WHEN,
    FakePsutil,
    make_manager,
    new_context,
)

from nephoscope.counter import Counter
from nephoscope.host.inspector import NicIO
from nephoscope.host.pollsters import (
    CPUPollster,
    CPUUtilPollster,
    DiskIOPollster,
    FilesystemPollster,
    LoadPollster,
    MemoryPollster,
    NetworkPollster,
    SwapPollster,
)
from nephoscope.plugin import NS_POLL_HOST, PollsterBase, load_plugins

ALL_POLLSTERS: dict[str, type[PollsterBase]] = {
    "cpu": CPUPollster,
    "cpu_util": CPUUtilPollster,
    "load": LoadPollster,
    "memory": MemoryPollster,
    "swap": SwapPollster,
    "diskio": DiskIOPollster,
    "disk": FilesystemPollster,
    "net": NetworkPollster,
}


def no_sleep(_seconds: float) -> None:
    """Stands in for time.sleep so the first-poll window costs nothing."""


def make(cls: type[PollsterBase]) -> PollsterBase:
    return CPUUtilPollster(sleep=no_sleep) if cls is CPUUtilPollster else cls()


def poll(pollster: PollsterBase, manager: object | None = None) -> list[Counter]:
    manager = manager or make_manager()
    return list(pollster.get_counters(manager, new_context()))  # type: ignore[arg-type]


def by_key(counters: Iterable[Counter]) -> dict[tuple[str, str], Counter]:
    """Counters keyed by (resource id, meter name); fails on a duplicate."""
    keyed: dict[tuple[str, str], Counter] = {}
    for c in counters:
        key = (c.resource_id, c.name)
        assert key not in keyed, f"two counters for {key}"
        keyed[key] = c
    return keyed


def facts(c: Counter) -> tuple[str, str, int | float]:
    return (c.type, c.unit, c.volume)


def test_entry_points_name_every_pollster() -> None:
    loaded = load_plugins(NS_POLL_HOST, PollsterBase)
    assert not loaded.failed and not loaded.unusable
    assert {name: type(p) for name, p in loaded.plugins.items()} == ALL_POLLSTERS


@pytest.mark.parametrize("name", sorted(ALL_POLLSTERS))
def test_counters_are_declared_host_counters_of_this_cycle(name: str) -> None:
    cls = ALL_POLLSTERS[name]
    counters = poll(make(cls))
    assert counters
    assert {c.name for c in counters} == set(cls.meters)
    for c in counters:
        assert c.timestamp == WHEN
        assert c.source == "hardware"
        assert c.user_id is None and c.project_id is None
        assert c.resource_id == HOST or c.resource_id.startswith(HOST + ".")
        assert c.resource_metadata["host"] == HOST


def test_cpu_time_and_count() -> None:
    got = by_key(poll(CPUPollster()))
    assert facts(got[HOST, "hardware.cpu.time"]) == ("cumulative", "ns", CPU_FIRST_BUSY_NS)
    assert facts(got[HOST, "hardware.cpu.count"]) == ("gauge", "cpu", 4)
    assert got[HOST, "hardware.cpu.time"].resource_metadata == {"host": HOST}


def test_cpu_util_first_poll_measures_over_a_short_window() -> None:
    slept: list[float] = []
    fake = FakePsutil()
    got = by_key(poll(CPUUtilPollster(sleep=slept.append), make_manager(fake)))
    assert slept == [CPUUtilPollster.window] and 0 < CPUUtilPollster.window <= 0.5
    assert fake.calls["cpu_times"] == 2
    # Busy 170 -> 210 s over 1000 -> 1100 s of capacity; idle 800 -> 850 s.
    assert facts(got[HOST, "hardware.cpu.util"]) == ("gauge", "%", 40.0)
    assert facts(got[HOST, "hardware.system_stats.cpu.idle"]) == ("gauge", "%", 50.0)


def test_cpu_util_later_polls_use_the_previous_reading() -> None:
    third = dict(CPU_SECOND, user=150.0, idle=1030.0)  # busy +20 s, idle +180 s: 10 %, 90 %
    slept: list[float] = []
    manager = make_manager(FakePsutil([CPU_FIRST, CPU_SECOND, third]))
    pollster = CPUUtilPollster(sleep=slept.append)
    poll(pollster, manager)
    got = by_key(poll(pollster, manager))
    assert slept == [CPUUtilPollster.window], "only the first poll waits"
    assert got[HOST, "hardware.cpu.util"].volume == 10.0
    assert got[HOST, "hardware.system_stats.cpu.idle"].volume == 90.0


def test_cpu_util_remeasures_when_counters_went_back() -> None:
    rebooted = dict(CPU_FIRST, user=1.0, nice=0.0, system=1.0, idle=8.0, iowait=0.0, steal=0.0)
    after = dict(rebooted, user=4.0, idle=9.0)  # busy +3 s, idle +1 s: 75 %, 25 %
    slept: list[float] = []
    manager = make_manager(FakePsutil([CPU_FIRST, CPU_SECOND, rebooted, after]))
    pollster = CPUUtilPollster(sleep=slept.append)
    poll(pollster, manager)
    got = by_key(poll(pollster, manager))
    assert len(slept) == 2
    assert got[HOST, "hardware.cpu.util"].volume == 75.0
    assert got[HOST, "hardware.system_stats.cpu.idle"].volume == 25.0


def test_cpu_util_without_elapsed_time_emits_nothing() -> None:
    manager = make_manager(FakePsutil([CPU_FIRST]))
    assert poll(CPUUtilPollster(sleep=no_sleep), manager) == []


def test_cpu_pollsters_share_one_reading_per_cycle() -> None:
    fake = FakePsutil([CPU_FIRST, CPU_SECOND, dict(CPU_SECOND, idle=900.0)])
    manager = make_manager(fake)
    util = CPUUtilPollster(sleep=no_sleep)
    context = new_context()
    list(util.get_counters(manager, context))
    list(CPUPollster().get_counters(manager, context))
    assert fake.calls["cpu_times"] == 2  # the cycle's reading, plus the window's end
    context = new_context()
    list(util.get_counters(manager, context))
    list(CPUPollster().get_counters(manager, context))
    assert fake.calls["cpu_times"] == 3


def test_load_averages() -> None:
    got = by_key(poll(LoadPollster()))
    assert facts(got[HOST, "hardware.cpu.load.1min"]) == ("gauge", "process", 0.5)
    assert facts(got[HOST, "hardware.cpu.load.5min"]) == ("gauge", "process", 1.25)
    assert facts(got[HOST, "hardware.cpu.load.15min"]) == ("gauge", "process", 2.0)


def test_memory_in_kilobytes() -> None:
    got = by_key(poll(MemoryPollster()))
    assert facts(got[HOST, "hardware.memory.total"]) == ("gauge", "KB", 8 * 1024 * 1024)
    # used = total - available = 2 GiB
    assert facts(got[HOST, "hardware.memory.used"]) == ("gauge", "KB", 2 * 1024 * 1024)
    assert facts(got[HOST, "hardware.memory.avail"]) == ("gauge", "KB", 6 * 1024 * 1024)
    assert facts(got[HOST, "hardware.memory.buffer"]) == ("gauge", "KB", 100 * 1024)
    # 1 GiB + 1023 B rounds down to 1 GiB in KB
    assert facts(got[HOST, "hardware.memory.cached"]) == ("gauge", "KB", 1024 * 1024)


def test_memory_without_buffers_or_cache_leaves_those_meters_out() -> None:
    fake = FakePsutil()
    del fake.memory["buffers"], fake.memory["cached"]
    names = {c.name for c in poll(MemoryPollster(), make_manager(fake))}
    assert names == {"hardware.memory.total", "hardware.memory.used", "hardware.memory.avail"}


def test_swap_in_kilobytes() -> None:
    got = by_key(poll(SwapPollster()))
    assert facts(got[HOST, "hardware.memory.swap.total"]) == ("gauge", "KB", 1024 * 1024)
    assert facts(got[HOST, "hardware.memory.swap.avail"]) == ("gauge", "KB", 768 * 1024)
    assert facts(got[HOST, "hardware.memory.swap.used"]) == ("gauge", "KB", 256 * 1024)


def test_disk_io_per_device_without_pseudo_devices() -> None:
    got = by_key(poll(DiskIOPollster()))
    assert {rid for rid, _ in got} == {f"{HOST}.sda", f"{HOST}.nvme0n1"}
    sda = f"{HOST}.sda"
    assert facts(got[sda, "hardware.disk.read.bytes"]) == ("cumulative", "B", 4_096_000)
    assert facts(got[sda, "hardware.disk.write.bytes"]) == ("cumulative", "B", 8_192_000)
    assert facts(got[sda, "hardware.disk.read.requests"]) == ("cumulative", "requests", 1000)
    assert facts(got[sda, "hardware.disk.write.requests"]) == ("cumulative", "requests", 2000)
    assert got[sda, "hardware.disk.read.bytes"].resource_metadata == {
        "host": HOST,
        "device": "sda",
    }


def test_network_per_interface_without_loopback() -> None:
    got = by_key(poll(NetworkPollster()))
    assert {rid for rid, _ in got} == {f"{HOST}.eth0", f"{HOST}.eth1"}
    eth0 = f"{HOST}.eth0"
    expected = {
        "hardware.network.incoming.bytes": ("cumulative", "B", 1_000_000),
        "hardware.network.outgoing.bytes": ("cumulative", "B", 2_000_000),
        "hardware.network.incoming.packets": ("cumulative", "packet", 1000),
        "hardware.network.outgoing.packets": ("cumulative", "packet", 2000),
        "hardware.network.incoming.errors": ("cumulative", "packet", 3),
        "hardware.network.outgoing.errors": ("cumulative", "packet", 4),
        "hardware.network.incoming.packets.drop": ("cumulative", "packet", 5),
        "hardware.network.outgoing.packets.drop": ("cumulative", "packet", 6),
    }
    assert {name: facts(got[eth0, name]) for name in expected} == expected
    assert got[eth0, "hardware.network.incoming.bytes"].resource_metadata == {
        "host": HOST,
        "name": "eth0",
    }


@pytest.mark.parametrize("name", ["lo", "lo0", "Loopback Pseudo-Interface 1"])
def test_loopback_names_are_ignored(name: str) -> None:
    assert NetworkPollster.ignored.match(name)


@pytest.mark.parametrize("name", ["eth0", "enp3s0", "lowpan0", "wlo1", "bond0"])
def test_other_interfaces_are_kept(name: str) -> None:
    assert not NetworkPollster.ignored.match(name)


def test_a_failing_interface_is_skipped_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    good = NicIO("eth0", 1, 2, 3, 4, 0, 0, 0, 0)
    bad = NicIO("eth1", float("nan"), 2, 3, 4, 0, 0, 0, 0)  # type: ignore[arg-type]
    inspector = SimpleNamespace(nics=lambda: (bad, good))
    manager = SimpleNamespace(config=make_manager().config, host_inspector=inspector)
    with caplog.at_level(logging.ERROR):
        counters = poll(NetworkPollster(), manager)
    assert {c.resource_id for c in counters} == {f"{HOST}.eth0"}
    assert len(counters) == len(NetworkPollster.meters)
    assert "eth1" in caplog.text


def test_filesystems_per_device(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        got = by_key(poll(FilesystemPollster()))
    # tmpfs is a pseudo filesystem; /secret cannot be read; the bind mount is /'s device.
    assert {rid for rid, _ in got} == {f"{HOST}./dev/sda1", f"{HOST}./dev/sdb1"}
    root = f"{HOST}./dev/sda1"
    assert facts(got[root, "hardware.disk.size.total"]) == ("gauge", "KB", 100 * 1024 * 1024)
    assert facts(got[root, "hardware.disk.size.used"]) == ("gauge", "KB", 50 * 1024 * 1024)
    assert got[root, "hardware.disk.size.total"].resource_metadata == {
        "host": HOST,
        "device": "/dev/sda1",
        "path": "/",
        "fstype": "ext4",
    }
    data = f"{HOST}./dev/sdb1"
    assert facts(got[data, "hardware.disk.size.total"]) == ("gauge", "KB", 2)
    assert facts(got[data, "hardware.disk.size.used"]) == ("gauge", "KB", 1)
    assert "/secret" in caplog.text


def test_metadata_does_not_change_with_the_values() -> None:
    fake = FakePsutil([CPU_FIRST, CPU_SECOND, dict(CPU_SECOND, user=140.0, idle=900.0)])
    manager = make_manager(fake)
    pollsters = [make(cls) for cls in ALL_POLLSTERS.values()]

    def metadata() -> dict[tuple[str, str], object]:
        context = new_context()
        return {
            (c.resource_id, c.name): dict(c.resource_metadata)
            for p in pollsters
            for c in p.get_counters(manager, context)
        }

    first = metadata()
    fake.memory["available"] = 1 * 1024**3
    fake.disks["sda"]["read_bytes"] += 4096
    fake.nics_io["eth0"]["bytes_recv"] += 1500
    assert metadata() == first


def test_host_resource_has_one_metadata_whichever_pollster_speaks() -> None:
    manager = make_manager()
    context = new_context()
    host_metadata = {
        tuple(sorted(c.resource_metadata.items()))
        for cls in ALL_POLLSTERS.values()
        for c in make(cls).get_counters(manager, context)
        if c.resource_id == HOST
    }
    assert host_metadata == {(("host", HOST),)}


def test_each_source_is_read_once_per_cycle() -> None:
    fake = FakePsutil()
    manager = make_manager(fake)
    context = new_context()
    for cls in ALL_POLLSTERS.values():
        for _ in range(2):  # a second pollster of the same family in the same cycle
            list(make(cls).get_counters(manager, context))
    calls = (
        "getloadavg",
        "virtual_memory",
        "swap_memory",
        "disk_io_counters",
        "net_io_counters",
        "disk_partitions",
    )
    assert {call: fake.calls[call] for call in calls} == dict.fromkeys(calls, 1)
