"""The real python-ceilometerclient against a live ``nephoscope api``: its commands work and
its parsed output holds what the store holds, for an admin and for a member's token."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.api.live import free_port, running_api, seeded_config

pytestmark = pytest.mark.integration

CEILOMETER = Path(sys.executable).with_name("ceilometer")


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not CEILOMETER.exists() and shutil.which("ceilometer") is None:
        pytest.fail("python-ceilometerclient is not installed (pip install -e '.[test]')")
    path = tmp_path_factory.mktemp("client")
    port = free_port()
    config = seeded_config(path, port, "client-test")
    log = path / "server.log"
    with log.open("wb") as output, running_api(config, port, output):
        yield f"http://127.0.0.1:{port}"


def ceilometer(endpoint: str, token: str, *args: str) -> list[dict[str, str]]:
    """Run the client; return the rows of the table it prints, keyed by its column titles."""
    run = subprocess.run(
        [str(CEILOMETER), "--os-endpoint", endpoint, "--os-token", token, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = [line for line in run.stdout.splitlines() if line.startswith("|")]
    if not lines:
        return []
    split = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    # A show command prints Property/Value pairs; a list command a header then rows.
    if split[0] == ["Property", "Value"]:
        return [{row[0]: row[1] for row in split[1:]}]
    header = split[0]
    return [dict(zip(header, row, strict=True)) for row in split[1:]]


ADMIN, P1 = "admin-token", "p1-token"


def test_meter_list(endpoint: str) -> None:
    meters = ceilometer(endpoint, ADMIN, "meter-list")
    assert [(m["Name"], m["Resource ID"], m["Project ID"]) for m in meters] == [
        ("cpu", "vm1", "p1"),
        ("cpu", "vm2", "p2"),
        ("cpu", "vm3", "p2"),
        ("memory", "vm1", "p1"),
    ]
    assert meters[0]["Type"] == "cumulative" and meters[0]["Unit"] == "ns"
    mine = ceilometer(endpoint, P1, "meter-list")
    assert {m["Project ID"] for m in mine} == {"p1"}


def test_sample_list(endpoint: str) -> None:
    samples = ceilometer(endpoint, ADMIN, "sample-list", "-m", "cpu", "-q", "resource_id=vm1")
    assert [(s["Resource ID"], s["Volume"], s["Timestamp"]) for s in samples] == [
        ("vm1", "40.0", "2026-01-01T12:02:00"),
        ("vm1", "20.0", "2026-01-01T12:01:00"),
        ("vm1", "10.0", "2026-01-01T12:00:00"),
    ]
    assert {s["Resource ID"] for s in ceilometer(endpoint, P1, "sample-list", "-m", "cpu")} == {
        "vm1"
    }
    assert ceilometer(endpoint, P1, "sample-list", "-m", "cpu", "-q", "project_id=p2") == []


def test_statistics_with_a_period(endpoint: str) -> None:
    stats = ceilometer(
        endpoint, ADMIN, "statistics", "-m", "cpu", "-p", "60", "-q", "resource_id=vm1"
    )
    assert [(s["Period"], s["Period Start"], s["Count"], s["Max"]) for s in stats] == [
        ("60", "2026-01-01T12:00:00", "1", "10.0"),
        ("60", "2026-01-01T12:01:00", "1", "20.0"),
        ("60", "2026-01-01T12:02:00", "1", "40.0"),
    ]


def test_statistics_grouped_with_an_aggregate(endpoint: str) -> None:
    stats = ceilometer(endpoint, ADMIN, "statistics", "-m", "cpu", "-g", "project_id", "-a", "avg")
    # The client sorts the rows it prints.
    assert sorted((s["Group By"], float(s["Avg"])) for s in stats) == [
        ("{'project_id': 'p1'}", pytest.approx(70 / 3)),
        ("{'project_id': 'p2'}", pytest.approx(1400 / 3)),
    ]
    (mine,) = ceilometer(endpoint, P1, "statistics", "-m", "cpu", "-g", "project_id", "-a", "avg")
    assert mine["Group By"] == "{'project_id': 'p1'}"
    (cardinality,) = ceilometer(
        endpoint, ADMIN, "statistics", "-m", "cpu", "-a", "cardinality<-resource_id", "-a", "max"
    )
    assert (cardinality["cardinality/resource_id"], cardinality["Max"]) == ("3.0", "1000.0")


def test_resource_list_and_show(endpoint: str) -> None:
    resources = ceilometer(endpoint, ADMIN, "resource-list")
    assert [(r["Resource ID"], r["Project ID"]) for r in resources] == [
        ("vm1", "p1"),
        ("vm2", "p2"),
        ("vm3", "p2"),
    ]
    assert [r["Resource ID"] for r in ceilometer(endpoint, P1, "resource-list")] == ["vm1"]
    (shown,) = ceilometer(endpoint, ADMIN, "resource-show", "vm3")
    assert shown["project_id"] == "p2" and json.loads(shown["metadata"])["name"] == "db"


def test_query_samples(endpoint: str) -> None:
    found = ceilometer(
        endpoint,
        ADMIN,
        "query-samples",
        "-f",
        json.dumps({"and": [{"=": {"meter": "cpu"}}, {">=": {"volume": 20}}]}),
        "-o",
        json.dumps([{"volume": "desc"}]),
        "-l",
        "3",
    )
    assert [(s["ID"], s["Volume"]) for s in found] == [
        ("c1", "1000.0"),
        ("b2", "300.0"),
        ("b1", "100.0"),
    ]
    mine = ceilometer(endpoint, P1, "query-samples", "-f", '{"=": {"meter": "cpu"}}')
    assert {s["Resource ID"] for s in mine} == {"vm1"}


def test_sample_create_and_errors(endpoint: str) -> None:
    (created,) = ceilometer(
        endpoint,
        ADMIN,
        "sample-create",
        "-r",
        "vm9",
        "-m",
        "cpu",
        "--meter-type",
        "cumulative",
        "--meter-unit",
        "ns",
        "--sample-volume",
        "7",
        "--project-id",
        "p9",
    )
    assert created["resource_id"] == "vm9" and created["project_id"] == "p9"
    (stored,) = ceilometer(endpoint, ADMIN, "sample-list", "-m", "cpu", "-q", "resource_id=vm9")
    assert stored["Volume"] == "7.0"
    refused = subprocess.run(
        [str(CEILOMETER), "--os-endpoint", endpoint, "--os-token", "forged", "meter-list"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0
