"""Whatever a test starts is stopped when it ends, even when it fails.

Threads
    ``running(target, stop, *args)`` runs ``target(stop, *args)`` in a thread for
    the ``with`` block; leaving it (normally, on a failed assert, on a timeout)
    sets ``stop`` and joins the thread, and fails the test naming it, with its
    stack, if it has not ended within ``timeout`` seconds::

        stop, ready = threading.Event(), threading.Event()
        with running(collector.run, stop, ready):
            assert ready.wait(10), "the collector did not start"
            ...

    ``Threads`` is the same for several threads, started when the test wants,
    each with the event (if any) that makes it end::

        with Threads(timeout=60) as threads:
            threads.start(collector.run, stop, ready, stop=stop)
            threads.start(write, store, batches)  # ends by itself

Processes
    ``popen(args, **popen_kwargs)`` is ``subprocess.Popen`` for the ``with``
    block; leaving it stops the process with :func:`stop_process` (``SIGINT``,
    a wait, then ``SIGKILL`` and a failed test). Call ``stop_process(process)``
    inside the block to stop it and read its piped output::

        with popen([*NEPHOSCOPE, "run"], stdout=PIPE, stderr=PIPE, text=True) as process:
            ...
            out, err = stop_process(process)

RabbitMQ
    :class:`OwnBus`, through the ``own_bus`` fixture of ``tests/integration/conftest.py``:
    an exchange and topics no other test (or earlier run) uses, so the queues
    ``<topic>.sample``, ``<topic>.sample.dead``, ``<topic>.info`` ... are this
    test's own, all deleted after it::

        def test_x(own_bus: OwnBus) -> None:
            settings = own_bus.settings(metering_secret="s", bus={"durable": False})
            # own_bus.exchange, .topic, .notification_exchange, .notification_topic;
            # any other name the test declares: own_bus.also_delete(queues=[...])

``tests/conftest.py`` fails any test that leaves a non-daemon thread or a child
process running, and a session that does; it then exits instead of hanging.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import pytest
from amqp.exceptions import NotFound
from kombu import Connection

from nephoscope.config import Settings

__all__ = [
    "OSLO_PRIORITIES",
    "OwnBus",
    "Threads",
    "popen",
    "running",
    "stop_process",
    "thread_stacks",
    "wait_for",
]


def thread_stacks(threads: Iterable[threading.Thread]) -> str:
    """Each thread's name and where it is now, for a failure message."""
    frames = sys._current_frames()
    parts = []
    for thread in threads:
        frame = frames.get(thread.ident) if thread.ident is not None else None
        stack = "".join(traceback.format_stack(frame)) if frame is not None else "  (no stack)\n"
        kind = "daemon" if thread.daemon else "non-daemon"
        parts.append(f"thread {thread.name!r} ({kind}, ident {thread.ident}):\n{stack}")
    return "\n".join(parts)


