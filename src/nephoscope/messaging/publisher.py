"""The publisher: gives counters their message ids, signs them and sends them in batches."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from importlib.metadata import entry_points
from typing import Any, Protocol, cast
from urllib.parse import urlsplit

from stevedore import DriverManager
from stevedore.exception import NoMatches
from uuid_utils import uuid7

from nephoscope.config import ConfigError, Settings
from nephoscope.counter import Counter
from nephoscope.messaging.meter import counter_to_message
from nephoscope.plugin import NS_PUBLISHER

__all__ = ["Publisher", "Sink", "load_sink"]

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


class Publisher:
    """Thread-safe: polling sources running side by side share one publisher."""

    def __init__(self, settings: Settings, sink: Sink | None = None) -> None:
        self._secret = settings.metering_secret
        self._batch_size = settings.publisher.batch_size
        self._sink = sink if sink is not None else load_sink(settings)
        #: Where counters go, for people (no password).
        self.destination: str = getattr(self._sink, "safe_url", type(self._sink).__name__)
        self._lock = threading.Lock()
        self.sent = 0
        self.failed = 0

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

    def publish(self, counters: Iterable[Counter]) -> int:
        """Sign and send ``counters``; return how many were sent.

        Raises the sink's error when a batch could not be sent; batches sent
        before it stay sent.
        """
        messages = self.prepare(counters)
        size = self._batch_size
        with self._lock:
            for start in range(0, len(messages), size):
                batch = messages[start : start + size]
                try:
                    self._sink.send(batch)
                except Exception:
                    self.failed += len(messages) - start
                    raise
                self.sent += len(batch)
        return len(messages)

    def close(self) -> None:
        with self._lock:
            self._sink.close()
