"""Rollups: kept exact at ingest, chosen by the planner, equal to a raw scan, expired by policy."""

from __future__ import annotations

import dataclasses
import itertools
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.storage.rollup_checks import (
    BASE,
    TEST_POLICY,
    History,
    asks,
    check_history,
    counter,
    histories,
    shuffled,
)

from nephoscope.config import StoreSettings
from nephoscope.storage import open_store, schema
from nephoscope.storage.base import SampleFilter
from nephoscope.storage.rollups import Plan, accumulate, derivations, merge, plan
from nephoscope.storage.sql import SQLStore

US = 1_000_000
HOUR = 3600 * US
DAY = 24 * HOUR


def make_store(path: Path, policy: dict[str, Any] | None = None, **store: Any) -> SQLStore:
    settings = StoreSettings(
        url=f"sqlite:///{path}", archive_policy=TEST_POLICY if policy is None else policy, **store
    )
    opened = open_store(settings)
    assert isinstance(opened, SQLStore)
    return opened


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLStore]:
    opened = make_store(tmp_path / "rollups.db")
    yield opened
    opened.close()


def rollup_rows(store: SQLStore, granularity: int) -> list[tuple[Any, ...]]:
    """The rollups of ``granularity``, once the staged rows are moved in."""
    table = schema.rollups.c
    with store.engine.begin() as conn:
        store._move_staged(conn)
        return [
            tuple(row)
            for row in conn.execute(
                sa.select(
                    table.bucket,
                    table.n,
                    table.total,
                    table.low,
                    table.high,
                    table.squares,
                    table.first_value,
                    table.last_value,
                )
                .where(table.granularity == granularity)
                .order_by(table.series_id, table.bucket)
            )
        ]


# -- the plan --------------------------------------------------------------------------


LEVELS = [(60, DAY), (3600, 90 * DAY), (86400, None)]
NOW = 1000 * DAY


def test_plan_takes_the_coarsest_level_that_tiles_the_periods() -> None:
    since, until = 970 * DAY, 1000 * DAY
    assert plan(LEVELS, since, until, since, 3600, NOW) == Plan(((3600, since, until),), ())
    # A daily period could come from days, but hourly periods cannot.
    assert plan(LEVELS, since, until, since, 86400, NOW).pieces == ((86400, since, until),)


def test_plan_reads_raw_samples_at_unaligned_edges_and_finer_levels_between() -> None:
    since, until = 999 * DAY + 30 * US, 999 * DAY + 5 * HOUR + 90 * US + 60 * US * 61
    got = plan(LEVELS, since, until, since, None, NOW)
    # Hours in the middle, minutes (kept a day) toward the ends, raw at the very edges.
    assert got.pieces[0] == (3600, 999 * DAY + HOUR, 999 * DAY + 6 * HOUR)
    assert (60, 999 * DAY + 60 * US, 999 * DAY + HOUR) in got.pieces
    assert (since, 999 * DAY + 60 * US) in got.raw
    covered = sorted([(low, high) for _, low, high in got.pieces] + list(got.raw))
    assert covered[0][0] == since and covered[-1][1] == until
    assert all(a[1] == b[0] for a, b in itertools.pairwise(covered))


def test_plan_never_reads_rollups_expiry_may_have_touched() -> None:
    since = 900 * DAY
    got = plan(LEVELS, since, NOW, since, 60, NOW)
    # Minutes are kept a day: the 99 days before come from raw samples.
    assert got.pieces == ((60, NOW - DAY, NOW),)
    assert got.raw == ((since, NOW - DAY),)


def test_plan_falls_back_to_raw_when_no_level_fits_the_period() -> None:
    assert plan(LEVELS, 0, DAY, 0, 90, NOW) == Plan((), ((0, DAY),))
    # A start off every grid (Ceilometer starts periods at the first sample).
    assert plan(LEVELS, None, None, 17 * US, 3600, NOW).pieces == ()


