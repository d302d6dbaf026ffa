"""The ``nephoscope`` command: run the services, try plugins, query the store."""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from nephoscope import logs
from nephoscope.config import (
    ConfigError,
    Settings,
    ensure_local_secret,
    load_settings,
    parse_duration,
)

if TYPE_CHECKING:
    from nephoscope.agent import AgentManager
    from nephoscope.api.server import ApiServer
    from nephoscope.collector import Collector
    from nephoscope.messaging.publisher import Publisher
    from nephoscope.notification import NotificationProcessor
    from nephoscope.notification.listener import NotificationListener
from nephoscope.plugin import (
    NAMESPACES,
    LoadedPlugins,
    NotificationBase,
    PollsterBase,
    load_plugin_classes,
    load_plugins,
)
from nephoscope.storage.base import Aggregate, SampleFilter, Statistic, Store
from nephoscope.storage.derived import meter_statistics
from nephoscope.storage.rates import RATE

app = typer.Typer(
    help="Nephoscope meters clouds and hosts: who used how much, when.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Manage the store's schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")

out = Console(soft_wrap=True)
# soft_wrap: never a line break of rich's own in a message, whatever the width.
err = Console(stderr=True, soft_wrap=True)
LOG = logging.getLogger("nephoscope")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config", "-c", help="YAML config file (default: $NEPHOSCOPE_CONFIG).", show_default=False
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine output: one JSON object a line.")]
MeterOption = Annotated[str | None, typer.Option("--meter", "-m", help="Meter name.")]
ResourceOption = Annotated[str | None, typer.Option("--resource", "-r", help="Resource id.")]
ProjectOption = Annotated[str | None, typer.Option("--project", "-p", help="Project id.")]
UserOption = Annotated[str | None, typer.Option("--user", "-u", help="User id.")]
SinceOption = Annotated[
    str | None,
    typer.Option("--since", help="From this time (ISO 8601, or an age such as 15m, 2h, 7d)."),
]
UntilOption = Annotated[
    str | None, typer.Option("--until", help="Up to this time, excluded (same forms as --since).")
]
LimitOption = Annotated[int, typer.Option("--limit", "-n", min=1, help="Most rows to show.")]


def say_error(message: str) -> None:
    """``error: <message>`` on standard error: in red at a terminal, else on one line."""
    if logs.is_terminal(sys.stderr):
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    else:
        # A file, a pipe, journald: one line however long, so grep finds all of it.
        sys.stderr.write(f"error: {logs.one_line(message)}\n")
        sys.stderr.flush()


def fail(message: str, code: int = 2) -> NoReturn:
    say_error(message)
    raise typer.Exit(code)


def setup_logging(level: str, fmt: logs.LogFormat = "text") -> None:
    """Log at ``level`` to standard error: rich at a terminal, one line per record
    (text or JSON, as ``fmt`` says) elsewhere."""
    logs.configure(level, fmt)


def settings_from(config: Path | None) -> Settings:
    """Load settings or stop with the reason (exit status 2)."""
    try:
        settings = load_settings(config)
    except ConfigError as exc:
        fail(f"bad configuration: {exc}")
    setup_logging(settings.log_level, settings.log_format)
    return settings


def parse_time(value: str | None, option: str) -> datetime | None:
    """An ISO 8601 time (UTC when naive) or an age before now."""
    if value is None:
        return None
    age = parse_duration(value)
    if isinstance(age, timedelta):
        return datetime.now(UTC) - age
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        fail(f"{option}: {value!r} is neither ISO 8601 nor an age such as 15m, 2h, 7d")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


@contextmanager
def opened_store(settings: Settings) -> Iterator[Store]:
    from nephoscope.storage import StoreError, open_store

    try:
        store = open_store(settings.store)
    except StoreError as exc:
        fail(str(exc))
    try:
        yield store
    except SQLAlchemyError as exc:
        fail(f"store error: {type(exc).__name__}: {exc}")
    finally:
        store.close()


def _jsonable(value: Any) -> Any:
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    raise TypeError


def emit_json(rows: Iterable[Any]) -> None:
    for row in rows:
        sys.stdout.write(orjson.dumps(row, default=_jsonable).decode() + "\n")
    sys.stdout.flush()


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def _number(value: float) -> str:
    return (
        f"{value:.6g}" if isinstance(value, float) and not value.is_integer() else f"{value:,.0f}"
    )


