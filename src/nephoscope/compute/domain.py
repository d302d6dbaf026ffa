"""A libvirt domain's description, read from its XML: identity, size, devices, Nova metadata.

Everything here is pure parsing of the text ``virDomain.XMLDesc()`` returns, so it
is tested without libvirt. Nova writes who owns an instance and what flavor it
has into the domain's ``<metadata>`` as a ``<nova:instance>`` element; a domain
that Nova did not create has none, and :attr:`Domain.nova` is then ``None``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "NOVA_NAMESPACES",
    "Disk",
    "Domain",
    "Flavor",
    "Nic",
    "NovaInstance",
    "parse_domain",
]

#: Namespaces of Nova's ``<nova:instance>`` element, newest first (Nova writes 1.1;
#: instances created by older releases still carry 1.0).
NOVA_NAMESPACES: Final = (
    "http://openstack.org/xmlns/libvirt/nova/1.1",
    "http://openstack.org/xmlns/libvirt/nova/1.0",
)

# libvirt's scaled-integer units (docs: formatdomain "memory"); XMLDesc itself
# always writes KiB, but a hand-written or test-driver XML may use any of them.
_UNIT_BYTES: Final = {
    "b": 1,
    "bytes": 1,
    "kb": 1000,
    "k": 1024,
    "kib": 1024,
    "mb": 1000**2,
    "m": 1024**2,
    "mib": 1024**2,
    "gb": 1000**3,
    "g": 1024**3,
    "gib": 1024**3,
    "tb": 1000**4,
    "t": 1024**4,
    "tib": 1024**4,
}


@dataclass(frozen=True, slots=True)
class Flavor:
    """The size Nova gave the instance: memory in MB, disks in GB, swap in MB."""

    name: str
    memory_mb: int
    vcpus: int
    disk_gb: int
    ephemeral_gb: int
    swap_mb: int

    def as_metadata(self) -> dict[str, Any]:
        """The flavor as Ceilometer puts it in resource metadata (its ``flavor`` keys)."""
        return {
            "name": self.name,
            "vcpus": self.vcpus,
            "ram": self.memory_mb,
            "disk": self.disk_gb,
            "ephemeral": self.ephemeral_gb,
            "swap": self.swap_mb,
        }


@dataclass(frozen=True, slots=True)
class NovaInstance:
    """What Nova wrote into the domain's metadata; a field Nova left out is None."""

    display_name: str | None
    flavor: Flavor | None
    user_id: str | None
    user_name: str | None
    project_id: str | None
    project_name: str | None
    #: The Glance image the root disk was built from; None when booted from a volume.
    image_id: str | None
    namespace: str


@dataclass(frozen=True, slots=True)
class Disk:
    """One ``<disk>`` of the domain."""

    #: The guest's device name (``<target dev>``): vda, sdb, hdc.
    device: str
    #: ``disk``, ``cdrom``, ``floppy`` or ``lun``.
    kind: str
    #: The file, block device, volume or network name behind it; None for an empty drive.
    source: str | None

    @property
    def readable(self) -> bool:
        """Whether libvirt can report on it: an empty drive (a CD tray) has nothing to read."""
        return self.source is not None


@dataclass(frozen=True, slots=True)
class Nic:
    """One ``<interface>`` with a host-side device (``<target dev>``, the tap)."""

    name: str
    mac: str
    #: The nwfilter's name (``<filterref filter>``), which older Nova set per instance.
    fref: str | None = None
    parameters: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Domain:
    """A domain's identity, size and devices."""

    uuid: str
    name: str
    #: Guest memory (``<memory>``) in KiB.
    memory_kib: int
    #: Online vCPUs (``<vcpu current>``, else ``<vcpu>``).
    vcpus: int
    os_type: str | None
    architecture: str | None
    disks: tuple[Disk, ...]
    nics: tuple[Nic, ...]
    nova: NovaInstance | None
    #: libvirt's state number (``virDomainState``) when discovered; 0 if not known.
    state: int = 0


