"""Which meters a polling source wants, as Ceilometer's ``polling.yaml`` says it.

Patterns are shell wildcards; ``!pattern`` excludes. Exclusions are checked
first; a source of exclusions only wants everything else. Unlike Ceilometer,
inclusions and exclusions may be mixed (``["hardware.*", "!hardware.disk.*"]``).
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

__all__ = ["meter_selected", "pollster_selected"]


def meter_selected(patterns: Sequence[str], meter: str) -> bool:
    """Whether ``meter`` is wanted by a source with these ``patterns``."""
    if any(fnmatchcase(meter, p[1:]) for p in patterns if p.startswith("!")):
        return False
    included = [p for p in patterns if not p.startswith("!")]
    if not included:
        return True
    return any(fnmatchcase(meter, p) for p in included)


def pollster_selected(patterns: Sequence[str], meters: Sequence[str]) -> bool:
    """Whether a pollster emitting ``meters`` has anything a source wants.

    A pollster that declares no meters is always polled; its counters are
    filtered afterwards.
    """
    return not meters or any(meter_selected(patterns, m) for m in meters)
