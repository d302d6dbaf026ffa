"""Configuration: one YAML file, validated at load, any key overridable by environment.

``NEPHOSCOPE_BUS__URL=amqp://...`` overrides ``bus.url``: the prefix is
``NEPHOSCOPE_`` and ``__`` separates nesting levels. Environment wins over the file.
"""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import socket
from datetime import timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

__all__ = [
    "CONFIG_ENV",
    "ConfigError",
    "Settings",
    "data_dir",
    "ensure_local_secret",
    "is_loopback",
    "load_settings",
    "local_secret_file",
    "refuse_default_secret",
]

#: Environment variable naming the config file when ``--config`` is not given.
CONFIG_ENV = "NEPHOSCOPE_CONFIG"
DEFAULT_SECRET = "change this for valid signing"


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the reason."""


def data_dir() -> Path:
    """Where the embedded store and agent state live unless configured otherwise."""
    return platformdirs.user_data_path("nephoscope")


def local_secret_file() -> Path:
    """Where ``nephoscope run`` keeps the metering secret it made for this user."""
    return platformdirs.user_config_path("nephoscope") / "metering_secret"


def ensure_local_secret(settings: Settings) -> Settings:
    """``settings`` with this user's own metering secret when none is configured.

    The secret is made at random on first use and kept (readable by the user
    only) in :func:`local_secret_file`, which :func:`load_settings` reads from
    then on, so every command of this user agrees on it.
    """
    if not settings.uses_default_secret:
        return settings
    path = local_secret_file()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two first starts at once keep the one secret written first.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(secrets.token_urlsafe(32) + "\n")
    return _with_local_secret(settings)


def _with_local_secret(settings: Settings) -> Settings:
    if not settings.uses_default_secret:
        return settings
    path = local_secret_file()
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return settings
    except OSError as exc:
        raise ConfigError(f"metering_secret: cannot read {path}: {exc.strerror or exc}") from None
    if not secret:
        raise ConfigError(f"metering_secret: {path} is empty: delete it or write a secret in it")
    return settings.model_copy(update={"metering_secret": secret})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refuse_default_secret(settings: Settings, where: str) -> None:
    """Raise :class:`ConfigError` if ``settings`` sign with the published default secret.

    ``where`` says what makes the process reachable by others (a shared bus, an
    address beyond loopback): there, anyone who read the documentation could
    forge samples that verify.
    """
    if settings.uses_default_secret:
        raise ConfigError(
            f"metering_secret is the published default and {where}: anyone could sign "
            "samples that verify. Set metering_secret (the same on every agent, collector "
            "and API) in the config file or NEPHOSCOPE_METERING_SECRET"
        )


#: RabbitMQ queue types Nephoscope declares.
QueueType = Literal["classic", "quorum"]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BusSettings(Section):
    """The message bus that carries meter messages from agents to collectors."""

    #: kombu URL: ``memory://`` (in-process) or ``amqp://user:pass@host:5672//``.
    url: str = "memory://"
    #: Topic exchange that meter messages are published to (Ceilometer's control exchange).
    exchange: str = "ceilometer"
    #: Topic; messages go out with routing key ``<topic>.sample`` as oslo.messaging sends them.
    topic: str = "metering"
    #: Declare the exchange and the queue durable. oslo.messaging declares both with its
    #: ``amqp_durable_queues`` (false by default): where OpenStack services share them,
    #: use the same value, or the second declaration fails (406 PRECONDITION_FAILED).
    #: Only used to declare what is absent: an exchange or queue that exists is used as
    #: the broker has it (a warning says so once when it is not durable).
    durable: bool = True
    #: RabbitMQ queue type of the metering queue and its dead-letter queue when they are
    #: declared: ``quorum`` (replicated, always durable) as oslo.messaging's
    #: ``rabbit_quorum_queue``, or ``classic``.
    queue_type: QueueType = "classic"


class BufferSettings(Section):
    """Where the agent keeps what the bus did not take, until it does."""

    #: Most samples kept; past it the oldest are dropped (and counted).
    max_samples: int = Field(default=100_000, ge=1)
    #: The buffer file (SQLite); default ``agent-buffer.db`` in the user data directory.
    path: Path | None = Field(default=None, validate_default=True)

    @field_validator("path")
    @classmethod
    def _default_path(cls, value: Path | None) -> Path:
        return value or data_dir() / "agent-buffer.db"


class PublisherSettings(Section):
    #: Meter messages per bus message.
    batch_size: int = Field(default=500, ge=1, le=100_000)
    buffer: BufferSettings = Field(default_factory=BufferSettings)


class CollectorSettings(Section):
    #: Meter messages written per store transaction. Each commit rewrites the index
    #: pages it touches, so fewer, larger commits cost less per sample.
    batch_size: int = Field(default=5000, ge=1, le=100_000)
    #: Seconds a partial batch may wait before it is written.
    batch_timeout: float = Field(default=0.5, gt=0, le=60)
    #: Unacknowledged bus messages a collector holds at once.
    prefetch: int = Field(default=64, ge=1, le=65_535)
    #: On RabbitMQ, meter messages that cannot be stored go to the queue
    #: ``<bus.topic>.sample<suffix>``; empty: to the store's dead-letter table, as
    #: on the embedded bus.
    dead_letter_suffix: str = ".dead"


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_duration(value: Any) -> Any:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` as a timedelta; anything else unchanged.

    Unchanged values are left to pydantic (seconds, ISO 8601 ``P90D``).
    """
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(**{_DURATION_UNITS[match[2]]: float(match[1])})
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class RetentionSettings(Section):
    """How long raw samples are kept; ``null`` keeps them for ever."""

    #: Kept this long unless a pattern in ``meters`` says otherwise.
    default: Duration | None = None
    #: Meter name patterns (shell wildcards) and how long their samples are kept;
    #: the first pattern that matches wins.
    meters: dict[str, Duration | None] = Field(default_factory=dict)
    #: Seconds between the collector's passes over expired samples.
    interval: float = Field(default=3600, gt=0)
    #: Samples deleted per transaction, so expiry never holds the store for long.
    batch_size: int = Field(default=10_000, ge=1, le=1_000_000)

    @property
    def enabled(self) -> bool:
        """Whether any samples ever expire."""
        return self.default is not None or any(p is not None for p in self.meters.values())

    def period_for(self, meter: str) -> timedelta | None:
        """How long samples of ``meter`` are kept."""
        for pattern, period in self.meters.items():
            if fnmatchcase(meter, pattern):
                return period
        return self.default


