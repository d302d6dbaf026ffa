"""Whatever the API accepts reads back, on every endpoint and every store.

One accepted sample must never break reads: a sample the API answers ``201`` for
is found again by id, by the simple query of every listing, by statistics (plain,
with a period, grouped, from the rollups), by ``/v2/usage`` and by the complex
query, with the volume, time and metadata it was posted with. Input the API
cannot keep is refused with a 4xx in Ceilometer's error shape, never a 5xx.

Hypothesis posts samples with the values that break stores and encoders: integers
at and beyond 64 bits (and 400 digits), floats at the double's edges, booleans as
volumes, times at the calendar's ends with offsets, NUL characters and lone
surrogates, long ids, deep and wide metadata. A second property sends queries
(simple, usage and complex) with such values to an API holding ordinary samples.
Both run on SQLite and, when it is reachable, PostgreSQL. The reproductions the
security review found run as explicit cases too.
"""

from __future__ import annotations

import ast
import json
import math
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, currently_in_test_context, given, note, settings
from hypothesis import strategies as st
from tests.conftest import fresh_postgresql_database

from nephoscope.api import create_app
from nephoscope.api.query import SAMPLE_FIELDS
from nephoscope.signing import compute_signature
from nephoscope.storage import open_store

from .conftest import ADMIN, P1, SAMPLES, SECRET, make_settings

#: One app per store per test: a fresh app per example would be far too slow.
SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
TOKENS = {"admin": ADMIN, "p1": P1}


# -- stores ---------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database for one test: what one test posts never reaches another."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'readback.db'}"
        return
    with fresh_postgresql_database("nephoscope_readback") as url:
        yield url


def _client(url: str, tmp_path: Path, seed: list[Any]) -> Iterator[TestClient]:
    base = make_settings(tmp_path)
    app_settings = base.model_copy(update={"store": base.store.model_copy(update={"url": url})})
    store = open_store(app_settings.store)
    try:
        if seed:
            store.write_batch(seed)
        app = create_app(app_settings, store)
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client
    finally:
        store.close()


@pytest.fixture
def posting(store_url: str, tmp_path: Path) -> Iterator[TestClient]:
    """An API over an empty store, to post to."""
    yield from _client(store_url, tmp_path, [])


@pytest.fixture
def seeded(store_url: str, tmp_path: Path) -> Iterator[TestClient]:
    """An API over the ordinary samples of conftest, to query."""
    yield from _client(store_url, tmp_path, SAMPLES)


# -- strategies -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Fresh:
    """An id unique to one run of one example: a new prefix, then ``suffix``.

    Examples share a store, so ids must not collide; the prefix is made when the
    example runs (a replayed or shrunk example gets a new one). Equal markers in
    one post stand for one id (samples of one resource), message ids excepted.
    """

    suffix: str = ""
    digits: bool = False

    def make(self) -> str:
        # No "%": Starlette's TestClient decodes paths twice (httpx's decoded path,
        # unquoted again), so "%41" would reach the app as "A"; a server decodes once.
        suffix = self.suffix.replace("%", "")
        if self.digits:
            return f"{uuid.uuid4().int}{suffix}"
        return f"r{uuid.uuid4().hex}-{suffix}"


SPECIAL_CHARS = [
    "\x00",
    "\ud800",
    "\udfff",
    "\ufffd",
    "\u200b",
    "é",
    "ß",
    "😀",
    ".",
    "/",
    "%",
    "+",
    "?",
    "#",
    "&",
    "=",
    "\\",
    '"',
    "'",
    " ",
    "\t",
    "\n",
    "*",
    "[",
    "$",
]
chars = st.one_of(st.characters(), st.sampled_from(SPECIAL_CHARS))
short_texts = st.text(chars, max_size=12)
long_texts = st.builds(
    lambda char, n: char * n,
    st.sampled_from(["x", "é", "😀", "\x00", "\ud800"]),
    st.sampled_from([254, 255, 256, 300]),
)
texts = st.one_of(short_texts, long_texts)
clean_texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=12)

EDGE_INTS = [
    0,
    1,
    -1,
    2**31,
    2**53 + 1,
    2**63 - 1,
    2**63,
    -(2**63),
    -(2**63) - 1,
    2**64 - 1,
    2**64,
    -(2**64),
    10**400,
    -(10**400),
]
EDGE_FLOATS = [
    0.0,
    -0.0,
    0.1,
    1.5,
    1e308,
    -1e308,
    1.7976931348623157e308,
    5e-324,
    math.nan,
    math.inf,
    -math.inf,
]
numbers = st.one_of(
    st.sampled_from(EDGE_INTS), st.sampled_from(EDGE_FLOATS), st.integers(), st.floats()
)

