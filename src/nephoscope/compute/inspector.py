"""Reads the instances of this hypervisor through libvirt, as small typed records.

:class:`LibvirtInspector` holds one libvirt connection. :meth:`~LibvirtInspector.domains`
lists the active domains with their devices and Nova metadata;
:meth:`~LibvirtInspector.read` reads the usage of each in one pass (CPU, memory
balloon, every disk and every vNIC). The pollsters share one ``read`` per cycle
through the cycle's cache, so each libvirt figure is read once per domain per cycle.

The inspector never raises for one domain's trouble: a domain that disappears
is skipped, a statistic the driver cannot give is left out (and said once), and
a lost connection is re-opened later with exponential backoff while cycles go on
without compute counters.

libvirt is reached only through the ``connect`` callable and the objects it
returns, so tests can hand in a fake connection; without one, ``libvirt-python``
is imported and :func:`libvirt.openReadOnly` is used.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Final, TypeVar

from nephoscope.compute.domain import Domain, parse_domain
from nephoscope.plugin import PluginUnusable

__all__ = [
    "ConnectionUnavailable",
    "CpuStats",
    "DiskInfo",
    "DiskStats",
    "InstanceStats",
    "LibvirtInspector",
    "MemoryStats",
    "NicStats",
    "import_libvirt",
]

LOG = logging.getLogger(__name__)

# libvirt's numbers (virterror.h, libvirt-domain.h): part of its stable ABI, spelt
# here so that the inspector and its tests need no libvirt import to use them.
VIR_ERR_INTERNAL_ERROR: Final = 1
VIR_ERR_NO_SUPPORT: Final = 3
VIR_ERR_NO_CONNECT: Final = 5
VIR_ERR_INVALID_CONN: Final = 6
VIR_ERR_SYSTEM_ERROR: Final = 38
VIR_ERR_NO_DOMAIN: Final = 42
VIR_ERR_OPERATION_INVALID: Final = 55
VIR_ERR_OPERATION_UNSUPPORTED: Final = 84
VIR_FROM_RPC: Final = 7
VIR_FROM_REMOTE: Final = 13
VIR_CONNECT_LIST_DOMAINS_ACTIVE: Final = 1
VIR_DOMAIN_SHUTOFF: Final = 5
VIR_DOMAIN_CRASHED: Final = 6

#: Errors that mean "this driver cannot give that figure" (for this domain).
_UNSUPPORTED: Final = frozenset(
    {VIR_ERR_NO_SUPPORT, VIR_ERR_OPERATION_UNSUPPORTED, VIR_ERR_OPERATION_INVALID}
)

INSTALL_HINT: Final = (
    "install nephoscope[libvirt], which compiles against libvirt's headers "
    "(Debian: apt-get install libvirt-dev pkg-config)"
)


def import_libvirt() -> Any:
    """The ``libvirt`` module; raises PluginUnusable when libvirt-python is missing."""
    try:
        module = importlib.import_module("libvirt")
    except ImportError as exc:
        raise PluginUnusable(f"libvirt-python is not installed ({exc}): {INSTALL_HINT}") from exc
    # libvirt prints every error on stderr unless a handler is registered; the
    # inspector reports the ones that matter itself, once.
    module.registerErrorHandler(_quiet, None)
    return module


def _quiet(_context: object, error: object) -> None:
    LOG.debug("libvirt: %s", error)


class ConnectionUnavailable(Exception):
    """No libvirt connection now (down, or waiting to retry); a later cycle tries again."""


class _Vanished(Exception):
    """The domain went away (undefined, or stopped) while it was being read."""


@dataclass(frozen=True, slots=True)
class CpuStats:
    """CPU time the domain used since it started, and its vCPUs now."""

    time_ns: int
    vcpus: int


@dataclass(frozen=True, slots=True)
class MemoryStats:
    """What the memory balloon reports, in KiB; None for what this domain's driver omits."""

    #: Current balloon size: memory given to the guest.
    actual: int | None
    #: Memory the guest OS sees (its MemTotal).
    available: int | None
    #: Memory the guest leaves unused (its MemFree).
    unused: int | None
    #: Memory the guest could use without swapping (its MemAvailable).
    usable: int | None
    #: Resident set size of the hypervisor's process for the domain.
    rss: int | None

    @property
    def used(self) -> int | None:
        """Memory the guest uses: available less usable, else available less unused."""
        if self.available is None:
            return None
        spare = self.usable if self.usable is not None else self.unused
        return None if spare is None else max(self.available - spare, 0)


