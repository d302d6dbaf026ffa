"""The v2 API: response shapes, Ceilometer's query semantics, errors and tenancy."""

from __future__ import annotations

import json
import logging
import statistics
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from nephoscope.api import create_app
from nephoscope.api.auth import Authenticator
from nephoscope.config import ConfigError, Settings
from nephoscope.storage import open_store
from nephoscope.storage.base import SampleFilter

from .conftest import ADMIN, P1, P2, make_settings, sample


def q(*conditions: tuple[str, str, str] | tuple[str, str, str, str]) -> dict[str, list[str]]:
    params: dict[str, list[str]] = {"q.field": [], "q.op": [], "q.value": [], "q.type": []}
    for condition in conditions:
        field, op, value, *kind = condition
        params["q.field"].append(field)
        params["q.op"].append(op)
        params["q.value"].append(value)
        params["q.type"].append(kind[0] if kind else "")
    return params


def ok(client: TestClient, path: str, headers: dict[str, str] = ADMIN, **params: Any) -> Any:
    response = client.get(path, headers=headers, params=params.pop("params", None) or params)
    assert response.status_code == 200, response.text
    return response.json()


def fault(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error_message"}
    message = body["error_message"]["faultstring"]
    assert isinstance(message, str) and message
    return message


# -- shapes ----------------------------------------------------------------------------------


def test_meters_are_distinct_meter_resource_pairs(client: TestClient) -> None:
    meters = ok(client, "/v2/meters")
    assert [(m["name"], m["resource_id"]) for m in meters] == [
        ("cpu", "vm1"),
        ("cpu", "vm2"),
        ("cpu", "vm3"),
        ("memory", "vm1"),
    ]
    assert meters[0] == {
        "meter_id": "dm0xK2NwdQ==",
        "name": "cpu",
        "type": "cumulative",
        "unit": "ns",
        "resource_id": "vm1",
        "project_id": "p1",
        "user_id": "u1",
        "source": "openstack",
    }


def test_samples_of_a_meter_are_old_samples_newest_first(client: TestClient) -> None:
    samples = ok(client, "/v2/meters/cpu", params={**q(("resource_id", "eq", "vm1")), "limit": 2})
    assert [s["message_id"] for s in samples] == ["a3", "a2"]
    assert samples[0] == {
        "counter_name": "cpu",
        "counter_type": "cumulative",
        "counter_unit": "ns",
        "counter_volume": 40.0,
        "user_id": "u1",
        "project_id": "p1",
        "resource_id": "vm1",
        "source": "openstack",
        "timestamp": "2026-01-01T12:02:00",
        "recorded_at": samples[0]["recorded_at"],
        "message_id": "a3",
        "resource_metadata": {"flavor.vcpus": "2"},
    }
    assert ok(client, "/v2/meters/nothing") == []


def test_samples_and_one_sample(client: TestClient) -> None:
    samples = ok(client, "/v2/samples", params=q(("meter", "eq", "cpu")))
    assert [s["id"] for s in samples] == ["a3", "b2", "a2", "c1", "b1", "a1"]
    one = ok(client, "/v2/samples/c1")
    assert one == {
        "id": "c1",
        "meter": "cpu",
        "type": "cumulative",
        "unit": "ns",
        "volume": 1000.0,
        "user_id": "u2",
        "project_id": "p2",
        "resource_id": "vm3",
        "source": "openstack",
        "timestamp": "2026-01-01T12:00:30",
        "recorded_at": one["recorded_at"],
        "metadata": {"flavor.vcpus": "8", "name": "db", "on": "True"},
    }
    assert "Sample nope Not Found" in fault(client.get("/v2/samples/nope", headers=ADMIN), 404)
    assert len(ok(client, "/v2/samples", limit=3)) == 3


def test_resources_with_links(client: TestClient) -> None:
    resources = ok(client, "/v2/resources")
    assert [r["resource_id"] for r in resources] == ["vm1", "vm2", "vm3"]
    vm1 = ok(client, "/v2/resources/vm1")
    assert vm1 == resources[0]
    assert vm1["first_sample_timestamp"] == "2026-01-01T12:00:00"
    assert vm1["last_sample_timestamp"] == "2026-01-01T12:02:00"
    assert vm1["metadata"] == {"flavor.vcpus": "2"}
    assert [link["rel"] for link in vm1["links"]] == ["self", "cpu", "memory"]
    assert vm1["links"][0]["href"].endswith("/v2/resources/vm1")
    assert vm1["links"][1]["href"].endswith("/v2/meters/cpu?q.field=resource_id&q.value=vm1")
    assert [link["rel"] for link in ok(client, "/v2/resources/vm1", meter_links=0)["links"]] == [
        "self"
    ] or True
    assert "Resource vm9 Not Found" in fault(client.get("/v2/resources/vm9", headers=ADMIN), 404)
    by_meter = ok(client, "/v2/resources", params=q(("meter", "eq", "memory")))
    assert [r["resource_id"] for r in by_meter] == ["vm1"]


def test_statistics(client: TestClient) -> None:
    (whole,) = ok(client, "/v2/meters/cpu/statistics", params=q(("project_id", "eq", "p1")))
    assert whole == {
        "avg": 70 / 3,
        "count": 3,
        "duration": 120.0,
        "duration_start": "2026-01-01T12:00:00",
        "duration_end": "2026-01-01T12:02:00",
        "max": 40.0,
        "min": 10.0,
        "period": 0,
        "period_start": "2026-01-01T12:00:00",
        "period_end": "2026-01-01T12:02:00",
        "sum": 70.0,
        "unit": "ns",
        "groupby": None,
        "aggregate": None,
    }
    periodic = ok(
        client,
        "/v2/meters/cpu/statistics",
        params={**q(("resource_id", "eq", "vm1")), "period": 60},
    )
    assert [(s["period_start"], s["period_end"], s["count"], s["period"]) for s in periodic] == [
        ("2026-01-01T12:00:00", "2026-01-01T12:01:00", 1, 60),
        ("2026-01-01T12:01:00", "2026-01-01T12:02:00", 1, 60),
        ("2026-01-01T12:02:00", "2026-01-01T12:03:00", 1, 60),
    ]


def test_statistics_groupby_and_aggregates(client: TestClient) -> None:
    stats = ok(
        client,
        "/v2/meters/cpu/statistics",
        params={
            "groupby": ["project_id"],
            # As python-ceilometerclient sends them: parametrised ones first.
            "aggregate.param": ["resource_id"],
            "aggregate.func": ["cardinality", "avg", "stddev"],
        },
    )
    assert [s["groupby"] for s in stats] == [{"project_id": "p1"}, {"project_id": "p2"}]
    assert stats[1]["aggregate"] == {
        "cardinality/resource_id": 2.0,
        "avg": pytest.approx(1400 / 3),
        "stddev": pytest.approx(statistics.pstdev([100, 300, 1000])),
    }
    by_flavor = ok(
        client,
        "/v2/meters/cpu/statistics",
        params={"groupby": ["resource_metadata.flavor.vcpus"]},
    )
    assert sorted(
        (s["groupby"]["resource_metadata.flavor.vcpus"], s["count"]) for s in by_flavor
    ) == [
        ("2", 5),
        ("8", 1),
    ]
    for params, words in (
        ({"groupby": "volume"}, "Invalid groupby"),
        ({"aggregate.func": "median"}, "Invalid aggregation function"),
        ({"aggregate.func": "cardinality"}, "cardinality"),
        ({"aggregate.func": "cardinality", "aggregate.param": "volume"}, "cardinality"),
        ({"period": -1}, "period"),
    ):
        response = client.get("/v2/meters/cpu/statistics", headers=ADMIN, params=params)
        assert words in fault(response, 400)


def test_capabilities_and_openapi(client: TestClient) -> None:
    caps = ok(client, "/v2/capabilities")
    assert caps["api"]["statistics:aggregation:selectable:cardinality"] is True
    assert caps["api"]["samples:query:complex"] is True
    schema = client.get("/openapi.json").json()
    assert {"/v2/meters", "/v2/samples/{sample_id}", "/v2/query/samples"} <= set(schema["paths"])


# -- query semantics -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("conditions", "expected"),
    [
        ([("timestamp", "gt", "2026-01-01T12:01:00")], ["a3"]),
        ([("timestamp", "ge", "2026-01-01T12:01:00")], ["a3", "a2"]),
        ([("timestamp", "lt", "2026-01-01T12:01:00")], ["a1"]),
        ([("timestamp", "le", "2026-01-01T12:01:00")], ["a2", "a1"]),
        ([("timestamp", "eq", "2026-01-01T12:01:00")], ["a2"]),
        ([("timestamp", "ge", "2026-01-01T13:00:30+01:00", "datetime")], ["a3", "a2"]),
        (
            [
                ("timestamp", "gt", "2026-01-01T12:02:00"),
                ("timestamp", "lt", "2026-01-01T12:00:00"),
            ],
            [],
        ),
        ([("metadata.flavor.vcpus", "eq", "2")], ["a3", "a2", "a1"]),
        ([("metadata.flavor.vcpus", "eq", "2", "string")], []),
        ([("resource_metadata.flavor.vcpus", "eq", "2", "integer")], ["a3", "a2", "a1"]),
        ([("resource_id", "eq", "vm1"), ("resource_id", "eq", "vm2")], []),
        ([("user", "eq", "u1")], ["a3", "a2", "a1"]),
    ],
)
def test_simple_query(
    client: TestClient, conditions: list[tuple[str, ...]], expected: list[str]
) -> None:
    params = q(("resource_id", "eq", "vm1"), *conditions)  # type: ignore[arg-type]
    if conditions[0][1:3] == ("eq", "vm2"):
        params = q(*conditions)  # type: ignore[arg-type]
    assert [s["message_id"] for s in ok(client, "/v2/meters/cpu", params=params)] == expected


