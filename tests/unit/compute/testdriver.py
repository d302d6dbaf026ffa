"""libvirt's test driver on tests/fixtures/libvirt/node.xml, and what it answers.

The expected figures below are what libvirt's test driver really returns for the
fixture (checked against libvirt 9.0): it derives memoryStats from the domain's
currentMemory, gives every domain the same getCPUStats and blockInfo, and
derives blockStats and interfaceStats counts from the wall clock, so those only
grow. Tests that claim to exercise libvirt use it through these helpers, never a
mock.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nephoscope.compute.inspector import LibvirtInspector, import_libvirt
from nephoscope.config import Settings
from nephoscope.plugin import PluginUnusable, PollingContext

ROOT = Path(__file__).resolve().parents[3]
NODE_XML = ROOT / "tests" / "fixtures" / "libvirt" / "node.xml"
#: The test driver takes an absolute path after ``test://``.
URI = f"test://{NODE_XML}"
HOST = "compute1"
WHEN = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
MIB_KIB = 1024

#: getCPUStats(True)[0]["cpu_time"] for every domain of the test driver.
CPU_TIME_NS = 48_772_617_035
#: blockInfo(): capacity and allocation of every disk of the test driver.
DISK_CAPACITY = 1_099_506_450_432
DISK_ALLOCATION = 1_099_511_627_776

ALICE = "9a1f0c7d2b8e4c3fa5d6e7f8091a2b3c"
BOB = "5e4d3c2b1a0948f7e6d5c4b3a2918070"
DEMO = "3c2b1a09f8e7d6c5b4a3928170f6e5d4"
OPS = "b0a1c2d3e4f5a6b7c8d9e0f1a2b3c4d5"
IMAGE = "d2b7e0f4-1a3c-4e5b-9f60-7a8b9c0d1e2f"


@dataclass(frozen=True)
class Expected:
    """One running domain of the fixture, as the pollsters must report it."""

    uuid: str
    domain: str
    display_name: str
    user_id: str | None
    project_id: str | None
    flavor: str | None
    #: Allocated (flavor, else domain) and online vCPUs.
    vcpus: int
    online_vcpus: int
    memory_mb: int
    #: currentMemory in MiB: the test driver's balloon figures derive from it.
    current_mib: int | None
    disks: tuple[str, ...]
    nics: tuple[tuple[str, str], ...]
    transient: bool = False


WEB = Expected(
    uuid="6f1c3a52-9b7e-4d2a-8c41-0e5d7a9b1c01",
    domain="instance-00000001",
    display_name="web-1",
    user_id=ALICE,
    project_id=DEMO,
    flavor="m1.small",
    vcpus=2,
    online_vcpus=2,
    memory_mb=2048,
    current_mib=2048,
    disks=("vda", "vdb"),  # hdc is an empty CD drive: not reported
    nics=(("tap4c01000a-1b", "fa:16:3e:4c:01:0a"), ("tap4c01000b-2c", "fa:16:3e:4c:01:0b")),
)
DB = Expected(
    uuid="6f1c3a52-9b7e-4d2a-8c41-0e5d7a9b1c02",
    domain="instance-00000002",
    display_name="db-1",
    user_id=BOB,
    project_id=OPS,
    flavor="m1.large",
    vcpus=4,
    online_vcpus=4,
    memory_mb=8192,
    current_mib=6144,
    disks=("vda", "vdb"),
    nics=(("tap4c02000a-3d", "fa:16:3e:4c:02:0a"), ("tap4c02000b-4e", "fa:16:3e:4c:02:0b")),
)
BATCH = Expected(
    uuid="6f1c3a52-9b7e-4d2a-8c41-0e5d7a9b1c03",
    domain="instance-00000003",
    display_name="batch-1",
    user_id=ALICE,
    project_id=DEMO,
    flavor="m1.tiny",
    vcpus=1,
    online_vcpus=1,
    memory_mb=512,
    current_mib=512,
    disks=("vda", "vdz"),
    nics=(("tap4c03000a-5f", "fa:16:3e:4c:03:0a"), ("tap4c03000b-60", "fa:16:3e:4c:03:0b")),
    transient=True,
)
PLAIN = Expected(
    uuid="6f1c3a52-9b7e-4d2a-8c41-0e5d7a9b1c04",
    domain="plain",
    display_name="plain",
    user_id=None,
    project_id=None,
    flavor=None,
    vcpus=1,
    online_vcpus=1,
    memory_mb=1024,
    current_mib=None,  # no balloon: memoryStats() is empty
    disks=("sda",),
    nics=(("testnet0", "52:54:00:12:34:56"),),  # the test driver names it
)
RUNNING = (WEB, DB, BATCH, PLAIN)
BY_UUID = {e.uuid: e for e in RUNNING}
#: The shut-off domain: never discovered.
STOPPED_UUID = "6f1c3a52-9b7e-4d2a-8c41-0e5d7a9b1c05"


def require_libvirt() -> Any:
    """The libvirt module; skips without it, and fails under CI (where it must be)."""
    try:
        return import_libvirt()
    except PluginUnusable as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{exc} (CI is set: a missing libvirt-python is a failure)")
        pytest.skip(str(exc))


def settings(**extra: Any) -> Settings:
    """Settings for this fixture's hypervisor."""
    return Settings(host=HOST, libvirt={"uri": URI}, **extra)


def inspector(read_write: bool = False) -> LibvirtInspector:
    """An inspector on a fresh test-driver node (each connection has its own state).

    ``read_write`` opens with ``libvirt.open`` so a test can destroy domains
    through ``inspector.connection``; the agent itself only reads.
    """
    libvirt = require_libvirt()
    return LibvirtInspector(URI, libvirt.open if read_write else libvirt.openReadOnly)


@dataclass
class Manager:
    """What the agent hands compute pollsters: config and the compute inspector."""

    compute_inspector: LibvirtInspector
    config: Settings


def new_context(resources: Any = ()) -> PollingContext:
    """A fresh polling cycle at :data:`WHEN`."""
    return PollingContext(timestamp=WHEN, resources=list(resources))