def test_accumulate_and_merge_agree_on_first_and_last() -> None:
    rows = accumulate(
        [1, 1, 1, 2], [10 * US, 70 * US, 5 * US, 5 * US], [5.0, 7.0, 1.0, 4.0], [((60, None),)] * 4
    )
    by_key = {row[:3]: list(row[3:]) for row in rows}
    assert by_key[(1, 60, 0)] == [2, 6.0, 1.0, 5.0, 26.0, 5 * US, 1.0, 10 * US, 5.0]
    assert by_key[(1, 60, 60 * US)] == [1, 7.0, 7.0, 7.0, 49.0, 70 * US, 7.0, 70 * US, 7.0]
    assert by_key[(2, 60, 0)] == [1, 4.0, 4.0, 4.0, 16.0, 5 * US, 4.0, 5 * US, 4.0]
    whole = by_key[(1, 60, 0)]
    merge(whole, [1, 3.0, 3.0, 3.0, 9.0, 10 * US, 3.0, 10 * US, 3.0])
    # Equal times: the first stays, the later arrival becomes the last.
    assert whole == [3, 9.0, 1.0, 5.0, 35.0, 5 * US, 1.0, 10 * US, 3.0]


def test_accumulate_keeps_each_meters_own_levels() -> None:
    rows = accumulate([1, 2], [0, 0], [1.0, 2.0], [((60, None), (3600, None)), ((86400, None),)])
    assert sorted(row[:3] for row in rows) == [(1, 60, 0), (1, 3600, 0), (2, 86400, 0)]


def test_accumulate_skips_buckets_expiry_would_delete() -> None:
    rows = accumulate([1, 1], [0, 120 * US], [1.0, 2.0], [((60, 100 * US), (3600, None))] * 2)
    assert sorted(row[:4] for row in rows) == [(1, 60, 120 * US, 1), (1, 3600, 0, 2)]


def test_accumulate_keeps_arrival_order_among_equal_times() -> None:
    rows = accumulate([1, 1, 1], [5 * US, 5 * US, 5 * US], [2.0, 9.0, 4.0], [((60, None),)] * 3)
    # As merge() in arrival order: the first arrival is the first, the last the last.
    assert [row[8:] for row in rows] == [(5 * US, 2.0, 5 * US, 4.0)]


def test_accumulate_floors_times_before_the_epoch() -> None:
    rows = accumulate([1, 1], [-30 * US, 30 * US], [1.0, 2.0], [((60, None),)] * 2)
    assert sorted(row[2] for row in rows) == [-60 * US, 0]


def test_coarse_levels_derive_from_the_coarsest_finer_level_but_the_finest() -> None:
    assert derivations([60, 3600, 86400]) == {86400: 3600}
    # Chains end at a written level; a level no finer one divides is written.
    assert derivations([60, 3600, 86400, 604800, 5000]) == {86400: 3600, 604800: 3600}
    assert derivations([60, 420, 600, 3600]) == {3600: 600}
    assert derivations([3600, 86400]) == {} and derivations([]) == {}


# -- ingest ------------------------------------------------------------------------------


def test_duplicates_never_count_twice(store: SQLStore) -> None:
    first = [counter(float(i), BASE + timedelta(seconds=10 * i)) for i in range(12)]
    store.write_batch(first)
    before = rollup_rows(store, 60)
    # A redelivery, then the same again beside new samples: only the new ones count.
    assert store.write_batch(first).stored == 0
    assert rollup_rows(store, 60) == before
    extra = [counter(100.0, BASE + timedelta(seconds=5))]
    assert store.write_batch(first[:5] + extra + first[5:]).stored == 1
    rows = rollup_rows(store, 60)
    assert rows[0][1] == 7  # 6 samples in the first minute, and the new one
    assert rows[0][2] == sum(range(6)) + 100.0
    assert sum(row[1] for row in rollup_rows(store, 3600)) == 13


