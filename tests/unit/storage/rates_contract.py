"""Rates and derived meters on a real store, whose statistics they must line up with.

``RatesContract`` holds the tests; a subclass per database gives ``store_url``
(SQLite in ``test_rates.py``, PostgreSQL in ``tests/integration/storage/``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from nephoscope.config import StoreSettings
from nephoscope.counter import Counter
from nephoscope.storage import open_store
from nephoscope.storage.base import SampleFilter, Statistic, Store
from nephoscope.storage.derived import (
    DERIVED_METERS,
    derive,
    derived_meter,
    derived_samples,
    summarise,
)
from nephoscope.storage.rates import ordered_samples, with_rates

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
G = 10**9


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def cpu(
    seq: str, seconds: float, volume: float, resource: str, metadata: dict[str, Any], **owner: str
) -> Counter:
    return Counter(
        name="cpu",
        type="cumulative",
        unit="ns",
        volume=volume,
        user_id=owner.get("user_id", "u1"),
        project_id=owner.get("project_id", "p1"),
        resource_id=resource,
        timestamp=at(seconds),
        resource_metadata=metadata,
        id=seq,
    )


R1 = {"on": True, "size": 2.0, "flavor": {"name": "m1", "vcpus": 2}}
R2 = {"on": False, "size": 2.5, "flavor": {"name": "m2", "vcpus": 4}}
#: r1 resets at 90 s; r2 is the only one at a 60 s pace; r3 belongs to p2.
SAMPLES = [
    cpu("a0", 0, 0, "r1", R1),
    cpu("a1", 30, 30 * G, "r1", R1),
    cpu("a2", 60, 90 * G, "r1", R1),
    cpu("a3", 90, 10 * G, "r1", R1),
    cpu("a4", 120, 40 * G, "r1", R1),
    cpu("b0", 0, 100 * G, "r2", R2),
    cpu("b1", 60, 700 * G, "r2", R2),
    cpu("c0", 10, 5 * G, "r3", R1, project_id="p2", user_id="u2"),
    cpu("c1", 70, 65 * G, "r3", R1, project_id="p2", user_id="u2"),
]
#: Per period of 60 s from T0, per resource: (growth, seconds) of the pairs ending in it.
PAIRS = {
    (0, "r1"): (30 * G, 30),
    (1, "r1"): (60 * G + 10 * G, 60),
    (2, "r1"): (30 * G, 30),
    (1, "r2"): (600 * G, 60),
    (1, "r3"): (60 * G, 60),
}


def expected_rate(period: int | None, resources: set[str]) -> float | None:
    found = [g / s for (index, r), (g, s) in PAIRS.items() if r in resources and index == period]
    return sum(found) if found else None


def rate_of(stat: Statistic) -> float | None:
    return stat.aggregate.get("rate")


class RatesContract:
    @pytest.fixture
    def store_url(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    def store(self, store_url: str) -> Iterator[Store]:
        store = open_store(StoreSettings(url=store_url))
        store.write_batch(SAMPLES)
        yield store
        store.close()

    def rates(
        self, store: Store, query: SampleFilter, period: int | None, groupby: list[str]
    ) -> list[Statistic]:
        stats = store.statistics(query, period, groupby=groupby)
        return with_rates(stats, ordered_samples(store, query), groupby)

    def test_rate_per_period_summed_over_resources(self, store: Store) -> None:
        query = SampleFilter(meter="cpu", since=T0)
        stats = self.rates(store, query, 60, [])
        assert [(s.period_start, rate_of(s)) for s in stats] == [
            (at(0), pytest.approx(expected_rate(0, {"r1", "r2", "r3"}))),
            (at(60), pytest.approx(expected_rate(1, {"r1", "r2", "r3"}))),
            (at(120), pytest.approx(expected_rate(2, {"r1", "r2", "r3"}))),
        ]
        (whole,) = self.rates(store, SampleFilter(meter="cpu", resource_id="r1"), None, [])
        # Over the whole range, r1's growth over its time: 130 G ns in 120 s.
        assert rate_of(whole) == pytest.approx(130 * G / 120)

    @pytest.mark.parametrize(
        ("groupby", "members"),
        [
            ("resource_id", {"r1": {"r1"}, "r2": {"r2"}, "r3": {"r3"}}),
            ("project_id", {"p1": {"r1", "r2"}, "p2": {"r3"}}),
            ("metadata.flavor.name", {"m1": {"r1", "r3"}, "m2": {"r2"}}),
            # Rendered differently by SQLite and PostgreSQL; matched either way.
            ("metadata.on", {"true": {"r1", "r3"}, "false": {"r2"}}),
            ("metadata.size", {"2": {"r1", "r3"}, "2.5": {"r2"}}),
        ],
    )
    def test_rate_per_groupby_bucket(
        self, store: Store, groupby: str, members: dict[str, set[str]]
    ) -> None:
        stats = self.rates(store, SampleFilter(meter="cpu", since=T0), 60, [groupby])
        assert stats
        for stat in stats:
            shown = str(stat.groupby[groupby])
            key = {"1": "true", "0": "false", "2.0": "2"}.get(shown, shown)
            index = int((stat.period_start - T0).total_seconds()) // 60  # type: ignore[operator]
            assert rate_of(stat) == pytest.approx(expected_rate(index, members[key])), (
                shown,
                index,
            )

    def test_both_samples_of_a_pair_match_the_query(self, store: Store) -> None:
        query = SampleFilter(meter="cpu", since=at(60))
        stats = self.rates(store, query, 60, ["resource_id"])
        found = {(s.groupby["resource_id"], s.period_start): rate_of(s) for s in stats}
        # r1's pair ending at 60 began before the range; r2 and r3 have one sample in it.
        assert found == {
            ("r1", at(60)): pytest.approx(10 * G / 30),
            ("r1", at(120)): pytest.approx(30 * G / 30),
            ("r2", at(60)): None,
            ("r3", at(60)): None,
        }

    def test_cpu_util_from_cpu(self, store: Store) -> None:
        meter = derived_meter(store, SampleFilter(meter="cpu_util"))
        assert meter is DERIVED_METERS["cpu_util"]
        made = derived_samples(store, meter, SampleFilter(meter="cpu_util", project_id="p1"), None)
        # Newest first; flavor.vcpus is 2 for r1 and 4 for r2.
        assert [(s.resource_id, s.timestamp, s.volume) for s in made] == [
            ("r1", at(120), pytest.approx(30 * G / (30 * G * 2) * 100)),
            ("r1", at(90), pytest.approx(10 * G / (30 * G * 2) * 100)),
            ("r2", at(60), pytest.approx(600 * G / (60 * G * 4) * 100)),
            ("r1", at(60), pytest.approx(60 * G / (30 * G * 2) * 100)),
            ("r1", at(30), pytest.approx(30 * G / (30 * G * 2) * 100)),
        ]
        assert {(s.name, s.type, s.unit) for s in made} == {("cpu_util", "gauge", "%")}
        assert made[0].message_id == "a4+cpu_util" and made[0].resource_metadata == R1

    def test_stored_samples_of_a_derived_name_win(self, store: Store) -> None:
        posted = Counter("cpu_util", "gauge", "%", 42, "u1", "p1", "r1", at(5), id="x")
        store.write_batch([posted])
        assert derived_meter(store, SampleFilter(meter="cpu_util")) is None
        # A member of another project still gets the derived meter.
        assert derived_meter(store, SampleFilter(meter="cpu_util", project_id="p2")) is not None

    def test_derived_statistics_follow_the_stores_rules(self, store: Store) -> None:
        gauges = [
            Counter(
                "load",
                "gauge",
                "%",
                float(seconds % 7),
                f"u{seconds % 2}",
                "p1",
                f"r{seconds % 3}",
                at(seconds),
                {"kind": f"k{seconds % 2}"},
                id=f"g{seconds}",
            )
            for seconds in range(0, 600, 13)
        ]
        store.write_batch(gauges)
        query = SampleFilter(meter="load", since=at(30), until=at(500))
        for period in (None, 60, 3600):
            for groupby in ([], ["resource_id"], ["user_id", "metadata.kind"]):
                aggregates = [("stddev", None), ("cardinality", "resource_id"), ("avg", None)]
                stored = store.statistics(query, period, groupby, aggregates)
                ours = summarise(
                    ordered_samples(store, query), query.since, period, groupby, aggregates
                )
                assert len(ours) == len(stored)
                for mine, theirs in zip(ours, stored, strict=True):
                    assert mine.groupby == theirs.groupby
                    assert (mine.count, mine.period_start, mine.period_end) == (
                        theirs.count,
                        theirs.period_start,
                        theirs.period_end,
                    )
                    assert (mine.duration_start, mine.duration_end) == (
                        theirs.duration_start,
                        theirs.duration_end,
                    )
                    for name in ("min", "max", "sum", "avg"):
                        assert getattr(mine, name) == pytest.approx(getattr(theirs, name))
                    assert mine.aggregate == pytest.approx(dict(theirs.aggregate))

    def test_newest_derived_samples_read_few(self, store: Store) -> None:
        # Twelve resources at their own paces over an hour, one reset each, and one
        # new resource seen once, last of all: the newest ``limit`` must be exact.
        counters = []
        for r in range(12):
            pace = 40 + 7 * r
            volume = 0.0
            for n, seconds in enumerate(range(r, 3600, pace)):
                volume = 3.0 * G if n == 20 else volume + (r + 1) * G
                counters.append(cpu(f"s{r}-{n}", 1000 + seconds, volume, f"n{r:02d}", R2))
        counters.append(cpu("new", 1000 + 3600, 5 * G, "new", R2))
        store.write_batch(counters)
        meter = DERIVED_METERS["cpu_util"]
        query = SampleFilter(meter="cpu_util", since=at(1000))
        every = derive(meter, ordered_samples(store, SampleFilter(meter="cpu", since=at(1000))))
        newest = sorted(every, key=lambda s: (s.timestamp, s.message_id), reverse=True)
        for limit in (1, 2, 5, 17, 100, 1000, 5000):
            found = derived_samples(store, meter, query, limit)
            # Samples at one instant may come in another order; which instants, and
            # each sample's value, may not differ.
            assert [s.timestamp for s in found] == [s.timestamp for s in newest[:limit]], limit
            assert all(s in every for s in found)
