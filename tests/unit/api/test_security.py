"""What a member may write, what the API refuses to store, and the limits of one request.

Each test reproduces a finding of the security review (docs/security.md) that
the API got wrong before.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import OperationalError
from tests.conftest import fresh_postgresql_database

from nephoscope.api import create_app
from nephoscope.api.errors import read_timed_out
from nephoscope.config import DEFAULT_SECRET, MAX_SQL_TERMS, StoreSettings
from nephoscope.messaging.meter import counter_to_message
from nephoscope.storage import open_store
from nephoscope.storage.base import SampleFilter

from .conftest import ADMIN, P1, P2, SECRET, SERVICE, make_settings, sample
from .test_api import fault, ok, q

JSON = {"Content-Type": "application/json"}


def post(client: TestClient, body: Any, headers: dict[str, str] = ADMIN, meter: str = "cpu") -> Any:
    text = body if isinstance(body, str) else json.dumps(body)
    return client.post(f"/v2/meters/{meter}", headers={**headers, **JSON}, content=text)


def plain(**fields: Any) -> dict[str, Any]:
    return {
        "counter_type": "gauge",
        "counter_unit": "%",
        "counter_volume": 1,
        "resource_id": "r1",
        "timestamp": "2026-02-01T00:00:00",
        **fields,
    }


def stored(client: TestClient) -> list[Any]:
    return client.store.samples(SampleFilter(), limit=None)  # type: ignore[attr-defined,no-any-return]


# -- 2. who writes what ----------------------------------------------------------------------


def test_a_member_posts_only_as_itself_in_its_project(writable: TestClient) -> None:
    response = post(writable, [plain()], P1)
    assert response.status_code == 201, response.text
    (echo,) = response.json()
    assert (echo["project_id"], echo["user_id"]) == ("p1", "u1")
    for other in ({"project_id": "p2"}, {"user_id": "u2"}):
        fault(post(writable, [plain(**other)], P1), 403)
    # A signature (with the published default secret, or the real one) widens nothing.
    for secret in (SECRET, DEFAULT_SECRET):
        theirs = counter_to_message(sample(f"s-{secret}", 0, 5, project_id="p2"), secret)
        assert fault(post(writable, [theirs], P1), 400 if secret != SECRET else 403)
    other_user = counter_to_message(sample("s-user", 0, 5, user_id="u2"), SECRET)
    fault(post(writable, [other_user], P1), 403)
    forged = {**counter_to_message(sample("s-forged", 0, 5), SECRET), "counter_volume": 500}
    assert "signature" in fault(post(writable, [forged], P1), 400)
    assert [(s.project_id, s.user_id) for s in stored(writable)] == [("p1", "u1")]


def test_a_signed_sample_without_owner_is_the_members(writable: TestClient) -> None:
    signed = counter_to_message(sample("s-anon", 0, 5, project_id=None, user_id=None), SECRET)  # type: ignore[arg-type]
    assert post(writable, [signed], P1).status_code == 201
    (only,) = stored(writable)
    assert (only.project_id, only.user_id) == ("p1", "u1")


def test_a_member_cannot_rewrite_how_another_project_sees_its_resource(
    writable: TestClient,
) -> None:
    writable.store.write_batch(  # type: ignore[attr-defined]
        [
            sample(
                "b-1",
                0,
                1,
                resource_id="vmB2",
                project_id="p2",
                user_id="u2",
                metadata={"display_name": "b-server"},
            )
        ]
    )
    hijack = plain(
        resource_id="vmB2",
        timestamp="2030-01-01T00:00:00",
        resource_metadata={"display_name": "hijacked-by-A"},
    )
    assert post(writable, [hijack], P1).status_code == 201
    theirs = ok(writable, "/v2/resources/vmB2", P2)
    assert (theirs["project_id"], theirs["metadata"]) == ("p2", {"display_name": "b-server"})
    (listed,) = ok(writable, "/v2/resources", P2)
    assert listed["metadata"] == {"display_name": "b-server"}
    mine = ok(writable, "/v2/resources/vmB2", P1)
    assert (mine["project_id"], mine["metadata"]) == ("p1", {"display_name": "hijacked-by-A"})


def test_a_service_writes_any_project_and_reads_its_own(writable: TestClient) -> None:
    assert post(writable, [plain(project_id="p7", user_id="u7")], SERVICE).status_code == 201
    assert ok(writable, "/v2/samples", SERVICE) == []
    assert [s["project_id"] for s in ok(writable, "/v2/samples", ADMIN)] == ["p7"]


def test_a_stored_message_id_is_a_conflict_and_nothing_is_stored(writable: TestClient) -> None:
    first = post(writable, [plain(message_id="m-1")], P1)
    assert first.status_code == 201
    again = post(writable, [plain(message_id="m-2"), plain(message_id="m-1", counter_volume=9)])
    assert "m-1" in fault(again, 409)
    assert [s.message_id for s in stored(writable)] == ["m-1"]
    assert "twice" in fault(post(writable, [plain(message_id="x"), plain(message_id="x")]), 400)


# -- 3. refused at the door, so that every read works ---------------------------------------


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"resource_metadata": {"big": 10**400}}, "64 bits"),
        ({"resource_metadata": {"big": 2**64}}, "64 bits"),
        ({"resource_metadata": {"n": {"deep": [-(2**63) - 1]}}}, "64 bits"),
        ({"timestamp": "9999-12-31T23:59:59.999999"}, "outside"),
        ({"timestamp": "1969-12-31T23:59:59"}, "outside"),
        ({"timestamp": "0001-01-01T00:00:00+14:00"}, "calendar"),
        ({"timestamp": "9999-12-31T23:59:59.999999-14:00"}, "outside"),
        ({"resource_metadata": {"name": "\ud800"}}, "surrogate"),
        ({"resource_metadata": {"\udfff": 1}}, "surrogate"),
        ({"resource_metadata": {"k" * 256: 1}}, "255"),
        ({"resource_metadata": {"nul": "a\x00b"}}, "NUL"),
        ({"resource_metadata": {"x": float("nan")}}, "finite"),
        ({"resource_id": "r" * 256}, "255"),
        ({"counter_volume": True}, "counter_volume"),
        ({"counter_volume": 10**400}, "beyond"),
        ({"counter_volume": 1e308}, "beyond"),
        ({"counter_volume": -1.5e100}, "beyond"),
    ],
)
def test_what_could_not_be_read_back_is_refused(
    writable: TestClient, fields: dict[str, Any], reason: str
) -> None:
    body = json.dumps([plain(**fields)], allow_nan=True)
    assert reason in fault(post(writable, body), 400)
    assert stored(writable) == []


def test_a_resource_id_with_a_newline_reads_back(writable: TestClient) -> None:
    assert post(writable, [plain(resource_id="a\nb")]).status_code == 201
    assert ok(writable, "/v2/resources/a%0Ab")["resource_id"] == "a\nb"


def test_deep_metadata_is_refused(writable: TestClient) -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(40):
        node["d"] = {}
        node = node["d"]
    assert "deeper" in fault(post(writable, [plain(resource_metadata=deep)]), 400)


def test_what_is_accepted_at_the_edges_reads_back_everywhere(writable: TestClient) -> None:
    edges = plain(
        timestamp="8999-12-31T23:59:59.999999",
        resource_metadata={"max": 2**64 - 1, "min": -(2**63), "tiny": 5e-324, "u": "é☃"},
    )
    assert post(writable, [edges, plain(timestamp="1970-01-01T00:00:00+00:00")]).status_code == 201
    for path in ("/v2/samples", "/v2/meters/cpu", "/v2/resources", "/v2/meters"):
        ok(writable, path)
    stats = ok(writable, "/v2/meters/cpu/statistics", period=3600)
    assert sum(s["count"] for s in stats) == 2
    ok(writable, "/v2/meters/cpu/statistics", period=10 * 366 * 86400)
    ok(writable, "/v2/usage", start="1970-01-01T00:00:00")


# -- 4. limits -----------------------------------------------------------------------------


def test_the_body_is_read_only_after_authentication(writable: TestClient) -> None:
    big = b"[" + b"1," * 3_000_000 + b"1]"
    assert "X-Auth-Token" in fault(writable.post("/v2/meters/cpu", content=big, headers=JSON), 401)
    assert "max_body_bytes" in fault(
        writable.post("/v2/meters/cpu", content=big, headers={**ADMIN, **JSON}), 413
    )


def test_a_body_without_length_is_cut_at_the_limit(writable: TestClient) -> None:
    def chunks() -> Any:
        for _ in range(100):
            yield b" " * 65_536

    response = writable.post("/v2/meters/cpu", content=chunks(), headers={**ADMIN, **JSON})
    assert "max_body_bytes" in fault(response, 413)


def complex_query(client: TestClient, filter_: Any, **extra: Any) -> Any:
    body = {"filter": json.dumps(filter_), **extra}
    return client.post("/v2/query/samples", headers=ADMIN, json=body)


def tree(depth: int) -> Any:
    if depth == 0:
        return {"=": {"resource_id": "r"}}
    return {("and" if depth % 2 else "or"): [tree(depth - 1), tree(depth - 1)]}


@pytest.mark.parametrize(
    ("request_of", "setting"),
    [
        (lambda c: complex_query(c, {"in": {"resource_id": ["x"] * 1_000}}), "max_in_values"),
        (lambda c: complex_query(c, tree(12)), "max_filter_nodes"),
        (lambda c: complex_query(c, {"or": [{"=": {"user_id": "u"}}] * 1_000}), "max_filter_nodes"),
        (
            lambda c: c.get(
                "/v2/samples", headers=ADMIN, params=q(*[("user_id", "eq", "u")] * 600)
            ),
            "max_conditions",
        ),
        (
            lambda c: c.get(
                "/v2/meters/cpu/statistics",
                headers=ADMIN,
                params={"groupby": [f"metadata.k{i}" for i in range(2_000)]},
            ),
            "max_groupby",
        ),
        (lambda c: post(c, [plain()] * 1_001), "max_posted_samples"),
    ],
)
def test_wide_requests_are_refused_quickly(
    writable: TestClient, request_of: Any, setting: str
) -> None:
    began = time.monotonic()
    assert setting in fault(request_of(writable), 400)
    assert time.monotonic() - began < 2


def test_requests_at_the_limits_are_answered(writable: TestClient) -> None:
    post(writable, [plain(resource_metadata={f"k{i}": i for i in range(16)})])
    ok(writable, "/v2/samples", params=q(*[(f"metadata.k{i}", "eq", "1") for i in range(64)]))
    groupby = [f"metadata.k{i}" for i in range(16)]
    assert len(ok(writable, "/v2/meters/cpu/statistics", params={"groupby": groupby})) == 1
    wide = {"or": [{"=": {"metadata.k1": i}} for i in range(255)]}
    assert complex_query(writable, wide).status_code == 200
    assert complex_query(writable, {"in": {"metadata.k1": list(range(100))}}).status_code == 200


@pytest.fixture(params=["sqlite", "postgresql"])
def at_the_ceilings(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TestClient]:
    """A client over a fresh, empty store of each kind, its limits as high as they go."""
    ceilings = {
        "max_conditions": MAX_SQL_TERMS // 2,
        "max_groupby": 64,
        "max_filter_nodes": MAX_SQL_TERMS,
        "max_in_values": MAX_SQL_TERMS,
    }
    with contextlib.ExitStack() as stack:
        settings = make_settings(tmp_path, limits=ceilings)
        if request.param == "postgresql":
            url = stack.enter_context(fresh_postgresql_database("nephoscope_limits"))
            settings = settings.model_copy(
                update={"store": settings.store.model_copy(update={"url": url})}
            )
        store = open_store(settings.store)
        stack.callback(store.close)
        client = stack.enter_context(TestClient(create_app(settings, store)))
        client.store = store  # type: ignore[attr-defined]
        yield client


def test_the_highest_limits_still_answer_on_every_store(at_the_ceilings: TestClient) -> None:
    client = at_the_ceilings
    post(client, [plain(resource_metadata={f"k{i}": i for i in range(64)})])
    terms = MAX_SQL_TERMS
    many = q(*[(f"metadata.k{i % 64}", "eq", str(i % 64)) for i in range(terms // 2)])
    assert len(ok(client, "/v2/samples", params=many)) == 1
    groupby = [f"metadata.k{i}" for i in range(64)]
    assert len(ok(client, "/v2/meters/cpu/statistics", params={"groupby": groupby})) == 1
    wide = {"or": [{"=": {"metadata.k1": i}} for i in range(terms - 1)]}
    assert len(complex_query(client, wide).json()) == 1
    deep_and = {"and": [{"!=": {"metadata.k1": -i}} for i in range(1, terms)]}
    assert len(complex_query(client, deep_and).json()) == 1
    assert len(complex_query(client, {"in": {"metadata.k1": list(range(terms))}}).json()) == 1


@pytest.mark.parametrize(
    "params",
    [
        q(("resource_id", "eq", "9" * 5_000)),
        q(("metadata.n", "eq", "9" * 5_000)),
        q(("metadata.n", "eq", "9" * 500)),
        q(("timestamp", "ge", "0001-01-01T00:00:00+14:00")),
        q(("timestamp", "lt", "9999-12-31T23:59:59.999999-14:00")),
        # A lone surrogate, as its (not UTF-8) bytes.
        "q.field=metadata.s&q.value=%ED%A0%80",
        "q.field=resource_id&q.value=%ED%A0%80",
    ],
)
def test_edge_query_values_are_never_500(writable: TestClient, params: Any) -> None:
    for path in ("/v2/samples", "/v2/meters/cpu", "/v2/resources", "/v2/meters/cpu/statistics"):
        if isinstance(params, str):
            response = writable.get(f"{path}?{params}", headers=ADMIN)
        else:
            response = writable.get(path, headers=ADMIN, params=params)
        assert response.status_code in (200, 400), response.text


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("0001-01-01T00:00:00+14:00", None),
        ("2026-01-01T00:00:00", "9999-12-31T23:59:59.999999-14:00"),
    ],
)
def test_usage_at_the_calendar_edges(writable: TestClient, start: str, end: str | None) -> None:
    params = {"start": start, **({"end": end} if end else {})}
    assert writable.get("/v2/usage", headers=ADMIN, params=params).status_code == 200


@pytest.mark.parametrize(
    "extra",
    [{"limit": True}, {"limit": 5.0}, {"limit": "5.5"}, {"limit": "five"}, {"limit": [5]}],
)
def test_complex_query_limit_is_an_integer(writable: TestClient, extra: dict[str, Any]) -> None:
    fault(complex_query(writable, {"=": {"resource_id": "r"}}, **extra), 400)


def test_complex_query_limit_as_python_ceilometerclient_sends_it(writable: TestClient) -> None:
    post(writable, [plain(message_id=f"m{i}") for i in range(3)])
    response = complex_query(writable, {"=": {"resource_id": "r1"}}, limit="2")
    assert response.status_code == 200 and len(response.json()) == 2


def test_complex_query_edge_times(writable: TestClient) -> None:
    for moment in ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59.999999-14:00"):
        assert complex_query(writable, {">": {"timestamp": moment}}).status_code == 200


# -- 5. errors and links ---------------------------------------------------------------------


def test_an_unexpected_error_logs_a_bounded_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = make_settings(tmp_path)
    store = open_store(settings.store)

    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("SELECT " + "?, " * 1_000_000)

    store.samples = broken  # type: ignore[method-assign]
    with TestClient(create_app(settings, store), raise_server_exceptions=False) as client:
        with caplog.at_level(logging.ERROR):
            response = client.get("/v2/samples", headers=ADMIN)
        assert "RuntimeError" in fault(response, 500)
    store.close()
    (record,) = [r for r in caplog.records if "unexpected error" in r.getMessage()]
    assert len(record.getMessage()) < 10_000


def test_links_never_come_from_the_host_header(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    store = open_store(settings.store)
    store.write_batch([sample("l1", 0, 1)])
    evil = {**ADMIN, "Host": "evil.example.com"}
    with TestClient(create_app(settings, store)) as client:
        (resource,) = client.get("/v2/resources", headers=evil).json()
        assert all(link["href"].startswith("/v2/") for link in resource["links"])
    public = make_settings(tmp_path, public_url="https://metering.example.org/")
    with TestClient(create_app(public, store)) as client:
        resource = client.get("/v2/resources/vm1", headers=evil).json()
        assert resource["links"][0]["href"] == "https://metering.example.org/v2/resources/vm1"
    store.close()


def test_like_is_bounded(writable: TestClient) -> None:
    like = {"like": {"resource_metadata.s": "%a%"}}
    assert complex_query(writable, {"or": [like] * 4}).status_code == 200
    assert "like" in fault(complex_query(writable, {"or": [like] * 5}), 400)
    too_long = {"like": {"resource_metadata.s": "%" + "a" * 128}}
    assert "like" in fault(complex_query(writable, too_long), 400)


#: A statement of about half a second on each database.
SLOW = {
    "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 2000000) "
    "SELECT count(*) FROM c",
    "postgresql": "SELECT pg_sleep(0.5)",
}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_reads_stop_at_the_read_timeout_and_writes_do_not(kind: str, tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        url = f"sqlite:///{tmp_path / 'timeout.db'}"
        if kind == "postgresql":
            url = stack.enter_context(fresh_postgresql_database("nephoscope_timeout"))
        store = open_store(StoreSettings(url=url, read_timeout=0.1))
        stack.callback(store.close)
        began = time.monotonic()
        with pytest.raises(OperationalError) as stopped, store.engine.connect() as conn:
            conn.exec_driver_sql(SLOW[kind]).all()
        assert read_timed_out(stopped.value) and time.monotonic() - began < 0.4
        with store._writer.begin() as conn:  # a write transaction: never cut short
            conn.exec_driver_sql(SLOW[kind]).all()
        with store.engine.connect() as conn:  # the connection reads on as usual
            assert conn.exec_driver_sql("SELECT 1").scalar() == 1


def test_a_stopped_read_is_a_400(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path)
    store_settings = settings.store.model_copy(update={"read_timeout": 0.1})
    store = open_store(store_settings)

    def slow(*_args: Any, **_kwargs: Any) -> Any:
        with store.engine.connect() as conn:
            return conn.exec_driver_sql(SLOW["sqlite"]).all()

    monkeypatch.setattr(store, "samples", slow)
    try:
        with TestClient(create_app(settings, store)) as client:
            assert "read_timeout" in fault(client.get("/v2/samples", headers=ADMIN), 400)
    finally:
        store.close()