@dataclass(frozen=True, slots=True)
class DiskStats:
    """IO counts of one disk since the domain started (``blockStats``)."""

    device: str
    read_requests: int
    read_bytes: int
    write_requests: int
    write_bytes: int
    errors: int


@dataclass(frozen=True, slots=True)
class DiskInfo:
    """Sizes of one disk in bytes (``blockInfo``)."""

    device: str
    #: What the guest sees.
    capacity: int
    #: What the image occupies on the host.
    allocation: int
    #: Size of the host file or device that holds it.
    physical: int


@dataclass(frozen=True, slots=True)
class NicStats:
    """Counts of one vNIC since the domain started (``interfaceStats``), guest's view."""

    name: str
    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_drop: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_drop: int


@dataclass(frozen=True, slots=True)
class InstanceStats:
    """One domain's usage in one cycle. What could not be read is None or left out."""

    uuid: str
    cpu: CpuStats
    memory: MemoryStats | None
    disks: tuple[DiskStats, ...]
    #: Whether every readable disk's IO counts are in ``disks`` (sums are only right then).
    disks_complete: bool
    disk_info: tuple[DiskInfo, ...]
    nics: tuple[NicStats, ...]


T = TypeVar("T")


def _error_code(exc: BaseException) -> int | None:
    code = getattr(exc, "get_error_code", None)
    return code() if callable(code) else None


def _error_domain(exc: BaseException) -> int | None:
    domain = getattr(exc, "get_error_domain", None)
    return domain() if callable(domain) else None


def is_disconnection(exc: BaseException) -> bool:
    """Whether a libvirt error means the connection itself is gone."""
    code = _error_code(exc)
    if code in (VIR_ERR_NO_CONNECT, VIR_ERR_INVALID_CONN):
        return True
    return code in (VIR_ERR_SYSTEM_ERROR, VIR_ERR_INTERNAL_ERROR) and _error_domain(exc) in (
        VIR_FROM_REMOTE,
        VIR_FROM_RPC,
    )


