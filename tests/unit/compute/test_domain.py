"""Reading a domain's XML: identity, size, devices and Nova's metadata."""

from __future__ import annotations

import pytest
from tests.unit.compute.testdriver import NODE_XML

from nephoscope.compute.domain import NOVA_NAMESPACES, Flavor, Nic, parse_domain

NOVA = """
<domain type='kvm'>
  <name>instance-0000002a</name>
  <uuid>0B6F4A1E-6C1B-4D0E-9F5A-1D2C3B4A5E61</uuid>
  <metadata>
    <other:thing xmlns:other="http://example.org/other"><other:name>ignored</other:name></other:thing>
    <nova:instance xmlns:nova="{namespace}">
      <nova:name>web</nova:name>
      <nova:flavor name="m1.medium">
        <nova:memory>4096</nova:memory>
        <nova:disk>40</nova:disk>
        <nova:swap>512</nova:swap>
        <nova:ephemeral>5</nova:ephemeral>
        <nova:vcpus>2</nova:vcpus>
      </nova:flavor>
      <nova:owner>
        <nova:user uuid="user-uuid">alice</nova:user>
        <nova:project uuid="project-uuid">demo</nova:project>
      </nova:owner>
      <nova:root type="image" uuid="image-uuid"/>
    </nova:instance>
  </metadata>
  <memory unit='GiB'>4</memory>
  <vcpu placement='static'>2</vcpu>
  <os><type arch='aarch64' machine='virt'>hvm</type></os>
  <devices>
    <disk type='network' device='disk'>
      <source protocol='rbd' name='vms/0b6f4a1e_disk'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='file' device='cdrom'><target dev='sda' bus='sata'/></disk>
    <disk type='file' device='disk'><source file='/x'/></disk>
    <interface type='bridge'>
      <mac address='FA:16:3E:AA:BB:CC'/>
      <target dev='tapaabbcc-01'/>
      <filterref filter='nova-instance-x'>
        <parameter name='IP' value='10.0.0.5'/>
        <parameter name='DHCPSERVER' value='10.0.0.1'/>
      </filterref>
    </interface>
    <interface type='user'><mac address='52:54:00:00:00:01'/></interface>
  </devices>
</domain>
"""


@pytest.mark.parametrize("namespace", NOVA_NAMESPACES)
def test_nova_metadata_in_either_namespace(namespace: str) -> None:
    domain = parse_domain(NOVA.format(namespace=namespace), state=1)
    assert (domain.uuid, domain.name, domain.state) == (
        "0b6f4a1e-6c1b-4d0e-9f5a-1d2c3b4a5e61",
        "instance-0000002a",
        1,
    )
    nova = domain.nova
    assert nova is not None and nova.namespace == namespace
    assert nova.display_name == "web"
    assert nova.flavor == Flavor("m1.medium", 4096, 2, 40, 5, 512)
    assert (nova.user_id, nova.user_name) == ("user-uuid", "alice")
    assert (nova.project_id, nova.project_name) == ("project-uuid", "demo")
    assert nova.image_id == "image-uuid"


def test_size_and_devices() -> None:
    domain = parse_domain(NOVA.format(namespace=NOVA_NAMESPACES[0]))
    assert domain.memory_kib == 4 * 1024 * 1024
    assert domain.vcpus == 2
    assert (domain.os_type, domain.architecture) == ("hvm", "aarch64")
    # The network disk counts; the empty CD drive is listed but not readable; a
    # disk without a target has no name to read it by and is left out.
    assert [(d.device, d.kind, d.source, d.readable) for d in domain.disks] == [
        ("vda", "disk", "vms/0b6f4a1e_disk", True),
        ("sda", "cdrom", None, False),
    ]
    # User-mode networking has no host-side device: nothing to read.
    assert domain.nics == (
        Nic(
            name="tapaabbcc-01",
            mac="fa:16:3e:aa:bb:cc",
            fref="nova-instance-x",
            parameters={"ip": "10.0.0.5", "dhcpserver": "10.0.0.1"},
        ),
    )


def test_domain_without_nova_metadata() -> None:
    domain = parse_domain(
        "<domain><name>plain</name><uuid>u-1</uuid><memory>1048576</memory>"
        "<vcpu current='1'>4</vcpu></domain>"
    )
    assert domain.nova is None
    assert (domain.memory_kib, domain.vcpus) == (1048576, 1)  # KiB when no unit
    assert (domain.disks, domain.nics, domain.os_type, domain.state) == ((), (), None, 0)


def test_partial_nova_metadata_leaves_the_rest_none() -> None:
    namespace = NOVA_NAMESPACES[0]
    domain = parse_domain(
        f"<domain><name>n</name><uuid>u</uuid><metadata>"
        f'<nova:instance xmlns:nova="{namespace}"><nova:name>only-a-name</nova:name>'
        f"</nova:instance></metadata></domain>"
    )
    assert domain.nova is not None
    assert domain.nova.display_name == "only-a-name"
    assert domain.nova.flavor is None and domain.nova.image_id is None
    assert domain.nova.user_id is None and domain.nova.project_id is None


@pytest.mark.parametrize(
    ("memory", "kib"),
    [
        ("<memory unit='KiB'>2048</memory>", 2048),
        ("<memory unit='MiB'>2</memory>", 2048),
        ("<memory unit='M'>2</memory>", 2048),
        ("<memory unit='MB'>2</memory>", 1953),  # 2,000,000 bytes
        ("<memory unit='bytes'>1048576</memory>", 1024),
        ("<memory unit='T'>1</memory>", 1024**3),
    ],
)
def test_memory_units(memory: str, kib: int) -> None:
    assert parse_domain(f"<domain><name>n</name><uuid>u</uuid>{memory}</domain>").memory_kib == kib


@pytest.mark.parametrize(
    "xml",
    ["not xml at all", "<network><name>n</name></network>", "<domain><name>n</name></domain>"],
)
def test_what_is_not_a_domain_is_refused(xml: str) -> None:
    with pytest.raises(ValueError):
        parse_domain(xml)


def test_every_domain_of_the_fixture_parses() -> None:
    # The node file wraps domains in <node>; each <domain> is what XMLDesc gives.
    import xml.etree.ElementTree as ET

    root = ET.parse(NODE_XML).getroot()
    names = [parse_domain(ET.tostring(d, encoding="unicode")).name for d in root.iter("domain")]
    assert len(names) == 5 and len(set(names)) == 5
