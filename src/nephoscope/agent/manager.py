"""The agent manager: loads pollsters, runs each polling source on its schedule."""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from nephoscope.agent.sources import meter_selected, pollster_selected
from nephoscope.compute.discovery import discover_instances
from nephoscope.compute.inspector import LibvirtInspector
from nephoscope.config import PollingSource, Settings
from nephoscope.counter import Counter
from nephoscope.host.inspector import HostInspector
from nephoscope.messaging.publisher import Publisher
from nephoscope.plugin import (
    NS_POLL_CENTRAL,
    NS_POLL_COMPUTE,
    NS_POLL_HOST,
    LoadedPlugins,
    PluginUnusable,
    PollingContext,
    PollsterBase,
    load_plugins,
)

__all__ = ["AgentManager", "next_cycle"]

LOG = logging.getLogger(__name__)

NAMESPACE_PREFIX = "nephoscope.poll."
POLL_NAMESPACES = (NS_POLL_HOST, NS_POLL_COMPUTE, NS_POLL_CENTRAL)


def next_cycle(now: float, interval: float, offset: float) -> float:
    """The first start time after ``now`` aligned on ``interval`` (plus ``offset``)."""
    slot = math.floor((now - offset) / interval) + 1
    return slot * interval + offset


class AgentManager:
    """The agent's shared services and its polling loop.

    It is what pollsters receive as ``manager``: ``config`` and the inspectors.
    """

    def __init__(
        self,
        config: Settings,
        publisher: Publisher | None = None,
        *,
        namespaces: Sequence[str] | None = None,
        pollsters: Mapping[str, Mapping[str, PollsterBase]] | None = None,
        host_inspector: HostInspector | None = None,
        compute_inspector: LibvirtInspector | None = None,
        discoverers: Mapping[str, Callable[[AgentManager], Sequence[Any]]] | None = None,
    ) -> None:
        self._config = config
        self.publisher = publisher
        names = list(namespaces or config.polling.namespaces)
        self.namespaces = [
            n if n.startswith(NAMESPACE_PREFIX) else NAMESPACE_PREFIX + n for n in names
        ]
        unknown = sorted(set(self.namespaces) - set(POLL_NAMESPACES))
        if unknown and pollsters is None:
            raise ValueError(
                f"unknown pollster namespace(s) {', '.join(unknown)}; known: "
                + ", ".join(n.removeprefix(NAMESPACE_PREFIX) for n in POLL_NAMESPACES)
            )
        if host_inspector is not None:
            self.__dict__["host_inspector"] = host_inspector
        if compute_inspector is not None:
            self.__dict__["compute_inspector"] = compute_inspector
        self.loaded: dict[str, LoadedPlugins[PollsterBase]] = {}
        if pollsters is not None:
            # Tests hand in instances instead of installing entry points.
            for namespace, plugins in pollsters.items():
                self.loaded[namespace] = LoadedPlugins(namespace, dict(plugins))
        else:
            for namespace in self.namespaces:
                self.loaded[namespace] = load_plugins(namespace, PollsterBase)
        self._discoverers = dict(discoverers or {})
        self._unusable_said: set[str] = set()
        # Sources poll in threads of their own; a pollster keeps state between
        # polls (CPU utilisation), so one instance is never run by two at once.
        self._locks: dict[str, threading.Lock] = {
            f"{ns}:{name}": threading.Lock()
            for ns, loaded in self.loaded.items()
            for name in loaded.plugins
        }
        self.cycles = 0
        self.counters_published = 0
        self.publish_failures = 0

    # -- what pollsters see ----------------------------------------------------

    @property
    def config(self) -> Settings:
        return self._config

    @cached_property
    def host_inspector(self) -> HostInspector:
        return HostInspector()

    @cached_property
    def compute_inspector(self) -> LibvirtInspector:
        # libvirt-python is optional and imported here, on first use: without it
        # this raises PluginUnusable, which leaves the compute pollsters out.
        return LibvirtInspector(self._config.libvirt.uri)

    # -- polling -----------------------------------------------------------------

    def discover(self, namespace: str) -> Sequence[Any]:
        """The resources of ``namespace`` for this cycle."""
        discoverer = self._discoverers.get(namespace)
        if discoverer is not None:
            return discoverer(self)
        if namespace == NS_POLL_COMPUTE:
            return discover_instances(self)
        return [self._config.host]

    def poll(self, source: PollingSource, timestamp: datetime | None = None) -> list[Counter]:
        """Run every pollster that ``source`` wants once; return the wanted counters.

        A pollster that raises is logged and the others still run.
        """
        timestamp = timestamp or datetime.now(UTC)
        patterns = source.meters
        counters: list[Counter] = []
        for namespace, loaded in self.loaded.items():
            wanted = {
                name: p
                for name, p in list(loaded.plugins.items())
                if pollster_selected(patterns, p.meters)
            }
            if not wanted:
                continue
            try:
                resources = self.discover(namespace)
            except Exception:
                LOG.exception("discovery for %s failed; its pollsters skip this cycle", namespace)
                continue
            context = PollingContext(timestamp=timestamp, resources=resources)
            for name, pollster in wanted.items():
                counters.extend(self._run_pollster(namespace, name, pollster, context, patterns))
        return counters

    def _run_pollster(
        self,
        namespace: str,
        name: str,
        pollster: PollsterBase,
        context: PollingContext,
        patterns: Sequence[str],
    ) -> Iterable[Counter]:
        try:
            with self._locks[f"{namespace}:{name}"]:
                produced = list(pollster.get_counters(self, context))
        except PluginUnusable as exc:
            loaded = self.loaded[namespace]
            loaded.plugins.pop(name, None)
            loaded.unusable[name] = str(exc)
            # Pollsters that need the same missing piece say so once between them.
            reason = str(exc)
            if reason not in self._unusable_said:
                self._unusable_said.add(reason)
                LOG.warning("pollster %s is not usable here and is left out: %s", name, exc)
            else:
                LOG.debug("pollster %s is left out too: %s", name, exc)
            return []
        except Exception:
            LOG.exception("pollster %s failed this cycle", name)
            return []
        return [c for c in produced if meter_selected(patterns, c.name)]

    def poll_and_publish(self, source: PollingSource) -> int:
        """One cycle of ``source``: poll, then publish. Returns the counters published."""
        counters = self.poll(source)
        self.cycles += 1
        if not counters or self.publisher is None:
            return 0
        try:
            sent = self.publisher.publish(counters)
        except Exception as exc:
            self.publish_failures += 1
            LOG.error("source %s: %d counter(s) not published: %s", source.name, len(counters), exc)
            return 0
        self.counters_published += sent
        LOG.debug("source %s: published %d counter(s)", source.name, sent)
        return sent

    # -- scheduling --------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Run every source on its own schedule until ``stop`` is set."""
        threads = [
            threading.Thread(
                target=self._run_source,
                args=(source, stop),
                name=f"poll-{source.name}",
                daemon=True,
            )
            for source in self._config.polling.sources
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    def _run_source(self, source: PollingSource, stop: threading.Event) -> None:
        interval = source.interval
        jitter = random.uniform(0, min(self._config.polling.max_jitter, interval / 10))
        # The first cycle runs at once, so a new agent reports without waiting;
        # later cycles start on the interval's boundaries plus this agent's jitter.
        start = time.time()
        while not stop.wait(max(0.0, start - time.time())):
            began = time.time()
            self.poll_and_publish(source)
            now = time.time()
            planned = next_cycle(began, interval, jitter)
            start = next_cycle(now, interval, jitter)
            missed = round((start - planned) / interval)
            if missed > 0:
                LOG.warning(
                    "source %s: cycle took %.1fs, longer than its %gs interval; "
                    "skipping %d cycle(s)",
                    source.name,
                    now - began,
                    interval,
                    missed,
                )
