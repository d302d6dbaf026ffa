"""Rates and derived meters on SQLite (the shared contract), and what needs no store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.unit.storage.rates_contract import RatesContract
from tests.unit.test_meters_doc import METERS_DOC, read_tables

from nephoscope.storage.base import StoredSample
from nephoscope.storage.derived import DERIVED_METERS, cpu_count
from nephoscope.storage.rates import increase, steps

T0 = datetime(2026, 5, 4, tzinfo=UTC)


class TestSQLiteRates(RatesContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'rates.db'}"


def stored(seconds: float, volume: float, resource: str = "r", name: str = "cpu") -> StoredSample:
    when = T0 + timedelta(seconds=seconds)
    return StoredSample(
        f"{name}-{resource}-{seconds}",
        name,
        "cumulative",
        "ns",
        volume,
        None,
        None,
        resource,
        when,
        when,
        {},
        "s",
    )


def test_a_drop_is_a_reset_and_growth_is_never_negative() -> None:
    assert increase(10, 25) == 15
    assert increase(25, 10) == 10
    assert increase(5, -3) == 0
    assert increase(7, 7) == 0


@given(st.lists(st.floats(min_value=-1e12, max_value=1e12, allow_nan=False), max_size=30))
def test_growth_is_never_negative(volumes: list[float]) -> None:
    made = list(steps(stored(i, v) for i, v in enumerate(volumes)))
    assert len(made) == max(0, len(volumes) - 1)
    assert all(step.delta >= 0 and step.seconds == 1 for step in made)


def test_steps_pair_one_resources_meter_and_skip_a_repeated_instant() -> None:
    ordered = [
        stored(0, 1, "a"),
        stored(10, 4, "a"),
        stored(10, 9, "a"),  # same instant: skipped
        stored(20, 6, "a"),
        stored(30, 100, "b"),  # another resource
        stored(40, 100, "b", name="network.incoming.bytes"),  # another meter
        stored(50, 150, "b", name="network.incoming.bytes"),
    ]
    assert [
        (s.earlier.timestamp.second, s.later.timestamp.second, s.delta) for s in steps(ordered)
    ] == [
        (0, 10, 3),
        (10, 20, 2),
        (40, 50, 50),
    ]


def test_cpu_count_prefers_the_online_vcpus() -> None:
    assert cpu_count({"cpu_number": 3, "vcpus": 2, "flavor": {"vcpus": 1}}) == 3
    assert cpu_count({"vcpus": 2, "flavor": {"vcpus": 1}}) == 2
    assert cpu_count({"flavor": {"vcpus": 4}}) == 4
    assert cpu_count({"vcpus": "2", "cpu_number": 0, "flavor": None}) == 1


def test_meters_doc_lists_exactly_the_derived_meters() -> None:
    rows = read_tables(METERS_DOC, ("name", "unit", "source meter"))
    assert {(r["name"], r["unit"], r["source meter"]) for r in rows} == {
        (m.name, m.unit, m.source) for m in DERIVED_METERS.values()
    }