EDGE_MOMENTS = [
    datetime(1, 1, 1),
    datetime(1, 1, 1, 0, 0, 0, 1),
    datetime(1, 1, 1, 13, 59, 59),
    datetime(1, 1, 2),
    datetime(1969, 12, 31, 23, 59, 59, 999999),
    datetime(1970, 1, 1),
    datetime(2024, 2, 29, 23, 59, 59, 999999),
    datetime(2026, 1, 1, 12),
    datetime(9999, 12, 30, 23, 59, 59),
    datetime(9999, 12, 31),
    datetime(9999, 12, 31, 10, 0, 0),
    datetime(9999, 12, 31, 23, 59, 59),
    datetime(9999, 12, 31, 23, 59, 59, 999999),
]
OFFSETS = ["", "Z", "+00:00", "-00:00", "+14:00", "-14:00", "+23:59", "-23:59", "+05:30"]
#: Times at the calendar's ends: most are outside it in UTC.
EDGE_TIMES = [
    "0001-01-01T00:00:00+14:00",
    "0001-01-01T13:59:59.999999+14:00",
    "0001-01-01T00:00:00+00:01",
    "0001-01-01T00:00:00.000001+00:00:00.000002",
    "9999-12-31T23:59:59.999999-14:00",
    "9999-12-31T10:00:00-14:00",
    "9999-12-31T23:59:59.999999-00:00:00.000001",
    "9999-12-31T23:59:59.999999",
    "0001-01-01T00:00:00",
    "0001-01-01T00:00:00Z",
]


@st.composite
def times(draw: st.DrawFn) -> str:
    """ISO 8601 text, naive or with an offset: at the calendar's ends, anywhere in it,
    or in the years samples are usually from."""
    which = draw(st.integers(0, 4))
    if which == 0:
        return draw(st.sampled_from(EDGE_TIMES))
    moment = draw(
        st.sampled_from(EDGE_MOMENTS)
        if which == 1
        else st.datetimes()
        if which == 2
        else st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1))
    )
    spec = draw(st.sampled_from(["auto", "seconds", "microseconds", "milliseconds", "minutes"]))
    text = moment.isoformat(sep=draw(st.sampled_from("T ")), timespec=spec)
    return text + draw(st.sampled_from(OFFSETS))


BAD_TIMES = ["", "now", "2026-13-01T00:00:00", "2026-01-01T24:00:00", "10000-01-01T00:00:00"]


@st.composite
def mostly(draw: st.DrawFn, good: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]) -> Any:
    """``good`` 19 times in 20 (shrinking towards it), else ``bad``: a post of three
    samples of ten fields each is then accepted about one time in five."""
    return draw(bad if draw(st.integers(0, 19)) == 19 else good)


def nest(depth: int, leaf: Any) -> dict[str, Any]:
    document: dict[str, Any] = {"a": leaf}
    for _ in range(depth - 1):
        document = {"a": document}
    return document


def nest_not(depth: int, leaf: Any) -> Any:
    tree = leaf
    for _ in range(depth):
        tree = {"not": tree}
    return tree


meta_keys = st.one_of(
    st.sampled_from(
        ["a", "b", "a.b", "", ".", "flavor", "vcpus", "launched_at", "state", "\x00", "\ud800"]
    ),
    short_texts,
    long_texts,
)
meta_scalars = st.one_of(st.none(), st.booleans(), numbers, clean_texts, texts, times())
plain_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), clean_texts
)
meta_values = st.recursive(
    meta_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(meta_keys, children, max_size=4)
    ),
    max_leaves=12,
)
metadata = st.one_of(
    st.dictionaries(meta_keys, meta_values, max_size=6),
    st.builds(nest, st.integers(1, 120), meta_scalars),
    st.dictionaries(
        st.text(st.characters(codec="ascii"), min_size=1, max_size=6),
        plain_scalars,
        min_size=40,
        max_size=150,
    ),
    st.just({}),
    st.just({"": {}, "a": [], "b": [{}]}),
    st.just({"flavor": {"vcpus": 2, "ram": 2048}, "launched_at": "0001-01-01T00:00:00+14:00"}),
)

USAGE_METERS = ["cpu", "instance", "memory", "vcpus", "disk.root.size", "network.incoming.bytes"]
meter_names = st.one_of(
    st.sampled_from(
        [*USAGE_METERS, "cpu_util", "cpu.rate", "m", "é", "😀", "x" * 300, "..", "a b", "a+b"]
    ),
    # No "/" (the route takes one segment) nor "%" (see Fresh.make).
    st.text(st.characters(exclude_characters="/%"), min_size=1, max_size=12),
)


#: A field left out of a posted sample.
OMIT = "<omitted>"


