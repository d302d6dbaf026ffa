"""Resource ids with samples of two projects (shared networks): each member sees a
resource as its own project's samples describe it, never the other project's
owner or metadata, whichever project sent the newest sample; an admin sees each
resource once."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nephoscope.api import create_app
from nephoscope.storage import open_store

from .conftest import ADMIN, P1, P2, make_settings, sample

SHARED = "shared-net-1"
#: Shared too, but here p1 sent the newest sample.
P1_NEWEST = "shared-net-2"
P1_METADATA = {"owner_note": "p1-note", "name": "net"}
P2_METADATA = {"owner_note": "p2-note", "tenant_secret": "p2-only"}


def of_p1(message_id: str, seconds: float, resource_id: str = SHARED, **kwargs: Any) -> Any:
    return sample(message_id, seconds, 1, resource_id=resource_id, metadata=P1_METADATA, **kwargs)


def of_p2(message_id: str, seconds: float, resource_id: str = SHARED) -> Any:
    return sample(
        message_id,
        seconds,
        2,
        resource_id=resource_id,
        project_id="p2",
        user_id="u2",
        metadata=P2_METADATA,
    )


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("shared"))
    store = open_store(settings.store)
    # On SHARED, p2's samples are older and newer than p1's, one in p1's batch.
    store.write_batch([of_p1("s1", 10), of_p2("s2", 20), of_p1("s3", 30, name="memory")])
    store.write_batch([of_p2("s4", 100), of_p2("s5", 0)])
    store.write_batch([of_p2("t1", 150, P1_NEWEST), of_p1("t2", 200, P1_NEWEST)])
    with TestClient(create_app(settings, store), raise_server_exceptions=False) as client:
        yield client
    store.close()


def get(client: TestClient, path: str, headers: dict[str, str], **params: Any) -> Any:
    response = client.get(path, headers=headers, params=params)
    assert response.status_code == 200, response.text
    return response.json()


def by_note(client: TestClient, headers: dict[str, str], note: str) -> Any:
    query = {"q.field": "metadata.owner_note", "q.value": note}
    return get(client, "/v2/resources", headers, **query)


def test_p1_sees_only_its_own_owner_and_metadata(client: TestClient) -> None:
    mine = [get(client, f"/v2/resources/{rid}", P1) for rid in (SHARED, P1_NEWEST)]
    for resource in mine:
        assert (resource["project_id"], resource["user_id"]) == ("p1", "u1")
        assert resource["metadata"] == P1_METADATA
        assert "p2" not in str(resource) and "tenant_secret" not in str(resource)
    assert (mine[0]["first_sample_timestamp"], mine[0]["last_sample_timestamp"]) == (
        "2026-01-01T12:00:10",
        "2026-01-01T12:00:30",
    )
    assert [link["rel"] for link in mine[0]["links"]] == ["self", "cpu", "memory"]
    assert get(client, "/v2/resources", P1) == mine
    assert by_note(client, P1, "p1-note") == mine
    assert by_note(client, P1, "p2-note") == []


def test_p2_sees_only_its_own_owner_and_metadata(client: TestClient) -> None:
    theirs = [get(client, f"/v2/resources/{rid}", P2) for rid in (SHARED, P1_NEWEST)]
    for resource in theirs:
        assert (resource["project_id"], resource["user_id"]) == ("p2", "u2")
        assert resource["metadata"] == P2_METADATA
        assert "p1" not in str(resource) and "u1" not in str(resource)
    assert (theirs[0]["first_sample_timestamp"], theirs[0]["last_sample_timestamp"]) == (
        "2026-01-01T12:00:00",
        "2026-01-01T12:01:40",
    )
    assert theirs[1]["first_sample_timestamp"] == theirs[1]["last_sample_timestamp"]
    assert [link["rel"] for link in theirs[0]["links"]] == ["self", "cpu"]
    assert get(client, "/v2/resources", P2) == theirs
    assert by_note(client, P2, "p2-note") == theirs
    assert by_note(client, P2, "p1-note") == []


def test_an_admin_sees_each_shared_resource_once(client: TestClient) -> None:
    listed = get(client, "/v2/resources", ADMIN)
    assert [r["resource_id"] for r in listed] == [SHARED, P1_NEWEST]
    assert listed == [get(client, f"/v2/resources/{rid}", ADMIN) for rid in (SHARED, P1_NEWEST)]
    # The newest sample's owner and metadata, the span of every sample.
    shared, p1_newest = listed
    assert (shared["project_id"], shared["user_id"]) == ("p2", "u2")
    assert shared["metadata"] == P2_METADATA
    assert (shared["first_sample_timestamp"], shared["last_sample_timestamp"]) == (
        "2026-01-01T12:00:00",
        "2026-01-01T12:01:40",
    )
    assert [link["rel"] for link in shared["links"]] == ["self", "cpu", "memory"]
    assert (p1_newest["project_id"], p1_newest["metadata"]) == ("p1", P1_METADATA)
    assert (p1_newest["first_sample_timestamp"], p1_newest["last_sample_timestamp"]) == (
        "2026-01-01T12:02:30",
        "2026-01-01T12:03:20",
    )
    p1_only = get(client, "/v2/resources", ADMIN, **{"q.field": "project_id", "q.value": "p1"})
    assert p1_only == get(client, "/v2/resources", P1)
