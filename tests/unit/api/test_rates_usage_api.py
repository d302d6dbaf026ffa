"""The rate aggregate, derived meters and ``/v2/usage`` through the API, tenancy included.

The store holds the constructed history of ``tests/unit/storage/history.py``:
``p1``'s ``vm-a`` (cpu every ten minutes from 10:30, reset at 11:00, with
``cpu_number`` 2) and ``p2``'s ``vm-b`` (cpu growing 30 s every ten minutes).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.unit.storage.history import P1_WHOLE, P2_WHOLE, VNIC, history

from nephoscope.api import create_app
from nephoscope.storage import open_store

from .conftest import ADMIN, P1, make_settings
from .test_api import fault, ok, q

G = 10**9
FROM_10 = ("timestamp", "ge", "2026-03-02T10:00:00")


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    settings = make_settings(tmp_path_factory.mktemp("rates-api"))
    store = open_store(settings.store)
    store.write_batch(history())
    with TestClient(create_app(settings, store), raise_server_exceptions=False) as client:
        yield client
    store.close()


def stats(client: TestClient, meter: str, headers: dict[str, str] = ADMIN, **params: Any) -> Any:
    return ok(client, f"/v2/meters/{meter}/statistics", headers, params=params)


def test_rate_aggregate_per_period_and_group(client: TestClient) -> None:
    found = stats(
        client,
        "cpu",
        **q(FROM_10),
        period=3600,
        groupby="project_id",
        **{"aggregate.func": ["rate", "max"]},
    )
    by = {(s["period_start"], s["groupby"]["project_id"]): s["aggregate"] for s in found}
    assert by == {
        # vm-a: 120 G ns over 1200 s, then 20 G (after the reset) + 4 x 120 G over 3000 s.
        ("2026-03-02T10:00:00", "p1"): {"rate": pytest.approx(120 * G / 1200), "max": 170.0 * G},
        ("2026-03-02T11:00:00", "p1"): {"rate": pytest.approx(500 * G / 3000), "max": 500.0 * G},
        # vm-b: 30 G ns every 600 s; its sample at 10:00 opens the series.
        ("2026-03-02T10:00:00", "p2"): {"rate": pytest.approx(30 * G / 600), "max": 150.0 * G},
        ("2026-03-02T11:00:00", "p2"): {"rate": pytest.approx(30 * G / 600), "max": 330.0 * G},
        ("2026-03-02T12:00:00", "p2"): {"rate": pytest.approx(30 * G / 600), "max": 360.0 * G},
    }


def test_rate_without_a_pair_is_null_and_a_member_sees_its_own(client: TestClient) -> None:
    (only,) = stats(
        client, "network.outgoing.bytes", P1, **q(("timestamp", "ge", "2026-03-02T11:30:00"))
    )
    assert only["count"] == 1 and only["aggregate"] is None
    (alone,) = stats(
        client,
        "network.outgoing.bytes",
        P1,
        **q(("timestamp", "ge", "2026-03-02T11:30:00")),
        **{"aggregate.func": "rate"},
    )
    assert alone["aggregate"] == {"rate": None}
    (mine,) = stats(client, "cpu", P1, **{"aggregate.func": "rate"})
    assert mine["aggregate"]["rate"] == pytest.approx(620 * G / 4200)


@pytest.mark.parametrize(
    ("meter", "words"),
    [("memory", "memory is gauge"), ("cpu_util", "cpu_util is a derived gauge")],
)
def test_rate_of_a_meter_that_is_not_cumulative_is_400(
    client: TestClient, meter: str, words: str
) -> None:
    response = client.get(
        f"/v2/meters/{meter}/statistics", headers=ADMIN, params={"aggregate.func": "rate"}
    )
    message = fault(response, 400)
    assert "rate needs a cumulative meter" in message and words in message
    assert response.json()["error_message"]["faultcode"] == "Client"


def test_cpu_util_samples_and_statistics(client: TestClient) -> None:
    samples = ok(client, "/v2/meters/cpu_util", P1, limit=3)
    assert [(s["timestamp"], s["counter_volume"]) for s in samples] == [
        ("2026-03-02T11:40:00", pytest.approx(120 * G / (600 * G * 2) * 100)),
        ("2026-03-02T11:30:00", pytest.approx(10.0)),
        ("2026-03-02T11:20:00", pytest.approx(10.0)),
    ]
    first = samples[0]
    assert (first["counter_name"], first["counter_type"], first["counter_unit"]) == (
        "cpu_util",
        "gauge",
        "%",
    )
    assert (first["resource_id"], first["project_id"]) == ("vm-a", "p1")
    assert first["resource_metadata"] == {"cpu_number": "2"}
    (whole,) = stats(client, "cpu_util", P1)
    # 5, 5, 1.67 (after the reset), then 10 four times.
    assert (whole["count"], whole["unit"]) == (7, "%")
    assert whole["min"] == pytest.approx(20 / 12)
    assert whole["sum"] == pytest.approx(50 + 20 / 12)
    by_hour = stats(client, "cpu_util", ADMIN, **q(FROM_10), period=3600, groupby="resource_id")
    assert [(s["period_start"], s["groupby"]["resource_id"], s["count"]) for s in by_hour] == [
        ("2026-03-02T10:00:00", "vm-a", 2),
        ("2026-03-02T10:00:00", "vm-b", 5),
        ("2026-03-02T11:00:00", "vm-a", 5),
        ("2026-03-02T11:00:00", "vm-b", 6),
        ("2026-03-02T12:00:00", "vm-b", 1),
    ]


def test_rate_meters(client: TestClient) -> None:
    found = ok(client, "/v2/meters/network.incoming.bytes.rate")
    assert [(s["timestamp"], s["counter_volume"], s["counter_unit"]) for s in found] == [
        ("2026-03-02T11:10:00", pytest.approx(2000 / 600), "B/s"),
        ("2026-03-02T11:00:00", pytest.approx(500 / 600), "B/s"),
        ("2026-03-02T10:50:00", pytest.approx(4000 / 600), "B/s"),
        ("2026-03-02T10:40:00", pytest.approx(4000 / 600), "B/s"),
    ]
    assert {s["resource_id"] for s in found} == {VNIC}
    assert ok(client, "/v2/meters/disk.read.bytes.rate") == []


def test_a_member_sees_only_its_projects_derived_samples(client: TestClient) -> None:
    assert {s["project_id"] for s in ok(client, "/v2/meters/cpu_util", P1)} == {"p1"}
    assert ok(client, "/v2/meters/cpu_util", P1, params=q(("project_id", "eq", "p2"))) == []
    assert stats(client, "cpu_util", P1, **q(("resource_id", "eq", "vm-b"))) == []


def usage_of(found: dict[str, Any]) -> dict[str, tuple[float, str, int]]:
    return {
        name: (pytest.approx(item["volume"]), item["unit"], item["resources"])
        for name, item in found["usage"].items()
    }


WINDOW = {"start": "2026-03-02T10:00:00", "end": "2026-03-02T12:00:00"}


def test_usage_per_project(client: TestClient) -> None:
    (p1,) = ok(client, "/v2/usage", ADMIN, project_id="p1", **WINDOW)
    assert (p1["project_id"], p1["start"], p1["end"], p1["max_gap"]) == (
        "p1",
        WINDOW["start"],
        WINDOW["end"],
        7200.0,
    )
    assert usage_of(p1) == P1_WHOLE
    every = ok(client, "/v2/usage", ADMIN, **WINDOW)
    assert [u["project_id"] for u in every] == ["p1", "p2"]
    assert usage_of(every[1]) == P2_WHOLE
    (short,) = ok(client, "/v2/usage", ADMIN, project_id="p1", max_gap=300, **WINDOW)
    assert short["usage"]["instance"]["volume"] == pytest.approx(304 / 3600)


def test_usage_holds_a_member_to_its_project(client: TestClient) -> None:
    (own,) = ok(client, "/v2/usage", P1, **WINDOW)
    assert own["project_id"] == "p1" and usage_of(own) == P1_WHOLE
    assert ok(client, "/v2/usage", P1, project_id="p1", **WINDOW)[0]["project_id"] == "p1"
    assert ok(client, "/v2/usage", P1, project_id="p2", **WINDOW) == []


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({}, "start"),
        ({"start": "yesterday"}, "start"),
        ({"start": "2026-03-02T12:00:00", "end": "2026-03-02T10:00:00"}, "must be before end"),
        ({**WINDOW, "max_gap": 0}, "max_gap"),
        ({**WINDOW, "max_gap": "2h"}, "max_gap"),
        ({**WINDOW, "project_id": "p\x00"}, "NUL"),
    ],
)
def test_bad_usage_queries_are_400(client: TestClient, params: dict[str, Any], words: str) -> None:
    assert words in fault(client.get("/v2/usage", headers=ADMIN, params=params), 400)


def test_usage_needs_a_token_and_rate_is_a_capability(client: TestClient) -> None:
    fault(client.get("/v2/usage", params=WINDOW), 401)
    caps = ok(client, "/v2/capabilities")
    assert caps["api"]["statistics:aggregation:selectable:rate"] is True
