"""The plugin contract: pollsters and notification handlers, and how they are loaded.

Every plugin, built-in ones included, is an entry point in one of the namespaces
below, loaded with stevedore. A plugin that fails to import or to initialise is
logged with its reason and left out; one that raises :class:`PluginUnusable` is
left out with that reason, said once.
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Protocol, TypeVar

from stevedore import ExtensionManager, NamedExtensionManager

from nephoscope.counter import Counter

if TYPE_CHECKING:
    from nephoscope.compute.inspector import LibvirtInspector
    from nephoscope.config import Settings
    from nephoscope.host.inspector import HostInspector

__all__ = [
    "NAMESPACES",
    "NS_NOTIFICATION",
    "NS_POLL_CENTRAL",
    "NS_POLL_COMPUTE",
    "NS_POLL_HOST",
    "NS_PUBLISHER",
    "NS_STORAGE",
    "ExchangeTopics",
    "LoadedPlugins",
    "Manager",
    "NotificationBase",
    "PluginUnusable",
    "PollingContext",
    "PollsterBase",
    "load_plugin_classes",
    "load_plugins",
]

LOG = logging.getLogger(__name__)

NS_POLL_COMPUTE: Final = "nephoscope.poll.compute"
NS_POLL_CENTRAL: Final = "nephoscope.poll.central"
NS_POLL_HOST: Final = "nephoscope.poll.host"
NS_NOTIFICATION: Final = "nephoscope.notification"
NS_STORAGE: Final = "nephoscope.storage"
NS_PUBLISHER: Final = "nephoscope.publisher"
NAMESPACES: Final = (
    NS_POLL_HOST,
    NS_POLL_COMPUTE,
    NS_POLL_CENTRAL,
    NS_NOTIFICATION,
    NS_STORAGE,
    NS_PUBLISHER,
)


class PluginUnusable(Exception):
    """Raised by a plugin (from ``__init__`` or a poll) that cannot work on this machine."""


class Manager(Protocol):
    """The agent's shared services, as pollsters see them."""

    @property
    def config(self) -> Settings: ...

    @property
    def host_inspector(self) -> HostInspector: ...

    @property
    def compute_inspector(self) -> LibvirtInspector: ...


@dataclass(slots=True)
class PollingContext:
    """What one polling cycle shares between its pollsters."""

    #: When the cycle started (UTC); pollsters stamp their counters with it.
    timestamp: datetime
    #: The resources discovered for this cycle (the host's name, instances, ...).
    resources: Sequence[Any] = ()
    #: Per-cycle cache: pollsters that read the same source read it once.
    cache: MutableMapping[str, Any] = field(default_factory=dict)


class PollsterBase(abc.ABC):
    """A plugin that reads usage from somewhere and returns counters.

    ``meters`` names every meter the pollster can emit; the agent polls it only
    when one of them is wanted by a polling source, and docs/meters.md must list
    each of them.
    """

    meters: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def get_counters(self, manager: Manager, context: PollingContext) -> Iterable[Counter]:
        """Return this cycle's counters. Raise only for a failure of the whole pollster."""


@dataclass(frozen=True, slots=True)
class ExchangeTopics:
    """Where a notification plugin's messages arrive."""

    exchange: str
    topics: tuple[str, ...]


class NotificationBase(abc.ABC):
    """A plugin that turns notifications from a cloud's services into counters."""

    @abc.abstractmethod
    def get_event_types(self) -> list[str]:
        """Event types handled: exact names or shell wildcards (``compute.instance.*``)."""

    @abc.abstractmethod
    def process_notification(self, message: Mapping[str, Any]) -> Iterable[Counter]:
        """Return the counters for one notification (the decoded oslo.messaging message)."""

    def get_exchange_topics(self, conf: Settings) -> list[ExchangeTopics]:
        """Exchanges and topics to listen on; by default the configured ones."""
        topics = tuple(conf.notifications.topics)
        return [ExchangeTopics(exchange, topics) for exchange in conf.notifications.exchanges]


P = TypeVar("P")


@dataclass
class LoadedPlugins(Generic[P]):
    """The plugins of one namespace: those loaded and, for the others, why not."""

    namespace: str
    plugins: dict[str, P] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    unusable: dict[str, str] = field(default_factory=dict)


def load_plugins(
    namespace: str,
    base: type[P],
    names: Iterable[str] | None = None,
) -> LoadedPlugins[P]:
    """Load and instantiate the plugins of ``namespace`` that subclass ``base``.

    Failures never propagate: each is recorded with its reason and logged once.
    ``names`` restricts loading to those entry points.
    """
    return _load(namespace, base, names, instantiate=True)


def load_plugin_classes(namespace: str, base: type[P] | None = None) -> LoadedPlugins[type[P]]:
    """Import the plugins of ``namespace`` without building them (drivers need arguments)."""
    return _load(namespace, base or object, None, instantiate=False)


def _load(
    namespace: str, base: type[Any], names: Iterable[str] | None, *, instantiate: bool
) -> LoadedPlugins[Any]:
    result: LoadedPlugins[Any] = LoadedPlugins(namespace)
    wanted = set(names) if names is not None else None

    def on_failure(_manager: Any, entrypoint: Any, exc: BaseException) -> None:
        reason = f"failed to import: {type(exc).__name__}: {exc}"
        result.failed[entrypoint.name] = reason
        LOG.error("plugin %s in %s %s", entrypoint.name, namespace, reason)

    extensions: ExtensionManager[Any]
    if wanted is None:
        extensions = ExtensionManager(
            namespace, invoke_on_load=False, on_load_failure_callback=on_failure
        )
    else:  # import only the wanted ones
        extensions = NamedExtensionManager(
            namespace, list(wanted), invoke_on_load=False, on_load_failure_callback=on_failure
        )
    for ext in extensions:
        plugin_class = ext.plugin
        if not (isinstance(plugin_class, type) and issubclass(plugin_class, base)):
            reason = f"{plugin_class!r} is not a subclass of {base.__name__}"
            result.failed[ext.name] = reason
            LOG.error("plugin %s in %s left out: %s", ext.name, namespace, reason)
            continue
        if not instantiate:
            result.plugins[ext.name] = plugin_class
            continue
        try:
            result.plugins[ext.name] = plugin_class()
        except PluginUnusable as exc:
            result.unusable[ext.name] = str(exc)
            LOG.warning("plugin %s in %s is not usable here: %s", ext.name, namespace, exc)
        except Exception as exc:
            reason = f"failed to initialise: {type(exc).__name__}: {exc}"
            result.failed[ext.name] = reason
            LOG.error("plugin %s in %s %s", ext.name, namespace, reason)
    return result
