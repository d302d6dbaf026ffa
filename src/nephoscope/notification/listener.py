"""The notification listener: consumes what OpenStack services publish, publishes counters.

It declares what oslo.messaging declares for a notification listener: for each
exchange (``nova``, ``cinder``, ...) and topic (``notifications``) a topic
exchange, and the queue ``<topic>.<priority>`` (``notifications.info``) bound
to it with that routing key (or one queue named ``notifications.pool``). Exchanges and queues
are non-durable unless ``notifications.durable`` is set, as
oslo.messaging's ``amqp_durable_queues`` does: Nova declares the same queue
when it sends, and RabbitMQ refuses a second declaration that differs
(406 PRECONDITION_FAILED).

Messages are processed as they arrive and acknowledged in batches, only after
the batch's counters were handed to the publisher (``Publisher.publish``
returned: the bus confirmed them). A message that cannot be metered is
dead-lettered with its reason, then acknowledged: on RabbitMQ to the queue
``<queue><notifications.dead_letter_suffix>`` (``notifications.info.dead``), on
the embedded bus to the store's dead-letter table. Nothing is requeued for its
content; a batch is handed back to the broker only when the publisher or the
dead-letter queue failed, which is the bus's fault, not the message's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final, Protocol

from amqp.exceptions import PreconditionFailed
from kombu.connection import Connection
from kombu.entity import Exchange, Queue, binding
from kombu.message import Message
from kombu.messaging import Consumer, Producer
from kombu.utils.url import maybe_sanitize_url

from nephoscope.messaging.bus import consume_until
from nephoscope.notification.processor import NotificationProcessor, Outcome
from nephoscope.plugin import ExchangeTopics
from nephoscope.storage.base import DeadLetter

if TYPE_CHECKING:
    from nephoscope.config import NotificationSettings, Settings
    from nephoscope.messaging.publisher import Publisher
    from nephoscope.storage.base import Store

__all__ = [
    "DeadLetterSink",
    "Letter",
    "ListenerStats",
    "NotificationBusError",
    "NotificationListener",
    "QueueDeadLetters",
    "StoreDeadLetters",
    "build_queues",
]

LOG = logging.getLogger(__name__)

_POLLING_INTERVAL: Final = 0.02
# After a stop is asked for, drain until the bus has been quiet this long.
#: Seconds between attempts to send what the publisher buffered.
_BUFFER_RETRY: Final = 5.0
#: Headers a dead letter carries on RabbitMQ.
HEADER_PREFIX: Final = "x-nephoscope-"


class NotificationBusError(Exception):
    """The listener cannot consume as configured (a declaration the broker refuses)."""


@dataclass(frozen=True, slots=True)
class Letter:
    """A notification that could not be metered, with where it came from and why."""

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


class StoreDeadLetters:
    """Dead letters into the store's dead-letter table (the embedded bus)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def put(self, letters: Sequence[Letter]) -> None:
        self.store.write_batch(
            [],
            [
                DeadLetter(
                    f"notification {letter.event_type or '?'} from {letter.exchange or '?'} "
                    f"({letter.routing_key}): {letter.reason}"[:2000],
                    letter.body,
                    letter.received_at,
                    letter.message_id,
                )
                for letter in letters
            ],
        )


class QueueDeadLetters:
    """Dead letters into a durable queue on the broker, beside the queue they came from.

    The body is published unchanged; the reason and origin travel in headers
    (``x-nephoscope-reason``, ``-queue``, ``-exchange``, ``-routing-key``,
    ``-event-type``, ``-dead-lettered-at``), persistent, with publisher
    confirms. Publishing the body back to its exchange with its routing key
    replays it.
    """

    def __init__(self, suffix: str) -> None:
        self.suffix = suffix
        self._producer: Producer | None = None
        self._declared: set[str] = set()

    def bind(self, connection: Connection) -> None:
        self._producer = Producer(connection.channel())
        self._declared.clear()

    def put(self, letters: Sequence[Letter]) -> None:
        producer = self._producer
        if producer is None:
            raise RuntimeError("dead-letter queue used before bind()")
        for letter in letters:
            name = letter.queue + self.suffix
            if name not in self._declared:
                Queue(name, durable=True, auto_delete=False).bind(producer.channel).declare()
                self._declared.add(name)
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
            producer.publish(
                letter.body,
                exchange="",
                routing_key=name,
                headers=headers,
                delivery_mode=2,
                content_type=letter.content_type or "application/json",
                content_encoding=letter.content_encoding or "utf-8",
                message_id=letter.message_id,
                retry=False,
            )


