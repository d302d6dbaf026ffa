"""Reads this host's usage through psutil and returns it as small typed records.

The inspector is stateless and knows nothing of meters: pollsters turn its
records into counters. It takes the psutil module (or a fake with the same
functions) in its constructor so tests can give it fixed numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeVar

from nephoscope.plugin import PluginUnusable, PollingContext

__all__ = [
    "PSEUDO_FILESYSTEMS",
    "CpuTimes",
    "DiskIO",
    "Filesystem",
    "HostInspector",
    "LoadAverage",
    "Memory",
    "NicIO",
    "PsutilLike",
    "Swap",
    "cached",
]

LOG = logging.getLogger(__name__)

#: Filesystem types that hold no data of their own (kernel views, memory,
#: read-only images): their size says nothing about the host's storage.
PSEUDO_FILESYSTEMS: Final = frozenset(
    {
        "aufs",
        "autofs",
        "binfmt_misc",
        "bpf",
        "cgroup",
        "cgroup2",
        "configfs",
        "debugfs",
        "devfs",
        "devpts",
        "devtmpfs",
        "efivarfs",
        "fusectl",
        "hugetlbfs",
        "iso9660",
        "mqueue",
        "nsfs",
        "overlay",
        "proc",
        "pstore",
        "ramfs",
        "rpc_pipefs",
        "securityfs",
        "squashfs",
        "sysfs",
        "tmpfs",
        "tracefs",
    }
)


class PsutilLike(Protocol):
    """The psutil functions the inspector calls; the ``psutil`` module satisfies it."""

    def cpu_times(self) -> Any: ...
    def cpu_count(self) -> int | None: ...
    def getloadavg(self) -> tuple[float, float, float]: ...
    def virtual_memory(self) -> Any: ...
    def swap_memory(self) -> Any: ...
    def disk_io_counters(self, perdisk: Literal[True]) -> Any: ...
    def net_io_counters(self, pernic: Literal[True]) -> Any: ...
    def disk_partitions(self, all: bool = False) -> Any: ...
    def disk_usage(self, path: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """Seconds all CPUs together spent in each mode since boot.

    Modes a platform does not have are 0. Guest time is not a field: Linux
    already counts it inside ``user`` and ``nice``.
    """

    user: float
    nice: float
    system: float
    idle: float
    iowait: float
    irq: float
    softirq: float
    steal: float
    cpu_count: int

    @property
    def busy(self) -> float:
        """Seconds spent running code on this host's behalf (kernel or user)."""
        return self.user + self.nice + self.system + self.irq + self.softirq

    @property
    def total(self) -> float:
        """Seconds of every mode, so that ``busy / total`` is a share of capacity."""
        return self.busy + self.idle + self.iowait + self.steal


@dataclass(frozen=True, slots=True)
class LoadAverage:
    """Average number of runnable (and, on Linux, uninterruptible) processes."""

    one: float
    five: float
    fifteen: float


@dataclass(frozen=True, slots=True)
class Memory:
    """Physical memory in bytes; ``buffers``/``cached`` are None where the OS has none."""

    total: int
    available: int
    free: int
    buffers: int | None
    cached: int | None

    @property
    def used(self) -> int:
        """Bytes that cannot be handed to a new process without swapping."""
        return max(self.total - self.available, 0)


@dataclass(frozen=True, slots=True)
class Swap:
    """Swap space in bytes."""

    total: int
    used: int
    free: int


@dataclass(frozen=True, slots=True)
class DiskIO:
    """Counts of one block device since boot."""

    name: str
    read_bytes: int
    write_bytes: int
    read_count: int
    write_count: int


@dataclass(frozen=True, slots=True)
class NicIO:
    """Counts of one network interface since it came up."""

    name: str
    bytes_recv: int
    bytes_sent: int
    packets_recv: int
    packets_sent: int
    errin: int
    errout: int
    dropin: int
    dropout: int


@dataclass(frozen=True, slots=True)
class Filesystem:
    """One mounted filesystem and its usage in bytes."""

    device: str
    mountpoint: str
    fstype: str
    total: int
    used: int
    free: int

    @property
    def identity(self) -> str:
        """The device, or the mount point for a filesystem without a device name."""
        return _identity(self.device, self.mountpoint)


def _identity(device: str, mountpoint: str) -> str:
    return device if device and device != "none" else mountpoint


T = TypeVar("T")


def cached(context: PollingContext, key: str, read: Callable[[], T]) -> T:
    """Return ``context.cache[key]``, calling ``read`` to fill it on the cycle's first ask.

    Pollsters of one cycle then share one reading, so their counters agree.
    A read that raises leaves nothing cached.
    """
    if key in context.cache:
        value: T = context.cache[key]
        return value
    value = read()
    context.cache[key] = value
    return value