def show_table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title, title_justify="left")
    for column in columns:
        table.add_column(column, overflow="fold")
    count = 0
    for row in rows:
        table.add_row(*(str(v) if v is not None else "" for v in row))
        count += 1
    if count:
        out.print(table)
    else:
        out.print(f"{title}: none")


def sample_filter(
    meter: str | None = None,
    resource: str | None = None,
    project: str | None = None,
    user: str | None = None,
    since: str | None = None,
    until: str | None = None,
) -> SampleFilter:
    return SampleFilter(
        meter=meter,
        resource_id=resource,
        project_id=project,
        user_id=user,
        since=parse_time(since, "--since"),
        until=parse_time(until, "--until"),
    )


# -- services ----------------------------------------------------------------


def _stop_on_signals(stop: threading.Event) -> None:
    def handler(signum: int, _frame: Any) -> None:
        # Logged, not printed: a log file keeps one record per line.
        if stop.is_set():
            LOG.warning("second signal: exiting without flushing")
            raise SystemExit(130)
        LOG.info("%s: stopping, flushing what is in flight...", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


@contextmanager
def _exit_on_signals() -> Iterator[None]:
    """For ``api``: uvicorn takes SIGINT and SIGTERM while it serves and raises them
    again once it has stopped; exit cleanly then (or on one before it serves), so
    that the stop line is logged. The handlers before are put back on leaving."""

    def handler(signum: int, _frame: Any) -> None:
        LOG.info("%s: stopping", signal.Signals(signum).name)
        raise SystemExit(0)

    before = {signum: signal.signal(signum, handler) for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, previous in before.items():
            signal.signal(signum, previous)


def _agent_counts(manager: AgentManager) -> dict[str, int]:
    return {
        "cycles": manager.cycles,
        "counters_published": manager.counters_published,
        "publish_failures": manager.publish_failures,
    }


def _warn_defaults(settings: Settings) -> None:
    if settings.uses_default_secret:
        LOG.warning(
            "metering_secret is the default: set your own where more than one host sends samples"
        )


def _publisher(settings: Settings) -> Publisher:
    from nephoscope.messaging.publisher import Publisher

    try:
        return Publisher(settings)
    except ConfigError as exc:
        fail(f"bad configuration: {exc}")


def _agent(
    settings: Settings, publisher: Publisher | None, namespaces: list[str] | None
) -> AgentManager:
    from nephoscope.agent import AgentManager

    try:
        return AgentManager(settings, publisher, namespaces=namespaces or None)
    except ValueError as exc:
        fail(str(exc))


def _collector(settings: Settings, store: Store) -> Collector:
    from nephoscope.collector import Collector

    try:
        return Collector(settings, store)
    except ConfigError as exc:
        fail(f"bad configuration: {exc}")


def _api_server(settings: Settings, store: Store) -> ApiServer:
    from nephoscope.api.server import ApiServer

    try:
        return ApiServer(settings, store)
    except ConfigError as exc:
        fail(f"bad configuration: {exc}")


def _start_api(settings: Settings, store: Store) -> ApiServer | None:
    """The API in a thread for ``run``; a problem with it is said, and metering goes on."""
    from nephoscope.api.server import ApiServer

    if settings.api.auth != "none" and settings.api.tokens is None:
        LOG.warning("HTTP API not served: set api.tokens (or api.auth: none) to serve it")
        return None
    try:
        server = ApiServer(settings, store)
        server.start()
    except (ConfigError, RuntimeError, OSError) as exc:
        LOG.error("HTTP API not served: %s", exc)
        return None
    return server


@app.command()
def api(
    config: ConfigOption = None,
    workers: Annotated[
        int, typer.Option("--workers", min=1, max=64, help="Server processes sharing the port.")
    ] = 1,
) -> None:
    """Serve the HTTP query API (Ceilometer v2 compatible) on api.host:api.port."""
    settings = settings_from(config)
    if workers > 1:
        from nephoscope.api.server import serve_workers

        url = f"http://{settings.api.host}:{settings.api.port}"
        out.print(
            f"[bold]Nephoscope API[/] on [cyan]{url}[/] "
            f"({workers} workers; auth: {settings.api.auth}; Ctrl-C stops)"
        )
        LOG.info(
            logs.start_message(
                f"api ({workers} workers)", settings, store=settings.store.url, api=url
            )
        )
        try:
            serve_workers(settings, str(config.resolve()) if config else None, workers)
        except ConfigError as exc:
            fail(f"bad configuration: {exc}")
        LOG.info(logs.stop_message("api", {}))
        return
    with opened_store(settings) as store:
        server = _api_server(settings, store)
        out.print(
            f"[bold]Nephoscope API[/] on [cyan]{server.url}[/] "
            f"(auth: {settings.api.auth}; store: {logs.safe_url(settings.store.url)}; "
            "Ctrl-C stops)"
        )
        LOG.info(logs.start_message("api", settings, store=settings.store.url, api=server.url))
        from nephoscope.api.server import settle_heap

        settle_heap()
        try:
            with _exit_on_signals():
                server.serve()
        finally:
            LOG.info(logs.stop_message("api", {}))


@app.command()
def run(config: ConfigOption = None) -> None:
    """Agent, collector and HTTP API in one process: meter this host into the store."""

    settings = settings_from(config)
    if settings.bus.url.startswith("memory:"):
        # Embedded: this user's own secret, made on first start, never the published one.
        try:
            settings = ensure_local_secret(settings)
        except (ConfigError, OSError) as exc:
            fail(f"metering_secret: {exc}")
    _warn_defaults(settings)
    with opened_store(settings) as store:
        collector = _collector(settings, store)
        api_server = _start_api(settings, store)
        publisher = _publisher(settings)
        agent = _agent(settings, publisher, None)
        agent_stop, collector_stop = threading.Event(), threading.Event()
        ready = threading.Event()
        consumer = threading.Thread(
            target=collector.run, args=(collector_stop, ready), name="collector"
        )
        consumer.start()
        ready.wait(10)
        notifications = _notification_listener(settings, publisher, store)
        sources = ", ".join(f"{s.name} every {s.interval:g}s" for s in settings.polling.sources)
        out.print(f"[bold]Nephoscope[/] metering [cyan]{settings.host}[/] ({sources})")
        out.print(f"  bus:   {collector.bus.safe_url}")
        if notifications is not None:
            listener = notifications[2]
            out.print(f"  notifications: {listener.safe_url} ({listener.describe()})")
        out.print(f"  store: {logs.safe_url(settings.store.url)}")
        if api_server is not None:
            out.print(f"  api:   {api_server.url}/v2 (auth: {settings.api.auth})")
        out.print("  query: nephoscope samples --meter hardware.cpu.util   (Ctrl-C stops)")
        where = {"bus": settings.bus.url, "store": settings.store.url}
        if notifications is not None:
            where["notifications"] = notifications[2].url
        if api_server is not None:
            where["api"] = api_server.url
        LOG.info(logs.start_message("run", settings, **where))
        _stop_on_signals(agent_stop)
        from nephoscope.api.server import settle_heap

        settle_heap()
        try:
            agent.run(agent_stop)
        finally:
            agent_stop.set()
            if notifications is not None:
                notifications[1].set()
                notifications[0].join()
            publisher.close()
            collector_stop.set()
            consumer.join()
            if api_server is not None:
                api_server.stop()
        stats = collector.stats
        LOG.info(logs.stop_message("run", asdict(stats) | _agent_counts(agent)))
        out.print(
            f"stopped: {stats.stored} sample(s) stored, {stats.duplicates} duplicate(s), "
            f"{stats.dead_letters} dead letter(s)"
        )


@app.command()
def agent(
    config: ConfigOption = None,
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace", help="Pollster namespace (host, compute, central); repeatable."
        ),
    ] = None,
) -> None:
    """Poll on schedule and publish counters to the bus."""

    settings = settings_from(config)
    _warn_defaults(settings)
    if settings.bus.url.startswith("memory://"):
        LOG.warning(
            "bus.url is memory://: only a collector in this process could read it; "
            "use `nephoscope run` or an amqp:// bus"
        )
    publisher = _publisher(settings)
    manager = _agent(settings, publisher, namespace)
    stop = threading.Event()
    _stop_on_signals(stop)
    out.print(f"agent polling {', '.join(manager.namespaces)} -> {publisher.destination}")
    LOG.info(logs.start_message("agent", settings, bus=settings.bus.url))
    try:
        manager.run(stop)
    finally:
        publisher.close()
        LOG.info(logs.stop_message("agent", _agent_counts(manager)))


