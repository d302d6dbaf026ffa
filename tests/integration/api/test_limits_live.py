"""A live ``nephoscope api`` under oversized and failing requests: each answered in
Ceilometer's error shape within two seconds, its memory bounded, its log lines short,
and its keep-alive connections kept after a 500."""

from __future__ import annotations

import http.client
import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psutil
import pytest
from tests.integration.api.live import free_port, running_api, seeded_config

pytestmark = pytest.mark.integration

ADMIN = {"X-Auth-Token": "admin-token"}
#: What the server may grow by over all the oversized requests (it held 2.4 GB before).
RSS_GROWTH_LIMIT = 100 * 1024 * 1024


@dataclass
class Server:
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    store: Path

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)

    def rss(self) -> int:
        return int(psutil.Process(self.process.pid).memory_info().rss)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    path = tmp_path_factory.mktemp("limits")
    port = free_port()
    config = seeded_config(path, port, "limits-test")
    log = path / "server.log"
    with log.open("wb") as output, running_api(config, port, output) as process:
        yield Server(port, process, log, path / "store.db")


def leaf(i: int) -> dict[str, Any]:
    return {"=": {"resource_id": f"r{i}"}}


def tree(depth: int, start: int = 0) -> Any:
    if depth == 0:
        return leaf(start)
    half = 2 ** (depth - 1)
    return {("and" if depth % 2 else "or"): [tree(depth - 1, start), tree(depth - 1, start + half)]}


def complex_body(filter_: Any) -> bytes:
    return json.dumps({"filter": json.dumps(filter_)}).encode()


def groupby(count: int) -> str:
    return urlencode([("groupby", f"metadata.k{i}") for i in range(count)])


def conditions(count: int) -> str:
    pairs = [("q.field", "user_id"), ("q.op", "eq"), ("q.value", "u")] * count
    return urlencode(pairs)


#: (method, path, body, headers, expected status) of each oversized request.
OVERSIZED = [
    # An in of 100,000 strings (1.3 MB): 64 s and 2.4 GB before.
    (
        "POST",
        "/v2/query/samples",
        complex_body({"in": {"resource_id": [f"r{i:06}" for i in range(100_000)]}}),
        ADMIN,
        413,
    ),
    (
        "POST",
        "/v2/query/samples",
        complex_body({"in": {"resource_id": [f"r{i}" for i in range(5_000)]}}),
        ADMIN,
        400,
    ),
    # A 16-level and/or tree of 65,536 leaves: 21 s and 2.95 GB before.
    ("POST", "/v2/query/samples", complex_body(tree(16)), ADMIN, 413),
    ("POST", "/v2/query/samples", complex_body(tree(12)), ADMIN, 400),
    ("GET", f"/v2/samples?{conditions(600)}", None, ADMIN, 400),
    ("GET", f"/v2/meters/cpu/statistics?{groupby(2_000)}", None, ADMIN, 400),
    (
        "GET",
        "/v2/samples?" + urlencode({"q.field": "metadata.n", "q.value": "9" * 5_000}),
        None,
        ADMIN,
        400,
    ),
    (
        "POST",
        "/v2/meters/cpu",
        b"[" + b"{}," * 2_000 + b"{}]",
        {**ADMIN, "Content-Type": "application/json"},
        400,
    ),
]


def send(
    server: Server, method: str, path: str, body: bytes | None, headers: dict[str, str]
) -> tuple[int, Any, float]:
    conn = server.connection()
    began = time.monotonic()
    try:
        conn.request(
            method, path, body=body, headers={"Content-Type": "application/json", **headers}
        )
        response = conn.getresponse()
        payload = json.loads(response.read())
    finally:
        conn.close()
    return response.status, payload, time.monotonic() - began


def test_oversized_requests_are_refused_fast_in_bounded_memory(server: Server) -> None:
    before = server.rss()
    for method, path, body, headers, status in OVERSIZED:
        got, payload, seconds = send(server, method, path, body, headers)
        assert got == status, (path[:80], payload)
        assert payload["error_message"]["faultstring"]
        assert seconds < 2, (path[:80], seconds)
    assert server.rss() - before < RSS_GROWTH_LIMIT


def test_an_unauthenticated_body_is_not_read(server: Server) -> None:
    conn = server.connection()
    try:
        # 50 MB announced; the answer comes before they are sent.
        conn.putrequest("POST", "/v2/meters/cpu")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(50 * 1024 * 1024))
        conn.endheaders()
        conn.send(b"[" + b" " * 65_536)
        response = conn.getresponse()
        assert response.status == 401
        assert "X-Auth-Token" in json.loads(response.read())["error_message"]["faultstring"]
    finally:
        conn.close()
    got, payload, _ = send(server, "POST", "/v2/meters/cpu", b"[]" + b" " * (2 << 20), ADMIN)
    assert got == 413 and "max_body_bytes" in payload["error_message"]["faultstring"]


def test_after_a_500_the_connection_stays_open_and_the_log_line_is_short(server: Server) -> None:
    conn = server.connection()
    try:
        conn.request("GET", "/v2/samples", headers=ADMIN)
        response = conn.getresponse()
        assert response.status == 200
        response.read()
        # The store breaks under the server: every read of samples now fails.
        with sqlite3.connect(server.store) as db:
            db.execute("ALTER TABLE series RENAME TO series_gone")
        try:
            wide = urlencode([("q.field", "user_id"), ("q.value", "u" * 1_000)] * 60)
            conn.request("GET", f"/v2/samples?{wide}", headers=ADMIN)
            failed = conn.getresponse()
            body = json.loads(failed.read())
            assert failed.status == 500, body
            assert body["error_message"]["faultcode"] == "Server"
            assert failed.getheader("Connection", "").lower() != "close"
            # The same connection answers the next request.
            conn.request("GET", "/", headers=ADMIN)
            assert conn.getresponse().status == 200
        finally:
            with sqlite3.connect(server.store) as db:
                db.execute("ALTER TABLE series_gone RENAME TO series")
    finally:
        conn.close()
    lines = server.log.read_text(errors="replace").splitlines()
    assert any("unexpected error" in line for line in lines)
    assert max(len(line) for line in lines) < 5_000
