"""A fake psutil with fixed numbers, and a manager to hand pollsters.

The numbers are chosen so every conversion can be checked by hand; the
expected values sit next to them as constants.
"""

from __future__ import annotations

from collections import Counter as Tally
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from nephoscope.config import Settings
from nephoscope.host.inspector import HostInspector
from nephoscope.plugin import PollingContext

HOST = "node1"
WHEN = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
GIB = 1024**3
MIB = 1024**2

# Two CPU readings 100 s of capacity apart: busy 170 -> 210 s, idle 800 -> 850 s,
# so utilisation is 40 % and idle 50 %. Guest time is inside user (Linux) and
# must not be counted twice.
CPU_FIRST = dict(
    user=100.0,
    nice=10.0,
    system=50.0,
    idle=800.0,
    iowait=20.0,
    irq=5.0,
    softirq=5.0,
    steal=10.0,
    guest=3.0,
    guest_nice=0.0,
)
CPU_SECOND = dict(CPU_FIRST, user=130.0, system=60.0, idle=850.0, iowait=25.0, steal=15.0)
CPU_FIRST_BUSY_NS = 170 * 10**9

MEMORY = dict(
    total=8 * GIB,
    available=6 * GIB,
    free=2 * GIB,
    buffers=100 * MIB,
    # 1023 bytes over 1 GiB: the KB figure must round down to 1048576.
    cached=GIB + 1023,
)
SWAP = dict(total=GIB, used=256 * MIB, free=768 * MIB)

DISKS = {
    "sda": dict(read_bytes=4_096_000, write_bytes=8_192_000, read_count=1000, write_count=2000),
    "nvme0n1": dict(read_bytes=512, write_bytes=1024, read_count=1, write_count=2),
    "loop0": dict(read_bytes=1, write_bytes=1, read_count=1, write_count=1),
    "zram0": dict(read_bytes=1, write_bytes=1, read_count=1, write_count=1),
}

NICS = {
    "lo": dict(
        bytes_recv=9, bytes_sent=9, packets_recv=9, packets_sent=9,
        errin=0, errout=0, dropin=0, dropout=0,
    ),
    "eth0": dict(
        bytes_recv=1_000_000, bytes_sent=2_000_000, packets_recv=1000, packets_sent=2000,
        errin=3, errout=4, dropin=5, dropout=6,
    ),
    "eth1": dict(
        bytes_recv=10, bytes_sent=20, packets_recv=1, packets_sent=2,
        errin=0, errout=0, dropin=0, dropout=0,
    ),
}  # fmt: skip

PARTITIONS = [
    dict(device="/dev/sda1", mountpoint="/", fstype="ext4"),
    # The same device bind-mounted elsewhere: one filesystem, read once.
    dict(device="/dev/sda1", mountpoint="/var/lib/bind", fstype="ext4"),
    dict(device="tmpfs", mountpoint="/run", fstype="tmpfs"),
    dict(device="/dev/sdb1", mountpoint="/data", fstype="xfs"),
    # Its usage cannot be read: skipped, the others still reported.
    dict(device="/dev/sdc1", mountpoint="/secret", fstype="ext4"),
]
USAGE = {
    "/": dict(total=100 * GIB, used=50 * GIB, free=45 * GIB),
    "/var/lib/bind": dict(total=100 * GIB, used=50 * GIB, free=45 * GIB),
    "/run": dict(total=64 * MIB, used=MIB, free=63 * MIB),
    # 2048 B is 2 KB; 1536 B is 1.5 KB, reported as 1.
    "/data": dict(total=2048, used=1536, free=512),
}
UNREADABLE = {"/secret"}


class FakePsutil:
    """Answers like psutil with the numbers above; counts the calls made to it."""

    def __init__(self, cpu_readings: list[dict[str, float]] | None = None) -> None:
        self.cpu_readings = list(cpu_readings or [CPU_FIRST, CPU_SECOND])
        self.cpus = 4
        self.calls: Tally[str] = Tally()
        self.memory = dict(MEMORY)
        self.disks = {k: dict(v) for k, v in DISKS.items()}
        self.nics_io = {k: dict(v) for k, v in NICS.items()}

    def cpu_times(self) -> Any:
        self.calls["cpu_times"] += 1
        # Successive calls walk through the readings, then repeat the last one.
        reading = self.cpu_readings[0]
        if len(self.cpu_readings) > 1:
            self.cpu_readings.pop(0)
        return SimpleNamespace(**reading)

    def cpu_count(self) -> int | None:
        return self.cpus

    def getloadavg(self) -> tuple[float, float, float]:
        self.calls["getloadavg"] += 1
        return (0.5, 1.25, 2.0)

    def virtual_memory(self) -> Any:
        self.calls["virtual_memory"] += 1
        return SimpleNamespace(**self.memory)

    def swap_memory(self) -> Any:
        self.calls["swap_memory"] += 1
        return SimpleNamespace(**SWAP)

    def disk_io_counters(self, perdisk: bool = False) -> Any:
        assert perdisk
        self.calls["disk_io_counters"] += 1
        return {name: SimpleNamespace(**c) for name, c in self.disks.items()}

    def net_io_counters(self, pernic: bool = False) -> Any:
        assert pernic
        self.calls["net_io_counters"] += 1
        return {name: SimpleNamespace(**c) for name, c in self.nics_io.items()}

    def disk_partitions(self, all: bool = False) -> Any:
        assert not all
        self.calls["disk_partitions"] += 1
        return [SimpleNamespace(opts="rw", **p) for p in PARTITIONS]

    def disk_usage(self, path: str) -> Any:
        self.calls["disk_usage"] += 1
        if path in UNREADABLE:
            raise PermissionError(13, "Permission denied", path)
        return SimpleNamespace(percent=0.0, **USAGE[path])


@dataclass
class FakeManager:
    """What the agent hands a pollster: config and the host inspector."""

    host_inspector: HostInspector
    config: Settings = field(default_factory=lambda: Settings(host=HOST))


def make_manager(psutil_module: Any | None = None) -> FakeManager:
    """A manager whose inspector reads ``psutil_module`` (a fresh :class:`FakePsutil`)."""
    return FakeManager(HostInspector(psutil_module or FakePsutil()))


def new_context() -> PollingContext:
    """A fresh polling cycle at :data:`WHEN`."""
    return PollingContext(timestamp=WHEN, resources=[HOST])