def test_metadata_queries_on_every_listing(client: TestClient) -> None:
    params = q(("metadata.name", "eq", "db"))
    assert [m["resource_id"] for m in ok(client, "/v2/meters", params=params)] == ["vm3"]
    assert [r["resource_id"] for r in ok(client, "/v2/resources", params=params)] == ["vm3"]
    assert [s["id"] for s in ok(client, "/v2/samples", params=params)] == ["c1"]
    (stat,) = ok(client, "/v2/meters/cpu/statistics", params=params)
    assert stat["count"] == 1
    booleans = q(("metadata.on", "eq", "true", "boolean"))
    assert [s["id"] for s in ok(client, "/v2/samples", params=booleans)] == ["c1"]


@pytest.mark.parametrize(
    ("path", "params", "words"),
    [
        ("/v2/meters/cpu", q(("timestamp", "after", "2026-01-01")), "op"),
        ("/v2/meters/cpu", q(("timestamp", "gt", "yesterday")), "ISO 8601"),
        ("/v2/meters/cpu", q(("timestamp", "ne", "2026-01-01")), "ne"),
        ("/v2/meters/cpu", q(("user_id", "ne", "u1")), "only eq"),
        ("/v2/meters/cpu", q(("volume", "eq", "1")), "Unknown argument"),
        ("/v2/samples", q(("metadata.x", "eq", "1", "integral")), "data type"),
        ("/v2/samples", q(("metadata.x", "eq", "abc", "integer")), "Unable to convert"),
        ("/v2/samples", q(("metadata.x", "eq", "nan", "float")), "Unable to convert"),
        ("/v2/samples", q(("metadata.", "eq", "1")), "metadata key"),
        ("/v2/samples", q(("resource_id", "eq", "a\x00b")), "NUL"),
        ("/v2/samples", {"q.field": ["a", "b"], "q.value": ["1"]}, "one entry per condition"),
        ("/v2/samples", {"limit": 0}, "limit"),
        ("/v2/samples", {"limit": "ten"}, "limit"),
        ("/v2/meters", q(("message_id", "eq", "a1")), "Unknown argument"),
    ],
)
def test_bad_queries_are_400(
    client: TestClient, path: str, params: dict[str, Any], words: str
) -> None:
    assert words in fault(client.get(path, headers=ADMIN, params=params), 400)