class ArchiveLevel(Section):
    """One rollup granularity and how long its aggregates are kept."""

    #: Width of each aggregate's time bucket, aligned to the epoch (whole seconds).
    granularity: Duration
    #: Aggregates older than this are deleted by expiry; ``null`` keeps them for ever.
    timespan: Duration | None = None

    @field_validator("granularity")
    @classmethod
    def _whole_seconds(cls, value: timedelta) -> timedelta:
        seconds = value.total_seconds()
        if seconds < 1 or seconds != int(seconds):
            raise ValueError("a granularity must be a whole number of seconds, at least 1s")
        return value

    @property
    def seconds(self) -> int:
        """The granularity in seconds."""
        return int(self.granularity.total_seconds())


def _default_levels() -> list[ArchiveLevel]:
    return [
        ArchiveLevel(granularity=timedelta(minutes=1), timespan=timedelta(days=1)),
        ArchiveLevel(granularity=timedelta(hours=1), timespan=timedelta(days=90)),
        ArchiveLevel(granularity=timedelta(days=1), timespan=timedelta(days=5 * 365)),
    ]


class ArchivePolicySettings(Section):
    """Which rollups the store keeps up to date at ingest, per meter.

    ``statistics`` answers from them; an empty list keeps no rollups for those meters.
    """

    #: Levels for meters no pattern in ``meters`` matches.
    default: list[ArchiveLevel] = Field(default_factory=_default_levels)
    #: Meter name patterns (shell wildcards) and their levels; the first match wins.
    meters: dict[str, list[ArchiveLevel]] = Field(default_factory=dict)

    @field_validator("default")
    @classmethod
    def _distinct_default(cls, levels: list[ArchiveLevel]) -> list[ArchiveLevel]:
        return _distinct_levels(levels)

    @field_validator("meters")
    @classmethod
    def _distinct_meters(
        cls, meters: dict[str, list[ArchiveLevel]]
    ) -> dict[str, list[ArchiveLevel]]:
        for levels in meters.values():
            _distinct_levels(levels)
        return meters

    def levels_for(self, meter: str) -> list[ArchiveLevel]:
        """The rollup levels kept for ``meter``, finest first."""
        for pattern, levels in self.meters.items():
            if fnmatchcase(meter, pattern):
                return sorted(levels, key=lambda level: level.seconds)
        return sorted(self.default, key=lambda level: level.seconds)


