"""Pollsters of the ``nephoscope.poll.compute`` namespace: the instances on this hypervisor.

Meter names, types, units, resource ids and metadata keys are Ceilometer's
libvirt ones (docs/meters.md lists them with where Nephoscope differs). Every
counter carries the instance's owner; per-disk resources are
``<instance>-<device>`` and per-vNIC ones ``<domain name>-<instance>-<tap>``.

The pollsters read nothing themselves: the resources are the cycle's discovered
:class:`~nephoscope.compute.discovery.Instance` records, and usage comes from one
:meth:`LibvirtInspector.read <nephoscope.compute.inspector.LibvirtInspector.read>`
per cycle, shared through the cycle's cache.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from nephoscope.compute.discovery import Instance
from nephoscope.compute.inspector import InstanceStats, LibvirtInspector
from nephoscope.counter import TYPE_CUMULATIVE, TYPE_GAUGE, Counter, Meter
from nephoscope.host.inspector import cached
from nephoscope.plugin import Manager, PollingContext, PollsterBase

__all__ = [
    "CPUPollster",
    "ComputePollster",
    "DiskIOPollster",
    "DiskInfoPollster",
    "InstancePollster",
    "MemoryStatsPollster",
    "NetworkPollster",
]

LOG = logging.getLogger(__name__)

#: Key of the cycle's one reading of every instance.
_STATS: Final = "compute.stats"
_KIB_PER_MB: Final = 1024


def _about(
    meter: Meter,
    volume: int | float,
    instance: Instance,
    timestamp: datetime,
    resource_id: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Counter:
    """A counter of ``meter`` about ``instance``, owned by the instance's owner."""
    return meter.counter(
        volume,
        resource_id or instance.id,
        timestamp,
        instance.metadata if metadata is None else metadata,
        user_id=instance.user_id,
        project_id=instance.project_id,
    )


INSTANCE = Meter("instance", TYPE_GAUGE, "instance")
VCPUS = Meter("vcpus", TYPE_GAUGE, "vcpu")
MEMORY = Meter("memory", TYPE_GAUGE, "MB")
CPU = Meter("cpu", TYPE_CUMULATIVE, "ns")
MEMORY_USAGE = Meter("memory.usage", TYPE_GAUGE, "MB")
MEMORY_RESIDENT = Meter("memory.resident", TYPE_GAUGE, "MB")
MEMORY_AVAILABLE = Meter("memory.available", TYPE_GAUGE, "MB")
DEVICE_READ_BYTES = Meter("disk.device.read.bytes", TYPE_CUMULATIVE, "B")
DEVICE_WRITE_BYTES = Meter("disk.device.write.bytes", TYPE_CUMULATIVE, "B")
DEVICE_READ_REQUESTS = Meter("disk.device.read.requests", TYPE_CUMULATIVE, "request")
DEVICE_WRITE_REQUESTS = Meter("disk.device.write.requests", TYPE_CUMULATIVE, "request")
READ_BYTES = Meter("disk.read.bytes", TYPE_CUMULATIVE, "B")
WRITE_BYTES = Meter("disk.write.bytes", TYPE_CUMULATIVE, "B")
READ_REQUESTS = Meter("disk.read.requests", TYPE_CUMULATIVE, "request")
WRITE_REQUESTS = Meter("disk.write.requests", TYPE_CUMULATIVE, "request")
DEVICE_CAPACITY = Meter("disk.device.capacity", TYPE_GAUGE, "B")
DEVICE_ALLOCATION = Meter("disk.device.allocation", TYPE_GAUGE, "B")
NET_IN_BYTES = Meter("network.incoming.bytes", TYPE_CUMULATIVE, "B")
NET_OUT_BYTES = Meter("network.outgoing.bytes", TYPE_CUMULATIVE, "B")
NET_IN_PACKETS = Meter("network.incoming.packets", TYPE_CUMULATIVE, "packet")
NET_OUT_PACKETS = Meter("network.outgoing.packets", TYPE_CUMULATIVE, "packet")
NET_IN_DROP = Meter("network.incoming.packets.drop", TYPE_CUMULATIVE, "packet")
NET_OUT_DROP = Meter("network.outgoing.packets.drop", TYPE_CUMULATIVE, "packet")
NET_IN_ERROR = Meter("network.incoming.packets.error", TYPE_CUMULATIVE, "packet")
NET_OUT_ERROR = Meter("network.outgoing.packets.error", TYPE_CUMULATIVE, "packet")


