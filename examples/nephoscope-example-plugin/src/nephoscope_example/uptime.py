"""A pollster for how long the host has been up."""

from __future__ import annotations

from collections.abc import Iterable

import psutil

from nephoscope.counter import TYPE_GAUGE, Counter
from nephoscope.plugin import Manager, PollingContext, PollsterBase


class UptimePollster(PollsterBase):
    """Seconds since the host booted, one counter per cycle."""

    meters = ("example.host.uptime",)

    def get_counters(self, manager: Manager, context: PollingContext) -> Iterable[Counter]:
        uptime = context.timestamp.timestamp() - psutil.boot_time()
        yield Counter(
            name="example.host.uptime",
            type=TYPE_GAUGE,
            unit="s",
            volume=round(uptime, 3),
            user_id=None,
            project_id=None,
            resource_id=manager.config.host,
            timestamp=context.timestamp,
            resource_metadata={"plugin": "nephoscope-example-plugin"},
            source="hardware",
        )
