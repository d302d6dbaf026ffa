"""Behaviours every SQL store shows, whatever the database.

``StoreContract`` holds the tests; a subclass per database gives the ``store_url``
fixture (a fresh, empty database). SQLite runs them in ``test_sql.py``,
PostgreSQL in ``tests/integration/storage/test_sql_postgresql.py``.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support import Threads

from nephoscope.config import StoreSettings
from nephoscope.counter import Counter
from nephoscope.storage import SampleFilter, StoreError, open_store
from nephoscope.storage.base import DeadLetter, WriteResult
from nephoscope.storage.schema import metadata as schema_metadata
from nephoscope.storage.sql import SQLStore, to_micros

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
#: A resource id with samples of two projects (a shared network), and what each says of it.
SHARED = "shared-net-1"
A_METADATA = {"owner_note": "A-note", "name": "net-a"}
B_METADATA = {"owner_note": "B-note", "tenant_secret": "s3cret"}


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def counter(
    name: str = "cpu_util",
    volume: float = 1.0,
    *,
    seconds: float = 0,
    resource_id: str = "r1",
    user_id: str | None = "u1",
    project_id: str | None = "p1",
    source: str = "openstack",
    unit: str = "%",
    kind: str = "gauge",
    metadata: dict[str, Any] | None = None,
    message_id: str | None = None,
    timestamp: datetime | None = None,
) -> Counter:
    return Counter(
        name=name,
        type=kind,  # type: ignore[arg-type]
        unit=unit,
        volume=volume,
        user_id=user_id,
        project_id=project_id,
        resource_id=resource_id,
        timestamp=timestamp if timestamp is not None else at(seconds),
        resource_metadata=metadata if metadata is not None else {"host": "h1"},
        source=source,
        id=message_id if message_id is not None else str(uuid.uuid4()),
    )


@contextmanager
def failing_on(store: SQLStore, statement_start: str) -> Iterator[None]:
    """Make every SQL statement starting with ``statement_start`` raise."""

    def boom(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        if statement.lstrip().upper().startswith(statement_start.upper()):
            raise RuntimeError(f"injected failure on {statement_start}")

    sa.event.listen(store.engine, "before_cursor_execute", boom)
    try:
        yield
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", boom)


def assert_caches_match_database(store: SQLStore) -> None:
    """Every cached id names a committed row holding what the cache says it does."""
    with store.engine.connect() as conn:
        series = {
            row.id: (
                row.name,
                row.type,
                row.unit,
                row.resource_id,
                row.user_id,
                row.project_id,
                row.source,
            )
            for row in conn.execute(sa.text("SELECT * FROM series"))
        }
        bodies = {
            row.id: row.body for row in conn.execute(sa.text("SELECT id, body FROM metadata"))
        }
    for key, row_id in store._series_ids.items():
        assert series.get(row_id) == key
    for body, row_id in store._metadata_ids.items():
        assert bodies.get(row_id) == body.decode()


class StoreContract:
    """The tests; subclasses provide a ``store_url`` fixture."""

    @pytest.fixture
    def store(self, store_url: str) -> Iterator[SQLStore]:
        store = open_store(StoreSettings(url=store_url))
        assert isinstance(store, SQLStore)
        yield store
        store.close()

    @pytest.fixture
    def second_store(self, store: SQLStore, store_url: str) -> Iterator[SQLStore]:
        other = SQLStore(StoreSettings(url=store_url))
        yield other
        other.close()

    # -- writing -------------------------------------------------------------------------

    def test_round_trip_keeps_every_field(self, store: SQLStore) -> None:
        metadata = {"flavor": {"name": "m1.small", "ram": 2048}, "tags": ["a", "b"], "x": None}
        local = datetime(2025, 3, 1, 14, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
        ids = [
            "0f8fad5b-d9cb-469f-a165-70867728950e",
            "00616263-6465-6667-6869-6a6b6c6d6e6f",  # 16 bytes starting with NUL
            "abcdefghijklmno",  # 15 bytes: would encode to 16 with one marker byte
            "0F8FAD5B-D9CB-469F-A165-70867728950E",  # not canonical: kept as text
            "{0f8fad5b-d9cb-469f-a165-70867728950e}",
            "message/7 é",
            "",
        ]
        written = [
            counter(
                "disk.read.bytes",
                12345678901,
                kind="cumulative",
                unit="B",
                user_id=None,
                project_id=None,
                source="hypervisor",
                metadata=metadata,
                message_id=ids[0],
                timestamp=local,
            ),
            *(
                counter(volume=i + 0.25, seconds=i, message_id=mid)
                for i, mid in enumerate(ids[1:], start=1)
            ),
        ]
        before = datetime.now(UTC)
        result = store.write_batch(written)
        after = datetime.now(UTC)
        assert result == WriteResult(stored=len(ids), duplicates=0, dead_letters=0)

        found = {s.message_id: s for s in store.samples(SampleFilter(), limit=None)}
        assert sorted(found) == sorted(ids)
        first = found[ids[0]]
        assert first.name == "disk.read.bytes"
        assert first.type == "cumulative"
        assert first.unit == "B"
        assert first.volume == 12345678901.0
        assert first.user_id is None
        assert first.project_id is None
        assert first.resource_id == "r1"
        assert first.source == "hypervisor"
        assert first.resource_metadata == metadata
        assert first.timestamp == datetime(2025, 3, 1, 12, 30, 15, 123456, tzinfo=UTC)
        assert first.timestamp.utcoffset() == timedelta(0)
        assert before - timedelta(seconds=1) <= first.recorded_at <= after + timedelta(seconds=1)
        for i, mid in enumerate(ids[1:], start=1):
            assert found[mid].volume == i + 0.25
            assert found[mid].timestamp == at(i)

    def test_duplicates_in_batch_and_across_batches_are_counted_exactly(
        self, store: SQLStore
    ) -> None:
        a, b, c = counter(volume=1), counter(volume=2), counter(volume=3)
        assert store.write_batch([a, b, a, a]) == WriteResult(2, 2, 0)
        assert store.write_batch([b, c, c]) == WriteResult(1, 2, 0)
        assert store.write_batch([a, b, c]) == WriteResult(0, 3, 0)
        assert store.write_batch([]) == WriteResult(0, 0, 0)
        stored = store.samples(SampleFilter(), limit=None)
        assert sorted(s.volume for s in stored) == [1.0, 2.0, 3.0]
        assert store.status().samples == 3

    def test_repeated_id_keeps_the_first_sample_of_the_batch(self, store: SQLStore) -> None:
        first = counter(volume=1, message_id="same")
        second = counter(volume=2, message_id="same")
        assert store.write_batch([first, second]) == WriteResult(1, 1, 0)
        assert [s.volume for s in store.samples(SampleFilter())] == [1.0]

    def test_sample_without_id_is_refused_before_anything_is_written(self, store: SQLStore) -> None:
        anonymous = Counter("cpu", "gauge", "%", 1, "u", "p", "r1", T0)
        with pytest.raises(ValueError, match="no message id"):
            store.write_batch([counter(), anonymous])
        assert store.status().samples == 0

    def test_dead_letters_are_stored_with_samples_in_one_transaction(self, store: SQLStore) -> None:
        letters = [
            DeadLetter("bad signature", b'{"counter_name": "cpu"}', at(1), "m-1"),
            DeadLetter("not JSON", b"\x00\xffraw", at(2)),
        ]
        assert store.write_batch([counter()], letters) == WriteResult(1, 0, 2)
        stored = store.dead_letters()
        assert [(d.reason, d.body, d.message_id) for d in stored] == [
            ("not JSON", b"\x00\xffraw", None),
            ("bad signature", b'{"counter_name": "cpu"}', "m-1"),
        ]
        assert stored[0].received_at == at(2)
        assert [d.reason for d in store.dead_letters(limit=1)] == ["not JSON"]

        # A dead letter that cannot be written takes the batch's samples with it.
        with (
            failing_on(store, "INSERT INTO dead_letters"),
            pytest.raises(RuntimeError, match="injected"),
        ):
            store.write_batch([counter(volume=9)], [DeadLetter("x", b"y", at(3))])
        assert store.status().samples == 1
        assert store.status().dead_letters == 2

    def test_dead_letters_alone(self, store: SQLStore) -> None:
        assert store.write_batch([], [DeadLetter("r", b"b", at(0))]) == WriteResult(0, 0, 1)
        assert store.status().dead_letters == 1
        assert store.status().samples == 0

    def test_failed_batch_stores_nothing_and_caches_stay_true(self, store: SQLStore) -> None:
        store.write_batch([counter("known", resource_id="r1")])
        doomed = [
            counter("new.meter", 5, resource_id="r2", metadata={"fresh": True}),
            counter("known", 6, resource_id="r1"),
        ]
        # It fails reading which rollups its meters keep, after writing its series,
        # metadata, samples and resource rows. (On SQLite those rows go straight to
        # the driver's cursor, which no SQLAlchemy event sees.)
        with failing_on(store, "SELECT rollup_meters"), pytest.raises(RuntimeError):
            store.write_batch(doomed)
        assert store.status().samples == 1
        assert store.meters(SampleFilter(meter="new.meter")) == []
        assert_caches_match_database(store)

        # Rows the failed batch created were rolled back: the same batch now creates
        # them anew rather than pointing at ids that do not exist.
        assert store.write_batch(doomed) == WriteResult(2, 0, 0)
        names = {(s.name, s.resource_id, s.volume) for s in store.samples(SampleFilter())}
        assert ("new.meter", "r2", 5.0) in names
        assert store.samples(SampleFilter(meter="new.meter"))[0].resource_metadata == {
            "fresh": True
        }
        assert_caches_match_database(store)

    def test_series_added_by_another_store_are_found(
        self, store: SQLStore, second_store: SQLStore
    ) -> None:
        # The other store knows nothing of these rows; it must find, not duplicate them.
        store.write_batch([counter("m", metadata={"k": 1})])
        second_store.write_batch([counter("m", metadata={"k": 1})])
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM series")).scalar() == 1
            assert conn.execute(sa.text("SELECT count(*) FROM metadata")).scalar() == 1
        assert_caches_match_database(second_store)

    def test_equal_metadata_is_stored_once_whatever_its_key_order(self, store: SQLStore) -> None:
        store.write_batch(
            [
                counter(metadata={"a": 1, "b": {"y": 2, "x": 1}}),
                counter(metadata={"b": {"x": 1, "y": 2}, "a": 1}),
                counter(metadata={"a": 2}),
            ]
        )
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM metadata")).scalar() == 2

    def test_series_with_missing_owner_are_not_duplicated(self, store: SQLStore) -> None:
        store.write_batch([counter(user_id=None, project_id=None)])
        store._series_ids.clear()  # as a fresh collector would start
        store.write_batch([counter(user_id=None, project_id=None)])
        assert len(store.meters(SampleFilter())) == 1

    @settings(
        max_examples=30,
        deadline=None,
        # The store fixture is deliberately shared by the examples (ids keep them
        # apart), and each database's subclass runs this same method.
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.differing_executors,
        ],
    )
    @given(
        batches=st.lists(
            st.lists(st.integers(min_value=0, max_value=30), max_size=40), min_size=1, max_size=5
        )
    )
    def test_stored_count_equals_distinct_ids(
        self, store: SQLStore, batches: list[list[int]]
    ) -> None:
        # One store serves every example; a fresh prefix keeps their ids apart.
        prefix = uuid.uuid4().hex[:8]
        seen: set[int] = set()
        for batch in batches:
            new = set(batch) - seen
            result = store.write_batch(
                [counter(volume=n, message_id=f"{prefix}-{n}") for n in batch]
            )
            assert result == WriteResult(len(new), len(batch) - len(new), 0)
            seen |= new
        assert store.write_batch(
            [counter(message_id=f"{prefix}-{n}") for n in seen]
        ) == WriteResult(0, len(seen), 0)

    def test_concurrent_writers_store_each_message_once(
        self, store: SQLStore, second_store: SQLStore
    ) -> None:
        ids = [str(uuid.uuid4()) for _ in range(1200)]
        samples = [
            counter(f"m{i % 7}", i, seconds=i, resource_id=f"r{i % 5}", message_id=mid)
            for i, mid in enumerate(ids)
        ]
        # Overlapping windows, walked in opposite directions by the two writers.
        windows = [samples[start : start + 200] for start in range(0, 1100, 100)]
        results: dict[str, list[WriteResult]] = {"a": [], "b": []}
        errors: list[BaseException] = []
        barrier = threading.Barrier(2)

        def write(name: str, target: SQLStore, batches: Sequence[list[Counter]]) -> None:
            try:
                barrier.wait()
                for batch in batches:
                    results[name].append(target.write_batch(batch))
            except BaseException as exc:
                errors.append(exc)

        with Threads(timeout=120) as threads:
            threads.start(write, "a", store, windows)
            threads.start(write, "b", second_store, windows[::-1])
        assert not errors
        all_results = results["a"] + results["b"]
        assert sum(r.stored for r in all_results) == len(ids)
        assert sum(r.duplicates for r in all_results) == 2 * sum(map(len, windows)) - len(ids)
        stored = store.samples(SampleFilter(), limit=None)
        assert sorted(s.message_id for s in stored) == sorted(ids)
        assert len(store.meters(SampleFilter())) == 7 * 5

    # -- reading -------------------------------------------------------------------------

    @pytest.fixture
    def mixed(self, store: SQLStore) -> SQLStore:
        store.write_batch(
            [
                counter("cpu_util", 10, seconds=0, resource_id="r1", message_id="s1"),
                counter("cpu_util", 20, seconds=10, resource_id="r1", message_id="s2"),
                counter("cpu_util", 30, seconds=20, resource_id="r1", message_id="s3"),
                counter("cpu_util", 40, seconds=70, resource_id="r1", message_id="s4"),
                counter(
                    "cpu_util",
                    100,
                    seconds=5,
                    resource_id="r2",
                    user_id="u2",
                    project_id="p2",
                    message_id="s5",
                ),
                counter(
                    "memory",
                    512,
                    seconds=30,
                    resource_id="r2",
                    user_id="u2",
                    project_id="p2",
                    unit="MB",
                    message_id="s6",
                ),
                counter(
                    "memory",
                    256,
                    seconds=40,
                    resource_id="r3",
                    user_id="u3",
                    project_id="p2",
                    source="other",
                    unit="MB",
                    message_id="s7",
                ),
            ]
        )
        return store

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (SampleFilter(), ["s4", "s7", "s6", "s3", "s2", "s5", "s1"]),
            (SampleFilter(meter="memory"), ["s7", "s6"]),
            (SampleFilter(resource_id="r2"), ["s6", "s5"]),
            (SampleFilter(project_id="p2"), ["s7", "s6", "s5"]),
            (SampleFilter(user_id="u1"), ["s4", "s3", "s2", "s1"]),
            (SampleFilter(source="other"), ["s7"]),
            (SampleFilter(since=at(20)), ["s4", "s7", "s6", "s3"]),
            (SampleFilter(until=at(10)), ["s5", "s1"]),
            (SampleFilter(since=at(10), until=at(30)), ["s3", "s2"]),
            (SampleFilter(meter="cpu_util", resource_id="r1", since=at(5)), ["s4", "s3", "s2"]),
            (SampleFilter(meter="nothing"), []),
        ],
    )
    def test_samples_filters(
        self, mixed: SQLStore, query: SampleFilter, expected: list[str]
    ) -> None:
        assert [s.message_id for s in mixed.samples(query)] == expected

    def test_samples_limit(self, mixed: SQLStore) -> None:
        assert [s.message_id for s in mixed.samples(SampleFilter(), limit=2)] == ["s4", "s7"]
        assert len(mixed.samples(SampleFilter(), limit=None)) == 7

    def test_naive_query_times_are_utc(self, mixed: SQLStore) -> None:
        naive = SampleFilter(since=at(20).replace(tzinfo=None))
        assert [s.message_id for s in mixed.samples(naive)] == ["s4", "s7", "s6", "s3"]

    def test_meters(self, mixed: SQLStore) -> None:
        meters = mixed.meters(SampleFilter())
        assert [(m.name, m.resource_id) for m in meters] == [
            ("cpu_util", "r1"),
            ("cpu_util", "r2"),
            ("memory", "r2"),
            ("memory", "r3"),
        ]
        memory = mixed.meters(SampleFilter(meter="memory", source="other"))
        assert [(m.name, m.type, m.unit, m.user_id, m.project_id, m.source) for m in memory] == [
            ("memory", "gauge", "MB", "u3", "p2", "other")
        ]
        assert [m.resource_id for m in mixed.meters(SampleFilter(since=at(60)))] == ["r1"]
        assert mixed.meters(SampleFilter(until=at(0))) == []

    def test_resources(self, store: SQLStore) -> None:
        store.write_batch(
            [
                counter("cpu", seconds=50, resource_id="vm", metadata={"state": "active"}),
                counter("mem", seconds=10, resource_id="vm", metadata={"state": "building"}),
            ]
        )
        # A later batch with an older sample widens first seen but does not win the metadata.
        store.write_batch(
            [
                counter("cpu", seconds=5, resource_id="vm", user_id="old", metadata={"state": "x"}),
                counter("cpu", seconds=1, resource_id="other", project_id="p9"),
            ]
        )
        # And a newer one takes the owner and metadata.
        store.write_batch(
            [
                counter(
                    "disk",
                    seconds=60,
                    resource_id="vm",
                    user_id="u7",
                    metadata={"state": "paused"},
                )
            ]
        )
        (vm,) = store.resources(SampleFilter(resource_id="vm"))
        assert vm.first_sample_timestamp == at(5)
        assert vm.last_sample_timestamp == at(60)
        assert vm.metadata == {"state": "paused"}
        assert (vm.user_id, vm.project_id, vm.source) == ("u7", "p1", "openstack")
        assert vm.meters == ("cpu", "disk", "mem")

        assert [r.resource_id for r in store.resources(SampleFilter())] == ["other", "vm"]
        assert [r.resource_id for r in store.resources(SampleFilter(project_id="p9"))] == ["other"]
        (only_mem,) = store.resources(SampleFilter(meter="mem"))
        assert only_mem.meters == ("mem",)
        # Time filters apply to the samples: only cpu (t=50) and disk (t=60) are late.
        (late,) = store.resources(SampleFilter(since=at(40)))
        assert late.meters == ("cpu", "disk")
        assert store.resources(SampleFilter(since=at(61))) == []

    # -- a resource id shared by projects ----------------------------------------------------

    @pytest.fixture
    def shared(self, store: SQLStore) -> SQLStore:
        """SHARED in project pA (user uA: 10 s and 30 s) and pB (user uB: 20 s in the
        same batch as A's, then 100 s and 0 s in a batch of its own)."""

        def of_a(name: str, seconds: float) -> Counter:
            return counter(
                name,
                seconds=seconds,
                resource_id=SHARED,
                user_id="uA",
                project_id="pA",
                metadata=A_METADATA,
            )

        def of_b(seconds: float, source: str = "openstack") -> Counter:
            return counter(
                "network.incoming.bytes",
                seconds=seconds,
                resource_id=SHARED,
                user_id="uB",
                project_id="pB",
                metadata=B_METADATA,
                source=source,
            )

        store.write_batch(
            [
                of_a("network.incoming.bytes", 10),
                of_b(20),
                of_a("network.outgoing.bytes", 30),
            ]
        )
        store.write_batch([of_b(100, source="neutron"), of_b(0)])
        return store

    def test_a_shared_resource_is_what_each_projects_samples_say(self, shared: SQLStore) -> None:
        (a,) = shared.resources(SampleFilter(project_id="pA", resource_id=SHARED))
        assert (a.user_id, a.project_id, a.source) == ("uA", "pA", "openstack")
        assert a.metadata == A_METADATA
        assert (a.first_sample_timestamp, a.last_sample_timestamp) == (at(10), at(30))
        assert a.meters == ("network.incoming.bytes", "network.outgoing.bytes")
        (b,) = shared.resources(SampleFilter(project_id="pB", resource_id=SHARED))
        assert (b.user_id, b.project_id, b.source) == ("uB", "pB", "neutron")
        assert b.metadata == B_METADATA
        assert (b.first_sample_timestamp, b.last_sample_timestamp) == (at(0), at(100))
        assert b.meters == ("network.incoming.bytes",)
        assert shared.resources(SampleFilter(project_id="pA")) == [a]
        assert shared.resources(SampleFilter(project_id="pB")) == [b]
        assert shared.resources(SampleFilter(project_id="pC", resource_id=SHARED)) == []

    def test_without_a_project_a_shared_resource_is_listed_once(self, shared: SQLStore) -> None:
        (one,) = shared.resources(SampleFilter(resource_id=SHARED))
        # The newest sample's owner and metadata (B's, at 100 s), all samples' span.
        assert (one.user_id, one.project_id, one.source) == ("uB", "pB", "neutron")
        assert one.metadata == B_METADATA
        assert (one.first_sample_timestamp, one.last_sample_timestamp) == (at(0), at(100))
        assert one.meters == ("network.incoming.bytes", "network.outgoing.bytes")
        assert shared.resources(SampleFilter()) == [one]
        (mine,) = shared.resources(SampleFilter(meter="network.outgoing.bytes"))
        assert (mine.user_id, mine.meters) == ("uB", ("network.outgoing.bytes",))
        assert shared.status().resources == 1

    def test_a_metadata_filter_on_a_shared_resource_stays_in_the_project(
        self, shared: SQLStore
    ) -> None:
        of_a = SampleFilter(project_id="pA", metadata=(("owner_note", "A-note"),))
        (a,) = shared.resources(of_a)
        assert (a.resource_id, a.user_id, a.project_id) == (SHARED, "uA", "pA")
        assert a.metadata == A_METADATA
        assert shared.resources(replace(of_a, project_id="pB")) == []
        assert shared.resources(replace(of_a, metadata=(("tenant_secret", "s3cret"),))) == []
        (b,) = shared.resources(SampleFilter(project_id="pB", metadata=(("owner_note", "B-note"),)))
        assert (b.user_id, b.metadata) == ("uB", B_METADATA)

    def test_another_projects_samples_never_change_a_projects_view(self, shared: SQLStore) -> None:
        mine = SampleFilter(project_id="pA", resource_id=SHARED)
        before = shared.resources(mine)
        later = {"owner_note": "B-later", "tenant_secret": "other"}
        for seconds in (500, -50):  # newer, then older than all of A's
            shared.write_batch(
                [
                    counter(
                        seconds=seconds,
                        resource_id=SHARED,
                        user_id="uB2",
                        project_id="pB",
                        metadata=later,
                    )
                ]
            )
        assert shared.resources(mine) == before
        (one,) = shared.resources(SampleFilter(resource_id=SHARED))
        assert (one.user_id, one.metadata) == ("uB2", later)
        assert (one.first_sample_timestamp, one.last_sample_timestamp) == (at(-50), at(500))

    def test_samples_without_a_project_keep_a_resource_row_of_their_own(
        self, store: SQLStore
    ) -> None:
        def host(seconds: float, project_id: str | None, **kwargs: Any) -> Counter:
            return counter(
                seconds=seconds, resource_id="host-1", user_id=None, project_id=project_id, **kwargs
            )

        # No project and an empty one are one row, even in one batch.
        store.write_batch(
            [host(5, None), host(6, "", metadata={"empty": 1}), host(1, "pA", metadata={"vm": 1})]
        )
        store._series_ids.clear()  # as a fresh collector would start
        store.write_batch([host(7, None, metadata={"host": "h7"})])
        (vm,) = store.resources(SampleFilter(project_id="pA", resource_id="host-1"))
        assert (vm.project_id, vm.metadata) == ("pA", {"vm": 1})
        assert vm.first_sample_timestamp == vm.last_sample_timestamp == at(1)
        (one,) = store.resources(SampleFilter(resource_id="host-1"))
        assert (one.project_id, one.metadata) == (None, {"host": "h7"})
        assert (one.first_sample_timestamp, one.last_sample_timestamp) == (at(1), at(7))
        with store.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM resources")).scalar() == 2
        assert store.status().resources == 1

    def test_statistics_without_period(self, mixed: SQLStore) -> None:
        (stat,) = mixed.statistics(SampleFilter(meter="cpu_util"))
        assert (stat.unit, stat.count, stat.min, stat.max, stat.sum, stat.avg) == (
            "%",
            5,
            10.0,
            100.0,
            200.0,
            40.0,
        )
        assert (stat.duration_start, stat.duration_end) == (at(0), at(70))
        assert (stat.period, stat.period_start, stat.period_end) == (0, at(0), at(70))

        (r1,) = mixed.statistics(SampleFilter(meter="cpu_util", resource_id="r1"))
        assert (r1.count, r1.sum, r1.avg) == (4, 100.0, 25.0)
        (early,) = mixed.statistics(SampleFilter(meter="cpu_util", until=at(20)))
        assert (early.count, early.sum, early.max) == (3, 130.0, 100.0)

    def test_statistics_with_period(self, mixed: SQLStore) -> None:
        first, last = mixed.statistics(SampleFilter(meter="cpu_util"), period=30)
        # Buckets from the first sample (t=0): [0, 30) holds 10, 100, 20, 30; [60, 90) holds 40.
        assert (first.count, first.min, first.max, first.sum, first.avg) == (
            4,
            10.0,
            100.0,
            160.0,
            40.0,
        )
        assert (first.period, first.period_start, first.period_end) == (30, at(0), at(30))
        assert (first.duration_start, first.duration_end) == (at(0), at(20))
        assert (last.count, last.sum, last.period_start, last.period_end) == (
            1,
            40.0,
            at(60),
            at(90),
        )
        assert last.duration_start == last.duration_end == at(70)

    def test_statistics_periods_start_at_since(self, mixed: SQLStore) -> None:
        stats = mixed.statistics(SampleFilter(meter="cpu_util", since=at(10)), period=30)
        # [10, 40) holds 20 and 30; [70, 100) holds 40.
        assert [(s.period_start, s.count, s.sum) for s in stats] == [
            (at(10), 2, 50.0),
            (at(70), 1, 40.0),
        ]

    def test_statistics_edge_cases(self, mixed: SQLStore) -> None:
        with pytest.raises(ValueError, match="statistics needs a meter"):
            mixed.statistics(SampleFilter())
        with pytest.raises(ValueError, match="period"):
            mixed.statistics(SampleFilter(meter="cpu_util"), period=0)
        assert mixed.statistics(SampleFilter(meter="nothing")) == []
        assert mixed.statistics(SampleFilter(meter="nothing"), period=60) == []
        (memory,) = mixed.statistics(SampleFilter(meter="memory"))
        assert (memory.unit, memory.count, memory.avg) == ("MB", 2, 384.0)

    def test_status(self, store: SQLStore) -> None:
        empty = store.status()
        assert (empty.samples, empty.resources, empty.dead_letters) == (0, 0, 0)
        assert empty.last_sample_timestamp is None
        assert empty.last_recorded_at is None
        assert empty.schema_revision == "0005"

        before = datetime.now(UTC)
        store.write_batch(
            [counter(seconds=30), counter(seconds=90, resource_id="r2")],
            [DeadLetter("r", b"b", at(0))],
        )
        status = store.status()
        assert (status.samples, status.resources, status.dead_letters) == (2, 2, 1)
        assert status.last_sample_timestamp == at(90)
        assert status.last_recorded_at is not None
        assert status.last_recorded_at >= before - timedelta(seconds=1)

    # -- schema --------------------------------------------------------------------------

    def test_upgrade_twice_is_harmless(self, store: SQLStore) -> None:
        store.upgrade()
        assert store.status().schema_revision == "0005"

    def test_migration_builds_exactly_the_schema(self, store: SQLStore) -> None:
        with store.engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            assert compare_metadata(context, schema_metadata) == []

    def test_upgrade_from_0004_gives_each_project_its_own_resource_rows(
        self, shared: SQLStore
    ) -> None:
        store = shared
        store.write_batch([counter(resource_id="solo", seconds=s) for s in (1, 2, 3)])
        views = {p: store.resources(SampleFilter(project_id=p)) for p in ("pA", "pB", "p1")}
        admin = store.resources(SampleFilter())
        config = store._alembic_config()
        with store.engine.begin() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "0004")
        # Revision 0004: one row per resource id, its newest sample's, whatever the project.
        with store.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT resource_id, user_id, project_id, first_seen, last_seen"
                    " FROM resources ORDER BY resource_id"
                )
            ).all()
        assert [tuple(row) for row in rows] == [
            (SHARED, "uB", "pB", to_micros(at(0)), to_micros(at(100))),
            ("solo", "u1", "p1", to_micros(at(1)), to_micros(at(3))),
        ]
        # Expiry deletes samples and leaves resource rows: "solo" began at 1 s all the same.
        with store.engine.begin() as conn:
            conn.execute(
                sa.text(
                    "DELETE FROM samples WHERE timestamp = :stamp"
                    " AND series_id IN (SELECT id FROM series WHERE resource_id = 'solo')"
                ),
                {"stamp": to_micros(at(1))},
            )
        store.upgrade()
        assert store.status().schema_revision == "0005"
        assert {p: store.resources(SampleFilter(project_id=p)) for p in views} == views
        assert store.resources(SampleFilter()) == admin
        with store.engine.connect() as conn:
            keys = conn.execute(
                sa.text("SELECT resource_id, project_id FROM resources ORDER BY 1, 2")
            ).all()
        assert [tuple(key) for key in keys] == [(SHARED, "pA"), (SHARED, "pB"), ("solo", "p1")]

    def test_store_without_auto_upgrade_has_no_tables(self, store_url: str) -> None:
        settings = StoreSettings(url=store_url, auto_upgrade=False)
        with pytest.raises(StoreError, match="run `nephoscope db upgrade`"):
            open_store(settings)
        bare = open_store(settings, check_schema=False)
        try:
            status = bare.status()
            assert (status.samples, status.schema_revision) == (0, None)
            assert bare.schema_revisions() == (None, "0005")
            bare.upgrade()
            assert bare.status().schema_revision == "0005"
            bare.upgrade()  # nothing left to do
        finally:
            bare.close()
        open_store(settings).close()

    # -- retention -------------------------------------------------------------------------

    def test_expire_follows_the_policy_per_meter(self, store_url: str) -> None:
        retention = {
            "default": "1h",
            "meters": {"disk.*": "10m", "instance": None},
            "batch_size": 7,  # several transactions for one meter
        }
        store = open_store(StoreSettings(url=store_url, retention=retention))
        try:
            now = at(3600 * 5)
            ages = [30, 59, 61, 120, 240]  # minutes before now
            samples = [
                counter(name, float(age), timestamp=now - timedelta(minutes=age))
                for name in ("cpu_util", "disk.read.bytes", "instance")
                for age in ages
                for _ in range(5)
            ]
            assert store.write_batch(samples).stored == len(samples)
            deleted = store.expire(now)
            left = store.samples(SampleFilter(), limit=None)
            kept = sorted({(s.name, round(s.volume)) for s in left})
            assert kept == sorted(
                [("cpu_util", 30.0), ("cpu_util", 59.0)]
                + [("instance", float(age)) for age in ages]
            )
            assert deleted == len(samples) - len(left) == 5 * (3 + 5)
            assert store.expire(now) == 0
            # Resources and series stay: a new sample of an expired series is stored.
            assert store.write_batch([counter("disk.read.bytes", 1, timestamp=now)]).stored == 1
        finally:
            store.close()

    def test_expire_without_a_policy_keeps_everything(self, store: SQLStore) -> None:
        store.write_batch([counter(seconds=-(10**8))])
        assert store.expire() == 0
        assert store.status().samples == 1

    # -- query API filters (issue 7) -------------------------------------------------------

    @pytest.fixture
    def described(self, store: SQLStore) -> SQLStore:
        store.write_batch(
            [
                counter(volume=1, seconds=0, message_id="m1", metadata={"flavor": {"vcpus": 2}}),
                counter(volume=3, seconds=10, message_id="m2", metadata={"flavor": {"vcpus": 4}}),
                counter(
                    volume=5,
                    seconds=20,
                    resource_id="r2",
                    project_id="p2",
                    message_id="m3",
                    metadata={"flavor": {"vcpus": 4}, "name": "web", "on": True},
                ),
                counter(
                    volume=9,
                    seconds=30,
                    resource_id="r3",
                    project_id="p2",
                    message_id="m4",
                    metadata={"name": "4"},
                ),
            ]
        )
        return store

    def test_samples_by_message_id(self, described: SQLStore) -> None:
        assert [s.message_id for s in described.samples(SampleFilter(message_id="m3"))] == ["m3"]
        assert described.samples(SampleFilter(message_id="m3", project_id="p1")) == []
        assert described.samples(SampleFilter(message_id=str(uuid.uuid4()))) == []

    @pytest.mark.parametrize(
        ("metadata", "expected"),
        [
            ((("flavor.vcpus", 4),), ["m3", "m2"]),
            ((("flavor.vcpus", 4.0),), ["m3", "m2"]),
            ((("flavor.vcpus", "4"),), []),
            ((("name", "4"),), ["m4"]),
            ((("name", 4),), []),
            ((("name", "web"), ("flavor.vcpus", 4)), ["m3"]),
            ((("on", True),), ["m3"]),
            ((("on", False),), []),
            ((("missing", "x"),), []),
        ],
    )
    def test_metadata_filters(
        self, described: SQLStore, metadata: tuple[tuple[str, Any], ...], expected: list[str]
    ) -> None:
        query = SampleFilter(metadata=metadata)
        assert [s.message_id for s in described.samples(query)] == expected
        resources = {r.resource_id for r in described.resources(query)}
        assert resources == {s.resource_id for s in described.samples(query)}
        meters = {m.resource_id for m in described.meters(query)}
        assert meters == resources
        stats = described.statistics(SampleFilter(meter="cpu_util", metadata=metadata))
        assert sum(s.count for s in stats) == len(expected)

    def test_bad_metadata_key_is_refused(self, described: SQLStore) -> None:
        with pytest.raises(ValueError):
            described.samples(SampleFilter(metadata=(('a"b', 1),)))

    def test_statistics_groupby_and_aggregates(self, described: SQLStore) -> None:
        stats = described.statistics(
            SampleFilter(meter="cpu_util"),
            groupby=["project_id"],
            aggregates=[("stddev", None), ("cardinality", "resource_id"), ("avg", None)],
        )
        assert [dict(s.groupby) for s in stats] == [{"project_id": "p1"}, {"project_id": "p2"}]
        p1, p2 = stats
        assert (p1.count, p1.sum, p2.count, p2.sum) == (2, 4.0, 2, 14.0)
        assert p1.aggregate == {
            "stddev": pytest.approx(1.0),
            "cardinality/resource_id": 1.0,
            "avg": 2.0,
        }
        assert p2.aggregate["cardinality/resource_id"] == 2.0
        by_vcpus = described.statistics(
            SampleFilter(meter="cpu_util"), groupby=["metadata.flavor.vcpus"]
        )
        assert sorted(
            (s.groupby["metadata.flavor.vcpus"], s.count)
            for s in by_vcpus
            if s.groupby["metadata.flavor.vcpus"]
        ) == [("2", 1), ("4", 2)]
        periodic = described.statistics(
            SampleFilter(meter="cpu_util"), period=15, groupby=["resource_id", "source"]
        )
        assert [(s.period_start, s.groupby["resource_id"], s.count) for s in periodic] == [
            (at(0), "r1", 2),
            (at(15), "r2", 1),
            (at(30), "r3", 1),
        ]
        with pytest.raises(ValueError):
            described.statistics(SampleFilter(meter="cpu_util"), groupby=["volume"])
        with pytest.raises(ValueError):
            described.statistics(SampleFilter(meter="cpu_util"), aggregates=[("cardinality", None)])
        with pytest.raises(ValueError):
            described.statistics(SampleFilter(meter="cpu_util"), aggregates=[("median", None)])
