"""The dead-letter queue's bookkeeping, without a broker (tests/integration/delivery has one)."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from nephoscope.messaging.deadletter import (
    HEADER_PREFIX,
    DeadLetterBroken,
    Letter,
    QueueDeadLetters,
    _headers,
    _queued,
)

WHEN = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class Channel:
    """Answers confirm waits with the acks it was told to send."""

    def __init__(self, sink: QueueDeadLetters, acks: list[tuple[str, int, bool]]) -> None:
        self.connection = self
        self.sink = sink
        self.acks = acks

    def drain_events(self, timeout: float) -> None:
        kind, tag, multiple = self.acks.pop(0)
        (self.sink._on_ack if kind == "ack" else self.sink._on_nack)(tag, multiple)


def waiting(tags: int) -> QueueDeadLetters:
    sink = QueueDeadLetters("amqp://", ".dead")
    sink._sent = tags
    sink._unconfirmed = set(range(1, tags + 1))
    return sink


def test_confirms_may_come_one_by_one_out_of_order_or_many_at_once() -> None:
    sink = waiting(5)
    sink._wait_confirms(Channel(sink, [("ack", 2, False), ("ack", 1, False), ("ack", 5, True)]))
    assert sink._unconfirmed == set()
    sink = waiting(3)
    channel = Channel(sink, [("ack", 3, False), ("ack", 2, True)])
    sink._wait_confirms(channel)
    assert channel.acks == [] and sink._unconfirmed == set()


def test_a_nack_fails_the_put() -> None:
    sink = waiting(2)
    with pytest.raises(DeadLetterBroken, match="refused"):
        sink._wait_confirms(Channel(sink, [("ack", 1, False), ("nack", 2, False)]))


def test_a_letter_carries_its_reason_and_origin_in_headers() -> None:
    letter = Letter(
        body=b"{}",
        reason="bad signature",
        queue="metering.sample",
        exchange="ceilometer",
        routing_key="metering.sample",
        received_at=WHEN,
        message_id="m1",
        headers={"kept": "yes"},
    )
    headers = _headers(letter)
    assert headers["kept"] == "yes"
    assert headers[f"{HEADER_PREFIX}reason"] == "bad signature"
    assert headers[f"{HEADER_PREFIX}queue"] == "metering.sample"
    assert headers[f"{HEADER_PREFIX}dead-lettered-at"] == WHEN.isoformat()

    # Read back from the queue as py-amqp gives it: text for an encoded body.
    message = SimpleNamespace(headers=headers, body="{}", properties={"message_id": "m1"})
    queued = _queued("metering.sample.dead", message)
    assert (queued.reason, queued.message_id, queued.received_at) == ("bad signature", "m1", WHEN)
    assert queued.body == b"{}" and queued.event_type is None


def test_a_foreign_message_in_the_queue_is_listed_without_a_reason() -> None:
    message = SimpleNamespace(headers=None, body=b"\xff", properties={})
    queued = _queued("q.dead", message)
    assert (queued.reason, queued.message_id, queued.received_at) == ("", None, None)
    assert queued.body == b"\xff"


def test_a_put_tries_a_new_connection_once(monkeypatch: pytest.MonkeyPatch) -> None:
    sink = QueueDeadLetters("amqp://", ".dead")
    calls: list[int] = []

    def publish(letters: object) -> None:
        calls.append(1)
        if len(calls) < failures:
            raise ConnectionResetError("idle connection died")

    monkeypatch.setattr(sink, "_publish", publish)
    failures = 2
    sink.put([Letter(b"", "r", "q", "", "q", WHEN)])
    assert len(calls) == 2
    failures, calls[:] = 5, []
    with pytest.raises(ConnectionResetError):
        sink.put([Letter(b"", "r", "q", "", "q", WHEN)])
    assert len(calls) == 2
