"""Consume meter messages, verify them, store them in batches, acknowledge after commit.

A message that cannot be stored (bad signature, bad field, not JSON) becomes a
dead letter with its reason, and the good samples beside it are stored all the
same. On RabbitMQ each dead letter goes to the queue ``<queue>.dead``
(``collector.dead_letter_suffix``), confirmed by the broker before the batch is
acknowledged; on the embedded bus, whose queue dies with the process, to the
store's dead-letter table in the batch's own transaction. A store that is down
leaves the messages on the bus to be delivered again; a sample the store itself
refuses is dead-lettered alone instead of blocking the queue (Ceilometer
requeued such a poison message forever).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from kombu.message import Message
from sqlalchemy import exc as sa_exc

from nephoscope.config import Settings, refuse_default_secret
from nephoscope.counter import Counter
from nephoscope.messaging.bus import KombuBus, consume_until
from nephoscope.messaging.deadletter import DeadLetterSink, Letter, QueueDeadLetters
from nephoscope.messaging.envelope import decode_envelope
from nephoscope.messaging.errors import RejectedMessage
from nephoscope.messaging.meter import (
    METERING_EVENT_TYPE,
    counter_to_message,
    message_to_counter,
)
from nephoscope.storage.base import DeadLetter, Store, WriteResult

__all__ = ["Collector", "CollectorStats", "Parsed", "parse_body"]

LOG = logging.getLogger(__name__)


@dataclass
class Parsed:
    """One bus message, read: its samples and its dead letters."""

    counters: list[Counter] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)


def parse_body(body: bytes | str, secret: str, received_at: datetime | None = None) -> Parsed:
    """Read a bus message into verified counters and dead letters. Never raises."""
    received_at = received_at or datetime.now(UTC)
    raw_body = body.encode("utf-8") if isinstance(body, str) else bytes(body)
    parsed = Parsed()
    try:
        try:
            notification = decode_envelope(raw_body)
        except RejectedMessage:
            # orjson refuses what the standard library reads (a 400-digit integer, a
            # lone surrogate, NaN): read it so, to dead-letter only the meter
            # messages holding such values and store the good ones beside them.
            notification = decode_envelope(raw_body, loads=json.loads)
        event_type = notification.get("event_type")
        if event_type != METERING_EVENT_TYPE:
            raise RejectedMessage(f"event_type {event_type!r} is not {METERING_EVENT_TYPE!r}")
        payload = notification.get("payload")
        if isinstance(payload, dict):
            payload = [payload]
        if not isinstance(payload, list):
            raise RejectedMessage("payload is not a list of meter messages")
    except RejectedMessage as exc:
        parsed.dead_letters.append(DeadLetter(exc.reason, raw_body, received_at))
        return parsed
    exact: list[Any] | None = None
    for index, item in enumerate(payload):
        try:
            counter = message_to_counter(item, secret)
        except RejectedMessage as exc:
            if exc.reason == "bad signature":
                # orjson reads integers beyond 64 bits as floats, which changes
                # what was signed; read the body again exactly before refusing it.
                if exact is None:
                    exact = _exact_payload(raw_body)
                if index < len(exact):
                    try:
                        parsed.counters.append(message_to_counter(exact[index], secret))
                        continue
                    except RejectedMessage as again:
                        item = exact[index]  # kept as it was sent
                        exc = again  # and refused for what it holds
            parsed.dead_letters.append(
                DeadLetter(exc.reason, _dump(item), received_at, exc.message_id)
            )
            continue
        parsed.counters.append(counter)
    return parsed


def _exact_payload(raw_body: bytes) -> list[Any]:
    try:
        payload = decode_envelope(raw_body, loads=json.loads).get("payload")
    except RejectedMessage:
        return []
    return payload if isinstance(payload, list) else [payload]


def _dump(item: Any) -> bytes:
    try:
        return orjson.dumps(item, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:  # orjson refuses integers beyond 64 bits
        pass
    try:
        return json.dumps(item).encode("utf-8")
    except (TypeError, ValueError):
        return repr(item).encode("utf-8")


def _transient(exc: BaseException) -> bool:
    """Whether a store error will likely pass (the database is down or busy)."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    return isinstance(
        exc, (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.DisconnectionError)
    )


@dataclass
class CollectorStats:
    stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    batches: int = 0
    store_errors: int = 0
    expired: int = 0


class _StoreUnavailable(Exception):
    """The store could not be reached; the batch goes back to the bus."""


@dataclass
class _Pending:
    message: Message | None
    parsed: Parsed


@dataclass(frozen=True)
class _Written:
    """What the writer thread did with a batch."""

    result: WriteResult
    #: Samples the store refused, for the dead-letter queue (kept in the store otherwise).
    refused: list[DeadLetter]


@dataclass(frozen=True)
class _Batch:
    """A batch handed to the writer thread, not yet acknowledged."""

    future: Future[_Written]
    pending: list[_Pending]
    #: Dead letters for the dead-letter queue, sent once the samples are committed.
    dead: list[DeadLetter]