def _distinct_levels(levels: list[ArchiveLevel]) -> list[ArchiveLevel]:
    seconds = [level.seconds for level in levels]
    if len(set(seconds)) != len(seconds):
        raise ValueError("each granularity may appear once per policy")
    return levels


class StoreSettings(Section):
    #: SQLAlchemy URL; default a SQLite file under the user's data directory.
    url: str = Field(default="", validate_default=True)
    #: Run pending migrations when a store is opened.
    auto_upgrade: bool = True
    #: Seconds one read statement may run (writes are not bounded): past it the read
    #: is stopped, and the API answers 400.
    read_timeout: float = Field(default=30.0, gt=0, le=3_600)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    archive_policy: ArchivePolicySettings = Field(default_factory=ArchivePolicySettings)

    @property
    def expires(self) -> bool:
        """Whether anything ever expires: raw samples, or rollups of some level."""
        policy = self.archive_policy
        levels = [*policy.default, *(level for ls in policy.meters.values() for level in ls)]
        return self.retention.enabled or any(level.timespan is not None for level in levels)

    @field_validator("url")
    @classmethod
    def _default_url(cls, value: str) -> str:
        return value or f"sqlite:///{data_dir() / 'nephoscope.db'}"


class PollingSource(Section):
    """One ``sources:`` entry of a Ceilometer-style ``polling.yaml``."""

    name: str = Field(min_length=1)
    #: Seconds between cycles.
    interval: float = Field(gt=0)
    #: Meter names; shell wildcards allowed; ``!pattern`` excludes.
    meters: list[str] = Field(default_factory=lambda: ["*"], min_length=1)

    @field_validator("meters")
    @classmethod
    def _no_empty(cls, meters: list[str]) -> list[str]:
        for meter in meters:
            if not meter or meter == "!":
                raise ValueError("a meter pattern cannot be empty")
        return meters


PollNamespace = Literal["host", "compute", "central"]


def _host_only() -> list[PollNamespace]:
    return ["host"]


class PollingSettings(Section):
    #: Pollster namespaces this agent runs, without the ``nephoscope.poll.`` prefix.
    namespaces: list[PollNamespace] = Field(default_factory=_host_only)
    sources: list[PollingSource] = Field(
        default_factory=lambda: [PollingSource(name="all", interval=60, meters=["*"])],
        min_length=1,
    )
    #: A ``polling.yaml`` whose ``sources:`` replace the ones above.
    file: Path | None = None
    #: Most seconds a cycle's start is delayed past its aligned time, to spread agents.
    max_jitter: float = Field(default=5.0, ge=0)

    @model_validator(mode="after")
    def _load_file(self) -> PollingSettings:
        if self.file is None:
            return self
        sources = _read_polling_file(self.file)
        object.__setattr__(self, "sources", self._unique_names(sources))
        return self

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[PollingSource]) -> list[PollingSource]:
        names = [s.name for s in sources]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise ValueError(f"source names must be unique: {', '.join(duplicated)}")
        return sources


#: Most terms one query may chain: SQLite parses a chain of n terms into an
#: expression n levels deep and refuses past 1,000 levels; a metadata test takes
#: two or three levels of its own.
MAX_SQL_TERMS = 400