def test_late_samples_update_the_right_buckets(store: SQLStore) -> None:
    # Every other batch moves staged rows: later ones merge with moved ones.
    store.rollup_move_every = 2
    store.write_batch([counter(5.0, BASE + timedelta(minutes=30))])
    store.write_batch([counter(1.0, BASE + timedelta(minutes=29, seconds=59))])
    store.write_batch([counter(9.0, BASE + timedelta(minutes=30, seconds=1))])
    store.write_batch([counter(2.0, BASE + timedelta(minutes=30))])  # same time as the first
    minutes = rollup_rows(store, 60)
    assert [row[:2] for row in minutes] == [
        ((BASE - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) + 29 * 60 * US, 1),
        ((BASE - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) + 30 * 60 * US, 3),
    ]
    _, n, total, low, high, squares, first_value, last_value = minutes[1]
    assert (n, total, low, high, squares) == (3, 16.0, 2.0, 9.0, 110.0)
    assert (first_value, last_value) == (5.0, 9.0)
    hour = rollup_rows(store, 3600)
    assert hour[0][1:] == (4, 17.0, 1.0, 9.0, 111.0, 1.0, 9.0)


# -- the planner against a raw scan -------------------------------------------------------


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_statistics_from_rollups_equal_a_raw_scan(store: SQLStore, data: st.DataObject) -> None:
    history: History = data.draw(histories())
    check_history(store, history, data.draw(asks(history.meter)))


def test_rollups_answer_a_typical_query_without_raw_samples(store: SQLStore) -> None:
    samples = [
        counter(float(i % 7), BASE + timedelta(minutes=i), resource=f"r{i % 3}")
        for i in range(6 * 60)
    ]
    store.write_batch(shuffled(samples))
    query = SampleFilter(meter="cpu", since=BASE, until=BASE + timedelta(hours=6))
    want = store.statistics(query, 3600, ["resource_id"], rollups=False)
    # Take the raw samples away: what remains can only come from rollups.
    with store.engine.begin() as conn:
        conn.execute(schema.samples.delete())
    got = store.statistics(query, 3600, ["resource_id"])
    assert [(s.count, s.sum, s.min, s.max, dict(s.groupby)) for s in got] == [
        (s.count, s.sum, s.min, s.max, dict(s.groupby)) for s in want
    ]
    assert len(got) == 18


