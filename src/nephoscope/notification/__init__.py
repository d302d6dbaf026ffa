"""The notification agent: OpenStack notifications on the bus, turned into counters.

:mod:`~nephoscope.notification.instance` is the seed's plugin (an entry point of
``nephoscope.notification``); :mod:`~nephoscope.notification.declarative` reads
and evaluates meter definitions in Ceilometer's ``meters.yaml`` format;
:mod:`~nephoscope.notification.processor` turns one notification into counters
with both; :mod:`~nephoscope.notification.listener` consumes the exchanges with
kombu and hands the counters to the publisher.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nephoscope.notification.declarative import (
    DefinitionError,
    MeterDefinition,
    load_definitions,
)
from nephoscope.notification.processor import NotificationProcessor, Outcome
from nephoscope.plugin import NS_NOTIFICATION, NotificationBase, load_plugins

if TYPE_CHECKING:
    from nephoscope.config import Settings

__all__ = [
    "DefinitionError",
    "MeterDefinition",
    "NotificationProcessor",
    "Outcome",
    "build_processor",
    "load_definitions",
]


def build_processor(settings: Settings, *, log_problems: bool = True) -> NotificationProcessor:
    """The notification plugins installed, and the configured definitions.

    Raises :class:`DefinitionError` naming the file, entry and reason when a
    definitions file cannot be used.
    """
    definitions = load_definitions(
        settings.notifications.definitions, shipped=settings.notifications.shipped_definitions
    )
    plugins = load_plugins(NS_NOTIFICATION, NotificationBase).plugins
    return NotificationProcessor(plugins, definitions, log_problems=log_problems)
