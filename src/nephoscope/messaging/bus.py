"""The message bus, through kombu: ``memory://`` in-process, ``amqp://`` for RabbitMQ.

Both go through the same code, so moving from the embedded bus to RabbitMQ is a
change of ``bus.url``. Meter messages travel as Ceilometer's ``notifier://``
publisher sends them: an oslo.messaging v2 notification with event type
``metering``, priority ``SAMPLE``, its payload a list of meter messages, on a
topic exchange with routing key ``<topic>.sample``.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

from amqp.exceptions import AMQPError
from kombu.connection import Connection
from kombu.entity import Exchange, Queue
from kombu.message import Message
from kombu.messaging import Consumer, Producer

from nephoscope.config import BusSettings
from nephoscope.logs import safe_url
from nephoscope.messaging.declare import adopt_queue, queue_arguments
from nephoscope.messaging.envelope import encode_notification
from nephoscope.messaging.meter import METERING_EVENT_TYPE, METERING_PRIORITY

__all__ = ["KombuBus", "PublishError", "consume_until", "open_connection", "refusal_code"]

LOG = logging.getLogger(__name__)

# The virtual transports (memory://) poll their queues; the default of one
# second would add up to a second of latency to every batch.
_POLLING_INTERVAL = 0.02


#: AMQP reply codes of refusals that do not pass by themselves: access refused,
#: no such exchange or vhost, a declaration that differs, a vhost not allowed.
_LASTING_CODES: Final = frozenset({402, 403, 404, 406, 530})


class PublishError(Exception):
    """The bus did not take a batch.

    ``lasting`` when the broker refused it for a reason that will not pass by
    itself (a permission, a missing exchange, a conflicting declaration):
    trying again at once only repeats the refusal until someone changes a setting.
    """

    def __init__(self, text: str, *, lasting: bool = False) -> None:
        super().__init__(text)
        self.lasting = lasting


def refusal_code(exc: BaseException) -> int | None:
    """The AMQP reply code of a broker's refusal in ``exc`` or its causes, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AMQPError) and current.code:
            return int(current.code)
        current = current.__cause__ or current.__context__
    return None


def open_connection(url: str, *, confirm_publish: bool = True) -> Connection:
    """A new kombu connection to ``url`` (not yet connected); one per thread that uses it.

    With ``confirm_publish`` every publish waits for the broker's confirm.
    """
    if url.rstrip("/") == "memory:":
        url = "memory://localhost//"  # kombu warns about a missing host otherwise
    return Connection(
        url,
        transport_options={
            "polling_interval": _POLLING_INTERVAL,
            "confirm_publish": confirm_publish,
        },
        connect_timeout=5,
    )


