"""Dead-letter queues on RabbitMQ: where a message that cannot be metered goes, with why.

The collector (a meter message it cannot store) and the notification listener
(a notification it cannot meter) both hand such messages to
:class:`QueueDeadLetters`, which publishes each one to the queue
``<queue it came from><suffix>`` (``metering.sample.dead``,
``notifications.info.dead``): durable, persistent, the body unchanged, the
reason and origin in ``x-nephoscope-*`` headers, confirmed by the broker before
``put`` returns. Callers acknowledge the original only after that, so a crash
gives at worst a dead letter twice, never none.

:func:`peek` lists what a dead-letter queue holds without taking it: messages
are read unacknowledged and handed back (requeued in place) before it returns,
and a reader that dies meanwhile gives them back by closing its channel.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final, Protocol

from amqp.exceptions import NotFound
from kombu.connection import Connection
from kombu.entity import Queue
from kombu.messaging import Producer

from nephoscope.config import QueueType
from nephoscope.messaging.bus import open_connection
from nephoscope.messaging.declare import adopt_queue, queue_arguments

__all__ = [
    "HEADER_PREFIX",
    "DeadLetterSink",
    "Letter",
    "QueueDeadLetters",
    "QueuedLetter",
    "depths",
    "peek",
]

#: Headers a dead letter carries on RabbitMQ.
HEADER_PREFIX: Final = "x-nephoscope-"
#: Seconds to wait for the broker to confirm a put.
CONFIRM_TIMEOUT: Final = 30.0


class DeadLetterBroken(Exception):
    """The broker refused a dead letter (nack), or did not confirm it in time."""


@dataclass(frozen=True, slots=True)
class Letter:
    """A message that could not be metered, with where it came from and why."""

    body: bytes
    reason: str
    queue: str
    exchange: str
    routing_key: str
    received_at: datetime
    message_id: str | None = None
    event_type: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)


class DeadLetterSink(Protocol):
    """Where dead letters go. ``put`` raises when they could not be kept."""

    def put(self, letters: Sequence[Letter]) -> None: ...


class QueueDeadLetters:
    """Dead letters into durable queues on the broker, beside the queues they came from.

    The body is published unchanged; the reason and origin travel in headers
    (``x-nephoscope-reason``, ``-queue``, ``-exchange``, ``-routing-key``,
    ``-event-type``, ``-dead-lettered-at``), the message id as the AMQP
    ``message_id``. Not thread-safe: one per consuming thread.
    """

    def __init__(self, url: str, suffix: str, queue_type: QueueType = "classic") -> None:
        self.url = url
        self.suffix = suffix
        self.queue_type = queue_type
        # A connection of its own: waiting for confirms on a consumer's
        # connection would deliver that consumer's messages in the middle of
        # its own flush.
        self._connection: Connection | None = None
        self._channel: Any = None
        self._sent = 0  # the channel's last delivery tag
        self._unconfirmed: set[int] = set()
        self._nacked = False

    def queue_for(self, queue: str) -> str:
        """The dead-letter queue of ``queue``."""
        return queue + self.suffix

    def put(self, letters: Sequence[Letter]) -> None:
        """Publish ``letters``; return once the broker has confirmed every one."""
        if not letters:
            return
        for attempt in (1, 2):
            try:
                self._publish(letters)
                return
            except Exception:
                self.close()  # a channel in an unknown state is not used again
                # The connection may have died while idle (a broker restart):
                # once more on a new one. Letters sent twice are harmless.
                if attempt == 2:
                    raise

    def _publish(self, letters: Sequence[Letter]) -> None:
        channel = self._ensure_channel()
        # Declared on every put, not once: an operator may delete a dead-letter
        # queue to empty it, and a letter sent to no queue would be lost.
        # One that exists with other settings is used as it is.
        assert self._connection is not None
        arguments = queue_arguments(self.queue_type)
        for name in dict.fromkeys(self.queue_for(letter.queue) for letter in letters):
            adopt_queue(
                self._connection,
                Queue(name, durable=True, auto_delete=False, queue_arguments=arguments),
            )
        producer = Producer(channel)
        for letter in letters:
            producer.publish(
                letter.body,
                exchange="",
                routing_key=self.queue_for(letter.queue),
                headers=_headers(letter),
                delivery_mode=2,
                content_type=letter.content_type or "application/json",
                content_encoding=letter.content_encoding or "utf-8",
                message_id=letter.message_id,
                # Unroutable (the queue vanished since the declaration): the broker
                # returns it, which raises below instead of dropping it.
                mandatory=True,
                retry=False,
            )
            self._sent += 1
            self._unconfirmed.add(self._sent)
        self._wait_confirms(channel)

    def _wait_confirms(self, channel: Any) -> None:
        # All letters of a put go out before the first confirm is awaited: one
        # round trip for a batch instead of one per letter.
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while self._unconfirmed:
            if self._nacked:
                raise DeadLetterBroken("the broker refused a dead letter (basic.nack)")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadLetterBroken(f"no confirm from the broker in {CONFIRM_TIMEOUT:.0f}s")
            channel.connection.drain_events(timeout=remaining)
        if self._nacked:
            raise DeadLetterBroken("the broker refused a dead letter (basic.nack)")

    def _ensure_channel(self) -> Any:
        if self._channel is None:
            # Confirms are asked for by hand (confirm_select) rather than with
            # the transport's confirm_publish, which waits after each message.
            connection = open_connection(self.url, confirm_publish=False)
            connection.ensure_connection(max_retries=1)
            channel = connection.channel()
            channel.confirm_select()
            channel.events["basic_ack"].add(self._on_ack)
            channel.events["basic_nack"].add(self._on_nack)
            self._connection, self._channel = connection, channel
            self._sent = 0
            self._unconfirmed.clear()
            self._nacked = False
        return self._channel

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        # Tags count publishes on the channel from 1; one ack may cover every
        # tag up to its own (multiple), and acks need not come in order.
        if multiple:
            self._unconfirmed = {tag for tag in self._unconfirmed if tag > delivery_tag}
        else:
            self._unconfirmed.discard(delivery_tag)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._nacked = True
        self._on_ack(delivery_tag, multiple)

    def close(self) -> None:
        """Release the connection; the next put opens a new one."""
        if self._connection is not None:
            with contextlib.suppress(Exception):
                self._connection.release()
        self._connection = self._channel = None


def _headers(letter: Letter) -> dict[str, Any]:
    headers = dict(letter.headers)
    headers.update(
        {
            f"{HEADER_PREFIX}reason": letter.reason[:4000],
            f"{HEADER_PREFIX}queue": letter.queue,
            f"{HEADER_PREFIX}exchange": letter.exchange,
            f"{HEADER_PREFIX}routing-key": letter.routing_key,
            f"{HEADER_PREFIX}event-type": letter.event_type or "",
            f"{HEADER_PREFIX}dead-lettered-at": letter.received_at.isoformat(),
        }
    )
    return headers


@dataclass(frozen=True, slots=True)
class QueuedLetter:
    """A dead letter as it waits in a dead-letter queue."""

    queue: str
    reason: str
    message_id: str | None
    #: When it was dead-lettered (its ``x-nephoscope-dead-lettered-at``).
    received_at: datetime | None
    event_type: str | None
    body: bytes


def depths(connection: Connection, queues: Iterable[str]) -> dict[str, int]:
    """Messages in each queue; 0 for one not declared yet (nothing was sent there)."""
    found: dict[str, int] = {}
    for name in queues:
        channel = connection.channel()
        try:
            found[name] = int(channel.queue_declare(name, passive=True).message_count)
        except NotFound:  # the broker closed the channel with the 404
            found[name] = 0
            continue
        channel.close()
    return found


def peek(connection: Connection, queues: Iterable[str], limit: int) -> list[QueuedLetter]:
    """Up to ``limit`` letters of each queue, oldest first; none is taken from its queue."""
    letters: list[QueuedLetter] = []
    for name in queues:
        channel = connection.channel()
        try:
            waiting = int(channel.queue_declare(name, passive=True).message_count)
        except NotFound:
            continue
        held = []
        try:
            # Held unacknowledged until all are read: a letter handed back at once
            # would be the next one read again.
            for _ in range(min(limit, waiting)):
                message = channel.basic_get(name, no_ack=False)
                if message is None:
                    break
                held.append(message)
                letters.append(_queued(name, message))
        finally:
            for message in held:
                channel.basic_reject(message.delivery_tag, requeue=True)
            channel.close()
    return letters


def _queued(queue: str, message: Any) -> QueuedLetter:
    headers = message.headers or {}
    raw = message.body
    # py-amqp decodes a body that has a content encoding into text.
    body = raw.encode("utf-8") if isinstance(raw, str) else bytes(raw)
    return QueuedLetter(
        queue=queue,
        reason=str(headers.get(f"{HEADER_PREFIX}reason", "")),
        message_id=message.properties.get("message_id"),
        received_at=_moment(headers.get(f"{HEADER_PREFIX}dead-lettered-at")),
        event_type=str(headers.get(f"{HEADER_PREFIX}event-type") or "") or None,
        body=body,
    )


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None