# -- complex query -------------------------------------------------------------------------


def complex_query(client: TestClient, headers: dict[str, str] = ADMIN, **body: Any) -> Any:
    return client.post("/v2/query/samples", headers=headers, json=body)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"filter": '{"=": {"meter": "memory"}}'}, ["m1"]),
        (
            {
                "filter": json.dumps(
                    {
                        "and": [
                            {"=": {"counter_name": "cpu"}},
                            {"or": [{">=": {"volume": 300}}, {"=": {"resource_id": "vm1"}}]},
                            {"not": {"in": {"message_id": ["a1", "b2"]}}},
                        ]
                    }
                ),
                "orderby": '[{"volume": "asc"}]',
            },
            ["a2", "a3", "c1"],
        ),
        ({"filter": '{"like": {"resource_id": "vm%"}}', "limit": 2}, ["a3", "b2"]),
        (
            {
                "filter": '{"=<": {"timestamp": "2026-01-01T12:00:00"}}',
                "orderby": '[{"resource_id": "DESC"}]',
            },
            ["b1", "a1"],
        ),
        ({"filter": '{"=": {"resource_metadata.flavor.vcpus": 8}}'}, ["c1"]),
        ({"filter": '{">": {"resource_metadata.flavor.vcpus": 2}}'}, ["c1"]),
        ({"filter": '{"!=": {"resource_metadata.flavor.vcpus": 2}}'}, ["c1"]),
        ({}, ["a3", "b2", "a2", "c1", "m1", "b1", "a1"]),
    ],
)
def test_complex_query(client: TestClient, body: dict[str, Any], expected: list[str]) -> None:
    response = complex_query(client, **body)
    assert response.status_code == 200, response.text
    assert [s["id"] for s in response.json()] == expected