@app.command()
def collector(config: ConfigOption = None) -> None:
    """Consume meter messages from the bus and store them."""

    settings = settings_from(config)
    with opened_store(settings) as store:
        service = _collector(settings, store)
        stop = threading.Event()
        _stop_on_signals(stop)
        out.print(f"collector: {service.bus.safe_url} -> {logs.safe_url(settings.store.url)}")
        LOG.info(
            logs.start_message(
                "collector", settings, bus=settings.bus.url, store=settings.store.url
            )
        )
        try:
            service.run(stop)
        finally:
            LOG.info(logs.stop_message("collector", asdict(service.stats)))


def _notification_processor(
    settings: Settings, extra: Sequence[Path] = (), *, log_problems: bool = True
) -> NotificationProcessor:
    """The notification plugins and definitions, or stop naming the bad definition (status 2)."""
    from nephoscope.notification import DefinitionError, build_processor

    if extra:
        section = settings.notifications
        settings = settings.model_copy(
            update={
                "notifications": section.model_copy(
                    update={"definitions": [*section.definitions, *extra]}
                )
            }
        )
    try:
        return build_processor(settings, log_problems=log_problems)
    except DefinitionError as exc:
        fail(f"bad meter definitions: {exc}")


def _notification_listener(
    settings: Settings, publisher: Publisher, store: Store
) -> tuple[threading.Thread, threading.Event, NotificationListener] | None:
    """For `run`: the notification listener in a thread, when notifications.enabled is set.

    On the embedded bus its dead letters go to the store's dead-letter table.
    """
    if not settings.notifications.enabled:
        return None
    from nephoscope.notification.listener import (
        NotificationBusError,
        NotificationListener,
        StoreDeadLetters,
    )

    processor = _notification_processor(settings)
    embedded = (settings.notifications.url or settings.bus.url).startswith("memory:")
    listener = NotificationListener(
        settings,
        processor,
        publisher,
        dead_letters=StoreDeadLetters(store) if embedded else None,
    )
    stop, ready = threading.Event(), threading.Event()

    def listen() -> None:
        try:
            listener.run(stop, ready)
        except NotificationBusError as exc:
            LOG.error("notification listener stopped: %s", exc)
        finally:
            ready.set()

    thread = threading.Thread(target=listen, name="notification-listener")
    thread.start()
    ready.wait(10)
    return thread, stop, listener