def sample_fields(meter: str) -> dict[str, st.SearchStrategy[Any]]:
    """Each posted field's values: mostly storable (or worth trying), some not."""
    bad_ids = st.sampled_from([None, "", 5, [], {}, True, OMIT])
    not_text = st.sampled_from([5, 1.5, [], {}, True])
    return {
        "counter_name": mostly(st.one_of(st.just(meter), st.just(OMIT)), texts | not_text),
        "counter_type": mostly(
            st.sampled_from(["cumulative", "gauge", "delta"]),
            st.one_of(st.sampled_from(["", "Gauge", "counter", None, 5, OMIT]), texts),
        ),
        "counter_unit": mostly(
            st.one_of(clean_texts, st.sampled_from(["ns", "%", "B", "é" * 255])),
            st.one_of(texts, not_text, st.sampled_from([None, OMIT])),
        ),
        "counter_volume": mostly(
            numbers,
            st.one_of(st.booleans(), st.sampled_from([None, "5", "1e400", "nan", "x", [], OMIT])),
        ),
        "resource_id": mostly(
            st.one_of(
                st.just(Fresh()),
                st.builds(Fresh, clean_texts),
                st.builds(Fresh, st.sampled_from(["x" * 200, "é" * 200, "/", "a/b/", " "])),
                st.builds(Fresh, st.text("0123456789", max_size=200), st.just(True)),
            ),
            st.one_of(bad_ids, st.builds(Fresh, texts)),
        ),
        "user_id": mostly(
            st.one_of(st.just(OMIT), clean_texts, st.builds(Fresh, clean_texts), st.none()),
            st.one_of(texts, not_text),
        ),
        "project_id": mostly(
            st.one_of(st.just(OMIT), st.builds(Fresh), st.just("p1"), clean_texts, st.none()),
            st.one_of(texts, not_text),
        ),
        "source": mostly(
            st.one_of(st.just(OMIT), clean_texts, st.none()), st.one_of(texts, not_text)
        ),
        "timestamp": mostly(
            st.one_of(times(), st.just(OMIT)),
            st.one_of(st.sampled_from(BAD_TIMES), texts, not_text, st.none()),
        ),
        "resource_metadata": mostly(
            st.one_of(metadata, st.just(OMIT)), st.sampled_from([None, [], "x", 5])
        ),
        "message_id": mostly(
            st.one_of(
                st.just(OMIT),
                st.builds(
                    Fresh,
                    st.text(st.characters(codec="utf-8", exclude_characters="/\x00"), max_size=8),
                ),
            ),
            st.sampled_from(["", 5, None]),
        ),
    }


@dataclass(frozen=True)
class Post:
    """One ``POST /v2/meters/{meter}``: who posts, and the samples before ids are made."""

    token: str
    meter: str
    samples: tuple[Mapping[str, Any], ...]
    #: A member's samples carry a signature; False sends a wrong one.
    signature_ok: bool = True


@st.composite
def posts(draw: st.DrawFn) -> Post:
    meter = draw(meter_names)
    token = draw(st.sampled_from(["admin", "admin", "admin", "p1"]))
    fields = sample_fields(meter)
    if token != "admin":
        # A member signs its samples, each with its name, message id and time;
        # its project is its own.
        fields["counter_name"] = mostly(st.just(meter), st.just(OMIT))
        fields["project_id"] = mostly(st.just("p1"), st.sampled_from(["p2", OMIT]))
        fields["message_id"] = mostly(st.builds(Fresh), st.just(OMIT))
        fields["timestamp"] = mostly(times(), st.just(OMIT))
    samples = []
    copies = draw(st.sampled_from([1, 1, 2, 3]))
    for _ in range(draw(st.integers(1, 3)) if copies == 1 else 1):
        sample = {key: draw(value) for key, value in fields.items()}
        samples.extend([{k: v for k, v in sample.items() if v != OMIT}] * copies)
    return Post(token, meter, tuple(samples), draw(mostly(st.just(True), st.just(False))))


def _make_ids(post: Post) -> list[dict[str, Any]]:
    """The samples to send: fresh ids made, a member's samples signed."""
    body = []
    made: dict[tuple[str, Fresh], str] = {}
    for sample in post.samples:
        sent = {}
        for key, value in sample.items():
            if isinstance(value, Fresh):
                fresh = value.make()
                value = fresh if key == "message_id" else made.setdefault((key, value), fresh)
            sent[key] = value
        if post.token != "admin":
            try:
                signature = compute_signature(sent, SECRET, json_values=True)
            except Exception:  # what cannot be signed here is sent with a wrong signature
                signature = "0" * 64
            sent["message_signature"] = signature if post.signature_ok else "0" * 64
        body.append(sent)
    return body


# -- checking answers -----------------------------------------------------------------------


def path(route: str, *segments: str) -> str:
    """``route``, then segments quoted whole ("/" and "." too), lone surrogates as their bytes."""
    quoted = (quote(s, safe="", errors="surrogatepass").replace(".", "%2E") for s in segments)
    return route + "".join(f"/{segment}" for segment in quoted)


def url(route: str, *pairs: tuple[str, Any]) -> str:
    if not pairs:
        return route
    text = urlencode(
        [(k, str(v)) for k, v in pairs], quote_via=quote, safe="", errors="surrogatepass"
    )
    return f"{route}?{text}"


def where(field: str, value: Any, op: str = "eq", kind: str = "") -> list[tuple[str, Any]]:
    return [("q.field", field), ("q.op", op), ("q.value", value), ("q.type", kind)]


def check(response: Any, what: str, ok: int = 200) -> Any:
    """No 5xx; an error has Ceilometer's shape; returns the JSON of an ``ok`` answer."""
    status = response.status_code
    assert status < 500, f"{what}: {status} {response.text[:300]}"
    if status >= 400:
        try:
            fault = response.json()["error_message"]["faultstring"]
        except (ValueError, KeyError, TypeError):
            fault = None
        assert isinstance(fault, str), (
            f"{what}: {status} not in Ceilometer's shape: {response.text:.300}"
        )
        return None
    assert status == ok, f"{what}: {status} {response.text[:300]}"
    return response.json()


