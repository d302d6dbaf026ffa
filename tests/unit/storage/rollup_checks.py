"""Checks that statistics from rollups equal a raw scan; shared by SQLite and PostgreSQL tests."""

from __future__ import annotations

import itertools
import math
import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import strategies as st

from nephoscope.counter import Counter
from nephoscope.storage.base import SampleFilter, Statistic
from nephoscope.storage.sql import ROLLUP_MOVE_EVERY, SQLStore

#: Levels the property tests keep: fine, middle, coarse, and one that aligns with nothing
#: the others do; all kept for ever, so that "now" plays no part.
TEST_POLICY: dict[str, Any] = {
    "default": [
        {"granularity": "60s"},
        {"granularity": "600s"},
        {"granularity": "3600s"},
        {"granularity": "420s"},
    ]
}
BASE = datetime(2026, 3, 1, tzinfo=UTC)
RESOURCES = ("r0", "r1", "r2", "r3")
PROJECTS = {"r0": "p0", "r1": "p0", "r2": "p1", "r3": "p1"}
_names = itertools.count()


@dataclass(frozen=True)
class History:
    meter: str
    counters: list[Counter]
    batches: list[list[Counter]]
    #: SQLStore.rollup_move_every while it is written: staged rows moved mid-history.
    move_every: int


@st.composite
def histories(draw: st.DrawFn) -> History:
    """Samples of one fresh meter over six hours, written out of order and partly twice."""
    meter = f"m{next(_names)}.{uuid.uuid4().hex[:6]}"
    size = draw(st.integers(min_value=1, max_value=60))
    volumes = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
    counters = []
    for _ in range(size):
        resource = draw(st.sampled_from(RESOURCES))
        # Whole minutes sometimes, so samples fall on bucket edges too.
        offset = draw(
            st.one_of(
                st.integers(min_value=0, max_value=6 * 3600 * 10**6),
                st.integers(min_value=0, max_value=6 * 60).map(lambda m: m * 60 * 10**6),
            )
        )
        counters.append(
            Counter(
                name=meter,
                type="gauge",
                unit=draw(st.sampled_from(["B", "B", "KB"])),
                volume=draw(volumes),
                user_id="u",
                project_id=PROJECTS[resource],
                resource_id=resource,
                timestamp=BASE + timedelta(microseconds=offset),
                resource_metadata={},
                source="test",
                id=str(uuid.uuid4()),
            )
        )
    order = draw(st.permutations(counters))
    cuts = sorted(draw(st.lists(st.integers(0, size), max_size=4)))
    batches = [list(order[a:b]) for a, b in itertools.pairwise([0, *cuts, size]) if b > a]
    # Redeliveries: a batch written again, alone or with new samples beside it.
    again = draw(st.lists(st.sampled_from(batches), max_size=2)) if batches else []
    move_every = draw(st.sampled_from([1, 2, 3, ROLLUP_MOVE_EVERY]))
    return History(meter, counters, batches + again, move_every)


def _moment(draw: st.DrawFn) -> datetime | None:
    # Mostly on a grid, as dashboards ask; sometimes anywhere, to test the raw edges.
    choice = draw(
        st.one_of(
            st.none(),
            st.integers(0, 7 * 60).map(lambda m: m * 60 * 10**6),
            st.integers(0, 7 * 6).map(lambda m: m * 600 * 10**6),
            st.integers(0, 7).map(lambda h: h * 3600 * 10**6),
            st.integers(-3600 * 10**6, 7 * 3600 * 10**6),
        )
    )
    return None if choice is None else BASE + timedelta(microseconds=choice)


@dataclass(frozen=True)
class Ask:
    query: SampleFilter
    period: int | None
    groupby: tuple[str, ...]
    aggregates: tuple[tuple[str, str | None], ...]


@st.composite
def asks(draw: st.DrawFn, meter: str) -> Ask:
    since, until = _moment(draw), _moment(draw)
    if since is not None and until is not None and since > until:
        since, until = until, since
    return Ask(
        query=SampleFilter(
            meter=meter,
            since=since,
            until=until,
            resource_id=draw(st.one_of(st.none(), st.sampled_from(RESOURCES))),
            project_id=draw(st.one_of(st.none(), st.just("p0"))),
        ),
        period=draw(
            st.sampled_from([None, None, 45, 60, 120, 600, 1200, 1800, 3600, 7200, 420, 840])
        ),
        groupby=tuple(draw(st.lists(st.sampled_from(["resource_id", "project_id"]), unique=True))),
        # Without cardinality, a period equal to a granularity reads rollup rows as
        # they lie (no SQL grouping); with it, through the grouped path.
        aggregates=draw(
            st.sampled_from(
                [
                    (),
                    (("stddev", None),),
                    (
                        ("stddev", None),
                        ("cardinality", "resource_id"),
                        ("cardinality", "project_id"),
                    ),
                ]
            )
        ),
    )


def assert_same(planned: list[Statistic], raw: list[Statistic], scale: float) -> None:
    """Equal but for the float error of summing in another order."""
    assert len(planned) == len(raw), (planned, raw)
    tolerance = 1e-9 * max(1.0, scale)
    for got, want in zip(planned, raw, strict=True):
        assert (got.unit, got.count, dict(got.groupby)) == (
            want.unit,
            want.count,
            dict(want.groupby),
        )
        assert (got.period, got.period_start, got.period_end) == (
            want.period,
            want.period_start,
            want.period_end,
        )
        assert (got.duration_start, got.duration_end) == (want.duration_start, want.duration_end)
        assert (got.min, got.max) == (want.min, want.max)
        assert math.isclose(got.sum, want.sum, rel_tol=1e-9, abs_tol=tolerance * got.count)
        assert math.isclose(got.avg, want.avg, rel_tol=1e-9, abs_tol=tolerance)
        assert got.aggregate.keys() == want.aggregate.keys()
        for name, value in got.aggregate.items():
            # sqrt(E[x²] - mean²) loses about half the digits when the spread is tiny.
            slack = 1e-4 * max(1.0, scale) if name == "stddev" else tolerance
            assert math.isclose(value, want.aggregate[name], rel_tol=1e-6, abs_tol=slack), name


def check_history(store: SQLStore, history: History, ask: Ask) -> None:
    """Write ``history`` and compare ``ask`` answered by the planner and by a raw scan."""
    store.rollup_move_every = history.move_every
    for batch in history.batches:
        store.write_batch(batch)
    planned = store.statistics(ask.query, ask.period, ask.groupby, ask.aggregates)
    raw = store.statistics(ask.query, ask.period, ask.groupby, ask.aggregates, rollups=False)
    scale = max(abs(c.volume) for c in history.counters)
    assert_same(planned, raw, scale)


def shuffled(counters: list[Counter], seed: int = 3) -> list[Counter]:
    copy = list(counters)
    random.Random(seed).shuffle(copy)
    return copy


def counter(
    volume: float,
    at: datetime,
    *,
    resource: str = "r0",
    meter: str = "cpu",
    message_id: str | None = None,
) -> Counter:
    """A gauge sample (unit B, owner u/p) with a fresh message id unless given."""
    return Counter(
        name=meter,
        type="gauge",
        unit="B",
        volume=volume,
        user_id="u",
        project_id="p",
        resource_id=resource,
        timestamp=at,
        resource_metadata={"flavor": "small"},
        source="test",
        id=message_id or str(uuid.uuid4()),
    )