@app.command()
def notifications(
    file: Annotated[
        str,
        typer.Argument(
            help="Notifications, one JSON envelope (oslo v1 or v2) a line; - reads standard input."
        ),
    ],
    config: ConfigOption = None,
    definitions: Annotated[
        list[Path] | None,
        typer.Option(
            "--definitions",
            "-d",
            help="A meters.yaml to use besides notifications.definitions; repeatable.",
        ),
    ] = None,
) -> None:
    """Turn notifications into counters, printed as JSON lines; nothing is sent or stored.

    A line that cannot be metered is reported on standard error with its number;
    the exit status is 0 unless the file cannot be read (2).
    """
    settings = settings_from(config)
    # Each problem is reported with its line below: the processor need not log it too.
    processor = _notification_processor(settings, definitions or (), log_problems=False)
    try:
        stream = sys.stdin.buffer if file == "-" else open(file, "rb")  # noqa: SIM115
    except OSError as exc:
        fail(f"{file}: cannot read: {exc.strerror or exc}")

    def report(number: int, text: str) -> None:
        sys.stderr.write(f"line {number}: {text}\n")

    lines = counters = bad = 0
    try:
        with stream:
            for number, line in enumerate(stream, 1):
                if not line.strip():
                    continue
                lines += 1
                outcome = processor.process_body(line)
                counters += len(outcome.counters)
                emit_json(
                    c.as_dict() | {"event_type": outcome.event_type} for c in outcome.counters
                )
                for problem in outcome.problems:
                    bad += 1
                    report(number, problem)
                if outcome.status == "ignored":
                    report(
                        number,
                        f"priority {outcome.priority} is not metered ({outcome.event_type})",
                    )
                elif outcome.status == "unhandled":
                    report(number, f"no plugin or definition meters {outcome.event_type}")
    except OSError as exc:
        fail(f"{file}: cannot read: {exc.strerror or exc}")
    if bad:
        sys.stderr.write(f"{lines} notification(s), {counters} counter(s), {bad} problem(s)\n")


