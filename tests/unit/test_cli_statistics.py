"""`nephoscope statistics`: groupby, aggregates, rates and derived meters, as the API has them."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.unit import cli_support
from tests.unit.cli_support import store_config

from nephoscope.counter import Counter

T0 = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def cpu(message_id: str, minutes: float, seconds_used: float, resource: str, vcpus: int) -> Counter:
    return Counter(
        name="cpu",
        type="cumulative",
        unit="ns",
        volume=seconds_used * 1e9,
        user_id="u1",
        project_id="p1",
        resource_id=resource,
        timestamp=T0 + timedelta(minutes=minutes),
        resource_metadata={"flavor": {"vcpus": vcpus}},
        source="openstack",
        id=message_id,
    )


def memory(message_id: str, minutes: float, megabytes: float) -> Counter:
    return Counter(
        name="memory.usage",
        type="gauge",
        unit="MB",
        volume=megabytes,
        user_id="u1",
        project_id="p1",
        resource_id="vm1",
        timestamp=T0 + timedelta(minutes=minutes),
        resource_metadata={},
        source="openstack",
        id=message_id,
    )


#: vm1 (2 vCPUs) uses a whole vCPU for a minute, then half of one; vm2 (4 vCPUs)
#: reboots between its samples: its counter restarts, and 30 s is what it grew.
SAMPLES = [
    cpu("a1", 0, 100, "vm1", 2),
    cpu("a2", 1, 160, "vm1", 2),
    cpu("a3", 2, 190, "vm1", 2),
    cpu("b1", 0, 500, "vm2", 4),
    cpu("b2", 1, 30, "vm2", 4),
    memory("m1", 0, 512),
    memory("m2", 1, 1024),
]


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("COLUMNS", "200")  # tables unfolded
    return store_config(tmp_path, monkeypatch, SAMPLES)


def run(config: Path, *args: str) -> tuple[int, str, str]:
    return cli_support.run("statistics", config, *args)


def lines(config: Path, *args: str) -> list[dict[str, Any]]:
    code, stdout, stderr = run(config, *args, "--json")
    assert code == 0, stderr
    return [json.loads(line) for line in stdout.splitlines()]


def test_groupby_and_aggregates(config: Path) -> None:
    found = lines(
        config, "-m", "cpu", "-g", "resource_id", "-a", "stddev", "-a", "cardinality/user_id"
    )
    assert [(s["groupby"], s["count"], s["max"]) for s in found] == [
        ({"resource_id": "vm1"}, 3, 190e9),
        ({"resource_id": "vm2"}, 2, 500e9),
    ]
    assert found[1]["aggregate"] == {"stddev": pytest.approx(235e9), "cardinality/user_id": 1.0}
    code, table, _ = run(config, "-m", "cpu", "-g", "resource_id", "-a", "stddev")
    assert code == 0 and "vm2" in table
    # Two periods' bounds, the group, the five aggregates and the unit, then stddev.
    assert table.splitlines()[1].count("┳") == 10 - 1


def test_rate_counts_a_reset_as_growth_from_zero(config: Path) -> None:
    found = lines(config, "-m", "cpu", "-g", "resource_id", "-a", "rate", "--period", "60")
    rates = {(s["groupby"]["resource_id"], s["period_start"]): s["aggregate"] for s in found}
    minute = (T0 + timedelta(minutes=1)).isoformat()
    assert rates[("vm1", minute)] == {"rate": pytest.approx(1e9)}
    assert rates[("vm2", minute)] == {"rate": pytest.approx(0.5e9)}
    # A resource's first sample only opens its series: no rate in the first minute.
    assert rates[("vm1", T0.isoformat())] == {}
    code, table, _ = run(config, "-m", "cpu", "-a", "rate", "--period", "60")
    assert code == 0 and table.splitlines()[1].count("┳") == 9 - 1
    # The first minute's row: no rate, shown as such in the last column.
    first_row = next(line for line in table.splitlines() if "12:00:00" in line)
    assert first_row.rstrip(" │").endswith("│ -")


def test_derived_meters_are_answered(config: Path) -> None:
    found = lines(config, "-m", "cpu_util", "-g", "resource_id")
    # vm1: 60 s of 120 vCPU-seconds, then 30 of 120; vm2: 30 s (after its reset) of 240.
    assert [(s["groupby"]["resource_id"], s["count"], s["avg"]) for s in found] == [
        ("vm1", 2, pytest.approx(37.5)),
        ("vm2", 1, pytest.approx(12.5)),
    ]
    assert [s["unit"] for s in found] == ["%", "%"]


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["-m", "cpu", "-g", "volume"], "cannot group by 'volume'"),
        (["-m", "cpu_util", "-g", "volume"], "cannot group by 'volume'"),
        (["-m", "cpu", "-a", "median"], "unknown aggregate function 'median'"),
        (["-m", "cpu", "-a", "cardinality/volume"], "cardinality needs a parameter"),
        (["-m", "cpu", "-a", "avg/resource_id"], "only cardinality takes a parameter"),
        (["-m", "cpu", "-a", "avg/"], "only cardinality takes a parameter"),
        (["-m", "cpu", "-a", "rate/"], "only cardinality takes a parameter"),
        (["-m", "cpu", "-a", "cardinality"], "cardinality needs a parameter"),
        (["-m", "cpu", "--period", str(10**12)], "period must be 1 to"),
        (["-m", "cpu_util", "-a", "median"], "unknown aggregate function 'median'"),
        (["-m", "memory.usage", "-a", "rate"], "rate needs a cumulative meter"),
        (["-m", "cpu_util", "-a", "rate"], "rate needs a cumulative meter"),
    ],
)
def test_bad_asks_are_said_plainly(config: Path, args: list[str], said: str) -> None:
    code, stdout, stderr = run(config, *args)
    assert code == 2
    assert said in stderr and "Traceback" not in stdout + stderr