class ApiLimits(Section):
    """Bounds on what one request may ask; past one the answer is 400 (413 for the body)."""

    #: Largest request body, in bytes (a sample posted is some 500 bytes).
    max_body_bytes: int = Field(default=1_048_576, ge=1024)
    #: Most samples in one ``POST /v2/meters/{name}``.
    max_posted_samples: int = Field(default=1_000, ge=1)
    #: Most ``q.field`` conditions in one simple query.
    max_conditions: int = Field(default=64, ge=1, le=MAX_SQL_TERMS // 2)
    #: Most ``groupby`` keys of one statistics query.
    max_groupby: int = Field(default=16, ge=1, le=64)
    #: Most expressions (operators, conditions and ``in`` values together) in one
    #: complex query filter.
    max_filter_nodes: int = Field(default=256, ge=1, le=MAX_SQL_TERMS)
    #: Most values in one ``in`` of a complex query.
    max_in_values: int = Field(default=100, ge=1, le=MAX_SQL_TERMS)
    #: Longest ``q.value`` and complex-query string value, in characters.
    max_value_length: int = Field(default=1_024, ge=255, le=65_536)


class ApiSettings(Section):
    """The HTTP query API (Ceilometer v2 compatible)."""

    #: Address the API listens on.
    host: str = "127.0.0.1"
    #: Its port (Ceilometer's).
    port: int = Field(default=8777, ge=1, le=65_535)
    #: ``keystone-less``: every request carries an ``X-Auth-Token`` found in ``tokens``;
    #: ``none``: no authentication, every caller is an admin (a single-user install).
    auth: Literal["keystone-less", "none"] = "keystone-less"
    #: YAML token file: token -> ``project_id``, ``user_id``, ``roles`` (``admin`` sees all).
    tokens: Path | None = None
    #: Roles that read and write every project's data.
    admin_roles: list[str] = Field(default_factory=lambda: ["admin"], min_length=1)
    #: Roles that post samples for any project (agents that meter for others) but read
    #: only their own project, as members do.
    service_roles: list[str] = Field(default_factory=lambda: ["service"])
    #: Base of the links in answers (``https://metering.example.com``); empty: links
    #: are relative (``/v2/...``). Never taken from the request's ``Host`` header.
    public_url: str = ""
    limits: ApiLimits = Field(default_factory=ApiLimits)

    @field_validator("public_url")
    @classmethod
    def _absolute_url(cls, value: str) -> str:
        if value and not re.match(r"https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL, or empty")
        return value.rstrip("/")


class LibvirtSettings(Section):
    uri: str = "qemu:///system"


class ComputeSettings(Section):
    #: Owner given to instances that carry no Nova metadata.
    default_project: str | None = None
    default_user: str | None = None


OsloPriority = Literal["audit", "debug", "info", "warn", "error", "critical", "sample"]


def _metered_priorities() -> list[OsloPriority]:
    return ["info", "sample"]


class NotificationSettings(Section):
    exchanges: list[str] = Field(
        default_factory=lambda: ["nova", "cinder", "glance", "neutron", "openstack"]
    )
    topics: list[str] = Field(default_factory=lambda: ["notifications"])
    #: Meter definition files (Ceilometer ``meters.yaml`` format).
    definitions: list[Path] = Field(default_factory=list)
    #: Load the definitions Nephoscope ships before ``definitions`` (which may redefine them).
    shipped_definitions: bool = True
    #: ``nephoscope run`` also runs the notification listener.
    enabled: bool = False
    #: kombu URL of the bus the services notify on; empty: ``bus.url``.
    url: str = ""
    #: Priorities whose queues (``<topic>.<priority>``) are consumed; only info and
    #: sample are metered, the others are acknowledged and counted.
    priorities: list[OsloPriority] = Field(default_factory=_metered_priorities, min_length=1)
    #: oslo.messaging listener pool: when set, one queue of this name instead of
    #: ``<topic>.<priority>`` (to receive every notification beside another consumer).
    pool: str | None = Field(default=None, min_length=1)
    #: Declare the exchanges and queues durable, as oslo.messaging's ``amqp_durable_queues``;
    #: only for those absent (those that exist are used as the broker has them).
    durable: bool = False
    #: RabbitMQ queue type of the notification queues when they are declared, as
    #: oslo.messaging's ``rabbit_quorum_queue`` (``quorum``) or not (``classic``).
    queue_type: QueueType = "classic"
    #: Unacknowledged notifications the listener holds at once.
    prefetch: int = Field(default=256, ge=1, le=65_535)
    #: Seconds a partial batch of counters may wait before it is published.
    batch_timeout: float = Field(default=0.5, gt=0, le=60)
    #: Dead letters go to the queue ``<queue><suffix>`` on RabbitMQ; empty: logged and dropped.
    dead_letter_suffix: str = ".dead"


class Settings(BaseSettings):
    """Every key Nephoscope reads. Unknown keys are errors."""

    model_config = SettingsConfigDict(
        env_prefix="NEPHOSCOPE_",
        env_nested_delimiter="__",
        extra="forbid",
        frozen=True,
    )

    #: Shared secret that signs meter messages (HMAC-SHA256, Ceilometer's scheme).
    metering_secret: str = DEFAULT_SECRET
    #: This host's name, used as the resource id of host meters.
    host: str = Field(default_factory=socket.gethostname, min_length=1)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: How daemons write log records when stderr is not a terminal: ``text``, one line
    #: per record (time, level, logger, message), or ``json``, one JSON object per line.
    #: At a terminal they are drawn for people either way.
    log_format: Literal["text", "json"] = "text"
    bus: BusSettings = Field(default_factory=BusSettings)
    publisher: PublisherSettings = Field(default_factory=PublisherSettings)
    collector: CollectorSettings = Field(default_factory=CollectorSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    polling: PollingSettings = Field(default_factory=PollingSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    libvirt: LibvirtSettings = Field(default_factory=LibvirtSettings)
    compute: ComputeSettings = Field(default_factory=ComputeSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Environment first so that it overrides what the file (init kwargs) says.
        return (env_settings, init_settings)

    @property
    def uses_default_secret(self) -> bool:
        return self.metering_secret == DEFAULT_SECRET


def _read_yaml(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{path}:{where}: not valid YAML: {problem}") from None


def _read_polling_file(path: Path) -> list[PollingSource]:
    data = _read_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("sources"), list):
        raise ValueError(f"{path}: must be a mapping with a 'sources' list")
    unknown = set(data) - {"sources"}
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    sources: list[PollingSource] = []
    for index, entry in enumerate(data["sources"]):
        try:
            sources.append(PollingSource.model_validate(entry))
        except ValidationError as exc:
            raise ValueError(f"{path}: sources[{index}]: {_describe(exc)}") from None
    return sources


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        key = ".".join(str(p) for p in error["loc"])
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        parts.append(f"{key}: {message}" if key else message)
    return "; ".join(parts)


def _unknown_environment() -> list[str]:
    # pydantic-settings ignores NEPHOSCOPE_ variables that name no key; a typo
    # there would silently change nothing, so it is an error like one in the file.
    known = {name.upper() for name in Settings.model_fields} | {"CONFIG"}
    prefix = "NEPHOSCOPE_"
    return sorted(
        name
        for name in os.environ
        if name.upper().startswith(prefix)
        and name[len(prefix) :].upper().split("__")[0] not in known
    )


def load_settings(path: Path | str | None = None) -> Settings:
    """Load settings from ``path`` (or ``$NEPHOSCOPE_CONFIG``) and the environment.

    Raises :class:`ConfigError` naming every bad key, ``; ``-separated.
    A relative ``polling.file`` is taken from the config file's directory.
    """
    if path is None:
        path = os.environ.get(CONFIG_ENV) or None
    data: dict[str, Any] = {}
    where = ""
    if path is not None:
        where = f"{path}: "
        loaded = _read_yaml(Path(path))
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{where}the top level must be a mapping of keys")
        data = loaded
        polling = data.get("polling")
        if isinstance(polling, dict) and isinstance(polling.get("file"), str):
            polling_file = Path(polling["file"])
            if not polling_file.is_absolute():
                data["polling"] = {**polling, "file": str(Path(path).parent / polling_file)}
    unknown = _unknown_environment()
    if unknown:
        raise ConfigError(f"environment: {', '.join(unknown)}: unknown key")
    try:
        return _with_local_secret(Settings(**data))
    except ValidationError as exc:
        raise ConfigError(f"{where}{_describe(exc)}") from None
    except SettingsError as exc:
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(f"environment: {exc}{cause}") from None