@app.command("notification-agent")
def notification_agent(config: ConfigOption = None) -> None:
    """Listen for OpenStack notifications and publish their counters to the bus."""
    from nephoscope.notification.listener import NotificationBusError, NotificationListener

    settings = settings_from(config)
    _warn_defaults(settings)
    processor = _notification_processor(settings)
    publisher = _publisher(settings)
    listener = NotificationListener(settings, processor, publisher)
    if listener.url.startswith("memory:"):
        LOG.warning(
            "the notification bus is memory://: nothing outside this process can notify on "
            "it; set notifications.url (or bus.url) to the RabbitMQ of your cloud, or use "
            "`nephoscope run` with notifications.enabled"
        )
    stop = threading.Event()
    _stop_on_signals(stop)
    out.print(
        f"notification agent: {listener.safe_url} ({listener.describe()}) "
        f"-> {publisher.destination}"
    )
    LOG.info(
        logs.start_message(
            "notification-agent", settings, notifications=listener.url, bus=settings.bus.url
        )
    )
    try:
        listener.run(stop)
    except NotificationBusError as exc:
        fail(str(exc))
    finally:
        publisher.close()
        LOG.info(logs.stop_message("notification-agent", asdict(listener.stats)))
    stats = listener.stats
    out.print(
        f"stopped: {stats.received} notification(s), {stats.counters} counter(s) published, "
        f"{stats.dead_lettered} dead-lettered, {stats.ignored} ignored, "
        f"{stats.unhandled} not metered"
    )


@app.command()
def poll(
    config: ConfigOption = None,
    once: Annotated[
        bool, typer.Option("--once", help="Poll once and exit (the only mode).")
    ] = True,
    namespace: Annotated[
        list[str] | None,
        typer.Option(
            "--namespace", help="Pollster namespace (host, compute, central); repeatable."
        ),
    ] = None,
) -> None:
    """Poll once and print the counters as JSON lines; nothing is sent or stored."""

    if not once:
        fail("poll only polls once; `nephoscope agent` polls on schedule")
    settings = settings_from(config)
    manager = _agent(settings, None, namespace)
    for source in settings.polling.sources:
        emit_json(c.as_dict() | {"source_name": source.name} for c in manager.poll(source))


@app.command()
def plugins(json: JsonOption = False) -> None:
    """Every plugin namespace and plugin: loaded, or why not."""
    rows = []
    for namespace in NAMESPACES:
        loaded: LoadedPlugins[Any]
        if namespace.startswith("nephoscope.poll."):
            loaded = load_plugins(namespace, PollsterBase)
        elif namespace == "nephoscope.notification":
            loaded = load_plugins(namespace, NotificationBase)
        else:
            loaded = load_plugin_classes(namespace)
        for name, plugin in sorted(loaded.plugins.items()):
            if isinstance(plugin, PollsterBase):
                detail = "\n".join(plugin.meters)
            else:
                target = plugin if isinstance(plugin, type) else type(plugin)
                detail = f"{target.__module__}.{target.__qualname__}"
            rows.append(
                {"namespace": namespace, "name": name, "status": "loaded", "detail": detail}
            )
        for name, reason in sorted(loaded.unusable.items()):
            rows.append(
                {"namespace": namespace, "name": name, "status": "unusable", "detail": reason}
            )
        for name, reason in sorted(loaded.failed.items()):
            rows.append(
                {"namespace": namespace, "name": name, "status": "failed", "detail": reason}
            )
    if json:
        emit_json(rows)
        return
    show_table(
        "Plugins",
        ["namespace", "plugin", "status", "meters / reason"],
        ([r["namespace"], r["name"], r["status"], r["detail"]] for r in rows),
    )


# -- queries -----------------------------------------------------------------

R = TypeVar("R")


def show_query(
    config: Path | None,
    json: bool,
    fetch: Callable[[Store], Sequence[R]],
    title: str,
    columns: Sequence[str],
    row: Callable[[R], Sequence[Any]],
    *,
    vertical: bool = False,
) -> None:
    """Run one store query and print it as a table, or as JSON lines with ``--json``.

    ``vertical`` shows each result as rows of column name and value.
    """
    settings = settings_from(config)
    with opened_store(settings) as store:
        found = fetch(store)
    if json:
        emit_json(found)
    elif vertical:
        for item in found:
            show_table(title, ["field", "value"], zip(columns, row(item), strict=True))
    else:
        show_table(title, columns, (row(item) for item in found))


