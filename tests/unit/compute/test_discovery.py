"""Discovery on libvirt's test driver: active domains, owners from Nova's metadata."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from tests.unit.compute.testdriver import (
    ALICE,
    BATCH,
    BY_UUID,
    DB,
    DEMO,
    HOST,
    IMAGE,
    PLAIN,
    RUNNING,
    STOPPED_UUID,
    WEB,
    Manager,
    inspector,
    settings,
)

from nephoscope.compute.discovery import Instance, discover_instances
from nephoscope.plugin import PluginUnusable


def discover(**config: Any) -> dict[str, Instance]:
    instances = discover_instances(Manager(inspector(), settings(**config)))
    return {i.id: i for i in instances}


def test_only_active_domains_are_discovered() -> None:
    instances = discover()
    assert set(instances) == set(BY_UUID)
    assert STOPPED_UUID not in instances


@pytest.mark.parametrize("expected", RUNNING, ids=lambda e: e.display_name)
def test_identity_and_owner(expected: Any) -> None:
    instance = discover()[expected.uuid]
    assert instance.id == expected.uuid == instance.domain.uuid
    assert (instance.user_id, instance.project_id) == (expected.user_id, expected.project_id)
    assert instance.metadata["display_name"] == expected.display_name
    assert instance.metadata["name"] == expected.domain
    assert instance.metadata["instance_id"] == expected.uuid
    assert instance.metadata["instance_type"] == expected.flavor
    assert (instance.vcpus, instance.memory_mb) == (expected.vcpus, expected.memory_mb)
    assert [d.device for d in instance.domain.disks if d.readable] == list(expected.disks)
    assert [(n.name, n.mac) for n in instance.domain.nics] == list(expected.nics)


def test_metadata_of_a_nova_instance_is_ceilometers() -> None:
    assert discover()[WEB.uuid].metadata == {
        "display_name": "web-1",
        "name": "instance-00000001",
        "instance_id": WEB.uuid,
        "instance_type": "m1.small",
        "host": HOST,
        "instance_host": HOST,
        "flavor": {
            "name": "m1.small",
            "vcpus": 2,
            "ram": 2048,
            "disk": 20,
            "ephemeral": 0,
            "swap": 0,
        },
        "status": "active",
        "state": "running",
        "image": {"id": IMAGE},
        "image_ref": IMAGE,
        "image_ref_url": None,
        "os_type": "hvm",
        "architecture": "x86_64",
        "vcpus": 2,
        "memory_mb": 2048,
        "disk_gb": 20,
        "ephemeral_gb": 0,
        "root_gb": 20,
    }


def test_instance_booted_from_a_volume_has_no_image() -> None:
    metadata = discover()[DB.uuid].metadata
    assert metadata["image"] is None and metadata["image_ref"] is None
    assert (metadata["disk_gb"], metadata["ephemeral_gb"], metadata["root_gb"]) == (80, 10, 70)
    assert metadata["flavor"]["swap"] == 1024


def test_older_nova_namespace_is_read_too() -> None:
    instance = discover()[BATCH.uuid]
    assert instance.domain.nova is not None
    assert instance.domain.nova.namespace.endswith("/nova/1.0")
    assert (instance.user_id, instance.project_id) == (ALICE, DEMO)


def test_domain_without_metadata_is_metered_with_the_default_owner() -> None:
    instance = discover(compute={"default_project": "admin-project", "default_user": "ops"})[
        PLAIN.uuid
    ]
    assert (instance.user_id, instance.project_id) == ("ops", "admin-project")
    assert instance.metadata["display_name"] == "plain"
    assert instance.metadata["flavor"] is None and instance.metadata["instance_type"] is None
    assert (instance.metadata["vcpus"], instance.metadata["memory_mb"]) == (1, 1024)
    # The owner of Nova's instances is never replaced by the default.
    assert discover(compute={"default_project": "admin-project"})[WEB.uuid].project_id == DEMO


def test_without_a_default_owner_it_has_none() -> None:
    instance = discover()[PLAIN.uuid]
    assert (instance.user_id, instance.project_id) == (None, None)


def test_without_libvirt_python_discovery_finds_nothing() -> None:
    class NoLibvirt:
        config = settings()

        @property
        def compute_inspector(self) -> Any:
            raise PluginUnusable("libvirt-python is not installed")

    assert discover_instances(NoLibvirt()) == []  # type: ignore[arg-type]


def test_unreachable_libvirt_discovers_nothing() -> None:
    def refuse(uri: str) -> Any:
        raise ConnectionRefusedError(uri)

    from nephoscope.compute.inspector import LibvirtInspector

    manager = SimpleNamespace(
        compute_inspector=LibvirtInspector("qemu:///x", refuse), config=settings()
    )
    assert discover_instances(manager) == []  # type: ignore[arg-type]
