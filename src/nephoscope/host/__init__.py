"""Metering of the machine the agent runs on: CPU, load, memory, swap, disks, network.

:mod:`~nephoscope.host.inspector` reads psutil into typed records;
:mod:`~nephoscope.host.pollsters` turns them into ``hardware.*`` counters. The
pollsters are entry points of the ``nephoscope.poll.host`` namespace.
"""

from nephoscope.host.inspector import HostInspector, cached

__all__ = ["HostInspector", "cached"]