class KombuBus:
    """One bus endpoint: declares the metering exchange and queue, sends and consumes."""

    def __init__(self, settings: BusSettings) -> None:
        self.settings = settings
        self.exchange = Exchange(
            settings.exchange,
            type="topic",
            durable=settings.durable,
            auto_delete=False,
        )
        self.routing_key = f"{settings.topic}.sample"
        self.queue = Queue(
            self.routing_key,
            exchange=self.exchange,
            routing_key=self.routing_key,
            # RabbitMQ has quorum queues durable only.
            durable=settings.durable or settings.queue_type == "quorum",
            auto_delete=False,
            queue_arguments=queue_arguments(settings.queue_type),
        )
        self.publisher_id = f"nephoscope.agent.{socket.gethostname()}"
        self._connection: Connection | None = None
        self._producer: Producer | None = None

    def connect(self) -> Connection:
        """A new connection; each thread that uses the bus needs its own."""
        return open_connection(self.settings.url)

    def adopt(self, connection: Connection) -> Queue:
        """The metering queue and exchange as the broker has them (see :mod:`.declare`)."""
        queue = adopt_queue(connection, self.queue)
        self.queue, self.exchange = queue, queue.exchange
        return queue

    def _ensure_producer(self) -> Producer:
        if self._producer is None:
            connection = self._connection = self.connect()
            self.adopt(connection)
            self._producer = Producer(connection.default_channel)
        return self._producer

    def send(self, messages: Sequence[dict[str, Any]]) -> None:
        """Publish meter messages as one notification; raise :class:`PublishError` on failure."""
        body = encode_notification(
            list(messages),
            event_type=METERING_EVENT_TYPE,
            priority=METERING_PRIORITY,
            publisher_id=self.publisher_id,
        )
        self.publish_raw(body)

    def publish_raw(self, body: bytes) -> None:
        """Publish an already serialised body to the metering queue."""
        try:
            producer = self._ensure_producer()
            producer.publish(
                body,
                exchange=self.exchange,
                routing_key=self.routing_key,
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                declare=[self.queue],
                retry=True,
                retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
            )
        except Exception as exc:
            self.close()
            raise PublishError(
                f"{self.safe_url}: {self.describe_error(exc)}",
                lasting=refusal_code(exc) in _LASTING_CODES,
            ) from exc

    def consumer(
        self, connection: Connection, on_message: Callable[[Message], None], prefetch: int
    ) -> Consumer:
        """A consumer of the metering queue handing raw messages to ``on_message``.

        Messages are acknowledged by the caller, after it has stored them.
        """
        return Consumer(
            connection.channel(),
            queues=[self.adopt(connection)],
            on_message=on_message,
            no_ack=False,
            auto_declare=True,
            prefetch_count=prefetch,
        )

    def queue_depth(self) -> int:
        """Messages waiting in the metering queue."""
        with self.connect() as connection:
            bound = self.adopt(connection).bind(connection.default_channel)
            result = bound.queue_declare(passive=True)
            return int(result.message_count)

    def describe_error(self, exc: BaseException) -> str:
        """``exc`` in words, with the setting to change when the broker refused something."""
        text = f"{type(exc).__name__}: {exc}"
        hint = {
            402: "the virtual host in bus.url does not exist",
            403: (
                "the user in bus.url may not use this virtual host, or may not configure or"
                f" write to the exchange {self.exchange.name!r}: grant it (rabbitmqctl"
                " set_permissions) or change bus.url or bus.exchange"
            ),
            404: (
                f"the exchange {self.exchange.name!r} does not exist and was not declared:"
                " check bus.exchange and the virtual host in bus.url"
            ),
            406: (
                f"the exchange {self.exchange.name!r} or queue {self.queue.name!r} exists with"
                f" other settings (bus.durable is {self.settings.durable}, bus.queue_type"
                f" {self.settings.queue_type}); they must match oslo.messaging's"
                " amqp_durable_queues and rabbit_quorum_queue where OpenStack services"
                " share them"
            ),
            530: "the user in bus.url may not use its virtual host",
        }.get(refusal_code(exc) or 0)
        return f"{text} ({hint})" if hint else text

    @property
    def safe_url(self) -> str:
        """The bus URL without its password, for logs."""
        return safe_url(self.settings.url)

    def close(self) -> None:
        if self._connection is not None:
            try:
                self._connection.release()
            except Exception:  # closing a broken connection must not hide the first error
                LOG.debug("error closing bus connection", exc_info=True)
        self._connection = None
        self._producer = None


def consume_until(
    connection: Connection,
    stop: threading.Event,
    tick: Callable[[], None],
    *,
    drain_after_stop: bool,
    quiet: float = 0.3,
    limit: float = 30.0,
) -> None:
    """Deliver messages to the connection's consumers until ``stop`` is set.

    ``tick`` runs after every delivery and at least ten times a second (for
    timed flushes). With ``drain_after_stop`` delivery goes on after the stop
    until nothing has come for ``quiet`` seconds (at most ``limit``): on an
    in-process bus, what is still queued at exit would be lost.
    """
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            connection.drain_events(timeout=0.1)
        tick()
    if not drain_after_stop:
        return
    deadline = time.monotonic() + limit
    last = time.monotonic()
    while time.monotonic() < deadline:
        try:
            connection.drain_events(timeout=0.05)
            last = time.monotonic()
        except TimeoutError:
            if time.monotonic() - last >= quiet:
                return
        tick()
