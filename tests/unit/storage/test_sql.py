"""SQLStore on SQLite: the shared store contract plus what is SQLite's own."""

from __future__ import annotations

import itertools
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from tests.unit.storage.contract import StoreContract
from tests.unit.storage.realistic import realistic_samples

from nephoscope.config import StoreSettings
from nephoscope.storage import StoreError, known_schemes, open_store, url_scheme
from nephoscope.storage.sql import (
    SQLStore,
    canonical_json,
    decode_message_id,
    encode_message_id,
    encode_message_ids,
)


class TestSQLiteStore(StoreContract):
    @pytest.fixture
    def store_url(self, tmp_path: Path) -> str:
        return f"sqlite:///{tmp_path / 'store.db'}"


def sqlite_store(path: Path) -> SQLStore:
    store = open_store(StoreSettings(url=f"sqlite:///{path}"))
    assert isinstance(store, SQLStore)
    return store


def test_sqlite_connections_are_durable_and_checked(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "s.db")
    try:
        with store.engine.connect() as conn:

            def pragma(name: str) -> object:
                return conn.exec_driver_sql(f"PRAGMA {name}").scalar()

            assert pragma("journal_mode") == "wal"
            assert pragma("synchronous") == 2  # FULL
            assert pragma("foreign_keys") == 1
            assert pragma("busy_timeout") == 30_000
    finally:
        store.close()


def test_sqlite_rejects_rows_pointing_nowhere(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "s.db")
    try:
        with pytest.raises(sa.exc.IntegrityError), store.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO samples (timestamp, volume, batch_id, series_id, metadata_id,"
                " message_id) VALUES (0, 0, 99, 99, 99, x'00')"
            )
    finally:
        store.close()


def test_open_store_creates_the_sqlite_directory(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "there.db"
    store = sqlite_store(path)
    store.close()
    assert path.exists()


def test_open_store_names_unknown_schemes(tmp_path: Path) -> None:
    with pytest.raises(StoreError) as caught:
        open_store(StoreSettings(url="mongodb://localhost/ceilometer"))
    message = str(caught.value)
    assert "'mongodb'" in message
    assert "postgresql" in message
    assert "sqlite" in message
    assert known_schemes() == ["postgresql", "sqlite"]
    with pytest.raises(StoreError, match="no scheme"):
        open_store(StoreSettings(url=str(tmp_path / "plain-path.db")))


@pytest.mark.parametrize("url", ["sqlite+nosuchdriver:///x.db", "postgresql://u@h:port/db"])
def test_open_store_explains_urls_it_cannot_use(url: str) -> None:
    with pytest.raises(StoreError, match="cannot open the store"):
        open_store(StoreSettings(url=url))


@pytest.mark.parametrize(
    ("url", "scheme"),
    [
        ("postgresql+psycopg://u:p@h/db", "postgresql"),
        ("postgresql://h/db", "postgresql"),
        ("sqlite:////var/lib/x.db", "sqlite"),
        ("SQLite+pysqlite:///x.db", "sqlite"),
    ],
)
def test_url_scheme(url: str, scheme: str) -> None:
    assert url_scheme(url) == scheme


@pytest.mark.parametrize(
    "message_id",
    [
        str(uuid.uuid4()),
        "00000000-0000-0000-0000-000000000000",
        "00616263-6465-6667-6869-6a6b6c6d6e6f",
        "abcdefghijklmno",
        "abcdefghijklmnop",
        "abcdefghijklmn",
        "\x00",
        "",
        "é" * 7 + "a",  # 15 UTF-8 bytes
        str(uuid.uuid4()).upper(),
        "urn:uuid:" + str(uuid.uuid4()),
    ],
)
def test_message_ids_round_trip(message_id: str) -> None:
    raw = encode_message_id(message_id)
    assert decode_message_id(raw) == message_id
    assert encode_message_ids([message_id]) == [raw]
    canonical = str(uuid.UUID(message_id)) == message_id if len(message_id) == 36 else False
    assert (len(raw) == 16) == canonical


def test_message_id_encodings_never_collide() -> None:
    ids = ["abcdefghijklmno", "00616263-6465-6667-6869-6a6b6c6d6e6f", "\x01abcdefghijklmn"]
    ids += ["".join(p) for p in itertools.product("ab\x00\x01", repeat=3)]
    encoded = [encode_message_id(i) for i in ids]
    assert len(set(encoded)) == len(ids)


def test_canonical_json_is_sorted_and_total() -> None:
    assert canonical_json({"b": 1, "a": {"d": 2, "c": 3}}) == b'{"a":{"c":3,"d":2},"b":1}'
    assert canonical_json({"big": 2**70}) == b'{"big":1180591620717411303424}'
    assert canonical_json({"s": {3, 1}, "o": object}) == b'{"o":"<class \'object\'>","s":[1,3]}'


@pytest.mark.parametrize(
    ("policy", "limit"),
    [
        # Raw samples alone: the store's own target.
        ({"default": []}, 120),
        # With the default rollups (a 1-minute bucket per 6 samples here, hourly, daily).
        ({}, 130),
    ],
    ids=["raw", "with-rollups"],
)
def test_bytes_per_sample(tmp_path: Path, policy: dict[str, Any], limit: int) -> None:
    """50,000 host-like samples (every 10 s) fit in ``limit`` bytes each, indexes included."""
    path = tmp_path / "size.db"
    store = open_store(StoreSettings(url=f"sqlite:///{path}", archive_policy=policy))
    samples = list(realistic_samples(50_000))
    for start in range(0, len(samples), 1000):
        store.write_batch(samples[start : start + 1000])
    store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    size = sum(f.stat().st_size for f in tmp_path.iterdir() if f.name.startswith("size.db"))
    per_sample = size / len(samples)
    assert per_sample <= limit, f"{per_sample:.1f} bytes per sample"