def wait_for(
    condition: Callable[[], bool], timeout: float = 30.0, what: Callable[[], Any] | None = None
) -> None:
    """Return once ``condition()`` holds; fail the test after ``timeout`` seconds, with
    ``what()`` (the state worth seeing) in the message."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:g}s: {what() if what else ''}", pytrace=True)
        time.sleep(0.02)


def _name_of(target: Callable[..., Any]) -> str:
    return str(getattr(target, "__qualname__", None) or getattr(target, "__name__", target))


class Threads:
    """Threads of one test: on leaving the ``with`` block every ``stop`` event given to
    :meth:`start` is set and every thread joined, together within ``timeout`` seconds;
    any still alive fails the test, named, with its stack."""

    def __init__(self, timeout: float = 30.0) -> None:
        self.timeout = timeout
        self._started: list[tuple[threading.Thread, threading.Event | None]] = []

    def start(
        self,
        target: Callable[..., Any],
        *args: Any,
        stop: threading.Event | None = None,
        name: str | None = None,
    ) -> threading.Thread:
        """Start ``target(*args)`` in a thread; ``stop`` is set when the block ends."""
        thread = threading.Thread(target=target, args=args, name=name or f"test:{_name_of(target)}")
        self._started.append((thread, stop))
        thread.start()
        return thread

    def stop(self) -> None:
        """Set the stop events and join the threads (the last started first)."""
        for _, event in self._started:
            if event is not None:
                event.set()
        deadline = time.monotonic() + self.timeout
        for thread, _ in reversed(self._started):
            thread.join(max(0.0, deadline - time.monotonic()))
        alive = [thread for thread, _ in self._started if thread.is_alive()]
        if alive:
            names = ", ".join(repr(t.name) for t in alive)
            pytest.fail(
                f"{names} still running {self.timeout:g}s after being told to stop:\n"
                + thread_stacks(alive),
                pytrace=False,
            )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@contextmanager
def running(
    target: Callable[..., Any],
    stop: threading.Event,
    *args: Any,
    timeout: float = 30.0,
    name: str | None = None,
) -> Iterator[threading.Thread]:
    """``target(stop, *args)`` in a thread for the block; then ``stop`` is set and the
    thread must end within ``timeout`` seconds, or the test fails naming it."""
    with Threads(timeout) as threads:
        yield threads.start(target, stop, *args, stop=stop, name=name)


def stop_process(
    process: subprocess.Popen[Any], stop_signal: int = signal.SIGINT, timeout: float = 60.0
) -> tuple[Any, Any]:
    """Stop ``process`` and return ``(stdout, stderr)`` as ``communicate`` does.

    Unless it has exited, it gets ``stop_signal`` and ``timeout`` seconds to exit
    (its piped output is read meanwhile); past that it is killed and the test
    fails. Calling it again returns the same output.
    """
    if process.poll() is None:
        process.send_signal(stop_signal)
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(
            f"{process.args!r} did not exit within {timeout:g}s of signal"
            f" {signal.Signals(stop_signal).name}, killed\nstdout: {out!r}\nstderr: {err!r}",
            pytrace=False,
        )


@contextmanager
def popen(
    args: Any,
    *,
    stop_signal: int = signal.SIGINT,
    timeout: float = 60.0,
    **kwargs: Any,
) -> Iterator[subprocess.Popen[Any]]:
    """``subprocess.Popen(args, **kwargs)`` for the block, stopped on leaving it
    (see :func:`stop_process`), even when the test failed."""
    process: subprocess.Popen[Any] = subprocess.Popen(args, **kwargs)
    try:
        yield process
    finally:
        stop_process(process, stop_signal, timeout)


#: oslo.messaging's notification priorities: the queues ``<topic>.<priority>``.
OSLO_PRIORITIES = ("audit", "critical", "debug", "error", "info", "sample", "warn")


@dataclass
class OwnBus:
    """Names on RabbitMQ that only this test uses, and everything declared on them deleted.

    ``exchange`` and ``topic`` are the metering bus's (its queue ``<topic>.sample``
    and dead-letter queue ``<topic>.sample.dead``); ``notification_exchange`` and
    ``notification_topic`` are for the notification listener (``<topic>.info`` ...).
    :meth:`delete` removes both exchanges and, for both topics, the queue of every
    oslo.messaging priority and its ``.dead`` queue, and whatever :meth:`also_delete`
    names. Get one from the ``own_bus`` fixture, which deletes it after the test.
    """

    url: str
    token: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    extra_queues: list[str] = field(default_factory=list)
    extra_exchanges: list[str] = field(default_factory=list)

    @property
    def exchange(self) -> str:
        return f"nephoscope-test-{self.token}"

    @property
    def topic(self) -> str:
        return f"metering-test-{self.token}"

    @property
    def notification_exchange(self) -> str:
        return f"nova-test-{self.token}"

    @property
    def notification_topic(self) -> str:
        return f"notifications-test-{self.token}"

    @property
    def metering_queue(self) -> str:
        return f"{self.topic}.sample"

    @property
    def bus(self) -> dict[str, Any]:
        """The ``bus`` settings section: this URL, exchange and topic."""
        return {"url": self.url, "exchange": self.exchange, "topic": self.topic}

    def settings(self, **sections: Any) -> Settings:
        """``Settings(**sections)`` on this bus; a ``bus`` section given adds to it."""
        bus: Mapping[str, Any] = sections.pop("bus", {})
        return Settings(bus={**self.bus, **bus}, **sections)

    def also_delete(self, *, queues: Iterable[str] = (), exchanges: Iterable[str] = ()) -> None:
        """Other names the test declares, to delete with the rest."""
        self.extra_queues.extend(queues)
        self.extra_exchanges.extend(exchanges)

    def queues(self) -> list[str]:
        """Every queue deleted after the test."""
        names = [
            f"{topic}.{priority}{suffix}"
            for topic in (self.topic, self.notification_topic)
            for priority in OSLO_PRIORITIES
            for suffix in ("", ".dead")
        ]
        return names + self.extra_queues

    def exchanges(self) -> list[str]:
        """Every exchange deleted after the test."""
        return [self.exchange, self.notification_exchange, *self.extra_exchanges]

    def delete(self) -> None:
        """Delete every queue and exchange of :meth:`queues` and :meth:`exchanges`."""
        with Connection(self.url, connect_timeout=10) as conn:
            channel = conn.channel()
            for kind, names in (("queue", self.queues()), ("exchange", self.exchanges())):
                for name in names:
                    try:
                        if kind == "queue":
                            channel.queue_delete(name)
                        else:
                            channel.exchange_delete(name)
                    except NotFound:  # the broker closed the channel: open another
                        with contextlib.suppress(Exception):
                            channel.close()
                        channel = conn.channel()
