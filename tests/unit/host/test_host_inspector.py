"""HostInspector: psutil's readings as typed records, and the per-cycle cache."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

import pytest
from tests.unit.host.fakes import FakePsutil, new_context

from nephoscope.host.inspector import CpuTimes, Filesystem, HostInspector, Memory, cached
from nephoscope.plugin import PluginUnusable


def test_cpu_times_sum_busy_modes_without_counting_guest_twice() -> None:
    times = HostInspector(FakePsutil()).cpu_times()
    assert times == CpuTimes(
        user=100.0,
        nice=10.0,
        system=50.0,
        idle=800.0,
        iowait=20.0,
        irq=5.0,
        softirq=5.0,
        steal=10.0,
        cpu_count=4,
    )
    assert times.busy == 170.0
    assert times.total == 1000.0


def test_cpu_times_on_a_platform_with_other_modes() -> None:
    # Windows names irq/softirq "interrupt"/"dpc" and has no nice, iowait or steal.
    fake = FakePsutil([dict(user=10.0, system=5.0, idle=80.0, interrupt=2.0, dpc=3.0)])
    fake.cpus = None  # type: ignore[assignment]
    times = HostInspector(fake).cpu_times()
    assert (times.irq, times.softirq, times.nice, times.iowait, times.steal) == (2, 3, 0, 0, 0)
    assert times.cpu_count == 1, "an unknown CPU count is taken as one"
    assert times.total == 100.0


def test_memory_where_the_os_has_no_buffers_or_cache() -> None:
    fake = FakePsutil()
    del fake.memory["buffers"], fake.memory["cached"]
    mem = HostInspector(fake).memory()
    assert (mem.buffers, mem.cached) == (None, None)
    assert mem.used == mem.total - mem.available


def test_memory_used_is_never_negative() -> None:
    assert Memory(total=10, available=12, free=12, buffers=None, cached=None).used == 0


def test_disks_and_nics_are_sorted_by_name() -> None:
    inspector = HostInspector(FakePsutil())
    assert [d.name for d in inspector.disks()] == ["loop0", "nvme0n1", "sda", "zram0"]
    assert [n.name for n in inspector.nics()] == ["eth0", "eth1", "lo"]


def test_no_counters_at_all_is_an_empty_answer() -> None:
    fake: Any = SimpleNamespace(
        disk_io_counters=lambda perdisk: None, net_io_counters=lambda pernic: {}
    )
    inspector = HostInspector(fake)
    assert inspector.disks() == ()
    assert inspector.nics() == ()


def test_filesystems_skip_pseudo_unreadable_and_repeated_devices() -> None:
    fs = HostInspector(FakePsutil()).filesystems()
    assert fs == (
        Filesystem("/dev/sda1", "/", "ext4", 100 * 1024**3, 50 * 1024**3, 45 * 1024**3),
        Filesystem("/dev/sdb1", "/data", "xfs", 2048, 1536, 512),
    )


def test_an_unreadable_mount_is_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    inspector = HostInspector(FakePsutil())
    with caplog.at_level(logging.DEBUG, logger="nephoscope.host.inspector"):
        inspector.filesystems()
        inspector.filesystems()
    levels = [r.levelno for r in caplog.records if "/secret" in r.getMessage()]
    assert levels == [logging.WARNING, logging.DEBUG]


def test_a_repeated_device_falls_back_to_a_readable_mount() -> None:
    def usage(path: str) -> SimpleNamespace:
        if path == "/":
            raise OSError(5, "I/O error", path)
        return SimpleNamespace(total=4096, used=1024, free=3072)

    fake: Any = SimpleNamespace(
        disk_partitions=lambda all: [
            SimpleNamespace(device="/dev/sda1", mountpoint="/", fstype="ext4"),
            SimpleNamespace(device="/dev/sda1", mountpoint="/srv", fstype="ext4"),
        ],
        disk_usage=usage,
    )
    (fs,) = HostInspector(fake).filesystems()
    assert (fs.mountpoint, fs.identity) == ("/srv", "/dev/sda1")


def test_a_filesystem_without_device_name_is_known_by_its_mount_point() -> None:
    assert Filesystem("none", "/mnt/x", "zfs", 1, 0, 1).identity == "/mnt/x"
    assert Filesystem("", "/mnt/y", "zfs", 1, 0, 1).identity == "/mnt/y"


def test_a_missing_psutil_function_makes_the_plugin_unusable() -> None:
    with pytest.raises(PluginUnusable, match="getloadavg"):
        HostInspector(SimpleNamespace()).load_average()


def test_cached_reads_once_per_cycle_and_keeps_no_failure() -> None:
    context = new_context()
    reads: list[int] = []

    def read() -> int:
        reads.append(1)
        if len(reads) == 1:
            raise OSError("transient")
        return len(reads)

    with pytest.raises(OSError):
        cached(context, "k", read)
    assert cached(context, "k", read) == 2
    assert cached(context, "k", read) == 2
    assert len(reads) == 2
    assert cached(new_context(), "k", read) == 3


def test_default_inspector_reads_the_real_psutil() -> None:
    times = HostInspector().cpu_times()
    assert times.cpu_count >= 1 and times.total > 0