@app.command()
def meters(
    config: ConfigOption = None,
    json: JsonOption = False,
    meter: MeterOption = None,
    resource: ResourceOption = None,
    project: ProjectOption = None,
    user: UserOption = None,
) -> None:
    """Meters in the store, one row per meter and resource."""
    query = sample_filter(meter, resource, project, user)
    show_query(
        config,
        json,
        lambda store: store.meters(query),
        "Meters",
        ["name", "type", "unit", "resource", "project", "user", "source"],
        lambda m: [m.name, m.type, m.unit, m.resource_id, m.project_id, m.user_id, m.source],
    )


@app.command()
def samples(
    config: ConfigOption = None,
    json: JsonOption = False,
    meter: MeterOption = None,
    resource: ResourceOption = None,
    project: ProjectOption = None,
    user: UserOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    limit: LimitOption = 50,
) -> None:
    """Samples, newest first."""
    query = sample_filter(meter, resource, project, user, since, until)
    show_query(
        config,
        json,
        lambda store: store.samples(query, limit=limit),
        "Samples",
        ["timestamp", "meter", "volume", "unit", "type", "resource", "project"],
        lambda s: [
            _when(s.timestamp),
            s.name,
            _number(s.volume),
            s.unit,
            s.type,
            s.resource_id,
            s.project_id,
        ],
    )


@app.command()
def resources(
    config: ConfigOption = None,
    json: JsonOption = False,
    meter: MeterOption = None,
    project: ProjectOption = None,
    user: UserOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
) -> None:
    """Resources with samples, their owners and when they were seen."""
    query = sample_filter(meter, None, project, user, since, until)
    show_query(
        config,
        json,
        lambda store: store.resources(query),
        "Resources",
        ["resource", "project", "user", "first sample", "last sample", "meters"],
        lambda r: [
            r.resource_id,
            r.project_id,
            r.user_id,
            _when(r.first_sample_timestamp),
            _when(r.last_sample_timestamp),
            len(r.meters),
        ],
    )


@app.command()
def statistics(
    meter: Annotated[str, typer.Option("--meter", "-m", help="Meter name.")],
    config: ConfigOption = None,
    json: JsonOption = False,
    period: Annotated[
        int | None, typer.Option("--period", min=1, help="Seconds per period.")
    ] = None,
    resource: ResourceOption = None,
    project: ProjectOption = None,
    user: UserOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    groupby: Annotated[
        list[str] | None,
        typer.Option(
            "--groupby",
            "-g",
            help="Split by resource_id, project_id, user_id, source or metadata.<key>; repeatable.",
        ),
    ] = None,
    aggregate: Annotated[
        list[str] | None,
        typer.Option(
            "--aggregate",
            "-a",
            help="Also compute avg, sum, min, max, count, stddev, cardinality/<field> "
            "(resource_id, user_id, project_id or source), or rate (of a cumulative "
            "meter, per second); repeatable.",
        ),
    ] = None,
) -> None:
    """count, min, max, avg and sum of a meter (stored, or derived such as cpu_util),
    over the range or per period."""
    query = sample_filter(meter, resource, project, user, since, until)
    names = list(dict.fromkeys(groupby or []))
    # Each as the statistics name it in their aggregate: its column.
    asked = list(dict.fromkeys(aggregate or []))
    aggregates: list[Aggregate] = []
    for text in asked:
        func, slash, param = text.partition("/")
        if slash and (func != "cardinality" or not param):
            fail(f"--aggregate {text}: only cardinality takes a parameter (cardinality/<field>)")
        if func != RATE:
            aggregates.append((func, param or None))

    def fetch(store: Store) -> list[Statistic]:
        try:
            return meter_statistics(store, query, period, names, aggregates, rate=RATE in asked)
        except ValueError as exc:
            fail(str(exc))

    show_query(
        config,
        json,
        fetch,
        f"Statistics of {meter}",
        ["period start", "period end", *names, "count", "min", "max", "avg", "sum", "unit", *asked],
        lambda s: [
            _when(s.period_start or s.duration_start),
            _when(s.period_end or s.duration_end),
            *(s.groupby.get(name) for name in names),
            s.count,
            _number(s.min),
            _number(s.max),
            _number(s.avg),
            _number(s.sum),
            s.unit,
            *(_maybe_number(s.aggregate.get(name)) for name in asked),
        ],
    )


def _maybe_number(value: float | None) -> str:
    return "-" if value is None else _number(value)


