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
from nephoscope.messaging.publisher import Publisher
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
