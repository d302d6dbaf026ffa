"""Pollsters of the ``nephoscope.poll.host`` namespace: the machine the agent runs on.

Meter names and units are Ceilometer's ``hardware.*`` ones where Ceilometer has
the meter; the others follow the same style (docs/meters.md says which is which).
Host-wide meters have this host's name as resource id; per-device meters
``<host>.<device>``, as Ceilometer's hardware pollsters build them.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator
from typing import ClassVar, Final, TypeVar

from nephoscope.counter import TYPE_CUMULATIVE, TYPE_GAUGE, Counter, Meter
from nephoscope.host.inspector import CpuTimes, DiskIO, Filesystem, NicIO, cached
from nephoscope.plugin import Manager, PollingContext, PollsterBase

__all__ = [
    "SOURCE",
    "CPUPollster",
    "CPUUtilPollster",
    "DiskIOPollster",
    "FilesystemPollster",
    "LoadPollster",
    "MemoryPollster",
    "Meter",
    "NetworkPollster",
    "SwapPollster",
]

LOG = logging.getLogger(__name__)

#: Ceilometer's hardware pollsters give their samples this source.
SOURCE: Final = "hardware"

#: net-snmp, whose numbers Ceilometer's hardware meters carry, counts KB as 1024 bytes.
_KB: Final = 1024
_NS: Final = 1_000_000_000


CPU_TIME = Meter("hardware.cpu.time", TYPE_CUMULATIVE, "ns", SOURCE)
CPU_COUNT = Meter("hardware.cpu.count", TYPE_GAUGE, "cpu", SOURCE)
CPU_UTIL = Meter("hardware.cpu.util", TYPE_GAUGE, "%", SOURCE)
CPU_IDLE = Meter("hardware.system_stats.cpu.idle", TYPE_GAUGE, "%", SOURCE)
LOAD_1 = Meter("hardware.cpu.load.1min", TYPE_GAUGE, "process", SOURCE)
LOAD_5 = Meter("hardware.cpu.load.5min", TYPE_GAUGE, "process", SOURCE)
LOAD_15 = Meter("hardware.cpu.load.15min", TYPE_GAUGE, "process", SOURCE)
MEMORY_TOTAL = Meter("hardware.memory.total", TYPE_GAUGE, "KB", SOURCE)
MEMORY_USED = Meter("hardware.memory.used", TYPE_GAUGE, "KB", SOURCE)
MEMORY_AVAIL = Meter("hardware.memory.avail", TYPE_GAUGE, "KB", SOURCE)
MEMORY_BUFFER = Meter("hardware.memory.buffer", TYPE_GAUGE, "KB", SOURCE)
MEMORY_CACHED = Meter("hardware.memory.cached", TYPE_GAUGE, "KB", SOURCE)
SWAP_TOTAL = Meter("hardware.memory.swap.total", TYPE_GAUGE, "KB", SOURCE)
SWAP_AVAIL = Meter("hardware.memory.swap.avail", TYPE_GAUGE, "KB", SOURCE)
SWAP_USED = Meter("hardware.memory.swap.used", TYPE_GAUGE, "KB", SOURCE)
DISK_READ_BYTES = Meter("hardware.disk.read.bytes", TYPE_CUMULATIVE, "B", SOURCE)
DISK_WRITE_BYTES = Meter("hardware.disk.write.bytes", TYPE_CUMULATIVE, "B", SOURCE)
DISK_READ_REQUESTS = Meter("hardware.disk.read.requests", TYPE_CUMULATIVE, "requests", SOURCE)
DISK_WRITE_REQUESTS = Meter("hardware.disk.write.requests", TYPE_CUMULATIVE, "requests", SOURCE)
DISK_SIZE_TOTAL = Meter("hardware.disk.size.total", TYPE_GAUGE, "KB", SOURCE)
DISK_SIZE_USED = Meter("hardware.disk.size.used", TYPE_GAUGE, "KB", SOURCE)
NET_IN_BYTES = Meter("hardware.network.incoming.bytes", TYPE_CUMULATIVE, "B", SOURCE)
NET_OUT_BYTES = Meter("hardware.network.outgoing.bytes", TYPE_CUMULATIVE, "B", SOURCE)
NET_IN_PACKETS = Meter("hardware.network.incoming.packets", TYPE_CUMULATIVE, "packet", SOURCE)
NET_OUT_PACKETS = Meter("hardware.network.outgoing.packets", TYPE_CUMULATIVE, "packet", SOURCE)
NET_IN_ERRORS = Meter("hardware.network.incoming.errors", TYPE_CUMULATIVE, "packet", SOURCE)
NET_OUT_ERRORS = Meter("hardware.network.outgoing.errors", TYPE_CUMULATIVE, "packet", SOURCE)
NET_IN_DROP = Meter("hardware.network.incoming.packets.drop", TYPE_CUMULATIVE, "packet", SOURCE)
NET_OUT_DROP = Meter("hardware.network.outgoing.packets.drop", TYPE_CUMULATIVE, "packet", SOURCE)

# Keys of the per-cycle cache: one psutil read per cycle, whichever pollster asks first.
_CPU_TIMES: Final = "host.cpu_times"
_LOAD: Final = "host.load_average"
_MEMORY: Final = "host.memory"
_SWAP: Final = "host.swap"
_DISKS: Final = "host.disks"
_NICS: Final = "host.nics"
_FILESYSTEMS: Final = "host.filesystems"


def _names(*meters: Meter) -> tuple[str, ...]:
    return tuple(m.name for m in meters)


def _host_metadata(host: str) -> dict[str, str]:
    # Every host-wide pollster gives the host resource this same metadata, so the
    # store sees one unchanging value instead of one per pollster.
    return {"host": host}


D = TypeVar("D")


def _per_device(
    what: str,
    devices: Iterable[D],
    label: Callable[[D], str],
    build: Callable[[D], list[Counter]],
) -> Iterator[Counter]:
    """Counters of each device; a device that fails is logged and skipped, the rest go on."""
    for device in devices:
        try:
            counters = build(device)
        except Exception:
            LOG.exception("%s %s skipped this cycle", what, label(device))
            continue
        yield from counters


class CPUPollster(PollsterBase):
    """CPU time this host spent busy, and how many CPUs it has."""

    meters = _names(CPU_TIME, CPU_COUNT)

    def get_counters(self, manager: Manager, context: PollingContext) -> Iterable[Counter]:
        host = manager.config.host
        times = cached(context, _CPU_TIMES, manager.host_inspector.cpu_times)
        metadata = _host_metadata(host)
        return [
            CPU_TIME.counter(round(times.busy * _NS), host, context.timestamp, metadata),
            CPU_COUNT.counter(times.cpu_count, host, context.timestamp, metadata),
        ]


class CPUUtilPollster(PollsterBase):
    """Share of CPU capacity busy (and idle) since this pollster's previous reading.

    Busy is user, nice, system, irq and softirq time; capacity adds idle,
    iowait and steal. Without a usable previous reading (the first poll, or
    counters that went back) it measures over :attr:`window` seconds instead,
    so every cycle has a value.
    """

    meters = _names(CPU_UTIL, CPU_IDLE)
    #: Seconds measured when there is no usable previous reading.
    window: ClassVar[float] = 0.25

    def __init__(self, sleep: Callable[[float], None] = time.sleep) -> None:
        self._sleep = sleep
        self._previous: CpuTimes | None = None

    def get_counters(self, manager: Manager, context: PollingContext) -> Iterable[Counter]:
        inspector = manager.host_inspector
        now = cached(context, _CPU_TIMES, inspector.cpu_times)
        before = self._previous
        if before is None or not _went_forward(before, now):
            before = now
            self._sleep(self.window)
            now = inspector.cpu_times()
        self._previous = now
        elapsed = now.total - before.total
        if elapsed <= 0:
            LOG.debug("no CPU time elapsed between readings; no utilisation this cycle")
            return []
        busy = _percent(now.busy - before.busy, elapsed)
        idle = _percent(now.idle - before.idle, elapsed)
        host = manager.config.host
        metadata = _host_metadata(host)
        return [
            CPU_UTIL.counter(busy, host, context.timestamp, metadata),
            CPU_IDLE.counter(idle, host, context.timestamp, metadata),
        ]


def _went_forward(before: CpuTimes, now: CpuTimes) -> bool:
    # A counter that went back means the readings do not share an origin
    # (reboot, CPU hot-unplug): their difference would be meaningless.
    return (
        now.total > before.total
        and now.busy >= before.busy
        and now.idle >= before.idle
        and now.cpu_count == before.cpu_count
    )


def _percent(part: float, whole: float) -> float:
    return round(min(max(100.0 * part / whole, 0.0), 100.0), 2)


class LoadPollster(PollsterBase):
    """Load averages over 1, 5 and 15 minutes."""

    meters = _names(LOAD_1, LOAD_5, LOAD_15)

    def get_counters(self, manager: Manager, context: PollingContext) -> Iterable[Counter]:
        host = manager.config.host
        load = cached(context, _LOAD, manager.host_inspector.load_average)
        metadata = _host_metadata(host)
        return [
            LOAD_1.counter(load.one, host, context.timestamp, metadata),
            LOAD_5.counter(load.five, host, context.timestamp, metadata),
            LOAD_15.counter(load.fifteen, host, context.timestamp, metadata),
        ]


class MemoryPollster(PollsterBase):
    """Physical memory: total, used (total less available), available, buffers, page cache.

    Buffer and cache meters are left out where the OS does not report them.
    """

    meters = _names(MEMORY_TOTAL, MEMORY_USED, MEMORY_AVAIL, MEMORY_BUFFER, MEMORY_CACHED)

    def get_counters(self, manager: Manager, context: PollingContext) -> Iterable[Counter]:
        host = manager.config.host
        mem = cached(context, _MEMORY, manager.host_inspector.memory)
        metadata = _host_metadata(host)
        ts = context.timestamp
        counters = [
            MEMORY_TOTAL.counter(mem.total // _KB, host, ts, metadata),
            MEMORY_USED.counter(mem.used // _KB, host, ts, metadata),
            MEMORY_AVAIL.counter(mem.available // _KB, host, ts, metadata),
        ]
        if mem.buffers is not None:
            counters.append(MEMORY_BUFFER.counter(mem.buffers // _KB, host, ts, metadata))
        if mem.cached is not None:
            counters.append(MEMORY_CACHED.counter(mem.cached // _KB, host, ts, metadata))
        return counters


class SwapPollster(PollsterBase):
    """Swap space: total, free and used (all 0 on a host without swap)."""

    meters = _names(SWAP_TOTAL, SWAP_AVAIL, SWAP_USED)

    def get_counters(self, manager: Manager, context: PollingContext) -> Iterable[Counter]:
        host = manager.config.host
        swap = cached(context, _SWAP, manager.host_inspector.swap)
        metadata = _host_metadata(host)
        ts = context.timestamp
        return [
            SWAP_TOTAL.counter(swap.total // _KB, host, ts, metadata),
            SWAP_AVAIL.counter(swap.free // _KB, host, ts, metadata),
            SWAP_USED.counter(swap.used // _KB, host, ts, metadata),
        ]


class DiskIOPollster(PollsterBase):
    """Bytes and requests read and written per block device since boot.

    Devices matching :attr:`ignored` (loop, RAM and zram devices) are left out:
    no hardware is behind them. Partitions and device-mapper volumes are
    reported too, so summing over all disks counts some IO twice.
    """

    meters = _names(DISK_READ_BYTES, DISK_WRITE_BYTES, DISK_READ_REQUESTS, DISK_WRITE_REQUESTS)
    ignored: ClassVar[re.Pattern[str]] = re.compile(r"^(loop|ram|zram)\d+$")

    def get_counters(self, manager: Manager, context: PollingContext) -> Iterable[Counter]:
        host = manager.config.host
        disks = cached(context, _DISKS, manager.host_inspector.disks)
        ts = context.timestamp

        def build(disk: DiskIO) -> list[Counter]:
            resource_id = f"{host}.{disk.name}"
            metadata = {"host": host, "device": disk.name}
            return [
                DISK_READ_BYTES.counter(disk.read_bytes, resource_id, ts, metadata),
                DISK_WRITE_BYTES.counter(disk.write_bytes, resource_id, ts, metadata),
                DISK_READ_REQUESTS.counter(disk.read_count, resource_id, ts, metadata),
                DISK_WRITE_REQUESTS.counter(disk.write_count, resource_id, ts, metadata),
            ]

        wanted = [d for d in disks if not self.ignored.match(d.name)]
        return list(_per_device("disk", wanted, lambda d: d.name, build))


class NetworkPollster(PollsterBase):
    """Bytes, packets, errors and drops in and out per network interface.

    Loopback interfaces (matching :attr:`ignored`) are left out: their traffic
    never leaves the host, and counting it would inflate the host's totals.
    """

    meters = _names(
        NET_IN_BYTES,
        NET_OUT_BYTES,
        NET_IN_PACKETS,
        NET_OUT_PACKETS,
        NET_IN_ERRORS,
        NET_OUT_ERRORS,
        NET_IN_DROP,
        NET_OUT_DROP,
    )
    #: ``lo`` on Linux, ``lo0`` on BSD and macOS, the loopback pseudo-interface on Windows.
    ignored: ClassVar[re.Pattern[str]] = re.compile(r"^(lo\d*|Loopback Pseudo-Interface.*)$")

    def get_counters(self, manager: Manager, context: PollingContext) -> Iterable[Counter]:
        host = manager.config.host
        nics = cached(context, _NICS, manager.host_inspector.nics)
        ts = context.timestamp

        def build(nic: NicIO) -> list[Counter]:
            resource_id = f"{host}.{nic.name}"
            metadata = {"host": host, "name": nic.name}
            return [
                NET_IN_BYTES.counter(nic.bytes_recv, resource_id, ts, metadata),
                NET_OUT_BYTES.counter(nic.bytes_sent, resource_id, ts, metadata),
                NET_IN_PACKETS.counter(nic.packets_recv, resource_id, ts, metadata),
                NET_OUT_PACKETS.counter(nic.packets_sent, resource_id, ts, metadata),
                NET_IN_ERRORS.counter(nic.errin, resource_id, ts, metadata),
                NET_OUT_ERRORS.counter(nic.errout, resource_id, ts, metadata),
                NET_IN_DROP.counter(nic.dropin, resource_id, ts, metadata),
                NET_OUT_DROP.counter(nic.dropout, resource_id, ts, metadata),
            ]

        wanted = [n for n in nics if not self.ignored.match(n.name)]
        return list(_per_device("network interface", wanted, lambda n: n.name, build))


class FilesystemPollster(PollsterBase):
    """Size and used space of each mounted filesystem.

    The resource id is ``<host>.<device>`` (Ceilometer's form); the mount point
    is in the metadata as ``path``. A filesystem without a device name is
    identified by its mount point instead.
    """

    meters = _names(DISK_SIZE_TOTAL, DISK_SIZE_USED)

    def get_counters(self, manager: Manager, context: PollingContext) -> Iterable[Counter]:
        host = manager.config.host
        filesystems = cached(context, _FILESYSTEMS, manager.host_inspector.filesystems)
        ts = context.timestamp

        def build(fs: Filesystem) -> list[Counter]:
            resource_id = f"{host}.{fs.identity}"
            metadata = {
                "host": host,
                "device": fs.device,
                "path": fs.mountpoint,
                "fstype": fs.fstype,
            }
            return [
                DISK_SIZE_TOTAL.counter(fs.total // _KB, resource_id, ts, metadata),
                DISK_SIZE_USED.counter(fs.used // _KB, resource_id, ts, metadata),
            ]

        return list(_per_device("filesystem", filesystems, lambda fs: fs.mountpoint, build))
