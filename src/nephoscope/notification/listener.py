"""The notification listener: consumes what OpenStack services publish, publishes counters.

It declares what oslo.messaging declares for a notification listener: for each
exchange (``nova``, ``cinder``, ...) and topic (``notifications``) a topic
exchange, and the queue ``<topic>.<priority>`` (``notifications.info``) bound
to it with that routing key (or one queue named ``notifications.pool``). Nova
declares the same queue when it sends, with oslo.messaging's
``amqp_durable_queues`` and ``rabbit_quorum_queue``, and RabbitMQ refuses a
second declaration that differs (406 PRECONDITION_FAILED): so an exchange or
queue that exists is used as the broker has it (:mod:`nephoscope.messaging.declare`),
and ``notifications.durable`` and ``notifications.queue_type`` declare only
those absent.

Messages are processed as they arrive and acknowledged in batches, only after
the batch's counters are on the bus (confirmed) or in the agent's buffer, where
they are never dropped. When the buffer has no room for them, the batch is
handed back and the listener stops consuming until the bus takes samples again:
the notifications wait on their queue, where the broker keeps them.

A message that cannot be metered is dead-lettered with its reason, then
acknowledged: on RabbitMQ to the queue ``<queue><notifications.dead_letter_suffix>``
(``notifications.info.dead``, through :mod:`nephoscope.messaging.deadletter`, as
the collector's), on the embedded bus to the store's dead-letter table. Nothing
is requeued for its content; a batch is handed back to the broker only when the
publisher or the dead-letter queue failed, which is the bus's fault, not the
message's.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Final

from kombu.connection import Connection
from kombu.entity import Exchange, Queue, binding
from kombu.message import Message
from kombu.messaging import Consumer

from nephoscope.logs import LogLimiter, safe_url
from nephoscope.messaging.bus import consume_until, open_connection, refusal_code
from nephoscope.messaging.deadletter import (
    HEADER_PREFIX,
    DeadLetterSink,
    Letter,
    QueueDeadLetters,
)
from nephoscope.messaging.declare import adopt_queue, queue_arguments
from nephoscope.messaging.publisher import BufferFull
from nephoscope.notification.processor import NotificationProcessor, Outcome
from nephoscope.plugin import ExchangeTopics
from nephoscope.storage.base import DeadLetter

if TYPE_CHECKING:
    from nephoscope.config import NotificationSettings, Settings
    from nephoscope.messaging.publisher import Publisher
    from nephoscope.storage.base import Store

__all__ = [
    "HEADER_PREFIX",
    "DeadLetterSink",
    "Letter",
    "ListenerStats",
    "NotificationBusError",
    "NotificationListener",
    "QueueDeadLetters",
    "StoreDeadLetters",
    "build_queues",
    "queue_names",
]

LOG = logging.getLogger(__name__)

#: Seconds between attempts to send what the publisher buffered.
_BUFFER_RETRY: Final = 5.0


class NotificationBusError(Exception):
    """The listener cannot consume as configured (a declaration the broker refuses)."""


class _Paused(Exception):
    """The publisher cannot take more counters: stop consuming until it can."""


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


def _queue_name(settings: NotificationSettings, routing_key: str) -> str:
    return settings.pool or routing_key


def queue_names(settings: NotificationSettings) -> list[str]:
    """The queues the listener consumes for the configured topics and priorities."""
    return list(
        dict.fromkeys(
            _queue_name(settings, f"{topic}.{priority}")
            for topic in settings.topics
            for priority in settings.priorities
        )
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
                name = _queue_name(settings, routing_key)
                bindings.setdefault(name, {})[(target.exchange, routing_key)] = binding(
                    exchange, routing_key=routing_key
                )
    return [
        Queue(
            name,
            bindings=list(bound.values()),
            # RabbitMQ has quorum queues durable only.
            durable=settings.durable or settings.queue_type == "quorum",
            auto_delete=False,
            queue_arguments=queue_arguments(settings.queue_type),
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
    #: Times consuming stopped because the buffer had no room.
    paused: int = 0


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
            self._queue_dead_letters = QueueDeadLetters(
                self.url, ns.dead_letter_suffix, ns.queue_type
            )
            dead_letters = self._queue_dead_letters
        self.dead_letters = dead_letters
        self._pending: list[_Pending] = []
        self._pending_counters = 0
        self._oldest: float | None = None
        self._stopping = threading.Event()
        self._failures = 0
        self._paused = False
        self._said = LogLimiter(60.0)

    @property
    def safe_url(self) -> str:
        return safe_url(self.url)

    def describe(self) -> str:
        """The queues and exchanges, for people."""
        queues = ", ".join(sorted(q.name for q in self.queues)) or "no queue"
        exchanges = ", ".join(t.exchange for t in self.targets) or "no exchange"
        return f"queues {queues} on {exchanges}"

    def connect(self) -> Connection:
        return open_connection(self.url)

    # -- intake ------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        if self._paused:
            # Left unacknowledged: the broker delivers it again once consuming resumes.
            return
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
                self.publisher.publish(counters, droppable=False)
            if letters:
                self._dead_letter(letters)
        except BufferFull as exc:
            self.stats.publish_errors += 1
            if not self._paused:
                self.stats.paused += 1
            self._paused = True
            if (held := self._said.allow("paused")) is not None:
                LOG.error(
                    "%s: %d notification(s) go back to their queue, and consuming stops until"
                    " the bus takes samples again%s",
                    exc,
                    len(pending),
                    f" ({held} more time(s) in the last minute)" if held else "",
                )
            for p in pending:
                with contextlib.suppress(Exception):
                    p.message.requeue()
            return False
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
            queue=_queue_name(self.settings.notifications, routing_key),
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
        try:
            self._run(stop, ready)
        finally:
            if self._queue_dead_letters is not None:
                self._queue_dead_letters.close()

    def _run(self, stop: threading.Event, ready: threading.Event | None) -> None:
        backoff = 1.0
        while True:
            try:
                self._consume(stop, ready)
                return
            except NotificationBusError:
                raise
            except _Paused:
                # Leaving the connection hands back every unacknowledged message.
                self._forget_pending()
                self._wait_for_room(stop)
                self._paused = False
                if stop.is_set():
                    return
                LOG.info("the bus takes samples again: consuming notifications again")
            except Exception as exc:
                # Whatever was not acknowledged is delivered again by the broker.
                self._forget_pending()
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

    def _forget_pending(self) -> None:
        self._pending.clear()
        self._pending_counters = 0
        self._oldest = None

    def _wait_for_room(self, stop: threading.Event) -> None:
        """Until the publisher has sent what it buffered (the bus works), or ``stop``."""
        while not stop.is_set():
            if self.publisher.flush():
                return
            stop.wait(1.0)

    def _consume(self, stop: threading.Event, ready: threading.Event | None) -> None:
        with self.connect() as connection:
            connection.ensure_connection(max_retries=1)
            try:
                # Those that exist are used as they are: oslo.messaging declares the
                # same queues when it sends, with its own settings.
                queues = [adopt_queue(connection, queue) for queue in self.queues]
                consumer = Consumer(
                    connection.channel(),
                    queues=queues,
                    on_message=self._on_message,
                    no_ack=False,
                    auto_declare=True,
                    prefetch_count=self._prefetch,
                )
            except Exception as exc:
                if refusal_code(exc) is None:
                    raise  # not a refusal: the bus went away, try again
                raise NotificationBusError(
                    f"{self.safe_url} refused the notification exchanges and queues: "
                    f"{type(exc).__name__}: {exc}. Check that the user in notifications.url "
                    "(or bus.url) may configure and read them"
                ) from None
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
        if self._paused and not self._stopping.is_set():
            raise _Paused
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