class Collector:
    """Reads the metering queue into a store. ``run`` until ``stop`` is set."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        bus: KombuBus | None = None,
        *,
        dead_letters: DeadLetterSink | None = None,
    ) -> None:
        if not settings.bus.url.startswith("memory:"):
            refuse_default_secret(settings, "the collector reads a shared bus (bus.url)")
        self.settings = settings
        self.store = store
        self.bus = bus or KombuBus(settings.bus)
        self.stats = CollectorStats()
        self._secret = settings.metering_secret
        self._batch_size = settings.collector.batch_size
        self._batch_timeout = settings.collector.batch_timeout
        self._prefetch = settings.collector.prefetch
        self._pending: list[_Pending] = []
        self._pending_samples = 0
        self._oldest: float | None = None
        # An in-process bus loses what is queued when the process ends: drain it.
        self._embedded = settings.bus.url.startswith("memory:")
        suffix = settings.collector.dead_letter_suffix
        self._queue_dead_letters: QueueDeadLetters | None = None
        if dead_letters is None and not self._embedded and suffix:
            self._queue_dead_letters = QueueDeadLetters(
                settings.bus.url, suffix, settings.bus.queue_type
            )
            dead_letters = self._queue_dead_letters
        #: Where dead letters go; None: into the store with their batch.
        self.dead_letters = dead_letters
        self._writer: ThreadPoolExecutor | None = None
        # Expiry runs in the writer thread between batches, so it never competes
        # with them for the store.
        store_settings = settings.store
        self._expire_every = store_settings.retention.interval if store_settings.expires else None
        self._next_expiry = time.monotonic()
        self._inflight: _Batch | None = None

    # -- intake ------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        parsed = parse_body(message.body, self._secret)
        self.add(parsed, message)

    def add(self, parsed: Parsed, message: Message | None = None) -> None:
        """Queue one read bus message for the next batch; flush when the batch is full."""
        if self._oldest is None:
            self._oldest = time.monotonic()
        self._pending.append(_Pending(message, parsed))
        self._pending_samples += len(parsed.counters) + len(parsed.dead_letters)
        if self._pending_samples >= self._batch_size or len(self._pending) >= self._prefetch:
            self._submit()

    def _due(self) -> bool:
        return self._oldest is not None and (time.monotonic() - self._oldest >= self._batch_timeout)

    # -- writing -----------------------------------------------------------

    def flush(self) -> WriteResult | None:
        """Write everything pending in one transaction, then acknowledge it.

        Returns None when the store was unreachable and the messages were
        handed back to the bus.
        """
        self._submit()
        return self._settle()

    def _submit(self) -> None:
        # One batch is written in a writer thread while the next one is read:
        # SQLite and psycopg release the GIL while they work. At most one batch
        # is in flight, and its bus messages are acknowledged only once it has
        # been committed.
        if self._inflight is not None:
            self._settle()
        pending, self._pending = self._pending, []
        self._pending_samples = 0
        self._oldest = None
        if not pending:
            return
        counters = [c for p in pending for c in p.parsed.counters]
        dead = [d for p in pending for d in p.parsed.dead_letters]
        for_queue: list[DeadLetter] = []
        if self.dead_letters is not None:
            for_queue, dead = dead, []
        if self._writer is None:
            self._writer = ThreadPoolExecutor(1, thread_name_prefix="collector-writer")
        future = self._writer.submit(self._write, counters, dead)
        self._inflight = _Batch(future, pending, for_queue)

    def _send_dead_letters(self, dead: list[DeadLetter]) -> None:
        """Hand dead letters to the dead-letter queue; raises when it did not take them."""
        assert self.dead_letters is not None
        bus = self.bus
        try:
            self.dead_letters.put(
                [
                    Letter(
                        body=d.body,
                        reason=d.reason,
                        queue=bus.queue.name,
                        exchange=bus.exchange.name,
                        routing_key=bus.routing_key,
                        received_at=d.received_at,
                        message_id=d.message_id,
                    )
                    for d in dead
                ]
            )
        except Exception as exc:
            # The batch is not acknowledged: the broker delivers it again.
            LOG.error("could not dead-letter %d meter message(s): %s", len(dead), exc)
            raise

    def _settle(self) -> WriteResult | None:
        """Wait for the batch in flight; acknowledge its messages or hand them back."""
        if self._inflight is None:
            return WriteResult(0, 0, 0)
        batch = self._inflight
        self._inflight = None
        try:
            written = batch.future.result()
        except _StoreUnavailable as exc:
            LOG.warning(
                "store unavailable, %d message(s) left on the bus: %s", len(batch.pending), exc
            )
            self._requeue(batch.pending)
            return None
        letters = [*batch.dead, *written.refused]
        if letters:
            # Confirmed by the broker before the batch is acknowledged: a crash in
            # between delivers the batch again, its samples are duplicates the store
            # ignores and its letters are sent twice, never lost. Sent after the
            # commit, so a batch handed back while the store is down sends none.
            self._send_dead_letters(letters)
        for p in batch.pending:
            if p.message is not None:
                p.message.ack()
        stored = written.result
        result = WriteResult(stored.stored, stored.duplicates, stored.dead_letters + len(letters))
        self.stats.stored += result.stored
        self.stats.duplicates += result.duplicates
        self.stats.dead_letters += result.dead_letters
        self.stats.batches += 1
        if result.dead_letters:
            LOG.warning("%d message(s) dead-lettered in this batch", result.dead_letters)
        return result

    def _write(self, counters: list[Counter], dead: list[DeadLetter]) -> _Written:
        """Runs in the writer thread."""
        try:
            return _Written(self.store.write_batch(counters, dead), [])
        except Exception as exc:
            self.stats.store_errors += 1
            if _transient(exc):
                raise _StoreUnavailable(str(exc)) from exc
            LOG.error("store refused a batch, writing its samples one by one: %s", exc)
        try:
            return self._write_isolated(counters, dead)
        except Exception as exc:
            raise _StoreUnavailable(str(exc)) from exc

    def _write_isolated(self, counters: list[Counter], dead: list[DeadLetter]) -> _Written:
        # Only reached when the store refused a batch for its content: find the
        # samples it refuses and keep them as dead letters instead.
        stored = duplicates = 0
        refused: list[DeadLetter] = []
        now = datetime.now(UTC)
        for counter in counters:
            try:
                one = self.store.write_batch([counter], ())
            except Exception as exc:
                if _transient(exc):
                    raise
                refused.append(
                    DeadLetter(
                        f"store refused the sample: {type(exc).__name__}: {exc}"[:2000],
                        _dump(counter_to_message(counter, self._secret)),
                        now,
                        counter.id,
                    )
                )
                continue
            stored += one.stored
            duplicates += one.duplicates
        if self.dead_letters is not None:
            # The main thread sends them, before it acknowledges the batch.
            return _Written(WriteResult(stored, duplicates, 0), refused)
        result = self.store.write_batch([], [*dead, *refused])
        return _Written(WriteResult(stored, duplicates, result.dead_letters), [])

    def _requeue(self, pending: list[_Pending]) -> None:
        for p in pending:
            if p.message is not None:
                try:
                    p.message.requeue()
                except Exception:
                    LOG.debug(
                        "could not requeue a message; the broker redelivers it", exc_info=True
                    )
        time.sleep(min(5.0, 0.5 * (1 + self.stats.store_errors % 10)))

    # -- the loop ----------------------------------------------------------

    def run(self, stop: threading.Event, ready: threading.Event | None = None) -> None:
        """Consume until ``stop`` is set, then drain what is queued, flush and return."""
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
                self._shutdown_writer()
                return
            except Exception as exc:  # the bus went away: reconnect, never die
                self._forget_inflight()
                if stop.is_set():
                    LOG.warning("bus error while stopping: %s", exc)
                    self._shutdown_writer()
                    return
                # Unacknowledged messages are redelivered by the broker.
                self._pending.clear()
                self._pending_samples = 0
                self._oldest = None
                LOG.error(
                    "bus unavailable (%s); trying again in %.0fs",
                    self.bus.describe_error(exc),
                    backoff,
                )
                stop.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    def _consume(self, stop: threading.Event, ready: threading.Event | None) -> None:
        with self.bus.connect() as connection:
            connection.ensure_connection(max_retries=1)
            with self.bus.consumer(connection, self._on_message, self._prefetch):
                if ready is not None:
                    ready.set()
                LOG.info("collector consuming %s on %s", self.bus.queue.name, self.bus.safe_url)
                consume_until(connection, stop, self._tick, drain_after_stop=self._embedded)
                self.flush()

    def _tick(self) -> None:
        if self._inflight is not None and self._inflight.future.done():
            self._settle()
        if self._due():
            self._submit()
        if self._expire_every is not None and time.monotonic() >= self._next_expiry:
            self._next_expiry = time.monotonic() + self._expire_every
            if self._writer is None:
                self._writer = ThreadPoolExecutor(1, thread_name_prefix="collector-writer")
            self._writer.submit(self._expire)

    def _expire(self) -> None:
        """Runs in the writer thread."""
        try:
            self.stats.expired += self.store.expire()
        except Exception:
            LOG.exception("expiring old samples failed; trying again next interval")

    def _forget_inflight(self) -> None:
        # The channel is gone: the broker redelivers what was not acknowledged,
        # and the store ignores what it already has.
        if self._inflight is not None:
            future = self._inflight.future
            self._inflight = None
            try:
                future.result()
            except Exception:
                LOG.debug("batch in flight failed while the bus was lost", exc_info=True)

    def close(self) -> None:
        """Stop the writer thread once its batch is written; ``run`` does so on leaving,
        a caller that used :meth:`add` and :meth:`flush` itself calls this."""
        self._shutdown_writer()

    def _shutdown_writer(self) -> None:
        if self._writer is not None:
            self._writer.shutdown(wait=True)
            self._writer = None
