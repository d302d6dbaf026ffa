"""The polling agent: runs pollster plugins on a schedule and publishes their counters."""

from nephoscope.agent.manager import AgentManager
from nephoscope.agent.sources import meter_selected

__all__ = ["AgentManager", "meter_selected"]
