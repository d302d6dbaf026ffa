"""Declaring exchanges and queues so that what the broker already has is used as it is.

RabbitMQ refuses a declaration that differs from an existing exchange or queue
(406 PRECONDITION_FAILED), so whoever declares first wins: an OpenStack
service declares ``ceilometer`` and ``notifications.info`` with
oslo.messaging's ``amqp_durable_queues``, and a consumer that insists on other
settings could never start, nor a publisher send. Here an entity that exists
is adopted: with the other durability, or the other queue type, when the
broker takes that declaration, else without declaring it at all; only an
absent one is declared as configured. The settings that could not be applied
are said once per process, as a warning.

Each attempt runs on a channel of its own, because a refused declaration closes
the channel it was made on.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from amqp.exceptions import NotFound, PreconditionFailed
from kombu.connection import Connection
from kombu.entity import Exchange, Queue, binding

from nephoscope.config import QueueType

__all__ = ["adopt_exchange", "adopt_queue", "queue_arguments"]

_Entity = TypeVar("_Entity", Exchange, Queue)

LOG = logging.getLogger(__name__)

_said: set[str] = set()
_said_lock = threading.Lock()


def queue_arguments(queue_type: QueueType) -> dict[str, Any]:
    """The ``x-`` arguments that declare a queue of ``queue_type``."""
    return {"x-queue-type": "quorum"} if queue_type == "quorum" else {}


def _variant(entity: _Entity, **changes: Any) -> _Entity:
    """A copy of ``entity`` with ``changes`` (kombu entities have no such method)."""
    return type(entity)(**{**entity.as_dict(), **changes})


def _say_once(text: str, level: int = logging.WARNING) -> None:
    with _said_lock:
        if text in _said:
            return
        _said.add(text)
    LOG.log(level, "%s", text)


def _attempt(connection: Connection, declare: Callable[[Any], object]) -> Exception | None:
    """Run ``declare`` on a new channel: None when the broker took it, else its refusal."""
    channel = connection.channel()
    try:
        declare(channel)
    except (PreconditionFailed, NotFound) as exc:
        # The broker closed the channel with this reply; nothing to release.
        refusal: Exception = exc
        return refusal
    channel.close()
    return None


def adopt_exchange(connection: Connection, exchange: Exchange) -> Exchange:
    """``exchange`` as the broker has it: declared if absent, adopted if it exists."""

    def declaring(candidate: Exchange) -> Callable[[Any], object]:
        return lambda channel: candidate.declare(channel=channel)

    refused = _attempt(connection, declaring(exchange))
    if refused is None:
        return exchange
    flipped = _variant(exchange, durable=not exchange.durable)
    if _attempt(connection, declaring(flipped)) is None:
        if flipped.durable:
            _say_once(f"exchange {exchange.name!r} exists durable: using it so", logging.INFO)
        else:
            _say_once(
                f"exchange {exchange.name!r} exists non-durable: using it as it is (the broker "
                "forgets it when it restarts)"
            )
        return flipped
    return _existing(connection, exchange, refused, "exchange")


def adopt_queue(connection: Connection, queue: Queue) -> Queue:
    """``queue`` as the broker has it, its exchanges adopted and its bindings made.

    Declared as given when absent; when it exists with other settings, with the
    other durability or queue type if the broker takes that, else not declared
    at all (a warning says which settings were not applied).
    """
    exchanges: dict[str, Exchange] = {}

    def adopted(exchange: Exchange | None) -> Exchange | None:
        if exchange is None or not exchange.name:
            return exchange
        if exchange.name not in exchanges:
            exchanges[exchange.name] = adopt_exchange(connection, exchange)
        return exchanges[exchange.name]

    main = adopted(queue.exchange)
    bindings = [binding(adopted(b.exchange), b.routing_key, b.arguments) for b in queue.bindings]

    def declaring(candidate: Queue) -> Callable[[Any], object]:
        return lambda channel: candidate.queue_declare(channel=channel)

    base = _variant(queue, exchange=main, bindings=bindings)
    refused = _attempt(connection, declaring(base))
    if refused is None:
        chosen = base
    else:
        for candidate, note in _alternatives(base):
            if _attempt(connection, declaring(candidate)) is None:
                chosen = candidate
                # Durable where non-durable was asked for loses nothing: not a warning.
                fine = candidate.durable and note == "durable"
                _say_once(
                    f"queue {queue.name!r} exists {note}: using it as it is",
                    logging.INFO if fine else logging.WARNING,
                )
                break
        else:
            chosen = _existing(connection, base, refused, "queue")
    _bind(connection, chosen)
    return chosen


def _alternatives(queue: Queue) -> Iterator[tuple[Queue, str]]:
    arguments = dict(getattr(queue, "queue_arguments", None) or {})
    quorum = arguments.get("x-queue-type") == "quorum"
    classic = {k: v for k, v in arguments.items() if k != "x-queue-type"}
    if not quorum:
        yield (
            _variant(queue, durable=not queue.durable),
            "non-durable (the broker forgets it and what it holds when it restarts)"
            if queue.durable
            else "durable",
        )
        yield (
            _variant(queue, durable=True, queue_arguments={**classic, "x-queue-type": "quorum"}),
            "as a quorum queue",
        )
    else:
        yield (
            _variant(queue, queue_arguments=classic or None),
            "as a classic queue, not a quorum queue (bus.queue_type)",
        )
        yield (
            _variant(queue, durable=False, queue_arguments=classic or None),
            "as a non-durable classic queue, not a quorum queue (the broker forgets it and "
            "what it holds when it restarts)",
        )


def _existing(connection: Connection, entity: _Entity, refused: Exception, kind: str) -> _Entity:
    """``entity`` not to be declared, once a passive declaration found it."""
    if isinstance(entity, Exchange):
        exchange = entity
        missing = _attempt(connection, lambda ch: exchange.declare(channel=ch, passive=True))
    else:
        queue = entity
        missing = _attempt(connection, lambda ch: queue.queue_declare(channel=ch, passive=True))
    if missing is not None:
        # It vanished between the attempts: the refusal is the error to report.
        raise refused
    _say_once(f"{kind} {entity.name!r} exists with other settings, using it as it is: {refused}")
    return _variant(entity, no_declare=True)


def _bind(connection: Connection, queue: Queue) -> None:
    # A queue that is not declared (it exists with other settings) is still
    # bound here: binding does not depend on how the queue was declared.
    targets = list(queue.bindings) or (
        [binding(queue.exchange, queue.routing_key, getattr(queue, "binding_arguments", None))]
        if queue.exchange is not None and queue.exchange.name
        else []
    )
    if not targets:
        return
    channel = connection.channel()
    try:
        for target in targets:
            channel.queue_bind(
                queue=queue.name,
                exchange=target.exchange.name,
                routing_key=target.routing_key or "",
                arguments=target.arguments,
            )
    finally:
        channel.close()