def _names(*meters: Meter) -> tuple[str, ...]:
    return tuple(m.name for m in meters)


def _mb(kib: int) -> float:
    # Ceilometer divides libvirt's KiB by 1024 without rounding; so do we.
    return kib / _KIB_PER_MB


class ComputePollster(PollsterBase):
    """Counters for each instance discovered this cycle.

    Asking for ``manager.compute_inspector`` first is what makes a missing
    libvirt-python raise PluginUnusable here, so the agent leaves the pollster
    out, says why once, and runs the others. One instance that fails is logged
    and skipped; the others are reported.
    """

    #: Whether the counters need this cycle's usage reading (or only discovery).
    reads_usage = True

    def get_counters(self, manager: Manager, context: PollingContext) -> Iterable[Counter]:
        inspector = manager.compute_inspector
        instances = [r for r in context.resources if isinstance(r, Instance)]
        usage: Mapping[str, InstanceStats] = {}
        if self.reads_usage and instances:
            usage = read_usage(context, inspector, instances)
        counters: list[Counter] = []
        for instance in instances:
            try:
                stats = usage.get(instance.id)
                counters.extend(self.instance_counters(instance, stats, context.timestamp))
            except Exception:
                LOG.exception(
                    "instance %s skipped by %s this cycle", instance.id, type(self).__name__
                )
        return counters

    @abc.abstractmethod
    def instance_counters(
        self, instance: Instance, stats: InstanceStats | None, timestamp: datetime
    ) -> list[Counter]:
        """The counters of one instance.

        ``stats`` is None when the pollster does not read usage, and when this
        cycle has no reading of the instance (it went away or stopped, or could
        not be read: the inspector logged which).
        """


def read_usage(
    context: PollingContext, inspector: LibvirtInspector, instances: Iterable[Instance]
) -> Mapping[str, InstanceStats]:
    """This cycle's usage of every instance, read once whichever pollster asks first."""
    return cached(context, _STATS, lambda: inspector.read(i.domain for i in instances))


class InstancePollster(ComputePollster):
    """That each instance exists (``instance``, always 1), and the size it was given.

    ``vcpus`` and ``memory`` are the flavor's; for a domain without Nova
    metadata, the domain's own vCPUs and memory.
    """

    meters = _names(INSTANCE, VCPUS, MEMORY)
    reads_usage = False

    def instance_counters(
        self, instance: Instance, stats: InstanceStats | None, timestamp: datetime
    ) -> list[Counter]:
        return [
            _about(INSTANCE, 1, instance, timestamp),
            _about(VCPUS, instance.vcpus, instance, timestamp),
            _about(MEMORY, instance.memory_mb, instance, timestamp),
        ]


class CPUPollster(ComputePollster):
    """CPU time each instance used since it started; its vCPUs are in ``cpu_number``."""

    meters = _names(CPU)

    def instance_counters(
        self, instance: Instance, stats: InstanceStats | None, timestamp: datetime
    ) -> list[Counter]:
        if stats is None:
            return []
        metadata = {**instance.metadata, "cpu_number": stats.cpu.vcpus}
        return [_about(CPU, stats.cpu.time_ns, instance, timestamp, metadata=metadata)]


class MemoryStatsPollster(ComputePollster):
    """Memory the guest uses, the hypervisor holds for it, and the guest sees, in MB.

    From the memory balloon's statistics: a figure the balloon does not give
    (no balloon driver in the guest) is not emitted for that instance.
    """

    meters = _names(MEMORY_USAGE, MEMORY_RESIDENT, MEMORY_AVAILABLE)

    def instance_counters(
        self, instance: Instance, stats: InstanceStats | None, timestamp: datetime
    ) -> list[Counter]:
        if stats is None:
            return []
        memory = stats.memory
        if memory is None:
            return []
        counters = []
        if memory.used is not None:
            counters.append(_about(MEMORY_USAGE, _mb(memory.used), instance, timestamp))
        if memory.rss is not None:
            counters.append(_about(MEMORY_RESIDENT, _mb(memory.rss), instance, timestamp))
        if memory.available is not None:
            counters.append(_about(MEMORY_AVAILABLE, _mb(memory.available), instance, timestamp))
        return counters


