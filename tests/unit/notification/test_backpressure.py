"""A listener whose publisher cannot send stops taking notifications instead of losing them."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support import wait_for
from tests.unit.notification.helpers import load, processor, v2
from tests.unit.notification.test_listener import depth, send

from nephoscope.config import Settings
from nephoscope.messaging.bus import PublishError
from nephoscope.messaging.publisher import Publisher
from nephoscope.notification.listener import NotificationListener


class RefusingBus:
    """A broker that refuses every publish (403) until ``refusing`` is cleared."""

    def __init__(self) -> None:
        self.refusing = True
        self.messages: list[dict[str, Any]] = []

    def send(self, messages: Sequence[dict[str, Any]]) -> None:
        if self.refusing:
            raise PublishError("ACCESS_REFUSED (rabbitmqctl set_permissions)", lasting=True)
        self.messages.extend(messages)

    def close(self) -> None:
        pass


def test_a_full_buffer_leaves_notifications_on_their_queue_until_the_bus_takes_them(
    tmp_path: Path,
) -> None:
    name = f"nova-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        metering_secret="s",
        bus={"url": "memory://", "topic": f"m-{name}"},
        publisher={"buffer": {"path": tmp_path / "buffer.db", "max_samples": 12}},
        notifications={
            "exchanges": [name],
            "topics": [f"t-{name}"],
            "batch_timeout": 0.05,
            "prefetch": 2,
        },
    )
    bus = RefusingBus()
    publisher = Publisher(settings, bus)
    publisher.LASTING_RETRY = 0.2
    listener = NotificationListener(settings, processor(), publisher)
    stop, ready = threading.Event(), threading.Event()
    thread = threading.Thread(target=listener.run, args=(stop, ready), name="listener")
    thread.start()
    try:
        assert ready.wait(5)
        exists = load("compute.instance.exists")
        send(settings, *(v2({**exists, "message_id": str(uuid.uuid4())}) for _ in range(20)))
        wait_for(lambda: listener.stats.paused >= 1)
        buffered, dropped = publisher.spool.counts()
        assert dropped == 0 and buffered == 12, "two notifications' counters fit, no more"
        wait_for(lambda: depth(settings) == 18)  # the others went back to their queue
        assert not bus.messages

        bus.refusing = False
        wait_for(lambda: len(bus.messages) >= 120 and depth(settings) == 0)
    finally:
        stop.set()
        thread.join(10)
        publisher.close()
    ids = [m["message_id"] for m in bus.messages]
    assert len(ids) == len(set(ids)) == 120, "every counter of the 20 notifications, once"
    assert publisher.dropped == 0
