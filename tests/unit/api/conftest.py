"""An API over a SQLite store holding two projects' samples, and its test client."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nephoscope.api import create_app
from nephoscope.config import Settings
from nephoscope.counter import Counter
from nephoscope.storage import open_store
from nephoscope.storage.base import Store

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SECRET = "api-secret"
TOKENS = """
admin-token: {project_id: admin, user_id: operator, roles: [admin]}
p1-token: {project_id: p1, user_id: u1, roles: [member]}
p2-token: {project_id: p2, user_id: u2, roles: [member, reader]}
svc-token: {project_id: services, user_id: agent, roles: [service]}
"""
ADMIN = {"X-Auth-Token": "admin-token"}
P1 = {"X-Auth-Token": "p1-token"}
P2 = {"X-Auth-Token": "p2-token"}
SERVICE = {"X-Auth-Token": "svc-token"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def sample(
    message_id: str,
    seconds: float,
    volume: float,
    *,
    name: str = "cpu",
    resource_id: str = "vm1",
    project_id: str = "p1",
    user_id: str = "u1",
    metadata: dict[str, Any] | None = None,
) -> Counter:
    return Counter(
        name=name,
        type="cumulative" if name == "cpu" else "gauge",
        unit="ns" if name == "cpu" else "MB",
        volume=volume,
        user_id=user_id,
        project_id=project_id,
        resource_id=resource_id,
        timestamp=at(seconds),
        resource_metadata=metadata if metadata is not None else {"flavor": {"vcpus": 2}},
        source="openstack",
        id=message_id,
    )


#: p1 owns vm1 (cpu, memory), p2 owns vm2 (cpu) and vm3 (cpu, other metadata).
SAMPLES = [
    sample("a1", 0, 10),
    sample("a2", 60, 20),
    sample("a3", 120, 40),
    sample("m1", 30, 512, name="memory"),
    sample("b1", 0, 100, resource_id="vm2", project_id="p2", user_id="u2"),
    sample("b2", 90, 300, resource_id="vm2", project_id="p2", user_id="u2"),
    sample(
        "c1",
        30,
        1000,
        resource_id="vm3",
        project_id="p2",
        user_id="u2",
        metadata={"flavor": {"vcpus": 8}, "name": "db", "on": True},
    ),
]


def make_settings(tmp_path: Path, **api: Any) -> Settings:
    tokens = tmp_path / "tokens.yaml"
    tokens.write_text(TOKENS, encoding="utf-8")
    return Settings(
        metering_secret=SECRET,
        store={"url": f"sqlite:///{tmp_path / 'api.db'}"},
        api={"tokens": str(tokens), **api},
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    path = tmp_path_factory.mktemp("api")
    settings = make_settings(path)
    store = open_store(settings.store)
    store.write_batch(SAMPLES)
    yield store
    store.close()


@pytest.fixture(scope="module")
def client(store: Store, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("api-settings"))
    with TestClient(create_app(settings, store), raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def writable(tmp_path: Path) -> Iterator[TestClient]:
    """A client over a fresh, empty store, for posting."""
    settings = make_settings(tmp_path)
    store = open_store(settings.store)
    with TestClient(create_app(settings, store), raise_server_exceptions=False) as client:
        client.store = store  # type: ignore[attr-defined]
        yield client
    store.close()