class DiskIOPollster(ComputePollster):
    """Bytes and requests read and written, per disk and summed per instance.

    Per-disk resources are ``<instance>-<device>`` with ``disk_name`` in the
    metadata; the sums have the instance as resource and the devices summed in
    ``device``. Sums are left out for an instance one of whose disks could not
    be read, so they never drop because a disk went missing.
    """

    meters = _names(
        DEVICE_READ_BYTES,
        DEVICE_WRITE_BYTES,
        DEVICE_READ_REQUESTS,
        DEVICE_WRITE_REQUESTS,
        READ_BYTES,
        WRITE_BYTES,
        READ_REQUESTS,
        WRITE_REQUESTS,
    )

    def instance_counters(
        self, instance: Instance, stats: InstanceStats | None, timestamp: datetime
    ) -> list[Counter]:
        if stats is None:
            return []
        counters: list[Counter] = []
        for disk in stats.disks:
            resource_id = f"{instance.id}-{disk.device}"
            metadata = {**instance.metadata, "disk_name": disk.device}
            for meter, volume in (
                (DEVICE_READ_BYTES, disk.read_bytes),
                (DEVICE_WRITE_BYTES, disk.write_bytes),
                (DEVICE_READ_REQUESTS, disk.read_requests),
                (DEVICE_WRITE_REQUESTS, disk.write_requests),
            ):
                counters.append(_about(meter, volume, instance, timestamp, resource_id, metadata))
        if stats.disks and stats.disks_complete:
            metadata = {**instance.metadata, "device": [d.device for d in stats.disks]}
            for meter, volume in (
                (READ_BYTES, sum(d.read_bytes for d in stats.disks)),
                (WRITE_BYTES, sum(d.write_bytes for d in stats.disks)),
                (READ_REQUESTS, sum(d.read_requests for d in stats.disks)),
                (WRITE_REQUESTS, sum(d.write_requests for d in stats.disks)),
            ):
                counters.append(_about(meter, volume, instance, timestamp, metadata=metadata))
        return counters


class DiskInfoPollster(ComputePollster):
    """Size of each disk: as the guest sees it (capacity), as it fills the host (allocation)."""

    meters = _names(DEVICE_CAPACITY, DEVICE_ALLOCATION)

    def instance_counters(
        self, instance: Instance, stats: InstanceStats | None, timestamp: datetime
    ) -> list[Counter]:
        if stats is None:
            return []
        counters: list[Counter] = []
        for disk in stats.disk_info:
            resource_id = f"{instance.id}-{disk.device}"
            metadata = {**instance.metadata, "disk_name": disk.device}
            for meter, volume in (
                (DEVICE_CAPACITY, disk.capacity),
                (DEVICE_ALLOCATION, disk.allocation),
            ):
                counters.append(_about(meter, volume, instance, timestamp, resource_id, metadata))
        return counters


class NetworkPollster(ComputePollster):
    """Bytes, packets, drops and errors in and out of each vNIC, from the guest's side.

    The resource id is ``<domain name>-<instance id>-<tap device>``, as Ceilometer
    builds it; the metadata adds the tap (``name``, ``vnic_name``), its ``mac``
    and its nwfilter (``fref``, ``parameters``).
    """

    meters = _names(
        NET_IN_BYTES,
        NET_OUT_BYTES,
        NET_IN_PACKETS,
        NET_OUT_PACKETS,
        NET_IN_DROP,
        NET_OUT_DROP,
        NET_IN_ERROR,
        NET_OUT_ERROR,
    )

    def instance_counters(
        self, instance: Instance, stats: InstanceStats | None, timestamp: datetime
    ) -> list[Counter]:
        if stats is None:
            return []
        nics = {nic.name: nic for nic in instance.domain.nics}
        counters: list[Counter] = []
        for vnic in stats.nics:
            nic = nics[vnic.name]
            resource_id = f"{instance.domain.name}-{instance.id}-{nic.name}"
            metadata = {
                **instance.metadata,
                "name": nic.name,
                "mac": nic.mac,
                "fref": nic.fref,
                "parameters": dict(nic.parameters),
                "vnic_name": nic.fref or nic.name,
            }
            for meter, volume in (
                (NET_IN_BYTES, vnic.rx_bytes),
                (NET_OUT_BYTES, vnic.tx_bytes),
                (NET_IN_PACKETS, vnic.rx_packets),
                (NET_OUT_PACKETS, vnic.tx_packets),
                (NET_IN_DROP, vnic.rx_drop),
                (NET_OUT_DROP, vnic.tx_drop),
                (NET_IN_ERROR, vnic.rx_errors),
                (NET_OUT_ERROR, vnic.tx_errors),
            ):
                counters.append(_about(meter, volume, instance, timestamp, resource_id, metadata))
        return counters
