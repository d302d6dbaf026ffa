"""From a notification on the bus to counters: decode, filter, dispatch, de-duplicate.

The processor has no bus and no store: the listener, ``nephoscope
notifications`` and the benchmark all use it. Plugins run first (in the order
of their names), then the definitions; a counter whose meter and resource one
of them already produced for this notification is dropped, so a notification
never yields the same meter twice for the same resource.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Final, Literal

from nephoscope.counter import Counter
from nephoscope.logs import LogLimiter
from nephoscope.messaging.envelope import decode_envelope
from nephoscope.messaging.errors import RejectedMessage
from nephoscope.notification.common import compile_event_types, stable_counter_id
from nephoscope.notification.declarative import EvaluationError, MeterDefinition, definition_view
from nephoscope.plugin import ExchangeTopics, NotificationBase

if TYPE_CHECKING:
    from nephoscope.config import Settings

__all__ = ["METERED_PRIORITIES", "NotificationProcessor", "Outcome"]

LOG = logging.getLogger(__name__)

#: As in Ceilometer, only these priorities are metered; the others are acknowledged and counted.
METERED_PRIORITIES: Final = frozenset({"info", "sample"})
#: Event types whose handlers are remembered (a cloud has a few hundred).
_CACHE_LIMIT: Final = 4096

Status = Literal["metered", "unhandled", "ignored", "rejected"]


@dataclass(slots=True)
class Outcome:
    """What became of one notification.

    ``status``: ``metered`` (handled, counters possibly none), ``unhandled`` (no
    plugin or definition for its event type), ``ignored`` (a priority that is
    not metered), ``rejected`` (not a notification: nothing could be read).
    ``problems`` are the reasons to dead-letter it: set for ``rejected`` and when
    a plugin or definition failed on it, in which case the counters of the
    others are still there.
    """

    status: Status
    counters: list[Counter] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    event_type: str | None = None
    message_id: str | None = None
    priority: str | None = None
    #: Counters left out because the notification gave null for their volume or resource.
    skipped: int = 0
    #: Counters dropped because another handler produced the same meter and resource.
    duplicates: int = 0


class NotificationProcessor:
    """Turns decoded notifications into counters with the given plugins and definitions."""

    def __init__(
        self,
        plugins: Mapping[str, NotificationBase],
        definitions: Sequence[MeterDefinition] = (),
        *,
        log_interval: float = 60.0,
        log_problems: bool = True,
    ) -> None:
        self.plugins: dict[str, NotificationBase] = {}
        self._plugin_matchers: dict[str, Callable[[str], bool]] = {}
        for name, plugin in sorted(plugins.items()):
            try:
                self._plugin_matchers[name] = compile_event_types(plugin.get_event_types())
            except Exception as exc:  # a plugin that cannot say what it handles is left out
                LOG.error("notification plugin %s left out: get_event_types: %s", name, exc)
                continue
            self.plugins[name] = plugin
        self.definitions = list(definitions)
        self._cache: dict[
            str, tuple[list[tuple[str, NotificationBase]], list[MeterDefinition]]
        ] = {}
        self._limiter = LogLimiter(log_interval)
        #: Log each failing plugin or definition (rate-limited); off where the
        #: caller reports every problem itself (``nephoscope notifications``).
        self.log_problems = log_problems
        self._warn_overlaps()

    def _warn_overlaps(self) -> None:
        owned = {
            meter: name
            for name, plugin in self.plugins.items()
            for meter in getattr(plugin, "meters", ())
        }
        for definition in self.definitions:
            owner = owned.get(definition.fixed_name or "")
            if owner is not None:
                LOG.warning(
                    "%s defines meter %s, which plugin %s emits too: for a notification both "
                    "handle, the plugin's counter is kept",
                    definition.where,
                    definition.fixed_name,
                    owner,
                )

    # -- where notifications arrive ------------------------------------------------

    def targets(self, settings: Settings) -> list[ExchangeTopics]:
        """Exchanges and topics to listen on: the plugins', and the configured ones for
        the definitions. Each exchange once, with the union of its topics."""
        topics: dict[str, dict[str, None]] = {}
        wanted: list[ExchangeTopics] = []
        for name, plugin in self.plugins.items():
            try:
                wanted.extend(plugin.get_exchange_topics(settings))
            except Exception:
                LOG.exception("plugin %s: get_exchange_topics failed; it gets the defaults", name)
                wanted.extend(NotificationBase.get_exchange_topics(plugin, settings))
        if self.definitions:
            configured = tuple(settings.notifications.topics)
            wanted.extend(ExchangeTopics(e, configured) for e in settings.notifications.exchanges)
        for target in wanted:
            known = topics.setdefault(target.exchange, {})
            known.update(dict.fromkeys(target.topics))
        return [ExchangeTopics(exchange, tuple(t)) for exchange, t in topics.items()]

    # -- processing --------------------------------------------------------------

    def handlers(
        self, event_type: str
    ) -> tuple[list[tuple[str, NotificationBase]], list[MeterDefinition]]:
        """The plugins and definitions that handle ``event_type``."""
        found = self._cache.get(event_type)
        if found is None:
            plugins = [
                (name, self.plugins[name])
                for name, matches in self._plugin_matchers.items()
                if matches(event_type)
            ]
            definitions = [d for d in self.definitions if d.matches(event_type)]
            if len(self._cache) >= _CACHE_LIMIT:
                self._cache.clear()
            found = self._cache[event_type] = (plugins, definitions)
        return found

    def process_body(self, body: bytes | str, priority: str | None = None) -> Outcome:
        """Decode a bus message (oslo v1 or v2 envelope) and process it. Never raises.

        ``priority`` is the one its queue implies, used when the message has none.
        """
        try:
            message = decode_envelope(body)
        except RejectedMessage as exc:
            return Outcome("rejected", problems=[exc.reason])
        return self.process(message, priority)

    def process(self, message: Mapping[str, Any], priority: str | None = None) -> Outcome:
        """Process one decoded notification. Never raises."""
        message_id = message.get("message_id")
        if not isinstance(message_id, str) or not message_id:
            message_id = None
        event_type = message.get("event_type")
        if not isinstance(event_type, str) or not event_type:
            reason = (
                "no event_type"
                if event_type is None
                else f"event_type {event_type!r} is not a string"
            )
            return Outcome("rejected", problems=[reason], message_id=message_id)
        given = message.get("priority")
        level = (given if isinstance(given, str) and given else priority or "info").lower()
        outcome = Outcome("metered", event_type=event_type, message_id=message_id, priority=level)
        if level not in METERED_PRIORITIES:
            outcome.status = "ignored"
            return outcome
        plugins, definitions = self.handlers(event_type)
        if not plugins and not definitions:
            outcome.status = "unhandled"
            return outcome
        produced: list[tuple[str, Iterable[Counter]]] = []
        for name, plugin in plugins:
            try:
                counters = list(plugin.process_notification(message))
                for counter in counters:
                    if not isinstance(counter, Counter):
                        raise TypeError(f"returned {type(counter).__name__}, not a Counter")
            except Exception as exc:
                self._problem(outcome, f"plugin {name}", exc)
                continue
            produced.append((f"plugin {name}", counters))
        if definitions:
            view = definition_view(message)
            for definition in definitions:
                try:
                    counters, skipped = definition.counters(view)
                except EvaluationError as exc:
                    self._problem(outcome, f"definition {definition.where}", exc)
                    continue
                outcome.skipped += skipped
                if skipped:
                    self._log(
                        logging.DEBUG,
                        definition.where + " null",
                        "%s: %s gave null for a volume or resource id; nothing metered",
                        definition.where,
                        event_type,
                    )
                produced.append((f"definition {definition.where}", counters))
        self._collect(outcome, produced, message)
        return outcome

    def _collect(
        self,
        outcome: Outcome,
        produced: list[tuple[str, Iterable[Counter]]],
        message: Mapping[str, Any],
    ) -> None:
        seen: dict[tuple[str, str], str] = {}
        counters = outcome.counters
        notification_id = outcome.message_id
        for producer, batch in produced:
            for counter in batch:
                key = (counter.name, counter.resource_id)
                first = seen.get(key)
                if first is not None:
                    outcome.duplicates += 1
                    self._log(
                        logging.WARNING,
                        f"{producer} duplicate {counter.name}",
                        "%s: %s of %s dropped, %s produced it already for this notification",
                        producer,
                        counter.name,
                        counter.resource_id,
                        first,
                    )
                    continue
                seen[key] = producer
                if notification_id is not None and counter.id is None:
                    counter = _with_id(
                        counter,
                        stable_counter_id(
                            notification_id, counter.timestamp, counter.name, counter.resource_id
                        ),
                    )
                counters.append(counter)

    def _problem(self, outcome: Outcome, who: str, exc: BaseException) -> None:
        reason = (
            f"{who}: {exc}"
            if isinstance(exc, EvaluationError)
            else (f"{who}: {type(exc).__name__}: {exc}")
        )
        outcome.problems.append(reason)
        if self.log_problems:
            self._log(logging.ERROR, who, "%s (event type %s)", reason, outcome.event_type)

    def _log(self, level: int, key: str, text: str, *args: Any) -> None:
        held = self._limiter.allow(key)
        if held is None:
            return
        if held:
            text += f" ({held} more like this in the last {self._limiter.interval:g}s)"
        LOG.log(level, text, *args)


_COUNTER_FIELDS: Final = tuple(f.name for f in fields(Counter) if f.name != "id")


def _with_id(counter: Counter, message_id: str) -> Counter:
    """``counter.with_id(message_id)`` without validating again what was validated.

    ``dataclasses.replace`` builds the counter anew, checks included: a third of
    the listener's time on a busy bus.
    """
    if type(counter) is not Counter:
        return counter.with_id(message_id)
    clone = object.__new__(Counter)
    assign = object.__setattr__
    for name in _COUNTER_FIELDS:
        assign(clone, name, getattr(counter, name))
    assign(clone, "id", message_id)
    return clone