class HostInspector:
    """A thin, typed view of psutil: one method per reading, each a fresh read."""

    def __init__(self, psutil_module: PsutilLike | None = None) -> None:
        if psutil_module is None:
            import psutil

            psutil_module = psutil
        self._psutil = psutil_module
        # Mounts already reported unreadable: warned once, then only at debug level,
        # so a permanently unreadable mount does not fill the log every cycle.
        self._unreadable: set[str] = set()

    def _function(self, name: str) -> Callable[..., Any]:
        function = getattr(self._psutil, name, None)
        if function is None:
            raise PluginUnusable(f"psutil has no {name}() on this platform")
        result: Callable[..., Any] = function
        return result

    def cpu_times(self) -> CpuTimes:
        """CPU seconds per mode, summed over all CPUs."""
        times = self._function("cpu_times")()
        count = self._function("cpu_count")() or 1

        def mode(*names: str) -> float:
            # Windows calls irq and softirq "interrupt" and "dpc".
            for field_name in names:
                value = getattr(times, field_name, None)
                if value is not None:
                    return float(value)
            return 0.0

        return CpuTimes(
            user=mode("user"),
            nice=mode("nice"),
            system=mode("system"),
            idle=mode("idle"),
            iowait=mode("iowait"),
            irq=mode("irq", "interrupt"),
            softirq=mode("softirq", "dpc"),
            steal=mode("steal"),
            cpu_count=int(count),
        )

    def load_average(self) -> LoadAverage:
        """Load averages over 1, 5 and 15 minutes."""
        try:
            one, five, fifteen = self._function("getloadavg")()
        except (NotImplementedError, AttributeError) as exc:
            raise PluginUnusable(f"no load average on this platform: {exc}") from exc
        return LoadAverage(float(one), float(five), float(fifteen))

    def memory(self) -> Memory:
        """Physical memory."""
        mem = self._function("virtual_memory")()
        buffers = getattr(mem, "buffers", None)
        cached_bytes = getattr(mem, "cached", None)
        return Memory(
            total=int(mem.total),
            available=int(mem.available),
            free=int(mem.free),
            buffers=None if buffers is None else int(buffers),
            cached=None if cached_bytes is None else int(cached_bytes),
        )

    def swap(self) -> Swap:
        """Swap space."""
        swap = self._function("swap_memory")()
        return Swap(total=int(swap.total), used=int(swap.used), free=int(swap.free))

    def disks(self) -> tuple[DiskIO, ...]:
        """IO counts of every block device psutil reports, sorted by name."""
        # psutil's default nowrap=True keeps these monotonic when the kernel's
        # 32-bit counters wrap, which is what a cumulative meter needs.
        counters = self._function("disk_io_counters")(perdisk=True) or {}
        return tuple(
            DiskIO(
                name=name,
                read_bytes=int(c.read_bytes),
                write_bytes=int(c.write_bytes),
                read_count=int(c.read_count),
                write_count=int(c.write_count),
            )
            for name, c in sorted(counters.items())
        )

    def nics(self) -> tuple[NicIO, ...]:
        """IO counts of every network interface, loopback included, sorted by name."""
        counters = self._function("net_io_counters")(pernic=True) or {}
        return tuple(
            NicIO(
                name=name,
                bytes_recv=int(c.bytes_recv),
                bytes_sent=int(c.bytes_sent),
                packets_recv=int(c.packets_recv),
                packets_sent=int(c.packets_sent),
                errin=int(c.errin),
                errout=int(c.errout),
                dropin=int(c.dropin),
                dropout=int(c.dropout),
            )
            for name, c in sorted(counters.items())
        )

    def filesystems(self) -> tuple[Filesystem, ...]:
        """Mounted filesystems with their usage, one per device.

        Pseudo filesystems (:data:`PSEUDO_FILESYSTEMS`) and empty ones are left
        out. A device mounted more than once (bind mounts, subvolumes) is the
        same filesystem, so it is read once, at its shortest mount point. A mount
        whose usage cannot be read is logged and left out.
        """
        partitions = self._function("disk_partitions")(all=False)
        usage_of = self._function("disk_usage")
        seen: set[str] = set()
        result: list[Filesystem] = []
        # Shortest mount point first, so the one kept is the same every cycle.
        for part in sorted(partitions, key=lambda p: (len(p.mountpoint), p.mountpoint)):
            if part.fstype in PSEUDO_FILESYSTEMS:
                continue
            identity = _identity(part.device, part.mountpoint)
            if identity in seen:
                continue
            try:
                usage = usage_of(part.mountpoint)
            except OSError as exc:  # PermissionError included
                self._report_unreadable(part.mountpoint, exc)
                continue
            if not usage.total:
                continue
            seen.add(identity)
            self._unreadable.discard(part.mountpoint)
            result.append(
                Filesystem(
                    device=part.device,
                    mountpoint=part.mountpoint,
                    fstype=part.fstype,
                    total=int(usage.total),
                    used=int(usage.used),
                    free=int(usage.free),
                )
            )
        return tuple(sorted(result, key=lambda fs: fs.mountpoint))

    def _report_unreadable(self, mountpoint: str, exc: OSError) -> None:
        if mountpoint in self._unreadable:
            LOG.debug("mount %s still unreadable: %s", mountpoint, exc)
            return
        self._unreadable.add(mountpoint)
        LOG.warning("mount %s skipped: cannot read its usage: %s", mountpoint, exc)