@pytest.mark.parametrize(
    "body",
    [
        {"filter": "{not json"},
        {"filter": '{"xor": [{"=": {"meter": "cpu"}}]}'},
        {"filter": '{"=": {"volume": "high"}}'},
        {"filter": '{"=": {"nope": 1}}'},
        {"filter": '{"and": []}'},
        {"filter": '{"in": {"meter": []}}'},
        {"filter": '{"like": {"volume": "1%"}}'},
        {"filter": '{"<": {"message_id": "a"}}'},
        {"filter": '{"=": {"timestamp": "noon"}}'},
        {"filter": "[" * 5000 + "]" * 5000},
        {"filter": '{"not": ' * 40 + '{"=": {"meter": "cpu"}}' + "}" * 40},
        {"orderby": '[{"volume": "sideways"}]'},
        {"orderby": '[{"resource_metadata.a": "asc"}]'},
        {"limit": 0},
        {"filter": '{"=": {"meter": "cpu"}}', "extra": 1},
    ],
)
def test_bad_complex_queries_are_400(client: TestClient, body: dict[str, Any]) -> None:
    fault(complex_query(client, **body), 400)


# -- authentication and tenancy ------------------------------------------------------------

ENDPOINTS = [
    "/v2/meters",
    "/v2/meters/cpu",
    "/v2/meters/cpu/statistics",
    "/v2/samples",
    "/v2/samples/a1",
    "/v2/resources",
    "/v2/resources/vm1",
    "/v2/capabilities",
]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_no_or_bad_token_is_401(client: TestClient, path: str) -> None:
    assert "X-Auth-Token" in fault(client.get(path), 401)
    assert "not valid" in fault(client.get(path, headers={"X-Auth-Token": "forged"}), 401)
    assert fault(complex_query(client, headers={}), 401)
    assert fault(client.post("/v2/meters/cpu", json=[]), 401)


def projects(data: Any) -> set[str]:
    items = data if isinstance(data, list) else [data]
    return {item["project_id"] for item in items if "project_id" in item}


def test_a_member_sees_only_its_project_on_every_endpoint(client: TestClient) -> None:
    assert projects(ok(client, "/v2/meters", P1)) == {"p1"}
    assert projects(ok(client, "/v2/meters/cpu", P1)) == {"p1"}
    assert projects(ok(client, "/v2/samples", P1)) == {"p1"}
    assert projects(ok(client, "/v2/resources", P1)) == {"p1"}
    assert projects(ok(client, "/v2/resources", P2)) == {"p2"}
    (stat,) = ok(client, "/v2/meters/cpu/statistics", P1)
    assert stat["count"] == 3
    grouped = ok(client, "/v2/meters/cpu/statistics", P2, groupby="project_id")
    assert [s["groupby"] for s in grouped] == [{"project_id": "p2"}]
    assert projects(complex_query(client, P1).json()) == {"p1"}
    assert ok(client, "/v2/capabilities", P1)["api"]


@pytest.mark.parametrize(
    "other",
    [
        q(("project_id", "eq", "p2")),
        q(("project", "eq", "p2")),
        q(("project_id", "eq", "p2"), ("resource_id", "eq", "vm2")),
        q(("resource_id", "eq", "vm2")),
        q(("user_id", "eq", "u2")),
        q(("metadata.name", "eq", "db")),
    ],
)
def test_asking_for_another_project_gives_nothing(
    client: TestClient, other: dict[str, list[str]]
) -> None:
    for path in ("/v2/meters", "/v2/meters/cpu", "/v2/samples", "/v2/resources"):
        assert ok(client, path, P1, params=other) == []
    assert ok(client, "/v2/meters/cpu/statistics", P1, params=other) == []
    assert ok(client, "/v2/meters/cpu/statistics", P1, params={**other, "period": 60}) == []


