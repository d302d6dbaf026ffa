"""Rollups on PostgreSQL: the planner equals a raw scan, and racing writers count once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support import Threads
from tests.unit.storage.rollup_checks import (
    BASE,
    TEST_POLICY,
    asks,
    check_history,
    counter,
    histories,
)

from nephoscope.config import StoreSettings
from nephoscope.counter import Counter
from nephoscope.storage import open_store, sql
from nephoscope.storage.base import SampleFilter
from nephoscope.storage.sql import SQLStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(postgresql_url: str) -> Iterator[SQLStore]:
    opened = open_store(StoreSettings(url=postgresql_url, archive_policy=TEST_POLICY))
    assert isinstance(opened, SQLStore)
    yield opened
    opened.close()


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_statistics_from_rollups_equal_a_raw_scan(store: SQLStore, data: st.DataObject) -> None:
    history = data.draw(histories())
    check_history(store, history, data.draw(asks(history.meter)))


def test_two_writers_racing_on_the_same_buckets_count_each_sample_once(
    store: SQLStore, postgresql_url: str
) -> None:
    other = open_store(StoreSettings(url=postgresql_url, archive_policy=TEST_POLICY))
    samples = [
        counter(1.0, BASE + timedelta(seconds=i % 600), resource=f"r{i % 20}")
        for i in range(20_000)
    ]
    batches = [samples[i : i + 1000] for i in range(0, len(samples), 1000)]
    errors: list[BaseException] = []

    def write(writer: SQLStore, order: list[list[Counter]]) -> None:
        try:
            for batch in order:
                writer.write_batch(batch)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    # Both write every batch (as two collectors given one redelivered stream), in
    # opposite orders, so they contend for the same rollup rows throughout.
    try:
        with Threads(timeout=120) as threads:
            threads.start(write, store, batches)
            threads.start(write, other, batches[::-1])
    finally:
        other.close()
    assert not errors
    query = SampleFilter(meter="cpu", since=BASE, until=BASE + timedelta(hours=1))
    stats = store.statistics(query, 3600)
    assert [(s.count, s.sum) for s in stats] == [(20_000, 20_000.0)]
    assert store.statistics(query, 3600, rollups=False)[0].count == 20_000


def test_statistics_read_rollups_from_the_key_index_alone(
    store: SQLStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = [
        counter(float(i), BASE + timedelta(minutes=5 * i), resource=f"r{i % 4}") for i in range(400)
    ]
    store.write_batch(samples)
    reads: list[tuple[str, Any]] = []
    fetch = sql._fetch_numbers

    def spy(conn: sa.Connection, stmt: sa.Select[Any], values: Any = None) -> list[Any]:
        compiled = stmt.compile(dialect=conn.dialect)
        reads.append((str(compiled), compiled.construct_params(values)))
        return fetch(conn, stmt, values)

    monkeypatch.setattr(sql, "_fetch_numbers", spy)
    query = SampleFilter(meter="cpu", since=BASE, until=BASE + timedelta(hours=30))
    stats = store.statistics(query, 3600, ["resource_id"])
    assert len(stats) == 4 * 30 and reads
    with store.engine.connect() as conn:
        conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM rollups")
    with store.engine.begin() as conn:
        # On a table this small the planner would rather scan it; make it say whether
        # the index alone could answer.
        conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
        conn.exec_driver_sql("SET LOCAL enable_bitmapscan = off")
        for statement, parameters in reads:
            plan = "\n".join(
                row[0] for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters)
            )
            assert "Index Only Scan using pk_rollups" in plan, plan


def test_statistics_read_one_snapshot(store: SQLStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.write_batch(
        [counter(1.0, BASE + timedelta(minutes=i), resource="r0") for i in range(120)]
    )
    levels: list[str] = []
    fetch = sql._fetch_numbers

    def spy(conn: sa.Connection, stmt: sa.Select[Any], values: Any = None) -> list[Any]:
        levels.append(conn.exec_driver_sql("SHOW transaction_isolation").scalar_one())
        return fetch(conn, stmt, values)

    monkeypatch.setattr(sql, "_fetch_numbers", spy)
    query = SampleFilter(meter="cpu", since=BASE, until=BASE + timedelta(hours=2))
    assert [s.count for s in store.statistics(query, 3600)] == [60, 60]
    # A batch committed between two of the plan's reads cannot be half seen.
    assert levels == ["repeatable read"]


def test_binary_reads_raise_sqlalchemy_errors(store: SQLStore) -> None:
    missing = sa.table("no_such_table", sa.column("x"))
    with store.engine.connect() as conn, pytest.raises(sa.exc.ProgrammingError):
        sql._fetch_numbers(conn, sa.select(missing.c.x))


def test_an_upgrade_waits_for_batches_in_flight_and_rolls_up_their_samples(
    postgresql_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hours = {"default": [{"granularity": "1h"}]}
    minutes_too = {"default": [{"granularity": "1m"}, {"granularity": "1h"}]}
    writer = open_store(StoreSettings(url=postgresql_url, archive_policy=hours))
    later = open_store(StoreSettings(url=postgresql_url, archive_policy=hours))
    assert isinstance(writer, SQLStore) and isinstance(later, SQLStore)
    samples = [counter(float(i), BASE + timedelta(minutes=i)) for i in range(180)]
    writer.write_batch(samples[:60])
    # The writer's next batch stops after it has stored its samples and read which
    # levels its meter keeps (hours only), before it commits.
    read_levels, go_on = threading.Event(), threading.Event()
    levels_of = SQLStore._meter_granularities

    def paused(self: SQLStore, conn: sa.Connection, names: set[str]) -> Any:
        found = levels_of(self, conn, names)
        if self is writer and not read_levels.is_set():
            read_levels.set()
            go_on.wait(30)
        return found

    monkeypatch.setattr(SQLStore, "_meter_granularities", paused)
    failures: list[BaseException] = []
    upgraded: list[SQLStore] = []

    def run(call: Any, *args: Any) -> None:
        try:
            call(*args)
        except BaseException as exc:  # pragma: no cover - reported below
            failures.append(exc)

    def upgrade() -> None:
        store = open_store(StoreSettings(url=postgresql_url, archive_policy=minutes_too))
        assert isinstance(store, SQLStore)
        upgraded.append(store)

    waiting_for_the_lock = sa.text(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND classid = :high AND objid = :low"
    ).bindparams(high=sql._POLICY_LOCK >> 32, low=sql._POLICY_LOCK & 0xFFFFFFFF)

    def until(waiters: int, thread: threading.Thread) -> None:
        """Until ``waiters`` wait for the policy lock, or ``thread`` has ended."""
        with writer.engine.connect() as conn:
            while thread.is_alive() and conn.execute(waiting_for_the_lock).scalar_one() < waiters:
                thread.join(0.05)
                conn.rollback()

    # Leaving the block lets the writer's batch go on (go_on), and every writer must
    # end within 60 s.
    with Threads(timeout=60) as threads:
        threads.start(run, writer.write_batch, samples[60:120], stop=go_on, name="in-flight")
        assert read_levels.wait(30)
        # Another process upgrades to a policy that adds minutes, while that batch is in
        # flight; a third batch starts while the upgrade waits.
        until(1, threads.start(run, upgrade, name="upgrading"))
        until(2, threads.start(run, later.write_batch, samples[120:], name="after"))
    assert not failures, failures
    query = SampleFilter(meter="cpu", since=BASE, until=BASE + timedelta(hours=3))
    by_minute = upgraded[0].statistics(query, 60)
    # The batch in flight counts in the minutes too, built after it committed; the
    # batch after the upgrade wrote its minutes itself.
    assert [(s.count, s.sum) for s in by_minute] == [(1, float(i)) for i in range(180)]
    assert by_minute == upgraded[0].statistics(query, 60, rollups=False)
    for store in (writer, later, upgraded[0]):
        store.close()
