"""Every host pollster, loaded from its entry point, once against this machine's psutil."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.unit.host.fakes import FakeManager

from nephoscope.config import Settings
from nephoscope.counter import Counter
from nephoscope.host.inspector import HostInspector
from nephoscope.plugin import NS_POLL_HOST, PollingContext, PollsterBase, load_plugins


def test_every_pollster_returns_valid_counters_on_this_machine() -> None:
    loaded = load_plugins(NS_POLL_HOST, PollsterBase)
    assert loaded.plugins and not loaded.failed
    manager = FakeManager(HostInspector(), Settings(host="smoke-host"))
    context = PollingContext(timestamp=datetime.now(UTC), resources=["smoke-host"])
    emitted: dict[str, list[Counter]] = {}
    for name, pollster in loaded.plugins.items():
        counters = list(pollster.get_counters(manager, context))
        emitted[name] = counters
        for c in counters:
            assert isinstance(c, Counter)  # built, so it passed Counter's validation
            assert c.name in pollster.meters
            assert c.volume >= 0
            assert c.timestamp == context.timestamp
            assert c.resource_id == "smoke-host" or c.resource_id.startswith("smoke-host.")
    # Host-wide readings exist on every machine; devices may not (a bare container).
    for name in ("cpu", "cpu_util", "load", "memory", "swap"):
        assert emitted[name], name
    utilisation = [c.volume for c in emitted["cpu_util"] if c.name == "hardware.cpu.util"]
    assert utilisation and 0 <= utilisation[0] <= 100
