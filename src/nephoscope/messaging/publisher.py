"""The publisher: gives counters their message ids, signs them and sends them in batches."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from stevedore import DriverManager
from stevedore.exception import NoMatches
from uuid_utils import uuid7

from nephoscope.config import ConfigError, Settings
from nephoscope.counter import Counter
from nephoscope.logs import LogLimiter
from nephoscope.messaging.meter import counter_to_message
from nephoscope.messaging.spool import Spool, SpoolFull
from nephoscope.plugin import NS_PUBLISHER

__all__ = ["BufferFull", "Publisher", "Sink", "load_sink"]

LOG = logging.getLogger(__name__)


class Sink(Protocol):
    """Where published meter messages go; plugins in ``nephoscope.publisher`` by URL scheme."""

    def send(self, messages: Sequence[dict[str, Any]]) -> None: ...

    def close(self) -> None: ...


def load_sink(settings: Settings) -> Sink:
    """The sink for ``bus.url``, chosen by its scheme."""
    scheme = urlsplit(settings.bus.url).scheme.split("+")[0]
    try:
        manager: DriverManager[Any] = DriverManager(
            NS_PUBLISHER, scheme, invoke_on_load=True, invoke_args=(settings.bus,)
        )
    except NoMatches:
        known = ", ".join(sorted(ep.name for ep in entry_points(group=NS_PUBLISHER)))
        raise ConfigError(
            f"bus.url: no publisher for scheme {scheme!r} (installed: {known})"
        ) from None
    return cast(Sink, manager.driver)


class BufferFull(Exception):
    """The bus did not take counters that may not be dropped, and the buffer has no room."""


class Publisher:
    """Signs counters and sends them; keeps what the bus does not take.

    When a batch cannot be sent it goes to the buffer (:class:`Spool`), and so
    does everything after it until the buffer has been sent again, oldest
    first, so samples reach the collector in the order they were taken.
    Pollsters' counters are ``droppable``: a full buffer drops the oldest of
    them, since the past cannot be polled again. Counters made from
    notifications are not: when they do not fit, :class:`BufferFull` is raised
    and the caller leaves the notifications on their queue.

    A refusal that will not pass by itself (``PublishError.lasting``: access
    refused, no exchange, a declaration that differs) is said once a minute
    with the setting to change, kept for ``nephoscope status``, and the bus is
    tried again only every :attr:`LASTING_RETRY` seconds meanwhile.
    Thread-safe: polling sources running side by side share one publisher.
    """

    #: Seconds between attempts while the bus refuses for a reason that lasts.
    LASTING_RETRY: float = 10.0

    def __init__(
        self,
        settings: Settings,
        sink: Sink | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secret = settings.metering_secret
        self._batch_size = settings.publisher.batch_size
        self._sink = sink if sink is not None else load_sink(settings)
        buffer = settings.publisher.buffer
        assert buffer.path is not None  # given a default by the settings
        self.spool = Spool(buffer.path, buffer.max_samples)
        #: Where counters go, for people (no password).
        self.destination: str = getattr(self._sink, "safe_url", type(self._sink).__name__)
        self._lock = threading.Lock()
        self._clock = clock
        self._said = LogLimiter(60.0, clock)
        #: The bus's last error while it fails; None while it works.
        self.error: str | None = None
        self._retry_at = 0.0
        self._cleared = False
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    def prepare(self, counters: Iterable[Counter]) -> list[dict[str, Any]]:
        """Signed meter messages for ``counters``; those without an id get a new one.

        New ids are UUIDv7: unique, and ordered by time, so the store's index on
        message ids grows at its end instead of being rewritten at random.
        """
        secret = self._secret
        messages = []
        for counter in counters:
            try:
                messages.append(counter_to_message(counter, secret, counter.id or str(uuid7())))
            except (TypeError, ValueError) as exc:
                # A plugin put something in resource_metadata that is not JSON.
                LOG.error("counter %s of %s not sent: %s", counter.name, counter.resource_id, exc)
                self.failed += 1
        return messages

    def publish(self, counters: Iterable[Counter], *, droppable: bool = True) -> int:
        """Sign and send ``counters``; return how many were sent now.

        What the bus does not take is buffered, never raised: it is sent by a
        later call, after what was buffered before it. Unless ``droppable``,
        counters the buffer has no room for raise :class:`BufferFull` (some
        batches may have been sent before: they carry the same ids when sent
        again, and the store keeps one).
        """
        messages = self.prepare(counters)
        size = self._batch_size
        batches = [messages[i : i + size] for i in range(0, len(messages), size)]
        sent = 0
        with self._lock:
            try:
                if not self._send_buffered():
                    self._buffer(batches, droppable)
                    return 0
                for index, batch in enumerate(batches):
                    try:
                        self._sink.send(batch)
                    except Exception as exc:
                        self._failed(exc)
                        self._buffer(batches[index:], droppable)
                        break
                    sent += len(batch)
                else:
                    self._works()
            finally:
                self.sent += sent
        return sent

    def flush(self) -> bool:
        """Try to send what is buffered; True when nothing is left."""
        with self._lock:
            return self._send_buffered()

    @property
    def waiting(self) -> bool:
        """Whether the bus refused for a lasting reason and is not to be tried yet."""
        return self.error is not None and self._clock() < self._retry_at

    def _send_buffered(self) -> bool:
        if self.waiting:
            return False
        replayed = 0
        while (oldest := self.spool.oldest()) is not None:
            batch_id, batch = oldest
            try:
                self._sink.send(batch)
            except Exception as exc:
                self._failed(exc)
                if replayed:
                    LOG.info("sent %d buffered sample(s) before the bus failed again", replayed)
                self.sent += replayed
                return False
            self.spool.remove(batch_id)
            replayed += len(batch)
        self._works()
        if replayed:
            self.sent += replayed
            LOG.warning("bus back: sent %d buffered sample(s)", replayed)
        return True

    def _failed(self, exc: BaseException) -> None:
        text = str(exc)
        lasting = bool(getattr(exc, "lasting", False))
        if lasting:
            self._retry_at = self._clock() + self.LASTING_RETRY
        if text != self.error:
            self.error = text
            self.spool.note_error(text)
        if lasting and (held := self._said.allow("lasting")) is not None:
            LOG.error(
                "the bus refuses what is published, and will until a setting changes: %s%s",
                text,
                f" ({held} more refusal(s) in the last minute)" if held else "",
            )

    def _works(self) -> None:
        if self.error is not None or not self._cleared:
            # The first success also clears what an earlier process noted.
            self.error = None
            self._retry_at = 0.0
            self._cleared = True
            self.spool.note_error(None)

    def _buffer(self, batches: list[list[dict[str, Any]]], droppable: bool) -> None:
        count = sum(len(b) for b in batches)
        if not count:
            return
        try:
            dropped = self.spool.push(batches, keep=not droppable)
        except SpoolFull as exc:
            raise BufferFull(f"bus unavailable ({self.error}) and {exc}") from None
        self.dropped += dropped
        if (held := self._said.allow("buffered")) is not None:
            pending, _ = self.spool.counts()
            LOG.warning(
                "bus unavailable (%s): %d sample(s) buffered in %s, %d waiting%s",
                self.error,
                count,
                self.spool.path,
                pending,
                f" ({held} more batch(es) buffered in the last minute)" if held else "",
            )
        if dropped and (held := self._said.allow("dropped")) is not None:
            LOG.error(
                "agent buffer full (publisher.buffer.max_samples = %d): dropped the %d oldest"
                " sample(s), %d in all",
                self.spool.max_samples,
                dropped,
                self.dropped,
            )

    def close(self) -> None:
        with self._lock:
            self._sink.close()
            self.spool.close()
