"""Faults: unsupported statistics, vanishing domains, a lost connection, no libvirt-python.

The fake connection (tests/unit/compute/fakes.py) injects what the test driver
cannot do; the domain destroyed between discovery and polling, which it can,
is tested on it.
"""

from __future__ import annotations

import itertools
import logging
import sys
from collections.abc import Callable, Iterable
from typing import Any

import pytest
from tests.unit.compute.fakes import (
    BALLOON,
    CPU_NS,
    Clock,
    FakeDomain,
    FakeHypervisor,
    FakeLibvirtError,
    disconnected,
    no_domain,
    remove,
)
from tests.unit.compute.testdriver import (
    BATCH,
    BY_UUID,
    DB,
    PLAIN,
    WEB,
    WHEN,
    Manager,
    inspector,
    settings,
)
from tests.unit.host.fakes import FakePsutil

from nephoscope.agent import AgentManager
from nephoscope.compute.discovery import discover_instances
from nephoscope.compute.inspector import (
    VIR_ERR_INTERNAL_ERROR,
    VIR_ERR_NO_SUPPORT,
    VIR_ERR_OPERATION_INVALID,
    LibvirtInspector,
    is_disconnection,
)
from nephoscope.compute.pollsters import (
    CPUPollster,
    DiskInfoPollster,
    DiskIOPollster,
    InstancePollster,
    MemoryStatsPollster,
    NetworkPollster,
)
from nephoscope.config import PollingSource, Settings
from nephoscope.counter import Counter
from nephoscope.host.inspector import HostInspector
from nephoscope.host.pollsters import LoadPollster, MemoryPollster
from nephoscope.plugin import NS_POLL_COMPUTE, NS_POLL_HOST, PollingContext, PollsterBase

USAGE_POLLSTERS = (
    CPUPollster,
    MemoryStatsPollster,
    DiskIOPollster,
    DiskInfoPollster,
    NetworkPollster,
)
ALL = (InstancePollster, *USAGE_POLLSTERS)
EVERYTHING = PollingSource(name="all", interval=60, meters=["*"])
LOGGER = "nephoscope.compute"


def fake_inspector(hypervisor: FakeHypervisor, clock: Callable[[], float] | None = None) -> Any:
    return LibvirtInspector("qemu+tcp://hv1/system", hypervisor, clock=clock or Clock())


def run_cycle(manager: Any, pollsters: Iterable[type[PollsterBase]] = ALL) -> list[Counter]:
    """Discovery, then every pollster, sharing one context: one agent cycle."""
    context = PollingContext(timestamp=WHEN, resources=discover_instances(manager))
    return [c for cls in pollsters for c in cls().get_counters(manager, context)]


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


# -- statistics the driver cannot give ---------------------------------------------


def test_unsupported_statistic_is_left_out_and_said_once(caplog: pytest.LogCaptureFixture) -> None:
    domain = FakeDomain("u-1", "instance-1")
    domain.fail["memoryStats"] = FakeLibvirtError(
        VIR_ERR_NO_SUPPORT, message="this function is not supported: virDomainMemoryStats"
    )
    # A running domain whose driver refuses one disk's counts.
    domain.fail["blockStats(vdb)"] = FakeLibvirtError(VIR_ERR_OPERATION_INVALID)
    manager = Manager(fake_inspector(FakeHypervisor(domain)), Settings(host="h"))
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        cycles = [run_cycle(manager) for _ in range(3)]
    for counters in cycles:
        names = {c.name for c in counters}
        assert not {n for n in names if n.startswith("memory.")}
        assert {"cpu", "instance", "memory", "disk.device.capacity"} <= names
        read = {(c.resource_id, c.name) for c in counters if c.name.startswith("disk.device.read")}
        assert read == {
            ("u-1-vda", "disk.device.read.bytes"),
            ("u-1-vda", "disk.device.read.requests"),
        }
        # A sum over some of the disks would look like a counter reset: left out.
        assert "disk.read.bytes" not in names
    said = warnings(caplog)
    assert len(said) == 2, said
    assert any("memoryStats" in m for m in said) and any("blockStats(vdb)" in m for m in said)