def rollup_selects(store: SQLStore, ask: Any) -> tuple[Any, list[str]]:
    """What ``ask()`` returns, and the SELECTs it ran on the rollups table."""
    seen: list[str] = []

    def spy(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        # Staged rows are read under a WITH of the buckets they are in.
        if statement.lstrip().startswith(("SELECT", "WITH")) and "FROM rollups" in statement:
            seen.append(statement)

    sa.event.listen(store.engine, "before_cursor_execute", spy)
    try:
        return ask(), seen
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", spy)


def test_buckets_that_are_whole_statistics_are_read_without_grouping(store: SQLStore) -> None:
    samples = [
        counter(float(i % 5), BASE + timedelta(minutes=7 * i), resource=f"r{i % 2}")
        for i in range(60)
    ]
    # A second owner of r0: two series, one group when grouped by resource.
    samples += [
        dataclasses.replace(
            counter(10.0, BASE + timedelta(minutes=30 + 60 * i)), user_id="v", id=str(uuid.uuid4())
        )
        for i in range(3)
    ]
    store.write_batch(shuffled(samples))
    query = SampleFilter(meter="cpu", since=BASE, until=BASE + timedelta(hours=7))

    def ask(groupby: list[str], query: SampleFilter = query) -> Any:
        return lambda: store.statistics(query, 3600, groupby)

    def numbers(stats: list[Any]) -> list[tuple[Any, ...]]:
        return [(s.period_start, dict(s.groupby), s.count, s.sum, s.min, s.max) for s in stats]

    # Each series its own statistic: the hourly rows are the answer, as they lie.
    by_user, selects = rollup_selects(store, ask(["resource_id", "user_id"]))
    assert selects and not any("GROUP BY" in sql for sql in selects)
    assert numbers(by_user) == numbers(
        store.statistics(query, 3600, ["resource_id", "user_id"], rollups=False)
    )
    # r0's two series make one statistic per hour: SQL merges them.
    by_resource, selects = rollup_selects(store, ask(["resource_id"]))
    assert selects and all("GROUP BY" in sql for sql in selects)
    assert numbers(by_resource) == numbers(
        store.statistics(query, 3600, ["resource_id"], rollups=False)
    )
    # Hour 0: u's samples at minutes 0, 14, 28, 42, 56 and v's at 30; then 4 + 1 an hour.
    assert [s.count for s in by_resource if s.groupby["resource_id"] == "r0"][:3] == [6, 5, 5]


def test_metadata_queries_scan_raw_samples(store: SQLStore) -> None:
    store.write_batch([counter(2.0, BASE), counter(3.0, BASE + timedelta(minutes=1))])
    query = SampleFilter(meter="cpu", metadata=(("flavor", "small"),))
    assert [s.sum for s in store.statistics(query)] == [5.0]
    assert [
        s.groupby for s in store.statistics(SampleFilter(meter="cpu"), None, ["metadata.flavor"])
    ] == [{"metadata.flavor": "small"}]


# -- policy changes and expiry --------------------------------------------------------------


def test_a_new_policy_is_applied_by_upgrade_from_raw_samples(tmp_path: Path) -> None:
    path = tmp_path / "policy.db"
    samples = [counter(float(i), BASE + timedelta(minutes=i)) for i in range(180)]
    none = make_store(path, {"default": []})
    none.write_batch(samples)
    assert rollup_rows(none, 3600) == []
    none.close()

    hourly = make_store(path, {"default": [{"granularity": "1h"}]})  # upgrades on open
    assert [row[1] for row in rollup_rows(hourly, 3600)] == [60, 60, 60]
    query = SampleFilter(meter="cpu", since=BASE, until=BASE + timedelta(hours=3))
    assert [s.sum for s in hourly.statistics(query, 3600)] == [
        float(sum(range(h * 60, h * 60 + 60))) for h in range(3)
    ]
    hourly.close()

    # A store that does not upgrade answers from raw samples until it does.
    stale = make_store(path, {"default": [{"granularity": "10m"}]}, auto_upgrade=False)
    assert rollup_rows(stale, 600) == []
    assert [s.count for s in stale.statistics(query, 3600)] == [60, 60, 60]
    stale.upgrade()
    assert len(rollup_rows(stale, 600)) == 18 and rollup_rows(stale, 3600) == []
    stale.close()


def test_raw_samples_expire_while_rollups_stay(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    store = make_store(
        tmp_path / "expire.db",
        {"default": [{"granularity": "1m", "timespan": "1d"}, {"granularity": "1h"}]},
        retention={"default": "2d"},
    )
    old = [counter(1.0, now - timedelta(days=3, minutes=i)) for i in range(30)]
    recent = [counter(2.0, now - timedelta(minutes=5 + i)) for i in range(10)]
    store.write_batch(old + recent)
    assert store.expire(now) == 30
    assert len(rollup_rows(store, 60)) == 10  # the minutes of three days ago are gone
    assert sum(row[1] for row in rollup_rows(store, 3600)) == 40
    start = (now - timedelta(days=4)).replace(minute=0, second=0)
    stats = store.statistics(SampleFilter(meter="cpu", since=start, until=now), 3600)
    assert sum(s.count for s in stats) == 40  # the hours remember what raw samples forgot
    store.close()


# -- staged rollups (SQLite) -----------------------------------------------------------------


def staged_count(store: SQLStore) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(schema.rollups_recent)).scalar_one()
        )


def stored_count(store: SQLStore) -> int:
    with store.engine.connect() as conn:
        return int(
            conn.execute(sa.select(sa.func.count()).select_from(schema.rollups)).scalar_one()
        )


def test_rollups_are_staged_and_moved_every_few_batches(store: SQLStore) -> None:
    store.rollup_move_every = 3
    samples = [counter(float(i % 4), BASE + timedelta(minutes=10 * i)) for i in range(12)]
    query = SampleFilter(meter="cpu", since=BASE, until=BASE + timedelta(hours=2))

    def numbers(rollups: bool) -> list[tuple[Any, ...]]:
        return [
            (s.period_start, s.count, s.sum, s.min, s.max, s.duration_start, s.duration_end)
            for s in store.statistics(query, 3600, rollups=rollups)
        ]

    seen = []
    for batch in range(4):
        store.write_batch(samples[3 * batch : 3 * batch + 3])
        seen.append((stored_count(store) > 0, staged_count(store) > 0))
        # Staged, moved or both: the same answer as the raw samples give.
        assert numbers(True) == numbers(False)
    # Batch ids start at 1: the third batch moved what the first three staged.
    assert seen == [(False, True), (False, True), (True, False), (True, True)]
    # A batch at a move id moves what is staged even when it stores nothing itself.
    store.write_batch(samples[:3])  # a redelivery, batch 5
    store.write_batch(samples[:3])  # batch 6
    assert staged_count(store) == 0 and numbers(True) == numbers(False)