def parse_domain(xml: str, state: int = 0) -> Domain:
    """Read a domain's XML description. Raises ValueError when it is not a domain."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise ValueError(f"domain XML does not parse: {exc}") from None
    if root.tag != "domain":
        raise ValueError(f"expected a <domain> element, got <{root.tag}>")
    uuid = _text(root.find("uuid"))
    name = _text(root.find("name"))
    if not uuid or not name:
        raise ValueError("domain XML has no <uuid> or <name>")
    os_type = root.find("os/type")
    return Domain(
        uuid=uuid.lower(),
        name=name,
        memory_kib=_memory_kib(root.find("memory")),
        vcpus=_vcpus(root.find("vcpu")),
        os_type=_text(os_type),
        architecture=os_type.get("arch") if os_type is not None else None,
        disks=tuple(d for d in map(_disk, root.findall("devices/disk")) if d is not None),
        nics=tuple(n for n in map(_nic, root.findall("devices/interface")) if n is not None),
        nova=_nova(root.find("metadata")),
        state=state,
    )


def _text(element: ET.Element | None) -> str | None:
    if element is None or element.text is None:
        return None
    return element.text.strip() or None


def _int(element: ET.Element | None, default: int = 0) -> int:
    text = _text(element)
    try:
        return int(text) if text is not None else default
    except ValueError:
        return default


def _memory_kib(element: ET.Element | None) -> int:
    if element is None:
        return 0
    scale = _UNIT_BYTES.get((element.get("unit") or "KiB").lower(), 1024)
    return _int(element) * scale // 1024


def _vcpus(element: ET.Element | None) -> int:
    if element is None:
        return 1
    current = element.get("current")
    if current is not None and current.isdigit():
        return int(current)
    return _int(element, 1)


def _disk(element: ET.Element) -> Disk | None:
    target = element.find("target")
    device = target.get("dev") if target is not None else None
    if not device:
        return None
    source = element.find("source")
    path = None
    if source is not None:
        # file=, dev=, or volume/network names; any of them says a medium is there.
        path = (
            source.get("file")
            or source.get("dev")
            or source.get("name")
            or source.get("volume")
            or source.get("dir")
            or ""
        )
    return Disk(device=device, kind=element.get("device", "disk"), source=path)


def _nic(element: ET.Element) -> Nic | None:
    target = element.find("target")
    mac = element.find("mac")
    name = target.get("dev") if target is not None else None
    address = mac.get("address") if mac is not None else None
    # Without a host-side device there is nothing to read statistics from
    # (user-mode networking; an interface of a domain that is not running).
    if not name or not address:
        return None
    filterref = element.find("filterref")
    parameters: dict[str, str] = {}
    fref = None
    if filterref is not None:
        fref = filterref.get("filter")
        for parameter in filterref.findall("parameter"):
            key, value = parameter.get("name"), parameter.get("value")
            if key and value is not None:
                parameters[key.lower()] = value
    return Nic(name=name, mac=address.lower(), fref=fref, parameters=parameters)


def _uuid(element: ET.Element | None) -> str | None:
    return (element.get("uuid") or None) if element is not None else None


def _nova(metadata: ET.Element | None) -> NovaInstance | None:
    if metadata is None:
        return None
    for namespace in NOVA_NAMESPACES:
        instance = metadata.find(f"{{{namespace}}}instance")
        if instance is not None:
            return _nova_instance(instance, namespace)
    return None


def _nova_instance(instance: ET.Element, namespace: str) -> NovaInstance:
    def find(path: str) -> ET.Element | None:
        return instance.find("/".join(f"{{{namespace}}}{part}" for part in path.split("/")))

    flavor_element = find("flavor")
    flavor = None
    if flavor_element is not None:
        flavor = Flavor(
            name=flavor_element.get("name") or "",
            memory_mb=_int(find("flavor/memory")),
            vcpus=_int(find("flavor/vcpus")),
            disk_gb=_int(find("flavor/disk")),
            ephemeral_gb=_int(find("flavor/ephemeral")),
            swap_mb=_int(find("flavor/swap")),
        )
    user = find("owner/user")
    project = find("owner/project")
    image = None
    for root in instance.findall(f"{{{namespace}}}root"):
        if root.get("type") == "image":
            image = root.get("uuid") or None
    return NovaInstance(
        display_name=_text(find("name")),
        flavor=flavor,
        user_id=_uuid(user),
        user_name=_text(user),
        project_id=_uuid(project),
        project_name=_text(project),
        image_id=image,
        namespace=namespace,
    )