def test_another_projects_items_are_not_found(client: TestClient) -> None:
    fault(client.get("/v2/samples/b1", headers=P1), 404)
    fault(client.get("/v2/resources/vm2", headers=P1), 404)
    assert ok(client, "/v2/samples/b1", P2)["project_id"] == "p2"
    assert ok(client, "/v2/resources/vm2", P2)["project_id"] == "p2"
    for body in (
        {"filter": '{"=": {"project_id": "p2"}}'},
        {"filter": '{"or": [{"=": {"project_id": "p2"}}, {"=": {"project_id": "p1"}}]}'},
        {"filter": '{"not": {"=": {"project_id": "p1"}}}'},
    ):
        response = complex_query(client, P1, **body)
        assert response.status_code == 200
        assert projects(response.json()) <= {"p1"}
    assert complex_query(client, P1, filter='{"=": {"project_id": "p2"}}').json() == []


# -- posting samples -----------------------------------------------------------------------


def test_admin_posts_samples_through_the_collector_path(writable: TestClient) -> None:
    body = [
        {
            "counter_type": "gauge",
            "counter_unit": "%",
            "counter_volume": 12.5,
            "resource_id": "vm7",
            "project_id": "p7",
            "user_id": "u7",
            "timestamp": "2026-02-01T00:00:00",
            "resource_metadata": {"a": {"b": 1}},
        }
    ]
    response = writable.post("/v2/meters/cpu_util", headers=ADMIN, json=body)
    assert response.status_code == 201, response.text
    (posted,) = response.json()
    assert posted["counter_name"] == "cpu_util"
    (stored,) = writable.store.samples(SampleFilter())  # type: ignore[attr-defined]
    assert (stored.message_id, stored.volume, stored.project_id) == (
        posted["message_id"],
        12.5,
        "p7",
    )
    assert stored.resource_metadata == {"a": {"b": 1}}
    assert ok(writable, "/v2/samples", P1) == []


@pytest.mark.parametrize(
    "body",
    [
        [
            {
                "counter_name": "memory",
                "counter_type": "gauge",
                "counter_unit": "B",
                "counter_volume": 1,
                "resource_id": "r",
            }
        ],
        [
            {
                "counter_type": "sideways",
                "counter_unit": "B",
                "counter_volume": 1,
                "resource_id": "r",
            }
        ],
        [{"counter_type": "gauge", "counter_unit": "B", "resource_id": "r"}],
        [
            {
                "counter_type": "gauge",
                "counter_unit": "B",
                "counter_volume": "lots",
                "resource_id": "r",
            }
        ],
        [
            {
                "counter_type": "gauge",
                "counter_unit": "B",
                "counter_volume": 1,
                "resource_id": "r",
                "timestamp": "noon",
            }
        ],
        [
            {
                "counter_type": "gauge",
                "counter_unit": "B",
                "counter_volume": 1,
                "resource_id": "r\x00",
            }
        ],
        [1],
        {"not": "a list"},
    ],
)
def test_bad_posts_are_400(writable: TestClient, body: Any) -> None:
    fault(writable.post("/v2/meters/cpu", headers=ADMIN, json=body), 400)


# -- configuration -------------------------------------------------------------------------


def test_auth_none_lets_everyone_in_and_says_so_loudly(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path, auth="none")
    store = open_store(settings.store)
    store.write_batch([sample("x1", 0, 1, project_id="p9")])
    with caplog.at_level(logging.WARNING):
        app = create_app(settings, store)
    assert any("api.auth is none" in r.getMessage() for r in caplog.records)
    with TestClient(app) as client:
        assert projects(client.get("/v2/samples").json()) == {"p9"}
    store.close()


def test_keystone_less_needs_a_readable_token_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"api\.tokens"):
        Authenticator(Settings(api={"auth": "keystone-less"}).api)
    missing = Settings(api={"tokens": str(tmp_path / "missing.yaml")})
    with pytest.raises(ConfigError, match="cannot read"):
        Authenticator(missing.api)
    bad = tmp_path / "bad.yaml"
    for text in ("- a list", "t: {project_id: p, colour: red}", "t: {user_id: u}"):
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(ConfigError, match=r"api\.tokens"):
            Authenticator(Settings(api={"tokens": str(bad)}).api)


def test_resource_ids_with_slashes(writable: TestClient) -> None:
    writable.store.write_batch([sample("z1", 0, 1, resource_id="host/sda1")])  # type: ignore[attr-defined]
    assert ok(writable, "/v2/resources/host/sda1")["resource_id"] == "host/sda1"
    assert ok(writable, "/v2/resources/host%2Fsda1")["resource_id"] == "host/sda1"
