"""Shared test fixtures.

Tests that need a live service ask for it through :func:`require_service`: on a
machine without it they skip with the reason, and with ``CI`` set they fail, so
CI can never pass by skipping.

Nothing a test starts may outlive it: a test that leaves a non-daemon thread or a
child process running fails in its teardown, named, with the thread's stack (the
process is killed); a session that ends with non-daemon threads still running
fails and exits at once instead of hanging on them. ``tests/support.py`` has the
helpers that stop threads, processes and RabbitMQ names whatever happens.
"""

from __future__ import annotations

import gc
import os
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import psutil
import pytest

from tests.support import thread_stacks

#: Seconds a thread or process a test leaves behind gets to end on its own.
GRACE = 2.0

RABBITMQ_URL = os.environ.get("TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
POSTGRESQL_URL = os.environ.get(
    "TEST_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=2):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Skip (or, under CI, fail) unless ``host:port`` accepts connections."""
    if _reachable(host, port):
        return
    reason = f"{name} is not reachable on {host}:{port}"
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a missing service is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(autouse=True)
def _private_agent_buffer(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A publisher that cannot send keeps samples in its buffer file and sends them
    # later, wherever its bus then is: tests must never share the user's buffer.
    path = tmp_path_factory.mktemp("agent-buffer") / "agent-buffer.db"
    monkeypatch.setenv("NEPHOSCOPE_PUBLISHER__BUFFER__PATH", str(path))
    # Nor the metering secret `nephoscope run` keeps in the user's config directory.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config-home")))


@pytest.fixture
def rabbitmq_url() -> str:
    require_service("RabbitMQ", "127.0.0.1", 5672)
    return RABBITMQ_URL


@contextmanager
def fresh_postgresql_database(prefix: str = "nephoscope_test") -> Iterator[str]:
    """A URL to a new, empty PostgreSQL database, dropped on leaving (its sessions ended)."""
    require_service("PostgreSQL", "127.0.0.1", 5432)
    import sqlalchemy as sa

    admin = sa.create_engine(POSTGRESQL_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(POSTGRESQL_URL).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :name AND pid <> pg_backend_pid()"
                ),
                {"name": name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


@pytest.fixture
def postgresql_url() -> Iterator[str]:
    """A URL to a fresh, empty PostgreSQL database, dropped afterwards."""
    with fresh_postgresql_database() as url:
        yield url


# -- nothing outlives its test -----------------------------------------------------------


def _non_daemon_threads() -> set[threading.Thread]:
    return {
        t
        for t in threading.enumerate()
        if t.is_alive() and not t.daemon and t is not threading.main_thread()
    }


def _still_running(threads: set[threading.Thread], grace: float) -> list[threading.Thread]:
    """``threads`` that do not end within ``grace`` seconds (together).

    A garbage collection first: the worker of an executor nothing refers to any
    more (a ``ThreadPoolExecutor`` never shut down) ends when the executor is
    collected.
    """
    if any(t.is_alive() for t in threads):
        gc.collect()
    deadline = time.monotonic() + grace
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    return sorted((t for t in threads if t.is_alive()), key=lambda t: t.name)


def _children() -> dict[int, psutil.Process]:
    found = {}
    for child in psutil.Process().children(recursive=True):
        with suppress(psutil.NoSuchProcess):
            if child.status() != psutil.STATUS_ZOMBIE:
                found[child.pid] = child
    return found


def _describe(process: psutil.Process) -> str:
    try:
        return f"pid {process.pid}: {' '.join(process.cmdline())}"
    except psutil.Error:
        return f"pid {process.pid}"


@pytest.fixture(autouse=True)
def _nothing_outlives_the_test() -> Iterator[None]:
    """Fails a test that leaves a non-daemon thread or a child process running.

    Function-scoped and autouse, it is set up before the test's other function
    fixtures and torn down after them: what they stop in their teardown is not
    counted, nor what module or session fixtures started before it.
    """
    threads_before = _non_daemon_threads()
    children_before = set(_children())
    yield
    problems = []
    threads = _still_running(_non_daemon_threads() - threads_before, GRACE)
    if threads:
        problems.append(
            f"{len(threads)} non-daemon thread(s) still running after the test:\n"
            + thread_stacks(threads)
        )
    children = [p for pid, p in _children().items() if pid not in children_before]
    if children:
        _gone, alive = psutil.wait_procs(children, timeout=GRACE)
        if alive:
            names = [_describe(p) for p in alive]
            for process in alive:
                with suppress(psutil.NoSuchProcess):
                    process.kill()
            psutil.wait_procs(alive, timeout=GRACE)
            problems.append(
                f"{len(alive)} child process(es) still running after the test (killed):\n  "
                + "\n  ".join(names)
            )
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


_LINGERING = pytest.StashKey[int]()


def _report(config: pytest.Config, text: str) -> None:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")  # after the progress line
        reporter.write_sep("=", "threads still running", red=True, bold=True)
        reporter.write_line(text)
    else:
        sys.stderr.write(text + "\n")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A session that leaves non-daemon threads running fails, naming them."""
    threads = _still_running(_non_daemon_threads(), GRACE)
    if not threads:
        return
    _report(
        session.config,
        f"{len(threads)} non-daemon thread(s) still running at the end of the session"
        " (the interpreter would wait for them forever); the session fails:\n"
        + thread_stacks(threads),
    )
    if session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    session.config.stash[_LINGERING] = int(session.exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """Exit now, with the session's status, if threads would keep the interpreter alive."""
    status = config.stash.get(_LINGERING, None)
    if status is None or not _non_daemon_threads():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
