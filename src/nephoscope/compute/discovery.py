"""Discovery for the compute namespace: the instances running on this hypervisor.

Each active libvirt domain becomes an :class:`Instance`: its resource id is the
domain's UUID (Nova's instance UUID), its owner the user and project Nova wrote
into the domain's metadata, and its metadata what Ceilometer's compute samples
carry. A domain Nova did not create is metered too, owned by the configured
``compute.default_user`` and ``compute.default_project`` (None when unset).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from nephoscope.compute.domain import Domain
from nephoscope.compute.inspector import ConnectionUnavailable
from nephoscope.config import Settings
from nephoscope.plugin import Manager, PluginUnusable

__all__ = ["Instance", "discover_instances", "instance_from_domain"]

LOG = logging.getLogger(__name__)

# libvirt domain state -> Nova's power state and status words, as Ceilometer's
# libvirt discovery reports them (a guess during transitions such as shelving).
_POWER_STATE: Final = {
    0: "pending",
    1: "running",
    2: "running",
    3: "paused",
    4: "shutdown",
    5: "shutdown",
    6: "crashed",
    7: "suspended",
}
_STATUS: Final = {
    0: "building",
    1: "active",
    2: "active",
    3: "paused",
    4: "stopped",
    5: "stopped",
    6: "error",
    7: "suspended",
}


@dataclass(frozen=True, slots=True)
class Instance:
    """A running instance: what it is, who owns it, and the metadata its samples carry."""

    #: The instance (and domain) UUID: the resource id of its instance-wide meters.
    id: str
    domain: Domain
    user_id: str | None
    project_id: str | None
    metadata: Mapping[str, Any]

    @property
    def memory_mb(self) -> int:
        """Memory the instance was given: its flavor's, else the domain's."""
        flavor = self.domain.nova.flavor if self.domain.nova else None
        return flavor.memory_mb if flavor else self.domain.memory_kib // 1024

    @property
    def vcpus(self) -> int:
        """vCPUs the instance was given: its flavor's, else the domain's."""
        flavor = self.domain.nova.flavor if self.domain.nova else None
        return flavor.vcpus if flavor else self.domain.vcpus


def instance_from_domain(domain: Domain, config: Settings) -> Instance:
    """The instance a domain is, with its owner and Ceilometer-shaped metadata."""
    nova = domain.nova
    flavor = nova.flavor if nova else None
    user_id = (nova.user_id if nova else None) or config.compute.default_user
    project_id = (nova.project_id if nova else None) or config.compute.default_project
    image_id = nova.image_id if nova else None
    metadata: dict[str, Any] = {
        "display_name": (nova.display_name if nova else None) or domain.name,
        # Ceilometer's "name" is the libvirt domain name (instance-0000002a).
        "name": domain.name,
        "instance_id": domain.uuid,
        "instance_type": flavor.name if flavor else None,
        # Ceilometer sets "host" to Nova's hostId (a hash of project and host) and
        # "instance_host" to the host's name; both are the host's name here.
        "host": config.host,
        "instance_host": config.host,
        "flavor": flavor.as_metadata() if flavor else None,
        "status": _STATUS.get(domain.state, "unknown"),
        "state": _POWER_STATE.get(domain.state, "unknown"),
        "image": {"id": image_id} if image_id else None,
        "image_ref": image_id,
        "image_ref_url": None,
        "os_type": domain.os_type,
        "architecture": domain.architecture,
    }
    if flavor is not None:
        metadata.update(
            vcpus=flavor.vcpus,
            memory_mb=flavor.memory_mb,
            disk_gb=flavor.disk_gb,
            ephemeral_gb=flavor.ephemeral_gb,
            root_gb=flavor.disk_gb - flavor.ephemeral_gb,
        )
    else:
        metadata.update(vcpus=domain.vcpus, memory_mb=domain.memory_kib // 1024)
    return Instance(
        id=domain.uuid,
        domain=domain,
        user_id=user_id,
        project_id=project_id,
        metadata=metadata,
    )


def discover_instances(manager: Manager) -> list[Instance]:
    """The instances running on this hypervisor, for one polling cycle.

    Returns none when libvirt cannot be reached or libvirt-python is missing:
    the inspector and the pollsters say so, once.
    """
    try:
        inspector = manager.compute_inspector
    except PluginUnusable:
        # The compute pollsters meet the same error and are then left out for good.
        return []
    try:
        domains = inspector.domains()
    except ConnectionUnavailable as exc:
        LOG.debug("no instances discovered this cycle: %s", exc)
        return []
    return [instance_from_domain(domain, manager.config) for domain in domains]
