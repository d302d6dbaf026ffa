"""Usage per project on a real store: the constructed history of ``history.py`` and the rules.

``UsageContract`` holds the tests; a subclass per database gives ``store_url``
(SQLite in ``test_usage.py``, PostgreSQL in ``tests/integration/storage/``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import timedelta

import pytest
from tests.unit.storage.history import (
    P1_MIDDLE,
    P1_WHOLE,
    P2_WHOLE,
    at,
    history,
    polled,
    sample,
)

from nephoscope.config import StoreSettings
from nephoscope.storage import open_store
from nephoscope.storage.base import Store
from nephoscope.storage.usage import ProjectUsage, usage


def measures(found: ProjectUsage) -> dict[str, tuple[float, str, int]]:
    return {item.name: (item.volume, item.unit, item.resources) for item in found.items}


def assert_usage(found: ProjectUsage, expected: Mapping[str, tuple[float, str, int]]) -> None:
    got = measures(found)
    assert list(got) == list(expected)
    for name, (volume, unit, resources) in expected.items():
        assert got[name] == (pytest.approx(volume, rel=1e-12, abs=1e-9), unit, resources), name


class UsageContract:
    @pytest.fixture
    def store_url(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    def store(self, store_url: str) -> Iterator[Store]:
        store = open_store(StoreSettings(url=store_url))
        store.write_batch(history())
        yield store
        store.close()

    def test_hand_checked_history(self, store: Store) -> None:
        (p1,) = usage(store, at("10:00"), at("12:00"), "p1")
        assert (p1.project_id, p1.since, p1.until) == ("p1", at("10:00"), at("12:00"))
        assert_usage(p1, P1_WHOLE)
        (middle,) = usage(store, at("10:30"), at("11:30"), "p1")
        assert_usage(middle, P1_MIDDLE)

    def test_every_project_each_its_own(self, store: Store) -> None:
        p1, p2 = usage(store, at("10:00"), at("12:00"))
        assert (p1.project_id, p2.project_id) == ("p1", "p2")
        assert_usage(p1, P1_WHOLE)
        assert_usage(p2, P2_WHOLE)
        (nobody,) = usage(store, at("10:00"), at("12:00"), "p9")
        assert all(item.volume == 0 and item.resources == 0 for item in nobody.items)
        assert usage(store, at("13:00"), at("14:00")) == []

    @pytest.mark.parametrize("split", ["10:20", "10:25", "11:00", "11:42", "11:45", "11:47"])
    def test_adjacent_windows_add_up(self, store: Store, split: str) -> None:
        (before,) = usage(store, at("10:00"), at(split), "p1")
        (after,) = usage(store, at(split), at("12:00"), "p1")
        for name, (volume, _unit, _resources) in P1_WHOLE.items():
            total = measures(before)[name][0] + measures(after)[name][0]
            assert total == pytest.approx(volume), name

    def test_a_short_max_gap_counts_only_short_gaps(self, store: Store) -> None:
        (p1,) = usage(store, at("10:00"), at("12:00"), "p1", max_gap=timedelta(minutes=5))
        got = measures(p1)
        # 10:20:00-10:20:04 (launch to create.end) and 11:40-11:45 (to delete.start):
        # the ten-minute polls are too far apart, and so is every counter pair.
        assert got["instance"][0] == pytest.approx((4 + 300) / 3600)
        assert got["vcpus"][0] == pytest.approx((4 * 1 + 300 * 2) / 3600)
        assert got["cpu"] == (0.0, "s", 0)

    def test_holding_rules(self, store: Store) -> None:
        extra = [
            # p3: vanishes after 10:20 without an end marker: counted to its last sample.
            *(
                s
                for m in ("10:00", "10:10", "10:20")
                for s in polled(at(m), 1, 1024, 10, **p("p3"))
            ),
            # p4: shelved and offloaded from 10:20 to 10:40: nothing held then.
            *polled(at("10:00"), 1, 1024, 10, **p("p4")),
            *polled(at("10:10"), 1, 1024, 10, **p("p4")),
            *polled(at("10:20"), 1, 1024, 10, state="shelved_offloaded", **p("p4")),
            *polled(at("10:30"), 1, 1024, 10, state="shelved_offloaded", **p("p4")),
            *polled(at("10:40"), 1, 1024, 10, **p("p4")),
            *polled(at("10:50"), 1, 1024, 10, **p("p4")),
            # p5: a gap of 2 h 50 min, longer than max_gap: not counted.
            *(
                s
                for m in ("10:00", "10:10", "13:00", "13:10")
                for s in polled(at(m), 1, 1024, 10, **p("p5"))
            ),
            # p6: launched at 10:05, first seen at 10:35: held from launch, at the size first seen.
            sample("instance", 1, at("10:35"), {"launched_at": "2026-03-02T10:05:00Z"}, **p("p6")),
            sample("vcpus", 3, at("10:35"), {}, **p("p6")),
            sample("instance", 1, at("10:45"), {"state": "stopped"}, **p("p6")),
        ]
        store.write_batch(extra)
        found = {u.project_id: measures(u) for u in usage(store, at("09:00"), at("15:00"))}
        assert found["p3"]["instance"][0] == pytest.approx(20 / 60)
        assert found["p4"]["instance"][0] == pytest.approx(30 / 60)
        assert found["p5"]["instance"][0] == pytest.approx(20 / 60)
        assert found["p6"]["instance"][0] == pytest.approx(40 / 60)
        assert found["p6"]["vcpus"][0] == pytest.approx(3 * 40 / 60)
        # Clipped to the window, a state that holds is cut at its edges.
        (clipped,) = usage(store, at("10:15"), at("10:25"), "p3")
        assert measures(clipped)["memory"][0] == pytest.approx(5 / 60)


def p(project: str) -> dict[str, str]:
    return {"resource_id": f"vm-{project}", "project_id": project}
