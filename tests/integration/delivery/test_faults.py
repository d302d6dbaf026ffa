"""Billing-grade delivery: samples survive a killed collector, a broker that drops
its connections and a database that drops its sessions, and are stored once.

Each test publishes N signed samples to RabbitMQ, runs real collector processes
(`nephoscope collector`) into PostgreSQL, breaks something mid-stream and checks
the store ends with exactly the N distinct samples.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

import pytest
import sqlalchemy as sa
from tests.support import OwnBus, stop_process

from nephoscope.counter import Counter
from nephoscope.messaging.bus import KombuBus
from nephoscope.messaging.publisher import Publisher

# Its own waits (120 + 180 s, then 30 s to stop each collector) are past the default timeout.
pytestmark = [pytest.mark.integration, pytest.mark.timeout(420)]

N = 100_000
NEPHOSCOPE = [sys.executable, "-m", "nephoscope"]


class Rig:
    """RabbitMQ queue + PostgreSQL store + collector processes for one test."""

    def __init__(self, tmp_path: Path, bus: OwnBus, store_url: str) -> None:
        self.settings = bus.settings(
            metering_secret="faults",
            store={"url": store_url},
            collector={"batch_timeout": 0.2},
        )
        self.config = tmp_path / "collector.yaml"
        self.config.write_text(
            f"metering_secret: faults\n"
            f"bus:\n  url: '{bus.url}'\n  exchange: {bus.exchange}\n  topic: {bus.topic}\n"
            f"store:\n  url: '{store_url}'\n"
            f"collector:\n  batch_timeout: 0.2\n",
            encoding="utf-8",
        )
        self.engine = sa.create_engine(store_url, pool_pre_ping=True)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.logs = tmp_path
        self._log_files: list[IO[bytes]] = []

    def publish(self, count: int) -> None:
        start = datetime(2026, 11, 1, tzinfo=UTC)
        counters = (
            Counter(
                "cpu",
                "cumulative",
                "ns",
                i,
                "u",
                f"p{i % 10}",
                f"r{i % 500}",
                start + timedelta(seconds=i),
            )
            for i in range(count)
        )
        publisher = Publisher(self.settings)
        batch: list[Counter] = []
        for counter in counters:
            batch.append(counter)
            if len(batch) == 5000:
                publisher.publish(batch)
                batch = []
        publisher.publish(batch)
        publisher.close()

    def start_collector(self) -> subprocess.Popen[bytes]:
        log = (self.logs / f"collector-{len(self.processes)}.log").open("wb")
        self._log_files.append(log)
        env = dict(os.environ, NEPHOSCOPE_CONFIG=str(self.config))
        process = subprocess.Popen(
            [*NEPHOSCOPE, "collector"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
        self.processes.append(process)
        return process

    def stored(self) -> int:
        with self.engine.connect() as conn:
            try:
                return int(conn.execute(sa.text("SELECT count(*) FROM samples")).scalar_one())
            except sa.exc.ProgrammingError:
                return 0  # tables not created yet

    def distinct(self) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(sa.text("SELECT count(DISTINCT message_id) FROM samples")).scalar_one()
            )

    def wait_for(self, predicate: Callable[[], bool], seconds: float, what: str) -> None:
        deadline = time.monotonic() + seconds
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out waiting for {what}: {self.stored()} stored\n" + self.tail_logs()
                )
            time.sleep(0.2)

    def tail_logs(self) -> str:
        return "\n".join(p.read_text(errors="replace")[-3000:] for p in self.logs.glob("*.log"))

    def close(self) -> None:
        """Stop the collectors (SIGTERM, killed after 30 s: a failure)."""
        try:
            with contextlib.ExitStack() as stack:
                for process in self.processes:
                    stack.callback(stop_process, process, signal.SIGTERM, 30)
        finally:
            for log in self._log_files:
                log.close()
            self.engine.dispose()


@pytest.fixture
def rig(tmp_path: Path, own_bus: OwnBus, postgresql_url: str) -> Iterator[Rig]:
    rig = Rig(tmp_path, own_bus, postgresql_url)
    try:
        yield rig
    finally:
        rig.close()


def assert_exactly_all(rig: Rig) -> None:
    rig.wait_for(lambda: rig.stored() >= N, 180, f"{N} samples")
    time.sleep(1)  # anything still arriving would be a duplicate
    assert rig.stored() == N
    assert rig.distinct() == N
    assert KombuBus(rig.settings.bus).queue_depth() == 0


def test_collector_killed_mid_stream_loses_nothing(rig: Rig) -> None:
    rig.publish(N)
    first = rig.start_collector()
    rig.wait_for(lambda: rig.stored() >= N // 5, 120, "the first collector to store some")
    first.send_signal(signal.SIGKILL)  # no flush, no acknowledgement of the batch in flight
    first.wait(timeout=30)
    assert rig.stored() < N
    rig.start_collector()
    assert_exactly_all(rig)


def test_two_competing_collectors_share_the_stream(rig: Rig) -> None:
    rig.start_collector()
    rig.start_collector()
    rig.publish(N)
    assert_exactly_all(rig)


def test_broker_dropping_connections_loses_nothing(rig: Rig) -> None:
    rig.start_collector()
    rig.publish(N // 2)
    rig.wait_for(lambda: rig.stored() >= N // 10, 120, "the collector to store some")
    subprocess.run(
        ["rabbitmqctl", "close_all_connections", "nephoscope fault test"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    rig.publish(N - N // 2)
    assert_exactly_all(rig)


def test_database_sessions_terminated_loses_nothing(rig: Rig, postgresql_url: str) -> None:
    rig.start_collector()
    rig.publish(N)
    rig.wait_for(lambda: rig.stored() >= N // 5, 120, "the collector to store some")
    database = sa.make_url(postgresql_url).database
    admin = sa.create_engine(postgresql_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for _ in range(3):
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": database},
            )
            time.sleep(0.5)
    admin.dispose()
    assert_exactly_all(rig)
