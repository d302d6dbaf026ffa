import logging
import threading
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.support import running

from nephoscope.agent.manager import AgentManager, next_cycle
from nephoscope.config import PollingSource, Settings
from nephoscope.counter import Counter
from nephoscope.plugin import Manager, PluginUnusable, PollingContext, PollsterBase

NS = "nephoscope.poll.host"


class Emits(PollsterBase):
    meters = ("test.a", "test.b")

    def __init__(self) -> None:
        self.contexts: list[PollingContext] = []

    def get_counters(self, manager: Manager, context: PollingContext) -> Iterable[Counter]:
        self.contexts.append(context)
        for resource in context.resources:
            for name in self.meters:
                yield Counter(name, "gauge", "x", 1, None, None, resource, context.timestamp)


class Raises(PollsterBase):
    meters = ("test.c",)

    def get_counters(self, manager: Manager, context: PollingContext) -> Iterable[Counter]:
        raise RuntimeError("boom")


class Unusable(PollsterBase):
    meters = ("test.d",)
    calls = 0

    def get_counters(self, manager: Manager, context: PollingContext) -> Iterable[Counter]:
        Unusable.calls += 1
        raise PluginUnusable("no hypervisor here")


class RecordingPublisher:
    def __init__(self) -> None:
        self.published: list[list[Counter]] = []

    def publish(self, counters: Iterable[Counter]) -> int:
        batch = list(counters)
        self.published.append(batch)
        return len(batch)


def manager(publisher: Any = None, **pollsters: PollsterBase) -> AgentManager:
    settings = Settings(host="h1")
    return AgentManager(settings, publisher, pollsters={NS: pollsters})


def source(*meters: str, interval: float = 60) -> PollingSource:
    return PollingSource(name="s", interval=interval, meters=list(meters))


def test_source_filters_pollsters_and_counters() -> None:
    emits = Emits()
    agent = manager(emits=emits)
    counters = agent.poll(source("test.a"))
    assert [(c.name, c.resource_id) for c in counters] == [("test.a", "h1")]
    assert agent.poll(source("other.*")) == []
    assert len(emits.contexts) == 1, "a pollster no source wants is not polled"


def test_a_failing_pollster_does_not_stop_the_cycle(caplog: pytest.LogCaptureFixture) -> None:
    agent = manager(raises=Raises(), emits=Emits())
    with caplog.at_level(logging.ERROR):
        counters = agent.poll(source("*"))
    assert {c.name for c in counters} == {"test.a", "test.b"}
    assert "pollster raises failed" in caplog.text


def test_unusable_pollster_is_said_once_and_left_out(caplog: pytest.LogCaptureFixture) -> None:
    Unusable.calls = 0
    agent = manager(unusable=Unusable(), emits=Emits())
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert len(agent.poll(source("*"))) == 2
    assert Unusable.calls == 1
    assert caplog.text.count("not usable here") == 1
    assert agent.loaded[NS].unusable == {"unusable": "no hypervisor here"}


def test_context_carries_timestamp_and_a_shared_cache() -> None:
    emits = Emits()
    agent = manager(emits=emits)
    when = datetime(2026, 11, 26, tzinfo=UTC)
    counters = agent.poll(source("*"), timestamp=when)
    assert {c.timestamp for c in counters} == {when}
    assert emits.contexts[0].cache == {}


def test_poll_and_publish_sends_the_cycle() -> None:
    publisher = RecordingPublisher()
    agent = manager(publisher, emits=Emits())
    assert agent.poll_and_publish(source("*")) == 2
    assert [c.name for c in publisher.published[0]] == ["test.a", "test.b"]


def test_publish_failure_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    class Broken:
        def publish(self, counters: Iterable[Counter]) -> int:
            raise ConnectionError("bus down")

    agent = manager(Broken(), emits=Emits())
    with caplog.at_level(logging.ERROR):
        assert agent.poll_and_publish(source("*")) == 0
    assert "bus down" in caplog.text and agent.publish_failures == 1


@pytest.mark.parametrize(
    ("now", "interval", "offset", "expected"),
    [
        (0.0, 60, 0, 60.0),
        (59.9, 60, 0, 60.0),
        (60.0, 60, 0, 120.0),
        (61, 60, 2.5, 62.5),
        (1.0, 60, 2.5, 2.5),
    ],
)
def test_cycles_are_aligned(now: float, interval: float, offset: float, expected: float) -> None:
    assert next_cycle(now, interval, offset) == expected


def test_overrunning_cycle_skips_missed_cycles(caplog: pytest.LogCaptureFixture) -> None:
    class Slow(PollsterBase):
        meters = ("test.slow",)

        def __init__(self) -> None:
            self.calls: list[float] = []

        def get_counters(self, manager: Manager, context: PollingContext) -> Sequence[Counter]:
            import time

            self.calls.append(time.monotonic())
            time.sleep(0.35)
            return []

    slow = Slow()
    settings = Settings(
        host="h1",
        polling={"sources": [{"name": "s", "interval": 0.1, "meters": ["*"]}], "max_jitter": 0},
    )
    agent = AgentManager(settings, None, pollsters={NS: {"slow": slow}})
    # The agent is told to stop after a second and must within 5 s.
    with caplog.at_level(logging.WARNING), running(agent.run, threading.Event(), timeout=5):
        threading.Event().wait(1.0)
    gaps = [b - a for a, b in zip(slow.calls, slow.calls[1:], strict=False)]
    assert len(slow.calls) <= 3, "missed cycles must not be queued up"
    assert all(gap >= 0.35 for gap in gaps)
    assert "longer than its 0.1s interval; skipping" in caplog.text