def build_queues(targets: Sequence[ExchangeTopics], settings: NotificationSettings) -> list[Queue]:
    """The queues to consume, each bound to its exchanges as oslo.messaging binds them."""
    bindings: dict[str, dict[tuple[str, str], binding]] = {}
    exchanges: dict[str, Exchange] = {}
    for target in targets:
        exchange = exchanges.setdefault(
            target.exchange,
            Exchange(
                target.exchange,
                type="topic",
                durable=settings.durable,
                auto_delete=False,
            ),
        )
        for topic in target.topics:
            for priority in settings.priorities:
                routing_key = f"{topic}.{priority}"
                name = settings.pool or routing_key
                bindings.setdefault(name, {})[(target.exchange, routing_key)] = binding(
                    exchange, routing_key=routing_key
                )
    return [
        Queue(
            name,
            bindings=list(bound.values()),
            durable=settings.durable,
            auto_delete=False,
        )
        for name, bound in bindings.items()
    ]


@dataclass
class ListenerStats:
    """Counts since the listener started."""

    received: int = 0
    metered: int = 0
    counters: int = 0
    unhandled: int = 0
    ignored: int = 0
    dead_lettered: int = 0
    skipped: int = 0
    duplicates: int = 0
    publish_errors: int = 0


@dataclass(slots=True)
class _Pending:
    message: Message
    outcome: Outcome


