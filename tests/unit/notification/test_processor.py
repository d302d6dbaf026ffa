"""One notification to counters: filtering, dispatch, the one-owner rule, failures, ids."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.unit.notification.helpers import INSTANCE, fixture_paths, load, processor, v1, v2

from nephoscope.counter import Counter
from nephoscope.logs import LogLimiter
from nephoscope.notification import NotificationProcessor
from nephoscope.notification.common import stable_counter_id, to_number
from nephoscope.notification.instance import InstanceNotifications
from nephoscope.plugin import NotificationBase


def test_no_notification_yields_the_same_meter_twice_for_a_resource() -> None:
    # Every fixture through the plugin and every shipped definition, in both envelopes.
    full = processor()
    for path in fixture_paths():
        message = load(path.stem)
        for body in (v1(message), v2(message)):
            outcome = full.process_body(body)
            keys = [(c.name, c.resource_id) for c in outcome.counters]
            assert len(keys) == len(set(keys)), path.name
            assert outcome.duplicates == 0, f"{path.name}: a shipped definition doubles a plugin"


def test_plugin_and_definitions_own_distinct_meters() -> None:
    full = processor()
    owned_by_plugin = set(InstanceNotifications.meters)
    for definition in full.definitions:
        assert definition.fixed_name not in owned_by_plugin, definition.where


class Recorder(NotificationBase):
    """A plugin that emits what it is told, to check the order and the de-duplication."""

    def __init__(self, meter: str, fail: bool = False) -> None:
        self.meter, self.fail = meter, fail

    def get_event_types(self) -> list[str]:
        return ["compute.instance.*"]

    def process_notification(self, message: Mapping[str, Any]) -> Iterator[Counter]:
        if self.fail:
            raise KeyError("tenant_id")
        yield Counter(
            self.meter,
            "gauge",
            "u",
            1,
            None,
            None,
            message["payload"]["instance_id"],
            datetime.now(UTC),
        )


def test_the_first_producer_keeps_a_meter_and_later_ones_are_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    two = NotificationProcessor({"b": Recorder("memory"), "a": InstanceNotifications()})
    with caplog.at_level(logging.WARNING):
        outcome = two.process(load("compute.instance.exists"))
    (memory,) = [c for c in outcome.counters if c.name == "memory"]
    assert memory.unit == "MB"  # plugin "a" runs before plugin "b"
    assert outcome.duplicates == 1
    assert "plugin b: memory of" in caplog.text


def test_a_failing_plugin_is_a_problem_and_the_others_still_count() -> None:
    two = NotificationProcessor(
        {"broken": Recorder("x", fail=True), "instance": InstanceNotifications()}
    )
    outcome = two.process(load("compute.instance.exists"))
    assert outcome.status == "metered"
    assert outcome.problems == ["plugin broken: KeyError: 'tenant_id'"]
    assert len(outcome.counters) == 6


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "body is not JSON"),
        (b"[1, 2]", "body is a JSON list, not an object"),
        (b'{"oslo.version": "3.0", "oslo.message": "{}"}', "unsupported oslo envelope version"),
        (b'{"payload": {}}', "no event_type"),
        (b'{"event_type": 7, "payload": {}}', "event_type 7 is not a string"),
    ],
)
def test_what_cannot_be_read_is_rejected(body: bytes, reason: str) -> None:
    outcome = processor().process_body(body)
    assert outcome.status == "rejected"
    assert len(outcome.problems) == 1 and outcome.problems[0].startswith(reason)


@pytest.mark.parametrize("priority", ["ERROR", "warn", "debug", "audit", "critical"])
def test_only_info_and_sample_are_metered(priority: str) -> None:
    message = dict(load("compute.instance.exists"), priority=priority)
    outcome = processor().process(message)
    assert (outcome.status, outcome.counters, outcome.priority) == ("ignored", [], priority.lower())


def test_the_queue_gives_the_priority_when_the_message_has_none() -> None:
    message = load("compute.instance.exists")
    del message["priority"]
    assert processor().process(message, "error").status == "ignored"
    assert processor().process(message, "sample").status == "metered"
    assert processor().process(message).status == "metered"


def test_an_event_nobody_meters() -> None:
    outcome = processor().process(
        dict(load("compute.instance.exists"), event_type="scheduler.select")
    )
    assert (outcome.status, outcome.counters, outcome.problems) == ("unhandled", [], [])


def test_a_bad_volume_in_a_nova_payload_rejects_the_plugin_counters() -> None:
    message = load("compute.instance.exists")
    message["payload"]["memory_mb"] = "lots"
    outcome = processor().process(message)
    assert outcome.counters == []
    assert outcome.problems == ["plugin instance: ValueError: 'lots' is not a number"]
    message["payload"]["memory_mb"] = "4096"
    (memory,) = [c for c in processor().process(message).counters if c.name == "memory"]
    assert memory.volume == 4096


def test_counter_ids_are_the_same_on_redelivery_and_unique_per_meter() -> None:
    first = processor().process(load("compute.instance.create.end"))
    again = processor().process_body(v2(load("compute.instance.create.end")))
    ids = [c.id for c in first.counters]
    assert ids == [c.id for c in again.counters]
    assert len(set(ids)) == len(ids)
    other = dict(load("compute.instance.create.end"), message_id="another")
    assert not set(ids) & {c.id for c in processor().process(other).counters}


def test_stable_ids_are_uuid7_ordered_by_the_counter_time() -> None:
    early = stable_counter_id("m", datetime(2024, 5, 1, tzinfo=UTC), "memory", INSTANCE)
    late = stable_counter_id("m", datetime(2024, 5, 2, tzinfo=UTC), "memory", INSTANCE)
    assert early[14] == "7" and early < late
    assert early == stable_counter_id("m", datetime(2024, 5, 1, tzinfo=UTC), "memory", INSTANCE)


def test_exchanges_and_topics_to_listen_on() -> None:
    from nephoscope.config import Settings

    settings = Settings(
        notifications={"exchanges": ["nova", "cinder"], "topics": ["notifications", "extra"]}
    )
    targets = processor().targets(settings)
    assert [(t.exchange, t.topics) for t in targets] == [
        ("nova", ("notifications", "extra")),
        ("cinder", ("notifications", "extra")),
    ]
    only_plugin = NotificationProcessor({"instance": InstanceNotifications()})
    assert [t.exchange for t in only_plugin.targets(settings)] == ["nova", "cinder"]


def test_a_failing_definition_is_logged_once_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    full = processor()
    bad = load("volume.create.end")
    bad["payload"]["size"] = "ten"
    with caplog.at_level(logging.ERROR, logger="nephoscope.notification.processor"):
        for _ in range(50):
            assert full.process(bad).problems
    assert len([r for r in caplog.records if "volume.size" in r.getMessage()]) == 1


def test_log_limiter_counts_what_it_holds_back() -> None:
    now = [0.0]
    limiter = LogLimiter(60, clock=lambda: now[0])
    assert limiter.allow("a") == 0
    assert limiter.allow("a") is None
    assert limiter.allow("b") == 0
    now[0] = 30
    assert limiter.allow("a") is None
    now[0] = 61
    assert limiter.allow("a") == 2


@pytest.mark.parametrize(
    ("value", "number"),
    [(3, 3), (2.5, 2.5), ("17", 17), ("-4", -4), ("1e3", 1000.0), ("0.25", 0.25)],
)
def test_to_number(value: Any, number: float) -> None:
    assert to_number(value) == number and type(to_number(value)) is type(number)


@pytest.mark.parametrize("value", [None, True, "x", "inf", float("nan"), [1], ""])
def test_to_number_refuses(value: Any) -> None:
    with pytest.raises(ValueError):
        to_number(value)


class Broken(NotificationBase):
    def __init__(self, event_types: object = None, returns: object = None) -> None:
        self.event_types, self.returns = event_types, returns

    def get_event_types(self) -> list[str]:
        if self.event_types is None:
            raise RuntimeError("no idea")
        return self.event_types  # type: ignore[return-value]

    def process_notification(self, message: Mapping[str, Any]) -> Iterator[Counter]:
        yield self.returns  # type: ignore[misc]


def test_a_plugin_that_cannot_say_what_it_handles_is_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR):
        left = NotificationProcessor({"broken": Broken(), "instance": InstanceNotifications()})
    assert list(left.plugins) == ["instance"]
    assert "notification plugin broken left out" in caplog.text


def test_a_plugin_that_returns_something_else_is_a_problem() -> None:
    odd = NotificationProcessor({"odd": Broken(["compute.*"], returns={"name": "x"})})
    outcome = odd.process(load("compute.instance.exists"))
    assert outcome.problems == ["plugin odd: TypeError: returned dict, not a Counter"]
