"""A fake libvirt connection for fault injection: errors on demand, a hypervisor that goes away.

Only for what the test driver cannot do (an unsupported statistic, a lost
connection, a domain vanishing mid-read). The figures are fixed so conversions
can be checked by hand.
"""

from __future__ import annotations

from collections import Counter as Tally

from nephoscope.compute.inspector import (
    VIR_ERR_NO_DOMAIN,
    VIR_ERR_SYSTEM_ERROR,
    VIR_FROM_REMOTE,
)

#: A domain of libvirt's error numbering that is not the remote driver's.
VIR_FROM_QEMU = 10

CPU_NS = 7_000_000_000
# KiB: 4 GiB given, 1 GiB of it usable (so 3 GiB used), 512 MiB resident on the host.
BALLOON = {"actual": 4 * 1024**2, "available": 4 * 1024**2, "usable": 1024**2, "rss": 512 * 1024}
BLOCK_STATS = (10, 4096, 20, 8192, 0)  # rd_req, rd_bytes, wr_req, wr_bytes, errs
BLOCK_INFO = (10 * 1024**3, 2 * 1024**3, 3 * 1024**3)  # capacity, allocation, physical
NIC_STATS = (1000, 10, 1, 2, 2000, 20, 3, 4)  # rx bytes/packets/errs/drop, tx ...


class FakeLibvirtError(Exception):
    """Shaped like ``libvirt.libvirtError``: an error code and an error domain."""

    def __init__(self, code: int, domain: int = VIR_FROM_QEMU, message: str = "") -> None:
        super().__init__(message or f"libvirt error {code}")
        self.code = code
        self.domain = domain

    def get_error_code(self) -> int:
        return self.code

    def get_error_domain(self) -> int:
        return self.domain


def disconnected() -> FakeLibvirtError:
    """What libvirt raises when libvirtd went away under a connection."""
    return FakeLibvirtError(VIR_ERR_SYSTEM_ERROR, VIR_FROM_REMOTE, "Cannot write data: Broken pipe")


def no_domain(uuid: str) -> FakeLibvirtError:
    return FakeLibvirtError(VIR_ERR_NO_DOMAIN, 12, f"Domain not found: no domain with uuid {uuid}")


class FakeDomain:
    """One running domain with two disks and one NIC; ``fail`` makes a method raise.

    Methods carry libvirt's camelCase names, since the inspector calls those.
    """

    def __init__(self, uuid: str, name: str, project: str | None = "p1") -> None:
        self.uuid = uuid
        self._name = name
        self.project = project
        self.active = True
        self.fail: dict[str, Exception] = {}
        self.calls: Tally[str] = Tally()

    def _call(self, method: str) -> None:
        self.calls[method] += 1
        error = self.fail.get(method)
        if error is not None:
            raise error

    def UUIDString(self) -> str:
        return self.uuid

    def name(self) -> str:
        return self._name

    def XMLDesc(self, flags: int = 0) -> str:
        self._call("XMLDesc")
        owner = ""
        if self.project:
            owner = (
                '<nova:instance xmlns:nova="http://openstack.org/xmlns/libvirt/nova/1.1">'
                f"<nova:name>{self._name}-display</nova:name>"
                f'<nova:owner><nova:user uuid="u1">u</nova:user>'
                f'<nova:project uuid="{self.project}">p</nova:project></nova:owner>'
                "</nova:instance>"
            )
        return (
            f"<domain type='kvm'><name>{self._name}</name><uuid>{self.uuid}</uuid>"
            f"<metadata>{owner}</metadata>"
            "<memory unit='KiB'>4194304</memory><vcpu>2</vcpu>"
            "<os><type arch='x86_64'>hvm</type></os><devices>"
            "<disk type='file' device='disk'><source file='/a'/><target dev='vda'/></disk>"
            "<disk type='file' device='disk'><source file='/b'/><target dev='vdb'/></disk>"
            "<interface type='bridge'><mac address='fa:16:3e:00:00:01'/>"
            "<target dev='tap1'/></interface>"
            "</devices></domain>"
        )

    def state(self) -> list[int]:
        self._call("state")
        return [1 if self.active else 5, 0]

    def isActive(self) -> int:
        return int(self.active)

    def info(self) -> list[int]:
        self._call("info")
        return [1 if self.active else 5, 4194304, 4194304, 2, CPU_NS - 1]

    def getCPUStats(self, total: bool) -> list[dict[str, int]]:
        self._call("getCPUStats")
        return [{"cpu_time": CPU_NS}]

    def memoryStats(self) -> dict[str, int]:
        self._call("memoryStats")
        return dict(BALLOON)

    def blockStats(self, device: str) -> tuple[int, ...]:
        self._call("blockStats")
        self._call(f"blockStats({device})")
        return BLOCK_STATS

    def blockInfo(self, device: str) -> tuple[int, ...]:
        self._call("blockInfo")
        return BLOCK_INFO

    def interfaceStats(self, device: str) -> tuple[int, ...]:
        self._call("interfaceStats")
        return NIC_STATS


class FakeConnection:
    """A connection to :class:`FakeHypervisor`; once ``lost``, every call fails."""

    def __init__(self, hypervisor: FakeHypervisor) -> None:
        self.hypervisor = hypervisor
        self.lost = False
        self.closed = False

    def _check(self) -> None:
        if self.lost:
            raise disconnected()

    def isAlive(self) -> int:
        return int(not self.lost)

    def listAllDomains(self, flags: int = 0) -> list[FakeDomain]:
        self._check()
        return [d for d in self.hypervisor.domains.values() if d.active]

    def lookupByUUIDString(self, uuid: str) -> FakeDomain:
        self._check()
        hypervisor = self.hypervisor
        hypervisor.lookups += 1
        if hypervisor.lose_after is not None and hypervisor.lookups > hypervisor.lose_after:
            self.lost = True
            raise disconnected()
        domain = hypervisor.domains.get(uuid)
        if domain is None:
            raise no_domain(uuid)
        return domain

    def close(self) -> int:
        self.closed = True
        return 0


class FakeHypervisor:
    """The ``connect`` callable: hands out connections, or fails while ``down``."""

    def __init__(self, *domains: FakeDomain) -> None:
        self.domains = {d.uuid: d for d in domains}
        self.down = False
        self.attempts = 0
        self.connections: list[FakeConnection] = []
        self.lookups = 0
        #: Lose the connection after this many lookups (mid-pass), if set.
        self.lose_after: int | None = None

    def __call__(self, uri: str) -> FakeConnection:
        self.attempts += 1
        if self.down:
            raise FakeLibvirtError(
                VIR_ERR_SYSTEM_ERROR, VIR_FROM_REMOTE, "Failed to connect socket: No such file"
            )
        connection = FakeConnection(self)
        self.connections.append(connection)
        return connection

    def lose_connections(self) -> None:
        """libvirtd restarts: every open connection is dead."""
        for connection in self.connections:
            connection.lost = True


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def remove(hypervisor: FakeHypervisor, domain: FakeDomain) -> None:
    """The domain is undefined: gone from the hypervisor."""
    del hypervisor.domains[domain.uuid]