@app.command()
def usage(
    since: Annotated[
        str,
        typer.Option("--since", help="From this time (ISO 8601, or an age such as 15m, 2h, 7d)."),
    ],
    config: ConfigOption = None,
    json: JsonOption = False,
    project: ProjectOption = None,
    until: UntilOption = None,
    max_gap: Annotated[
        str,
        typer.Option(
            "--max-gap", help="Longest gap between two samples that is counted (2h, 90m, 7200)."
        ),
    ] = "2h",
) -> None:
    """Usage per project: instance, vCPU, memory and disk hours, CPU seconds, network bytes.

    The rules are in docs/api.md (GET /v2/usage); without --project, every
    project with usage in the window.
    """
    from nephoscope.storage.usage import usage as project_usage

    start = parse_time(since, "--since") or datetime.now(UTC)
    end = parse_time(until, "--until") or datetime.now(UTC)
    gap = parse_duration(max_gap)
    if not isinstance(gap, timedelta):
        try:
            gap = timedelta(seconds=float(gap))
        except (ValueError, OverflowError):
            fail(f"--max-gap: {max_gap!r} is neither seconds nor a duration such as 90m, 2h")
    if gap <= timedelta(0):
        fail("--max-gap must be above zero")
    if start >= end:
        fail(f"--since ({_when(start)}) must be before --until ({_when(end)})")
    settings = settings_from(config)
    with opened_store(settings) as store:
        found = project_usage(store, start, end, project, gap)
    if json:
        emit_json(u.as_dict() for u in found)
        return
    show_table(
        f"Usage from {_when(start)} to {_when(end)}",
        ["project", "measure", "volume", "unit", "resources"],
        (
            [u.project_id, i.name, _number(i.volume), i.unit, i.resources]
            for u in found
            for i in u.items
        ),
    )


@app.command("dead-letters")
def dead_letters(
    config: ConfigOption = None, json: JsonOption = False, limit: LimitOption = 20
) -> None:
    """Messages that could not be metered, with the reason: the newest in the store and,
    on RabbitMQ, the oldest in each dead-letter queue (up to --limit of each).

    Listing takes nothing from a queue. Exits with status 1 when a bus cannot be reached.
    """
    from nephoscope.messaging.deadletter import peek

    settings = settings_from(config)
    with opened_store(settings) as store:
        rows: list[dict[str, Any]] = [
            asdict(d) | {"queue": None} for d in store.dead_letters(limit)
        ]
    unreachable = False
    for url, names in _dead_letter_queues(settings).items():
        try:
            with _connected(url) as connection:
                rows.extend(asdict(letter) for letter in peek(connection, names, limit))
        except Exception as exc:
            say_error(f"{logs.safe_url(url)}: {type(exc).__name__}: {exc}")
            unreachable = True
    if json:
        emit_json(rows)
    else:
        show_table(
            "Dead letters",
            ["where", "received", "reason", "message id", "body"],
            (
                [
                    row["queue"] or "store",
                    _when(row["received_at"]),
                    row["reason"],
                    row["message_id"],
                    row["body"][:120].decode("utf-8", "replace"),
                ]
                for row in rows
            ),
        )
    if unreachable:
        raise typer.Exit(1)


def _dead_letter_queues(settings: Settings) -> dict[str, list[str]]:
    """The dead-letter queues on RabbitMQ, by bus URL: the metering queue's and the
    notification queues'. The embedded bus keeps its dead letters in the store."""
    from nephoscope.messaging.bus import KombuBus
    from nephoscope.notification.listener import queue_names

    queues: dict[str, list[str]] = {}
    suffix = settings.collector.dead_letter_suffix
    if not settings.bus.url.startswith("memory:") and suffix:
        queues.setdefault(settings.bus.url, []).append(KombuBus(settings.bus).queue.name + suffix)
    notifications = settings.notifications
    url = notifications.url or settings.bus.url
    if not url.startswith("memory:") and notifications.dead_letter_suffix:
        queues.setdefault(url, []).extend(
            name + notifications.dead_letter_suffix for name in queue_names(notifications)
        )
    return queues


@contextmanager
def _connected(url: str) -> Iterator[Any]:
    from nephoscope.messaging.bus import open_connection

    with open_connection(url) as connection:
        connection.ensure_connection(max_retries=1)
        yield connection


