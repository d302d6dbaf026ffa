"""Shared test fixtures.

Tests that need a live service ask for it through :func:`require_service`: on a
machine without it they skip with the reason, and with ``CI`` set they fail, so
CI can never pass by skipping.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

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