def test_what_was_said_about_a_domain_is_forgotten_when_it_goes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    domain = FakeDomain("u-1", "instance-1")
    domain.fail["memoryStats"] = FakeLibvirtError(VIR_ERR_NO_SUPPORT)
    hypervisor = FakeHypervisor(domain)
    manager = Manager(fake_inspector(hypervisor), Settings(host="h"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        run_cycle(manager)
        remove(hypervisor, domain)
        run_cycle(manager)  # discovery no longer lists it: forgotten
        hypervisor.domains[domain.uuid] = domain  # the instance is started again
        run_cycle(manager)
        run_cycle(manager)
    assert len(warnings(caplog)) == 2


def test_other_libvirt_errors_on_one_statistic_are_said_once_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    domain = FakeDomain("u-1", "instance-1")
    domain.fail["interfaceStats"] = FakeLibvirtError(VIR_ERR_INTERNAL_ERROR, message="odd")
    manager = Manager(fake_inspector(FakeHypervisor(domain)), Settings(host="h"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(2):
            names = {c.name for c in run_cycle(manager)}
            assert "cpu" in names and not {n for n in names if n.startswith("network.")}
    assert len(warnings(caplog)) == 1


def test_fake_figures_convert_as_ceilometer_does() -> None:
    manager = Manager(fake_inspector(FakeHypervisor(FakeDomain("u-1", "i-1"))), Settings(host="h"))
    got = {c.name: c.volume for c in run_cycle(manager) if c.resource_id == "u-1"}
    assert got["cpu"] == CPU_NS  # getCPUStats' total wins over info()'s
    assert got["memory.usage"] == (BALLOON["available"] - BALLOON["usable"]) / 1024 == 3072
    assert got["memory.resident"] == 512 and got["memory.available"] == 4096
    assert got["disk.read.bytes"] == 2 * 4096 and got["disk.write.requests"] == 2 * 20


# -- domains that go away --------------------------------------------------------------


def test_domain_undefined_mid_cycle_is_skipped_with_a_debug_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    gone, kept = FakeDomain("u-gone", "instance-1"), FakeDomain("u-kept", "instance-2")
    hypervisor = FakeHypervisor(gone, kept)
    manager = Manager(fake_inspector(hypervisor), Settings(host="h"))
    context = PollingContext(timestamp=WHEN, resources=discover_instances(manager))
    remove(hypervisor, gone)
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        counters = [c for cls in USAGE_POLLSTERS for c in cls().get_counters(manager, context)]
    assert {c.resource_metadata["instance_id"] for c in counters} == {"u-kept"}
    assert not warnings(caplog)
    assert any("u-gone" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)


@pytest.mark.parametrize("where", ["interfaceStats", "memoryStats"])
def test_domain_vanishing_while_being_read_is_skipped_whole(
    where: str, caplog: pytest.LogCaptureFixture
) -> None:
    vanishing = FakeDomain("u-1", "instance-1")
    vanishing.fail[where] = no_domain("u-1")
    manager = Manager(fake_inspector(FakeHypervisor(vanishing)), Settings(host="h"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        counters = run_cycle(manager, USAGE_POLLSTERS)
    assert counters == [] and not warnings(caplog)


def test_domain_stopping_while_being_read_is_skipped_not_called_unsupported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Stopping(FakeDomain):
        def memoryStats(self) -> dict[str, int]:
            self.active = False
            raise FakeLibvirtError(VIR_ERR_OPERATION_INVALID, message="domain is not running")

    manager = Manager(fake_inspector(FakeHypervisor(Stopping("u-1", "i-1"))), Settings(host="h"))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert run_cycle(manager, USAGE_POLLSTERS) == []
    assert not warnings(caplog)


def test_domains_destroyed_between_discovery_and_polling_on_the_test_driver(
    caplog: pytest.LogCaptureFixture,
) -> None:
    live = inspector(read_write=True)

    def discover_then_destroy(agent: Any) -> list[Any]:
        instances = discover_instances(agent)
        # On the connection the agent uses: batch-1 is transient, so destroying it
        # undefines it (VIR_ERR_NO_DOMAIN); db-1 is persistent and only shuts off.
        for uuid in (BATCH.uuid, DB.uuid):
            live.connection.lookupByUUIDString(uuid).destroy()
        return instances

    agent = AgentManager(
        settings(),
        pollsters={NS_POLL_COMPUTE: {cls.__name__: cls() for cls in ALL}},
        compute_inspector=live,
        discoverers={NS_POLL_COMPUTE: discover_then_destroy},
    )
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        counters = agent.poll(EVERYTHING)
    discovered = InstancePollster.meters
    usage = {c.resource_metadata["instance_id"] for c in counters if c.name not in discovered}
    assert usage == {WEB.uuid, PLAIN.uuid}
    # Discovered before it went: this cycle still says it existed.
    assert {c.resource_id for c in counters if c.name == "instance"} == set(BY_UUID)
    assert not warnings(caplog)
    debug = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)
    assert f"{BATCH.uuid} ({BATCH.domain}) skipped: it no longer exists" in debug
    assert f"{DB.uuid} ({DB.domain}) skipped: it is no longer running" in debug
    # The next cycle no longer discovers either of them.
    assert {i.id for i in discover_instances(agent)} == {WEB.uuid, PLAIN.uuid}


# -- the connection ----------------------------------------------------------------------


def test_lost_connection_is_reopened_with_backoff_and_warned_once_per_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    hypervisor = FakeHypervisor(FakeDomain("u-1", "instance-1"))
    compute = fake_inspector(hypervisor, clock)
    manager = Manager(compute, Settings(host="h"))
    assert run_cycle(manager)
    assert hypervisor.attempts == 1

    hypervisor.lose_connections()  # libvirtd stops
    hypervisor.down = True
    with caplog.at_level(logging.DEBUG, logger=LOGGER):
        assert run_cycle(manager) == []  # lost, and the immediate reconnect fails
        assert hypervisor.attempts == 2
        attempts_at = []
        for _ in range(40):  # 20 s of cycles every half second
            clock.now += 0.5
            before = hypervisor.attempts
            assert run_cycle(manager) == []
            if hypervisor.attempts > before:
                attempts_at.append(clock.now)
    # Waits double after each failure: 1 s, 2 s, 4 s, 8 s ...
    gaps = [b - a for a, b in itertools.pairwise(attempts_at)]
    assert gaps[:3] == [2.0, 4.0, 8.0]
    said = warnings(caplog)
    assert len(said) == 1 and "lost the libvirt connection" in said[0]
    assert all(c.closed for c in hypervisor.connections[:1])

    hypervisor.down = False  # libvirtd is back
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=LOGGER):
        clock.now += 60
        assert {c.name for c in run_cycle(manager)} >= {"cpu", "instance"}
    assert "again" in caplog.text and not warnings(caplog)


def test_backoff_is_bounded() -> None:
    clock = Clock()
    hypervisor = FakeHypervisor()
    hypervisor.down = True
    compute = LibvirtInspector("qemu:///system", hypervisor, retry_max=5.0, clock=clock)
    for _ in range(200):
        clock.now += 0.25
        compute.read([])
    # Attempts at least every 5 s once the wait has grown to the bound: 50 s, ~10 attempts more.
    assert 12 <= hypervisor.attempts <= 16


def test_connection_lost_mid_pass_keeps_what_was_read(caplog: pytest.LogCaptureFixture) -> None:
    first, second = FakeDomain("u-1", "instance-1"), FakeDomain("u-2", "instance-2")
    hypervisor = FakeHypervisor(first, second)
    compute = fake_inspector(hypervisor)
    domains = compute.domains()
    hypervisor.lose_after = 1
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        usage = compute.read(domains)
    assert list(usage) == ["u-1"]
    assert len(warnings(caplog)) == 1
    hypervisor.lose_after = None
    assert set(compute.read(compute.domains())) == {"u-1", "u-2"}, "reconnected at once"


def test_host_pollsters_keep_going_while_libvirt_is_down(caplog: pytest.LogCaptureFixture) -> None:
    hypervisor = FakeHypervisor(FakeDomain("u-1", "instance-1"))
    hypervisor.down = True
    agent = AgentManager(
        Settings(host="node1"),
        pollsters={
            NS_POLL_HOST: {"load": LoadPollster(), "memory": MemoryPollster()},
            NS_POLL_COMPUTE: {cls.__name__: cls() for cls in ALL},
        },
        host_inspector=HostInspector(FakePsutil()),
        compute_inspector=fake_inspector(hypervisor),
    )
    with caplog.at_level(logging.WARNING):
        cycles = [agent.poll(EVERYTHING) for _ in range(3)]
    for counters in cycles:
        assert counters and all(c.name.startswith("hardware.") for c in counters)
    assert hypervisor.attempts == 1, "no reconnect before the backoff allows it"
    assert len(warnings(caplog)) == 1 and "cannot connect to libvirt" in caplog.text
    assert not agent.loaded[NS_POLL_COMPUTE].unusable, "an outage is not unusable"


def test_disconnection_errors_are_told_apart() -> None:
    assert is_disconnection(disconnected())
    assert not is_disconnection(no_domain("u"))
    assert not is_disconnection(FakeLibvirtError(VIR_ERR_INTERNAL_ERROR))
    assert not is_disconnection(ValueError("not libvirt"))


# -- no libvirt-python -------------------------------------------------------------------


def test_without_libvirt_python_compute_is_unusable_once_and_host_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "libvirt", None)  # `import libvirt` now fails
    agent = AgentManager(
        Settings(host="node1", polling={"namespaces": ["host", "compute"]}),
        host_inspector=HostInspector(FakePsutil()),
    )
    compute = agent.loaded[NS_POLL_COMPUTE]
    assert len(compute.plugins) == 6, "the pollsters load: libvirt is needed only to poll"
    source = PollingSource(name="s", interval=60, meters=["hardware.memory.*", "cpu", "disk.*"])
    with caplog.at_level(logging.WARNING):
        cycles = [agent.poll(source) for _ in range(3)]
    for counters in cycles:
        assert {c.name for c in counters} >= {"hardware.memory.total", "hardware.memory.swap.used"}
        assert all(c.name.startswith("hardware.") for c in counters)
    # Only the pollsters the source wanted ran, each was left out with the reason,
    # and the reason they share was said once.
    assert set(compute.unusable) == {"cpu", "disk", "disk_info"}
    assert all("libvirt-python is not installed" in r for r in compute.unusable.values())
    said = [r for r in caplog.records if "not usable here" in r.getMessage()]
    assert len(said) == 1
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