class LibvirtInspector:
    """One libvirt connection, and the readings of the domains it serves.

    ``connect(uri)`` opens the connection (default ``libvirt.openReadOnly``). After
    a failure the next attempt waits ``retry_initial`` seconds, doubling up to
    ``retry_max``; attempts are made only when a cycle asks, never by sleeping.
    Safe to share between threads.
    """

    def __init__(
        self,
        uri: str = "qemu:///system",
        connect: Callable[[str], Any] | None = None,
        *,
        retry_initial: float = 1.0,
        retry_max: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if connect is None:
            connect = import_libvirt().openReadOnly
        self.uri = uri
        self._connect = connect
        self._retry_initial = retry_initial
        self._retry_max = retry_max
        self._clock = clock
        self._lock = threading.Lock()
        self._conn: Any = None
        self._failures = 0
        self._retry_at = 0.0
        self._outage = False
        # (domain uuid, what) already reported unreadable: said once, then only at debug.
        self._said: set[tuple[str, str]] = set()

    # -- the connection -----------------------------------------------------------

    @property
    def connection(self) -> Any:
        """The open connection, opening it if needed; raises ConnectionUnavailable."""
        with self._lock:
            if self._conn is not None:
                return self._conn
            now = self._clock()
            if now < self._retry_at:
                wait = self._retry_at - now
                raise ConnectionUnavailable(
                    f"libvirt at {self.uri} unavailable; next attempt in {wait:.0f}s"
                )
            try:
                conn = self._connect(self.uri)
                if conn is None:  # a connect callable that failed without raising
                    raise ConnectionError("connect returned no connection")
            except Exception as exc:
                self._failures += 1
                delay = min(self._retry_initial * 2 ** (self._failures - 1), self._retry_max)
                self._retry_at = now + delay
                self._begin_outage(f"cannot connect to libvirt at {self.uri}: {exc}")
                LOG.debug("libvirt connect attempt %d failed; next in %gs", self._failures, delay)
                raise ConnectionUnavailable(f"cannot connect to libvirt at {self.uri}") from exc
            if self._outage:
                LOG.info(
                    "connected to libvirt at %s again (after %d failed attempt(s))",
                    self.uri,
                    self._failures,
                )
            self._conn, self._failures, self._retry_at, self._outage = conn, 0, 0.0, False
            return conn

    def _begin_outage(self, reason: str) -> None:
        # Called with the lock held. One warning per outage, however many cycles it lasts.
        if self._outage:
            LOG.debug("%s (still)", reason)
            return
        self._outage = True
        LOG.warning("%s; no compute counters until it is back (retried with backoff)", reason)

    def _lose(self, conn: Any, exc: BaseException) -> None:
        """Drop ``conn`` after it failed; the next use reconnects."""
        with self._lock:
            if self._conn is not conn:
                return  # another thread already dropped it
            self._conn = None
            self._begin_outage(f"lost the libvirt connection to {self.uri}: {exc}")
        # Closing a connection that already failed may fail too; it is dropped either way.
        with contextlib.suppress(Exception):
            conn.close()

    def close(self) -> None:
        """Close the connection, if open."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                LOG.debug("closing the libvirt connection failed", exc_info=True)

    def _live_connection(self) -> Any:
        conn = self.connection
        try:
            alive = conn.isAlive()
        except Exception as exc:
            alive, reason = False, exc
        else:
            reason = ConnectionError("isAlive() is false")
        if alive:
            return conn
        self._lose(conn, reason)
        return self.connection

    # -- discovery ----------------------------------------------------------------

    def domains(self) -> list[Domain]:
        """The active domains, parsed from their XML; raises ConnectionUnavailable."""
        conn = self._live_connection()
        try:
            handles = conn.listAllDomains(VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        except Exception as exc:
            if is_disconnection(exc):
                self._lose(conn, exc)
                raise ConnectionUnavailable(str(exc)) from exc
            raise
        domains: list[Domain] = []
        unreadable: set[str] = set()
        for handle in handles:
            try:
                state = handle.state()[0]
                domains.append(parse_domain(handle.XMLDesc(0), state))
            except ValueError as exc:
                unreadable.add(_safe_uuid(handle))
                self._say_once(_safe_uuid(handle), "XML", f"its XML cannot be read: {exc}")
            except Exception as exc:
                if is_disconnection(exc):
                    self._lose(conn, exc)
                    raise ConnectionUnavailable(str(exc)) from exc
                if _error_code(exc) == VIR_ERR_NO_DOMAIN:
                    LOG.debug("domain %s went away while being listed", _safe_uuid(handle))
                    continue
                raise
        self._forget_all_but(unreadable | {d.uuid for d in domains})
        # listAllDomains' order is the driver's hash order: sort for stable output.
        return sorted(domains, key=lambda d: (d.name, d.uuid))

    # -- usage --------------------------------------------------------------------

    def read(self, domains: Iterable[Domain]) -> dict[str, InstanceStats]:
        """Usage of each domain by uuid, in one pass.

        A domain that is gone or stopped is missing from the result. Without a
        connection the result is empty; a connection lost mid-pass ends the pass
        with what was read so far.
        """
        try:
            conn = self._live_connection()
        except ConnectionUnavailable as exc:
            LOG.debug("no compute usage this cycle: %s", exc)
            return {}
        result: dict[str, InstanceStats] = {}
        for domain in domains:
            try:
                stats = self._read_domain(conn, domain)
            except _Vanished as exc:
                LOG.debug("instance %s (%s) skipped: %s", domain.uuid, domain.name, exc)
                continue
            except Exception as exc:
                if is_disconnection(exc):
                    self._lose(conn, exc)
                    break
                LOG.exception("instance %s (%s) could not be read", domain.uuid, domain.name)
                continue
            result[domain.uuid] = stats
        return result

    def _read_domain(self, conn: Any, domain: Domain) -> InstanceStats:
        try:
            handle = conn.lookupByUUIDString(domain.uuid)
            state, _max_kib, _kib, vcpus, info_cpu_ns = handle.info()
        except Exception as exc:
            if _error_code(exc) == VIR_ERR_NO_DOMAIN:
                raise _Vanished("it no longer exists") from exc
            raise
        if state in (VIR_DOMAIN_SHUTOFF, VIR_DOMAIN_CRASHED):
            raise _Vanished("it is no longer running")

        def stat(what: str, call: Callable[[], T]) -> T | None:
            return self._stat(handle, domain, what, call)

        cpu_stats = stat("getCPUStats", partial(handle.getCPUStats, True))
        cpu_ns = info_cpu_ns
        if cpu_stats and "cpu_time" in cpu_stats[0]:
            # The domain's total CPU time. info() gives the same on QEMU, but not
            # every driver: the test driver puts the wall clock there.
            cpu_ns = cpu_stats[0]["cpu_time"]
        balloon = stat("memoryStats", handle.memoryStats)
        disks: list[DiskStats] = []
        disk_info: list[DiskInfo] = []
        complete = True
        for disk in domain.disks:
            if not disk.readable:
                continue
            counts = stat(f"blockStats({disk.device})", partial(handle.blockStats, disk.device))
            if counts is None:
                complete = False
            else:
                disks.append(DiskStats(disk.device, *(int(v) for v in counts[:5])))
            sizes = stat(f"blockInfo({disk.device})", partial(handle.blockInfo, disk.device))
            if sizes is not None:
                disk_info.append(DiskInfo(disk.device, *(int(v) for v in sizes[:3])))
        nics: list[NicStats] = []
        for nic in domain.nics:
            counts = stat(f"interfaceStats({nic.name})", partial(handle.interfaceStats, nic.name))
            if counts is not None:
                nics.append(NicStats(nic.name, *(int(v) for v in counts[:8])))
        return InstanceStats(
            uuid=domain.uuid,
            cpu=CpuStats(time_ns=int(cpu_ns), vcpus=int(vcpus)),
            memory=_memory(balloon) if balloon is not None else None,
            disks=tuple(disks),
            disks_complete=complete,
            disk_info=tuple(disk_info),
            nics=tuple(nics),
        )

    def _stat(self, handle: Any, domain: Domain, what: str, call: Callable[[], T]) -> T | None:
        """``call()``, or None when the driver cannot give it (said once per domain)."""
        try:
            return call()
        except Exception as exc:
            code = _error_code(exc)
            if code is None or is_disconnection(exc):
                raise
            if code == VIR_ERR_NO_DOMAIN:
                raise _Vanished("it no longer exists") from exc
            if code == VIR_ERR_OPERATION_INVALID and not _still_active(handle):
                raise _Vanished("it stopped while being read") from exc
            if code in _UNSUPPORTED:
                self._say_once(domain.uuid, what, f"libvirt cannot give {what}: {exc}; left out")
            else:
                self._say_once(domain.uuid, what, f"{what} failed: {exc}; left out")
            return None

    def _forget_all_but(self, uuids: set[str]) -> None:
        # What was said about domains that are gone would otherwise pile up for as
        # long as the agent runs; a domain that comes back is told about again.
        with self._lock:
            self._said = {key for key in self._said if key[0] in uuids}

    def _say_once(self, uuid: str, what: str, message: str) -> None:
        with self._lock:
            first = (uuid, what) not in self._said
            self._said.add((uuid, what))
        LOG.log(logging.WARNING if first else logging.DEBUG, "instance %s: %s", uuid, message)


def _memory(stats: Mapping[str, Any]) -> MemoryStats:
    def get(key: str) -> int | None:
        value = stats.get(key)
        return None if value is None else int(value)

    return MemoryStats(
        actual=get("actual"),
        available=get("available"),
        unused=get("unused"),
        usable=get("usable"),
        rss=get("rss"),
    )


def _still_active(handle: Any) -> bool:
    try:
        return bool(handle.isActive())
    except Exception:
        return False


def _safe_uuid(handle: Any) -> str:
    try:
        return str(handle.UUIDString())
    except Exception:
        return "?"
