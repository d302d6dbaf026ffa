"""The publisher's buffer: nothing lost while the bus is away, order kept, bounded."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from nephoscope.config import Settings
from nephoscope.counter import Counter
from nephoscope.messaging.bus import PublishError
from nephoscope.messaging.publisher import BufferFull, Publisher
from nephoscope.messaging.spool import Spool

NOW = datetime(2026, 11, 26, tzinfo=UTC)


class FlakySink:
    def __init__(self) -> None:
        self.up = True
        self.received: list[list[dict[str, Any]]] = []

    def send(self, messages: Sequence[dict[str, Any]]) -> None:
        if not self.up:
            raise ConnectionError("broker unreachable")
        self.received.append(list(messages))

    def close(self) -> None:
        pass


def counters(start: int, count: int) -> list[Counter]:
    return [
        Counter("c", "gauge", "x", i, None, None, "r", NOW) for i in range(start, start + count)
    ]


def settings(tmp_path: Path, max_samples: int = 1000) -> Settings:
    return Settings(
        metering_secret="s",
        publisher={
            "batch_size": 10,
            "buffer": {"path": tmp_path / "buf.db", "max_samples": max_samples},
        },
    )


def volumes(sink: FlakySink) -> list[float]:
    return [m["counter_volume"] for batch in sink.received for m in batch]


def test_buffered_while_the_bus_is_down_then_sent_in_order(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = FlakySink()
    publisher = Publisher(settings(tmp_path), sink)
    assert publisher.publish(counters(0, 25)) == 25
    sink.up = False
    with caplog.at_level(logging.WARNING):
        assert publisher.publish(counters(25, 25)) == 0
        assert publisher.publish(counters(50, 25)) == 0
    assert "buffered" in caplog.text
    assert publisher.spool.counts() == (50, 0)
    sink.up = True
    assert publisher.publish(counters(75, 25)) == 25
    assert volumes(sink) == list(range(100)), "buffered samples go first, in order"
    assert publisher.spool.counts() == (0, 0)
    assert publisher.sent == 100


def test_a_restarted_agent_sends_what_the_last_one_buffered(tmp_path: Path) -> None:
    down = FlakySink()
    down.up = False
    first = Publisher(settings(tmp_path), down)
    first.publish(counters(0, 30))
    first.close()
    up = FlakySink()
    second = Publisher(settings(tmp_path), up)
    assert second.flush()
    assert volumes(up) == list(range(30))


def test_a_full_buffer_drops_the_oldest_and_counts_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sink = FlakySink()
    sink.up = False
    publisher = Publisher(settings(tmp_path, max_samples=40), sink)
    with caplog.at_level(logging.ERROR):
        for start in range(0, 100, 20):
            publisher.publish(counters(start, 20))
    assert publisher.spool.counts() == (40, 60)
    assert publisher.dropped == 60
    assert "dropped the" in caplog.text
    sink.up = True
    assert publisher.flush()
    assert volumes(sink) == list(range(60, 100)), "the newest are kept"


def test_a_publisher_that_never_fails_writes_no_file(tmp_path: Path) -> None:
    publisher = Publisher(settings(tmp_path), FlakySink())
    publisher.publish(counters(0, 5))
    publisher.close()
    assert not (tmp_path / "buf.db").exists()


def test_spool_survives_reopening(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", 100)
    spool.push([[{"a": 1}], [{"a": 2}, {"a": 3}]])
    spool.close()
    again = Spool(tmp_path / "s.db", 100)
    oldest = again.oldest()
    assert oldest is not None and oldest[1] == [{"a": 1}]
    assert again.counts() == (3, 0)


class RefusingSink(FlakySink):
    """A broker that refuses every publish for a reason that lasts (403), counting tries."""

    def __init__(self) -> None:
        super().__init__()
        self.tries = 0
        self.refusing = True

    def send(self, messages: Sequence[dict[str, Any]]) -> None:
        self.tries += 1
        if self.refusing:
            raise PublishError(
                "amqp://127.0.0.1:5672//: AccessRefused: (0, 0): (403) ACCESS_REFUSED"
                " (grant it (rabbitmqctl set_permissions) or change bus.url or bus.exchange)",
                lasting=True,
            )
        super().send(messages)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_counters_that_may_not_be_dropped_are_refused_whole_when_they_do_not_fit(
    tmp_path: Path,
) -> None:
    sink = FlakySink()
    sink.up = False
    publisher = Publisher(settings(tmp_path, max_samples=50), sink)
    publisher.publish(counters(0, 30), droppable=False)
    with pytest.raises(BufferFull):
        publisher.publish(counters(30, 30), droppable=False)
    assert publisher.spool.counts() == (30, 0), "nothing of the refused call was kept"
    sink.up = True
    assert publisher.flush()
    assert volumes(sink) == list(range(30))


def test_pollsters_never_push_out_what_notifications_buffered(tmp_path: Path) -> None:
    sink = FlakySink()
    sink.up = False
    publisher = Publisher(settings(tmp_path, max_samples=50), sink)
    publisher.publish(counters(0, 20))  # a pollster's
    publisher.publish(counters(100, 30), droppable=False)  # from notifications
    publisher.publish(counters(200, 20))  # a pollster's: the oldest pollster batch goes
    assert publisher.spool.counts() == (50, 20)
    publisher.publish(counters(300, 40))  # more than there is room for beside the kept
    assert publisher.spool.counts() == (50, 60)
    sink.up = True
    assert publisher.flush()
    assert volumes(sink) == [*range(100, 130), *range(320, 340)]


def test_a_lasting_refusal_is_said_once_a_minute_not_retried_in_a_storm_and_kept_for_status(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    clock, sink = Clock(), RefusingSink()
    publisher = Publisher(settings(tmp_path), sink, clock=clock)
    with caplog.at_level(logging.WARNING):
        for _ in range(20):  # twenty batches of notifications in the same second
            publisher.publish(counters(0, 5), droppable=False)
    assert sink.tries == 1, "the bus is not tried again before LASTING_RETRY"
    refusals = [r for r in caplog.records if "refuses" in r.getMessage()]
    assert len(refusals) == 1 and refusals[0].levelno == logging.ERROR
    assert "rabbitmqctl set_permissions" in refusals[0].getMessage()
    assert len([r for r in caplog.records if "buffered" in r.getMessage()]) == 1
    noted = publisher.spool.last_error()
    assert noted is not None and "ACCESS_REFUSED" in noted[0]
    assert publisher.waiting

    caplog.clear()
    clock.now += Publisher.LASTING_RETRY
    with caplog.at_level(logging.WARNING):
        publisher.publish(counters(5, 5), droppable=False)
    assert sink.tries == 2
    assert not [r for r in caplog.records if "refuses" in r.getMessage()], "once a minute"
    clock.now += 60
    with caplog.at_level(logging.WARNING):
        publisher.publish(counters(10, 5), droppable=False)
    (again,) = [r for r in caplog.records if "refuses" in r.getMessage()]
    assert "1 more refusal(s)" in again.getMessage()

    sink.refusing = False
    clock.now += Publisher.LASTING_RETRY
    assert publisher.flush()
    assert publisher.spool.last_error() is None and publisher.error is None
    assert len(volumes(sink)) == 110


def test_a_buffer_file_of_an_earlier_version_is_read(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.execute(
        "CREATE TABLE batches (id INTEGER PRIMARY KEY, samples INTEGER NOT NULL,"
        " body BLOB NOT NULL)"
    )
    db.execute("INSERT INTO batches (samples, body) VALUES (1, '[{\"a\": 1}]')")
    db.commit()
    db.close()
    spool = Spool(path, 1)
    assert spool.oldest() == (1, [{"a": 1}])
    assert spool.push([[{"a": 2}]]) == 1, "the old batch is a pollster's: dropped"
    assert spool.counts() == (1, 1)
    spool.close()