class NotificationListener:
    """Consumes notifications until ``run``'s stop event is set."""

    def __init__(
        self,
        settings: Settings,
        processor: NotificationProcessor,
        publisher: Publisher,
        *,
        dead_letters: DeadLetterSink | None = None,
    ) -> None:
        ns = settings.notifications
        self.settings = settings
        self.processor = processor
        self.publisher = publisher
        self._next_buffer_retry = time.monotonic() + _BUFFER_RETRY
        self.url = ns.url or settings.bus.url
        self.targets = processor.targets(settings)
        self.queues = build_queues(self.targets, ns)
        self.stats = ListenerStats()
        self._prefetch = ns.prefetch
        self._batch_size = settings.publisher.batch_size
        self._batch_timeout = ns.batch_timeout
        self._embedded = self.url.startswith("memory:")
        self._queue_dead_letters: QueueDeadLetters | None = None
        if dead_letters is None and not self._embedded and ns.dead_letter_suffix:
            self._queue_dead_letters = QueueDeadLetters(ns.dead_letter_suffix)
            dead_letters = self._queue_dead_letters
        self.dead_letters = dead_letters
        self._pending: list[_Pending] = []
        self._pending_counters = 0
        self._oldest: float | None = None
        self._stopping = threading.Event()
        self._failures = 0

    @property
    def safe_url(self) -> str:
        return str(maybe_sanitize_url(self.url))

    def describe(self) -> str:
        """The queues and exchanges, for people."""
        queues = ", ".join(sorted(q.name for q in self.queues)) or "no queue"
        exchanges = ", ".join(t.exchange for t in self.targets) or "no exchange"
        return f"queues {queues} on {exchanges}"

    def connect(self) -> Connection:
        url = self.url
        if url.rstrip("/") == "memory:":
            url = "memory://localhost//"
        return Connection(
            url,
            transport_options={"polling_interval": _POLLING_INTERVAL, "confirm_publish": True},
            connect_timeout=5,
        )

    # -- intake ------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        self.stats.received += 1
        info = message.delivery_info
        routing_key = str(info.get("routing_key") or "")
        priority = routing_key.rpartition(".")[2] or None
        try:
            outcome = self.processor.process_body(message.body, priority)
        except (
            Exception
        ) as exc:  # the processor never raises; if it does, the message is not to blame twice
            LOG.exception("processing a notification failed")
            outcome = Outcome("rejected", problems=[f"internal error: {type(exc).__name__}: {exc}"])
        if self._oldest is None:
            self._oldest = time.monotonic()
        self._pending.append(_Pending(message, outcome))
        self._pending_counters += len(outcome.counters)
        if len(self._pending) >= self._prefetch or self._pending_counters >= self._batch_size:
            self.flush()

    def _due(self) -> bool:
        return self._oldest is not None and time.monotonic() - self._oldest >= self._batch_timeout

    # -- handing on ----------------------------------------------------------------

    def flush(self) -> bool:
        """Publish the pending counters, dead-letter the bad messages, acknowledge all.

        Returns False when the publisher or the dead-letter sink failed: the
        messages were handed back to the broker to be delivered again.
        """
        pending, self._pending = self._pending, []
        self._pending_counters = 0
        self._oldest = None
        if not pending:
            return True
        counters = [c for p in pending for c in p.outcome.counters]
        letters = [self._letter(p) for p in pending if p.outcome.problems]
        try:
            if counters:
                self.publisher.publish(counters)
            if letters:
                self._dead_letter(letters)
        except Exception as exc:
            self.stats.publish_errors += 1
            LOG.error(
                "could not hand on %d counter(s) of %d notification(s), they go back to the "
                "bus: %s",
                len(counters),
                len(pending),
                exc,
            )
            self._failures += 1
            for p in pending:
                with contextlib.suppress(Exception):
                    p.message.requeue()
            return False
        self._failures = 0
        if self._embedded:
            for p in pending:
                p.message.ack()
        else:
            # Every message delivered on the channel and not yet acknowledged is in
            # this batch: one acknowledgement up to the last covers them all.
            pending[-1].message.ack(multiple=True)
        for p in pending:
            self._count(p.outcome)
        return True

    def _count(self, outcome: Outcome) -> None:
        stats = self.stats
        stats.counters += len(outcome.counters)
        stats.skipped += outcome.skipped
        stats.duplicates += outcome.duplicates
        if outcome.problems:
            stats.dead_lettered += 1
        if outcome.status == "metered":
            stats.metered += 1
        elif outcome.status == "unhandled":
            stats.unhandled += 1
        elif outcome.status == "ignored":
            stats.ignored += 1

    def _letter(self, pending: _Pending) -> Letter:
        message, outcome = pending.message, pending.outcome
        info = message.delivery_info
        routing_key = str(info.get("routing_key") or "")
        raw = message.body
        body = raw if isinstance(raw, bytes) else str(raw).encode("utf-8")
        return Letter(
            body=body,
            reason="; ".join(outcome.problems),
            queue=self.settings.notifications.pool or routing_key,
            exchange=str(info.get("exchange") or ""),
            routing_key=routing_key,
            received_at=datetime.now(UTC),
            message_id=outcome.message_id,
            event_type=outcome.event_type,
            content_type=message.content_type,
            content_encoding=message.content_encoding,
            headers=dict(message.headers or {}),
        )

    def _dead_letter(self, letters: list[Letter]) -> None:
        for letter in letters:
            LOG.warning(
                "notification %s (%s) dead-lettered: %s",
                letter.message_id or "without id",
                letter.event_type or "no event type",
                letter.reason,
            )
        if self.dead_letters is None:
            LOG.warning("no dead-letter queue: %d notification(s) dropped", len(letters))
            return
        self.dead_letters.put(letters)

    # -- the loop ------------------------------------------------------------------

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Consume until ``stop`` is set, then drain, flush and return.

        Reconnects with backoff when the bus goes away; raises
        :class:`NotificationBusError` when the broker refuses a declaration.
        """
        self._stopping = stop
        backoff = 1.0
        while True:
            try:
                self._consume(stop, ready)
                return
            except NotificationBusError:
                raise
            except Exception as exc:
                # Whatever was not acknowledged is delivered again by the broker.
                self._pending.clear()
                self._pending_counters = 0
                self._oldest = None
                if stop.is_set():
                    LOG.warning("notification bus error while stopping: %s", exc)
                    return
                LOG.error(
                    "notification bus %s lost (%s); reconnecting in %.0fs",
                    self.safe_url,
                    exc,
                    backoff,
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _consume(self, stop: threading.Event, ready: threading.Event | None) -> None:
        with self.connect() as connection:
            connection.ensure_connection(max_retries=1)
            try:
                consumer = Consumer(
                    connection.channel(),
                    queues=self.queues,
                    on_message=self._on_message,
                    no_ack=False,
                    auto_declare=True,
                    prefetch_count=self._prefetch,
                )
            except PreconditionFailed as exc:
                raise NotificationBusError(
                    f"{self.safe_url} refused to declare the notification exchanges and queues "
                    f"(durable={self.settings.notifications.durable}): {exc}. Set "
                    f"notifications.durable to the amqp_durable_queues of the OpenStack "
                    f"services that created them"
                ) from None
            if self._queue_dead_letters is not None:
                self._queue_dead_letters.bind(connection)
            with consumer:
                if ready is not None:
                    ready.set()
                LOG.info(
                    "listening for notifications on %s: %s",
                    self.safe_url,
                    ", ".join(sorted(q.name for q in self.queues)),
                )
                # In-process, what is queued at a stop would be lost: take it in first.
                consume_until(connection, stop, self._tick, drain_after_stop=self._embedded)
                self.flush()

    def _tick(self) -> None:
        if self._failures and not self._stopping.is_set():
            # The publisher is failing: let the bus recover before taking more.
            self._stopping.wait(min(5.0, 0.5 * self._failures))
        if self._due():
            self.flush()
        now = time.monotonic()
        if now >= self._next_buffer_retry:
            # A quiet listener publishes nothing new, so nothing else would send
            # what the publisher buffered while the bus was away.
            self._next_buffer_retry = now + _BUFFER_RETRY
            self.publisher.flush()