@app.command()
def status(config: ConfigOption = None, json: JsonOption = False) -> None:
    """Is everything reachable, what is waiting, what was refused, how fresh is the data.

    Exits with status 1 when a bus or the store cannot be reached, or when the
    agent's last publish was refused and none has succeeded since.
    """
    from nephoscope.messaging.bus import KombuBus
    from nephoscope.messaging.deadletter import depths
    from nephoscope.messaging.spool import Spool
    from nephoscope.storage import StoreError, open_store

    settings = settings_from(config)
    report: dict[str, Any] = {}
    healthy = True
    bus = KombuBus(settings.bus)
    report["bus"] = bus.safe_url
    if settings.bus.url.startswith("memory:"):
        report["bus_reachable"] = None  # in-process: only the running process sees it
        report["queue_depth"] = None
    else:
        try:
            report["queue_depth"] = bus.queue_depth()
            report["bus_reachable"] = True
        except Exception as exc:
            report["bus_reachable"] = False
            report["bus_error"] = bus.describe_error(exc)
            healthy = False
    for url, names in _dead_letter_queues(settings).items():
        queued: dict[str, int | None] = report.setdefault("dead_letter_queues", {})
        try:
            with _connected(url) as connection:
                queued.update(depths(connection, names))
        except Exception as exc:
            queued.update(dict.fromkeys(names))  # unknown
            if url != settings.bus.url:  # the metering bus's failure is said above
                report["notification_bus_reachable"] = False
                report["notification_bus_error"] = (
                    f"{logs.safe_url(url)}: {type(exc).__name__}: {exc}"
                )
            healthy = False
    buffer = settings.publisher.buffer
    assert buffer.path is not None
    spool = Spool(buffer.path, buffer.max_samples)
    report["agent_buffered"], report["agent_dropped"] = spool.counts()
    refused = spool.last_error()
    if refused is not None:
        # Kept by the agent until a publish succeeds: the bus is refusing it now.
        report["agent_bus_error"] = f"since {_when(refused[1])}: {refused[0]}"
        healthy = False
    spool.close()
    try:
        store = open_store(settings.store)
    except StoreError as exc:
        report["store_reachable"] = False
        report["store_error"] = str(exc)
        healthy = False
    else:
        try:
            state = store.status()
            report.update(
                store=state.url,
                store_reachable=True,
                schema_revision=state.schema_revision,
                samples=state.samples,
                resources=state.resources,
                dead_letters=state.dead_letters,
                last_sample_timestamp=state.last_sample_timestamp,
                last_recorded_at=state.last_recorded_at,
            )
        except SQLAlchemyError as exc:
            report["store_reachable"] = False
            report["store_error"] = f"{type(exc).__name__}: {exc}"
            healthy = False
        finally:
            store.close()
    if json:
        emit_json([report])
    else:
        show_table("Status", ["field", "value"], _status_rows(report))
    if not healthy:
        raise typer.Exit(1)


def _status_rows(report: dict[str, Any]) -> Iterator[list[str]]:
    for key, value in report.items():
        if key == "dead_letter_queues":
            for queue, depth in value.items():
                yield [f"dead letters in {queue}", _show(depth)]
        elif key == "dead_letters":
            yield ["dead letters in the store", _show(value)]
        else:
            shown = _when(value) if isinstance(value, datetime) else _show(value)
            yield [key.replace("_", " "), shown]


def _show(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    return str(value)


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply pending schema migrations."""
    from nephoscope.storage import StoreError, open_store

    settings = settings_from(config)
    try:
        store = open_store(
            settings.store.model_copy(update={"auto_upgrade": False}), check_schema=False
        )
    except StoreError as exc:
        fail(str(exc))
    try:
        store.upgrade()
        revision = store.status().schema_revision
    except SQLAlchemyError as exc:
        fail(f"store error: {type(exc).__name__}: {exc}")
    finally:
        store.close()
    out.print(f"{settings.store.url}: schema at revision {revision}")


@db_app.command("expire")
def db_expire(config: ConfigOption = None, json: JsonOption = False) -> None:
    """Delete samples and rollups older than store.retention and store.archive_policy allow."""
    settings = settings_from(config)
    if not settings.store.expires:
        out.print("store.retention and store.archive_policy keep everything: nothing to expire")
        return
    with opened_store(settings) as store:
        deleted = store.expire()
    if json:
        emit_json([{"expired": deleted}])
    else:
        out.print(f"{deleted} sample(s) expired")


def main() -> None:
    """Console entry point."""
    try:
        app()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