def test_staged_rows_are_looked_up_by_bucket_not_scanned(store: SQLStore) -> None:
    store.rollup_move_every = 1000
    store.write_batch(
        [counter(1.0, BASE + timedelta(minutes=7 * i), resource=f"r{i % 5}") for i in range(100)]
    )
    query = SampleFilter(
        meter="cpu", resource_id="r1", since=BASE, until=BASE + timedelta(hours=12)
    )
    seen: list[tuple[str, Any]] = []

    def spy(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if "FROM rollups_recent" in statement:
            seen.append((statement, parameters))

    sa.event.listen(store.engine, "before_cursor_execute", spy)
    try:
        assert sum(s.count for s in store.statistics(query, 3600)) == 20
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", spy)
    ((statement, parameters),) = seen
    with store.engine.connect() as conn:
        plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters).all()
    details = [row[-1] for row in plan]
    # A staged piece costs a seek per staged bucket and a lookup per asked series in
    # each, however many other series' rows are staged beside them.
    lookup = "SEARCH rollups_recent USING PRIMARY KEY (granularity=? AND bucket=? AND series_id=?)"
    assert lookup in details, details
    assert not any(detail.startswith("SCAN rollups_recent") for detail in details), details


def test_a_policy_change_and_expiry_take_staged_rows_along(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    path = tmp_path / "staged.db"
    policy = {"default": [{"granularity": "1m", "timespan": "1d"}, {"granularity": "1h"}]}
    store = make_store(path, policy)
    store.rollup_move_every = 1000
    store.write_batch([counter(2.0, now - timedelta(minutes=5 + i)) for i in range(40)])
    assert stored_count(store) == 0 and staged_count(store) > 0
    # Two days on, the minutes are past their timespan: expiry moves the staged rows
    # first, then deletes them from rollups (deleting first would leave them staged).
    store.expire(now + timedelta(days=2))
    assert staged_count(store) == 0
    assert rollup_rows(store, 60) == []
    assert sum(row[1] for row in rollup_rows(store, 3600)) == 40
    store.close()

    store = make_store(path, {"default": [{"granularity": "1h"}]})  # drops the minutes
    assert rollup_rows(store, 60) == []
    assert sum(row[1] for row in rollup_rows(store, 3600)) == 40
    store.rollup_move_every = 1000
    store.write_batch([counter(3.0, now - timedelta(minutes=1))])
    store.close()
    store = make_store(path, {"default": [{"granularity": "1h"}, {"granularity": "1d"}]})
    # Rebuilt from raw samples and moved; the staged hour merged with the stored one.
    assert staged_count(store) == 0
    assert sum(row[1] for row in rollup_rows(store, 3600)) == 41
    assert sum(row[1] for row in rollup_rows(store, 86400)) == 41
    store.close()


def test_a_writer_stages_what_the_records_say_after_another_upgrades(tmp_path: Path) -> None:
    path = tmp_path / "two.db"
    levels = [{"granularity": "1m"}, {"granularity": "1h"}, {"granularity": "1d"}]
    first = make_store(path, {"default": levels})
    first.rollup_move_every = 1000
    samples = [counter(1.0, BASE + timedelta(minutes=17 * i)) for i in range(200)]
    first.write_batch(samples[:50])
    # Another process upgrades to a policy without hours: no level derives the day
    # any more, so the first writer must now stage days itself.
    second = make_store(path, {"default": [levels[0], levels[2]]})
    first.write_batch(samples[50:120])
    first.rollup_move_every = 1
    first.write_batch(samples[120:])
    query = SampleFilter(meter="cpu", since=BASE, until=BASE + timedelta(days=3))
    got = second.statistics(query, 86400)
    want = second.statistics(query, 86400, rollups=False)
    assert [(s.count, s.sum) for s in got] == [(s.count, s.sum) for s in want]
    assert sum(row[1] for row in rollup_rows(second, 86400)) == 200
    first.close()
    second.close()


def test_downgrading_past_the_staging_table_keeps_its_rows(store: SQLStore) -> None:
    store.rollup_move_every = 1000
    store.write_batch([counter(float(i), BASE + timedelta(minutes=i)) for i in range(90)])
    store.rollup_move_every = 1
    store.write_batch([counter(100.0, BASE + timedelta(minutes=30, seconds=30))])
    store.rollup_move_every = 1000
    store.write_batch([counter(200.0, BASE + timedelta(minutes=45, seconds=30))])
    assert stored_count(store) > 0 and staged_count(store) > 0
    query = SampleFilter(meter="cpu", since=BASE, until=BASE + timedelta(hours=2))
    want = [(s.count, s.sum) for s in store.statistics(query, 3600, rollups=False)]
    config = store._alembic_config()
    with store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    with store.engine.connect() as conn:
        hours = conn.execute(
            sa.select(schema.rollups.c.n, schema.rollups.c.total)
            .where(schema.rollups.c.granularity == 3600)
            .order_by(schema.rollups.c.bucket)
        ).all()
    assert [tuple(row) for row in hours] == want == [(62, sum(range(60)) + 300.0), (30, 2235.0)]


def test_derived_levels_sum_what_their_source_staged(tmp_path: Path) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    policy = {
        "default": [
            {"granularity": "1m", "timespan": "1d"},
            {"granularity": "1h", "timespan": "2d"},
            {"granularity": "1d"},
        ]
    }
    store = make_store(tmp_path / "derived.db", policy)
    store.rollup_move_every = 1000
    # Four days back: the hours kept two days must still be staged for the days.
    samples = [counter(float(i % 11), now - timedelta(minutes=37 * i)) for i in range(150)]
    store.write_batch(samples[:100])
    with store.engine.connect() as conn:
        staged = set(
            conn.execute(sa.select(schema.rollups_recent.c.granularity).distinct()).scalars()
        )
    assert staged == {60, 3600}  # days are summed up from hours when moved
    start = (now - timedelta(days=5)).replace(hour=0, minute=0, second=0)
    query = SampleFilter(meter="cpu", since=start, until=start + timedelta(days=6))

    def same_as_raw() -> None:
        got = store.statistics(query, 86400)
        want = store.statistics(query, 86400, rollups=False)
        assert [(s.period_start, s.count, s.sum, s.min, s.max) for s in got] == [
            (s.period_start, s.count, s.sum, s.min, s.max) for s in want
        ]

    same_as_raw()  # days from staged hours
    store.rollup_move_every = 1
    store.write_batch(samples[100:120])
    same_as_raw()  # days moved, summed from hours
    store.rollup_move_every = 1000
    store.write_batch(samples[120:])
    same_as_raw()  # both
    days = rollup_rows(store, 86400)
    assert sum(row[1] for row in days) == 150
    # First and last values are the day's first and last samples.
    for bucket, *_, first_value, last_value in days:
        inside = sorted(
            (c.timestamp, c.volume)
            for c in samples
            if bucket
            <= (c.timestamp - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1)
            < bucket + DAY
        )
        assert (first_value, last_value) == (inside[0][1], inside[-1][1])
    store.close()


def test_a_rebuild_writes_derived_levels_once(tmp_path: Path) -> None:
    path = tmp_path / "rebuild.db"
    samples = [counter(1.0, BASE + timedelta(minutes=13 * i)) for i in range(300)]
    none = make_store(path, {"default": []})
    none.write_batch(samples)
    none.close()
    levels = [{"granularity": "1m"}, {"granularity": "1h"}, {"granularity": "1d"}]
    store = make_store(path, {"default": levels})  # builds all three from raw samples
    assert [sum(row[1] for row in rollup_rows(store, g)) for g in (60, 3600, 86400)] == [300] * 3
    store.close()