def read(client: TestClient, headers: dict[str, str], target: str) -> Any:
    """GET that must answer 200."""
    response = client.get(target, headers=headers)
    body = check(response, f"GET {target[:300]}")
    assert response.status_code == 200, (
        f"GET {target[:300]}: {response.status_code} {response.text:.200}"
    )
    return body


def query_samples(client: TestClient, headers: dict[str, str], tree: Any) -> Any:
    content = json.dumps({"filter": json.dumps(tree)})
    response = client.post("/v2/query/samples", content=content, headers={**headers, **JSON_HEADER})
    body = check(response, f"POST /v2/query/samples {content[:300]}")
    assert response.status_code == 200, (
        f"POST /v2/query/samples {content[:300]}: {response.status_code} {response.text:.200}"
    )
    return body


JSON_HEADER = {"Content-Type": "application/json"}


def utc_text(value: Any) -> str | None:
    """A posted time as the API writes it (naive UTC), or None if UTC cannot hold it."""
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is not None:
            moment = moment.astimezone(UTC).replace(tzinfo=None)
        return moment.isoformat()
    except (OverflowError, ValueError):
        return None


def pairs(document: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in document.items():
        if isinstance(value, Mapping):
            yield from pairs(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def canonical(value: Any) -> Any:
    if isinstance(value, Mapping):
        return ("dict", sorted((k, canonical(v)) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return ("list", [canonical(v) for v in value])
    return (type(value).__name__, repr(value))


def same_text(text: str, value: Any) -> bool:
    """Whether ``text`` is how ``flatten_metadata`` shows ``value`` (list order of keys aside)."""
    if text == str(value):
        return True
    if isinstance(value, list):
        try:
            return bool(canonical(ast.literal_eval(text)) == canonical(value))
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            return False
    return False


@dataclass
class Expected:
    """What a posted sample must read back as."""

    message_id: str
    resource_id: str
    meter: str
    volume: float
    timestamp: str
    project_id: str | None
    metadata: dict[str, list[Any]]

    def check_metadata(self, shown: Mapping[str, str], what: str) -> None:
        assert set(shown) == set(self.metadata), (
            f"{what}: metadata keys {sorted(shown)!r:.300}, posted {sorted(self.metadata)!r:.300}"
        )
        for key, text in shown.items():
            assert any(same_text(text, v) for v in self.metadata[key]), (
                f"{what}: metadata {key!r:.80} reads back as {text!r:.200}, "
                f"posted {self.metadata[key]!r:.200}"
            )

    def check_sample(self, view: Mapping[str, Any], what: str, old: bool = False) -> None:
        volume = view["counter_volume" if old else "volume"]
        assert volume == self.volume, f"{what}: volume {volume!r}, posted {self.volume!r}"
        assert view["timestamp"] == self.timestamp, f"{what}: timestamp {view['timestamp']}"
        self.check_metadata(view["resource_metadata" if old else "metadata"], what)


def expected(sent: Mapping[str, Any], echoed: Mapping[str, Any]) -> Expected:
    """What ``sent``, answered with ``echoed``, must read back as; asserts it was storable."""
    volume = sent.get("counter_volume")
    assert not isinstance(volume, bool), f"a boolean volume was accepted: {echoed}"
    try:
        real = float(volume)  # type: ignore[arg-type]
    except (OverflowError, TypeError, ValueError):
        raise AssertionError(f"accepted a volume no double holds: {volume!r:.100}") from None
    assert math.isfinite(real), f"accepted a volume that is not finite: {volume!r}"
    stamp = echoed["timestamp"]
    if sent.get("timestamp") is not None:  # null stands for "now", as a missing time
        stamp = utc_text(sent["timestamp"])
        assert stamp is not None, f"accepted a time UTC cannot hold: {sent['timestamp']!r}"
        assert echoed["timestamp"] == stamp, (echoed["timestamp"], stamp)
    document = sent.get("resource_metadata") or {}
    assert isinstance(document, dict), f"accepted metadata that is not an object: {document!r}"
    flat: dict[str, list[Any]] = {}
    for key, value in pairs(document):
        flat.setdefault(key, []).append(value)
    return Expected(
        message_id=echoed["message_id"],
        resource_id=echoed["resource_id"],
        meter=echoed["counter_name"],
        volume=real,
        timestamp=stamp,
        project_id=echoed["project_id"],
        metadata=flat,
    )


def metadata_condition(sent: Mapping[str, Any]) -> list[tuple[str, Any]] | None:
    """A simple-query condition on one top-level metadata value of ``sent``, if any fits."""
    document = sent.get("resource_metadata") or {}
    for key, value in document.items():
        if not key or any(c in key for c in '."\\\x00') or not key.isprintable():
            continue
        if isinstance(value, bool):
            return where(f"metadata.{key}", str(value).lower(), kind="boolean")
        if isinstance(value, int) and abs(value) < 2**63:
            return where(f"metadata.{key}", value, kind="integer")
        if isinstance(value, float) and math.isfinite(value):
            return where(f"metadata.{key}", repr(value), kind="float")
        if isinstance(value, str) and value.isprintable() and "\x00" not in value:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                continue
            return where(f"metadata.{key}", value, kind="string")
    return None


def shifted(stamp: str, seconds: int) -> str:
    moment = datetime.fromisoformat(stamp)
    try:
        return (moment + timedelta(seconds=seconds)).isoformat()
    except OverflowError:
        return (datetime.min if seconds < 0 else datetime.max).isoformat()


class Problems(list[str]):
    """Failed checks, collected so that one answer lists every endpoint that failed."""

    @contextmanager
    def step(self) -> Iterator[None]:
        try:
            yield
        except AssertionError as exc:
            self.append(str(exc))

    def verify(self) -> None:
        assert not self, f"{len(self)} failed:\n" + "\n".join(self)


def read_back(
    client: TestClient,
    headers: dict[str, str],
    want: Expected,
    sent: Any,
    siblings: list[Expected],
    problems: Problems,
) -> None:
    """Every endpoint finds the posted sample, as it was posted.

    ``siblings`` are the samples of its post with its resource id, itself included.
    """
    mid, rid, meter = want.message_id, want.resource_id, want.meter
    by_resource = where("resource_id", rid)

    with problems.step():
        view = read(client, headers, path("/v2/samples", mid))
        assert view["id"] == mid
        want.check_sample(view, "GET /v2/samples/{id}")

    searches = [
        (by_resource, "resource_id"),
        (
            by_resource
            + where("timestamp", want.timestamp, "ge")
            + where("timestamp", want.timestamp, "le"),
            "resource_id and its timestamp",
        ),
    ]
    by_metadata = metadata_condition(sent)
    if by_metadata is not None:
        searches.append((by_resource + by_metadata, "resource_id and its metadata"))
    for conditions, what in searches:
        with problems.step():
            found = read(client, headers, url("/v2/samples", *conditions, ("limit", 1000)))
            views = [v for v in found if v["id"] == mid]
            assert views, f"GET /v2/samples by {what}: {mid} not among {len(found)}"
            want.check_sample(views[0], f"GET /v2/samples by {what}")

    with problems.step():
        found = read(client, headers, url(path("/v2/meters", meter), *by_resource))
        views = [v for v in found if v["message_id"] == mid]
        assert views, f"GET /v2/meters/{{name}}: {mid} not among {len(found)}"
        want.check_sample(views[0], "GET /v2/meters/{name}", old=True)

    with problems.step():
        meters = read(client, headers, url("/v2/meters", *by_resource))
        assert any(m["name"] == meter and m["resource_id"] == rid for m in meters), meters

    with problems.step():
        resource = read(client, headers, path("/v2/resources", rid))
        assert resource["resource_id"] == rid
        newest = max((s.timestamp for s in siblings), key=datetime.fromisoformat)
        assert resource["last_sample_timestamp"] == newest, (resource, newest)
        if len(siblings) == 1:
            want.check_metadata(resource["metadata"], "GET /v2/resources/{id}")
    with problems.step():
        resources = read(client, headers, url("/v2/resources", *by_resource))
        assert any(r["resource_id"] == rid for r in resources), resources

    statistics = path("/v2/meters", meter) + "/statistics"
    hour = datetime.fromisoformat(want.timestamp).replace(minute=0, second=0, microsecond=0)
    for extra in [
        [],
        [("period", 60)],
        [("groupby", "resource_id")],
        [*where("timestamp", hour.isoformat(), "ge"), ("period", 3600)],
    ]:
        with problems.step():
            stats = read(client, headers, url(statistics, *by_resource, *extra))
            counted = sum(s["count"] for s in stats)
            assert counted >= 1, f"statistics {extra}: {stats}"
            if extra == [("groupby", "resource_id")]:
                assert any(s["groupby"] == {"resource_id": rid} for s in stats), stats

    with problems.step():
        usage = [("start", shifted(want.timestamp, -1)), ("end", shifted(want.timestamp, 1))]
        if want.project_id is not None:
            usage.append(("project_id", want.project_id))
        read(client, headers, url("/v2/usage", *usage))

    with problems.step():
        conditions = [
            {"=": {"resource_id": rid}},
            {">=": {"timestamp": want.timestamp}},
            {"<=": {"timestamp": want.timestamp}},
            {"=": {"volume": want.volume}},
        ]
        found = query_samples(client, headers, {"and": conditions})
        views = [v for v in found if v["id"] == mid]
        assert views, f"POST /v2/query/samples: {mid} not among {len(found)}"
        want.check_sample(views[0], "POST /v2/query/samples")


def post_and_read_back(client: TestClient, post: Post) -> bool:
    """Post; if accepted, read every sample back (and say it was accepted)."""
    headers = TOKENS[post.token]
    body = _make_ids(post)
    target = path("/v2/meters", post.meter)
    # (This Hypothesis prints a failing case's arguments empty: say what was sent.)
    if currently_in_test_context():
        note(f"{post.token} posted to {target}: {body!r:.3000}")
    response = client.post(
        target, content=json.dumps(body, allow_nan=True), headers={**headers, **JSON_HEADER}
    )
    echoed = check(response, f"POST {target[:200]} {body!r:.300}", ok=201)
    if echoed is None:
        return False
    assert len(echoed) == len(body), echoed
    problems = Problems()
    wants = [expected(sent, answer) for sent, answer in zip(body, echoed, strict=True)]
    for sent, want in zip(body, wants, strict=True):
        siblings = [w for w in wants if w.resource_id == want.resource_id]
        read_back(client, headers, want, sent, siblings, problems)
        if post.token != "admin":
            with problems.step():
                view = read(client, ADMIN, path("/v2/samples", want.message_id))
                want.check_sample(view, "GET /v2/samples/{id} as admin")
    problems.verify()
    return True


# -- property 1: what is accepted reads back --------------------------------------------------


@given(post=posts())
@settings(SETTINGS, max_examples=300)
def test_accepted_samples_read_back(posting: TestClient, post: Post) -> None:
    post_and_read_back(posting, post)


GOOD = {
    "counter_type": "gauge",
    "counter_unit": "u",
    "counter_volume": 1,
    "resource_id": Fresh(),
    "project_id": "p1",
    "user_id": "u1",
    "timestamp": "2026-01-01T00:00:00",
}

#: The review's findings and what this test found besides, each posted as admin to
#: the meter its ``counter_name`` names (else ``m``); one case per finding.
POSTED: dict[str, dict[str, Any]] = {
    "metadata-400-digit-int": {"resource_metadata": {"big": 10**400}},
    "metadata-2**64": {"resource_metadata": {"big": 2**64}},
    "metadata-below--2**63": {"resource_metadata": {"small": -(2**63) - 1}},
    "metadata-nan": {"resource_metadata": {"x": math.nan}},
    "metadata-lone-surrogate-value": {"resource_metadata": {"s": "\ud800"}},
    "metadata-lone-surrogate-key": {"resource_metadata": {"\ud800": 1}},
    "metadata-nul": {"resource_metadata": {"a\x00": "b\x00"}},
    "max-naive-time": {"timestamp": "9999-12-31T23:59:59.999999"},
    "first-day-naive-time": {"timestamp": "0001-01-01T05:00:00"},
    "year-1-plus-14h": {"timestamp": "0001-01-01T00:00:00+14:00"},
    "year-9999-minus-14h": {"timestamp": "9999-12-31T23:59:59.999999-14:00"},
    "volume-true": {"counter_volume": True},
    "volume-1e308": {"counter_volume": 1e308},
    "volume-2**64": {"counter_volume": 2**64},
    "resource-id-newline": {"resource_id": Fresh("\n")},
    "instance-launched-at-year-1-plus-14h": {
        "counter_name": "instance",
        "resource_metadata": {"launched_at": "0001-01-01T00:00:00+14:00"},
    },
    "instance-deleted-at-year-9999-minus-14h": {
        "counter_name": "instance",
        "resource_metadata": {"deleted_at": "9999-12-31T23:59:59.999999-14:00"},
    },
}
#: Samples that are storable one by one, not together.
POSTED_TOGETHER = {
    "volume-1e308-twice": [{"counter_volume": 1e308}, {"counter_volume": 1e308}],
}


@pytest.mark.parametrize("case", POSTED, ids=list(POSTED))
def test_posted_examples_read_back(posting: TestClient, case: str) -> None:
    sample = {**GOOD, **POSTED[case]}
    post_and_read_back(posting, Post("admin", sample.get("counter_name", "m"), (sample,)))


@pytest.mark.parametrize("case", POSTED_TOGETHER, ids=list(POSTED_TOGETHER))
def test_posted_together_examples_read_back(posting: TestClient, case: str) -> None:
    samples = tuple({**GOOD, **changes} for changes in POSTED_TOGETHER[case])
    problems = Problems()
    with problems.step():
        post_and_read_back(posting, Post("admin", "m", samples))
    # The same, posted one by one to another resource.
    resource_id = Fresh().make()
    for sample in samples:
        with problems.step():
            post = Post("admin", "m", ({**sample, "resource_id": resource_id},))
            post_and_read_back(posting, post)
    problems.verify()


def test_member_signed_examples_read_back(posting: TestClient) -> None:
    signed = {**GOOD, "counter_name": "m", "message_id": Fresh()}
    # The strategies' signing is right: an ordinary signed sample is accepted.
    assert post_and_read_back(posting, Post("p1", "m", (signed,)))
    # Signed samples are read as sent, without the model an admin's pass through.
    for volume in [10**400, 2**64, True, "1e400"]:
        post_and_read_back(posting, Post("p1", "m", ({**signed, "counter_volume": volume},)))


# -- property 2: no query makes the API fail ------------------------------------------------

HUGE = "__HUGE__"
huge_digits = st.builds(
    lambda sign, digit, n, tail: sign + digit * n + tail,
    st.sampled_from(["", "-", "+"]),
    st.sampled_from("19"),
    st.sampled_from([19, 20, 400, 4300, 4301, 5000, 5000]),
    st.sampled_from(["", "", "", ".5", "e-4990"]),
)
q_values = st.one_of(
    times(),
    huge_digits,
    numbers.map(str),
    texts,
    st.sampled_from(
        ["true", "false", "nan", "-inf", "1e400", "-0", "0x10", "\uff11\uff12\uff13", ""]
    ),
)
q_fields = st.one_of(
    st.sampled_from(
        [
            *SAMPLE_FIELDS,
            "resource",
            "project",
            "counter_name",
            "id",
            "metadata.flavor.vcpus",
            "resource_metadata.name",
            "metadata.",
            "metadata..a",
            'metadata."',
            "volume",
            "",
        ]
    ),
    st.builds(lambda key: f"metadata.{key}", short_texts),
)
OPERATORS = ["eq", "ne", "lt", "le", "gt", "ge"]
q_ops = st.sampled_from([*OPERATORS, "", "EQ", "like"])
q_types = st.sampled_from(["", "integer", "float", "string", "boolean", "datetime", "int"])


@st.composite
def simple_query(draw: st.DrawFn) -> list[tuple[str, Any]]:
    """Conditions on times, on huge numbers, and on anything."""
    query: list[tuple[str, Any]] = []
    for _ in range(draw(st.integers(0, 3))):
        field, value, op = draw(
            st.one_of(
                st.tuples(st.just("timestamp"), times(), st.sampled_from(OPERATORS)),
                st.tuples(
                    st.sampled_from(["resource_id", "user_id", "metadata.flavor.vcpus", "id"]),
                    huge_digits,
                    st.just("eq"),
                ),
                st.tuples(q_fields, q_values, q_ops),
            )
        )
        kind = draw(st.one_of(st.just(""), q_types))
        query += where(field, value, op, kind)
    return query


#: ``limit`` as JSON text: numbers, and what is no number (a 4xx, whatever it looks like).
limits = st.one_of(
    st.sampled_from(
        ["1", "5", "0", "-1", "1000000", "1000001", str(2**63), "9" * 5000, "1e400", "null"]
    ),
    st.sampled_from(['"5"', '"1"', '"x"', "true", "false", "5.0", "5.5", "[5]", "{}"]),
)
cond_fields = st.sampled_from(
    [
        *["meter", "type", "unit", "resource_id", "project_id", "user_id", "source"],
        *["message_id", "timestamp", "volume", "counter_name", "resource", "metadata.a"],
        *["metadata.flavor.vcpus", "resource_metadata.on", "metadata.", "bogus"],
    ]
)
cond_ops = st.sampled_from(["=", "!=", "<", "<=", "=<", ">", ">=", "=>", "in", "like", "eq"])
cond_values = st.one_of(
    times(),
    numbers,
    st.just(HUGE),
    texts,
    st.booleans(),
    st.none(),
    st.lists(st.one_of(times(), numbers, texts, st.booleans()), max_size=3),
)
leaves = st.one_of(
    st.builds(lambda op, value: {op: {"timestamp": value}}, cond_ops, times()),
    st.builds(lambda op, field, value: {op: {field: value}}, cond_ops, cond_fields, cond_values),
)
trees = st.one_of(
    st.recursive(
        leaves,
        lambda children: st.one_of(
            st.builds(
                lambda op, items: {op: items},
                st.sampled_from(["and", "or"]),
                st.lists(children, max_size=5),
            ),
            st.builds(lambda item: {"not": item}, children),
        ),
        max_leaves=20,
    ),
    st.builds(
        lambda op, items: {op: items},
        st.sampled_from(["and", "or"]),
        st.lists(leaves, min_size=50, max_size=300),
    ),
    st.builds(nest_not, st.integers(20, 40), leaves),
)
orderbys = st.one_of(
    st.none(),
    st.just('[{"timestamp": "asc"}]'),
    st.lists(
        st.builds(
            lambda f, d: {f: d},
            cond_fields,
            st.sampled_from(["asc", "desc", "DESC", "up", 1]),
        ),
        max_size=3,
    ).map(json.dumps),
    texts,
)


VALID_FILTERS = [
    {"=": {"meter": "cpu"}},
    {"and": [{">=": {"volume": 1}}, {"in": {"resource_id": ["vm1", "vm2"]}}]},
    {"not": {"like": {"project_id": "p%"}}},
]


@st.composite
def complex_bodies(draw: st.DrawFn) -> str:
    """A complex query body as JSON text (a 5,000-digit integer cannot be dumped)."""
    parts = []
    if draw(st.integers(0, 2)):
        tree = draw(
            st.one_of(
                trees,
                st.sampled_from(VALID_FILTERS),
                st.sampled_from(["", "{", "[]", "null", '"\\ud800"']),
            )
        )
        text = tree if isinstance(tree, str) else json.dumps(tree, allow_nan=True)
        parts.append(f'"filter": {json.dumps(text.replace(json.dumps(HUGE), "9" * 5000))}')
    orderby = draw(orderbys)
    if orderby is not None:
        parts.append(f'"orderby": {json.dumps(orderby)}')
    limit = draw(st.one_of(st.none(), limits))
    if limit is not None:
        parts.append(f'"limit": {limit}')
    return "{" + ", ".join(parts) + "}"


usage_times = st.one_of(times(), huge_digits, st.sampled_from(BAD_TIMES))


@dataclass(frozen=True)
class Queries:
    token: str
    meter: str
    query: list[tuple[str, Any]]
    statistics: list[tuple[str, Any]]
    usage: list[tuple[str, Any]]
    complex_body: str


@st.composite
def queries(draw: st.DrawFn) -> Queries:
    statistics = []
    if draw(st.booleans()):
        period = [0, 1, 60, 3600, 10 * 366 * 86_400, 10 * 366 * 86_400 + 1, -1, "x", "9" * 5000]
        statistics.append(("period", draw(st.sampled_from(period))))
    for _ in range(draw(st.integers(0, 2))):
        groupby = ["resource_id", "project_id", "resource_metadata.flavor.vcpus", "metadata."]
        statistics.append(("groupby", draw(st.one_of(st.sampled_from(groupby), short_texts))))
    if draw(st.booleans()):
        statistics.append(("aggregate.func", draw(st.sampled_from(["avg", "rate", "stddev"]))))
    usage = [("start", draw(usage_times))]
    if draw(st.booleans()):
        usage.append(("end", draw(usage_times)))
    if draw(st.booleans()):
        usage.append(("project_id", draw(st.sampled_from(["p1", "p2", "\x00", "x" * 300]))))
    if draw(st.booleans()):
        usage.append(("max_gap", draw(st.sampled_from([0, 1, 2_678_400, 2_678_401, "9" * 5000]))))
    return Queries(
        token=draw(st.sampled_from(list(TOKENS))),
        meter=draw(st.sampled_from(["cpu", "memory", "cpu_util", "cpu.rate", "none"])),
        query=draw(simple_query()),
        statistics=statistics,
        usage=usage,
        complex_body=draw(complex_bodies()),
    )


def complex_limit_refused(body: str) -> bool:
    """Whether ``limit`` in ``body`` is no whole number: a boolean, an array, an object,
    or text other than digits (python-ceilometerclient sends digits as text, and
    Ceilometer read them as the number)."""
    try:
        limit = json.loads(body).get("limit")
    except ValueError:
        return False
    if isinstance(limit, str):
        return not (limit.isascii() and limit.isdigit())
    return isinstance(limit, bool | list | dict)


def ask(client: TestClient, q: Queries) -> None:
    headers = TOKENS[q.token]
    meter = path("/v2/meters", q.meter)
    if currently_in_test_context():
        note(repr(q)[:3000])
    problems = Problems()
    for target in [
        url("/v2/samples", *q.query),
        url("/v2/meters", *q.query),
        url("/v2/resources", *q.query),
        url(meter, *q.query),
        url(f"{meter}/statistics", *q.query, *q.statistics),
        url("/v2/usage", *q.usage),
    ]:
        with problems.step():
            check(client.get(target, headers=headers), f"GET {target[:400]}")
    with problems.step():
        response = client.post(
            "/v2/query/samples", content=q.complex_body, headers={**headers, **JSON_HEADER}
        )
        check(response, f"POST /v2/query/samples {q.complex_body[:400]}")
        if complex_limit_refused(q.complex_body):
            assert 400 <= response.status_code < 500, (
                f"POST /v2/query/samples {q.complex_body[:400]}: a limit that is no number "
                f"answered {response.status_code}"
            )
    problems.verify()


@given(q=queries())
@settings(SETTINGS, max_examples=200)
def test_queries_never_fail(seeded: TestClient, q: Queries) -> None:
    ask(seeded, q)


#: The review's query findings.
ASKED = {
    "q-value-5000-digits": Queries("admin", "cpu", where("resource_id", "9" * 5000), [], [], "{}"),
    "q-metadata-5000-digits": Queries(
        "admin", "cpu", where("metadata.flavor.vcpus", "9" * 5000), [], [], "{}"
    ),
    "q-time-year-1-plus-14h": Queries(
        "admin", "cpu", where("timestamp", "0001-01-01T00:00:00+14:00", "ge"), [], [], "{}"
    ),
    "q-time-year-9999-minus-14h": Queries(
        "admin", "cpu", where("timestamp", "9999-12-31T23:59:59.999999-14:00", "lt"), [], [], "{}"
    ),
    "usage-start-year-1-plus-14h": Queries(
        "admin", "cpu", [], [], [("start", "0001-01-01T00:00:00+14:00")], "{}"
    ),
    "usage-end-year-9999-minus-14h": Queries(
        "admin",
        "cpu",
        [],
        [],
        [("start", "2026-01-01T00:00:00"), ("end", "9999-12-31T23:59:59.999999-14:00")],
        "{}",
    ),
    "complex-time-year-1-plus-14h": Queries(
        "admin",
        "cpu",
        [],
        [],
        [("start", "2026-01-01T00:00:00")],
        json.dumps({"filter": json.dumps({">=": {"timestamp": "0001-01-01T00:00:00+14:00"}})}),
    ),
    "complex-time-year-9999-minus-14h": Queries(
        "admin",
        "cpu",
        [],
        [],
        [("start", "2026-01-01T00:00:00")],
        json.dumps(
            {"filter": json.dumps({"<": {"timestamp": "9999-12-31T23:59:59.999999-14:00"}})}
        ),
    ),
    "complex-limit-text": Queries(
        "admin", "cpu", [], [], [("start", "2026-01-01T00:00:00")], '{"limit": "five"}'
    ),
    "complex-limit-true": Queries(
        "p1", "cpu", [], [], [("start", "2026-01-01T00:00:00")], '{"limit": true}'
    ),
}


@pytest.mark.parametrize("case", ASKED, ids=list(ASKED))
def test_query_examples(seeded: TestClient, case: str) -> None:
    ask(seeded, ASKED[case])
