import json
import threading
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import orjson
import pytest
from sqlalchemy import exc as sa_exc
from tests.support import running

from nephoscope.collector import Collector, parse_body
from nephoscope.config import ConfigError, Settings
from nephoscope.counter import Counter
from nephoscope.messaging.bus import KombuBus
from nephoscope.messaging.deadletter import Letter
from nephoscope.messaging.envelope import encode_notification
from nephoscope.messaging.meter import counter_to_message
from nephoscope.messaging.publisher import Publisher
from nephoscope.signing import compute_signature
from nephoscope.storage.base import DeadLetter, WriteResult

SECRET = "s3cr3t"
NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


def counter(n: int = 0, **changes: object) -> Counter:
    fields: dict[str, object] = dict(
        name="hardware.cpu.util",
        type="gauge",
        unit="%",
        volume=float(n),
        user_id=None,
        project_id="p",
        resource_id="host-1",
        timestamp=NOW,
        resource_metadata={"host": "h"},
        id=str(uuid.uuid4()),
    )
    fields.update(changes)
    return Counter(**fields)  # type: ignore[arg-type]


def body(messages: list[dict]) -> bytes:
    return encode_notification(
        messages, event_type="metering", priority="SAMPLE", publisher_id="test"
    )


def signed(c: Counter) -> dict:
    return counter_to_message(c, SECRET)


class RecordingStore:
    """Keeps what it is given; can be told to fail."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[Counter], list[DeadLetter]]] = []
        self.fail_with: Exception | None = None
        self.refuse: set[str] = set()
        self.seen: set[str] = set()
        self.acked_before_commit = False
        self.messages: list[FakeMessage] = []
        self.expiries: list[threading.Thread] = []

    def expire(self, now: datetime | None = None) -> int:
        self.expiries.append(threading.current_thread())
        return 3

    def write_batch(
        self, samples: Sequence[Counter], dead_letters: Sequence[DeadLetter] = ()
    ) -> WriteResult:
        if any(m.acked for m in self.messages):
            self.acked_before_commit = True
        if self.fail_with is not None:
            raise self.fail_with
        if any(s.id in self.refuse for s in samples):
            raise sa_exc.DataError("INSERT", {}, ValueError("value out of range"))
        new = [s for s in samples if s.id not in self.seen]
        self.seen.update(s.id for s in new if s.id)
        self.batches.append((list(new), list(dead_letters)))
        return WriteResult(len(new), len(samples) - len(new), len(dead_letters))


class FakeMessage:
    def __init__(self, payload: bytes) -> None:
        self.body = payload
        self.acked = False
        self.requeued = False

    def ack(self) -> None:
        self.acked = True

    def requeue(self) -> None:
        self.requeued = True


#: Collectors of ``collector`` and ``queue_collector``, used without ``run``.
_flushed_by_hand: list[Collector] = []


@pytest.fixture(autouse=True)
def _writer_threads_shut_down() -> Iterator[None]:
    # ``run`` shuts the writer thread down on leaving; a test calling ``flush``
    # itself closes the collector here.
    yield
    while _flushed_by_hand:
        _flushed_by_hand.pop().close()


def collector(store: RecordingStore, **collector_settings: object) -> Collector:
    settings = Settings(
        metering_secret=SECRET, collector={"batch_size": 1000, **collector_settings}
    )
    service = Collector(settings, store)  # type: ignore[arg-type]
    _flushed_by_hand.append(service)
    return service


def test_bad_messages_become_dead_letters_and_the_good_ones_stay() -> None:
    good = [signed(counter(i)) for i in range(3)]
    tampered = dict(signed(counter(9)), counter_volume=1e9)
    parsed = parse_body(body([good[0], tampered, good[1], "not a dict", good[2]]), SECRET)
    assert [c.volume for c in parsed.counters] == [0.0, 1.0, 2.0]
    reasons = [d.reason for d in parsed.dead_letters]
    assert reasons == ["bad signature", "meter message is a JSON str, not an object"]
    assert parsed.dead_letters[0].message_id == tampered["message_id"]
    assert orjson.loads(parsed.dead_letters[0].body) == tampered


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x00garbage", "not JSON"),
        (
            encode_notification(
                [], event_type="compute.instance.exists", priority="INFO", publisher_id="x"
            ),
            "event_type 'compute.instance.exists'",
        ),
        (
            encode_notification("nope", event_type="metering", priority="SAMPLE", publisher_id="x"),
            "payload is not a list",
        ),
    ],
)
def test_unreadable_bodies_are_dead_lettered_whole(raw: bytes, reason: str) -> None:
    parsed = parse_body(raw, SECRET)
    assert parsed.counters == []
    [dead] = parsed.dead_letters
    assert reason in dead.reason and dead.body == raw


def test_single_meter_message_payload_is_accepted() -> None:
    one = signed(counter(1))
    raw = encode_notification(one, event_type="metering", priority="SAMPLE", publisher_id="x")
    assert len(parse_body(raw, SECRET).counters) == 1


def test_acknowledges_only_after_the_batch_is_committed() -> None:
    store = RecordingStore()
    service = collector(store, batch_size=4)
    messages = [FakeMessage(body([signed(counter(i)), signed(counter(i + 10))])) for i in range(2)]
    store.messages = messages
    for m in messages:
        service._on_message(m)  # type: ignore[arg-type]
    service.flush()  # the full batch went to the writer; wait for its commit
    assert all(m.acked for m in messages)
    assert not store.acked_before_commit
    assert len(store.batches) == 1 and len(store.batches[0][0]) == 4
    assert service.stats.stored == 4


def test_store_down_leaves_messages_on_the_bus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("nephoscope.collector.service.time.sleep", lambda _s: None)
    store = RecordingStore()
    store.fail_with = sa_exc.OperationalError("INSERT", {}, Exception("database is locked"))
    service = collector(store)
    message = FakeMessage(body([signed(counter())]))
    service.add(parse_body(message.body, SECRET), message)  # type: ignore[arg-type]
    assert service.flush() is None
    assert message.requeued and not message.acked
    assert service.stats.stored == 0 and service.stats.store_errors == 1


def test_a_sample_the_store_refuses_is_dead_lettered_alone() -> None:
    store = RecordingStore()
    poison = counter(666)
    store.refuse = {poison.id or ""}
    service = collector(store)
    message = FakeMessage(body([signed(counter(1)), signed(poison), signed(counter(2))]))
    service.add(parse_body(message.body, SECRET), message)  # type: ignore[arg-type]
    result = service.flush()
    assert result == WriteResult(stored=2, duplicates=0, dead_letters=1)
    assert message.acked
    dead = [d for _, dl in store.batches for d in dl]
    assert len(dead) == 1 and dead[0].message_id == poison.id
    assert "store refused the sample" in dead[0].reason


def test_memory_bus_end_to_end_drains_on_stop() -> None:
    topic = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(
        metering_secret=SECRET,
        bus={"url": "memory://", "topic": topic},
        collector={"batch_size": 50, "batch_timeout": 0.05},
        publisher={"batch_size": 7},
    )
    store = RecordingStore()
    service = Collector(settings, store)  # type: ignore[arg-type]
    publisher = Publisher(settings, KombuBus(settings.bus))
    counters = [counter(i, id=None) for i in range(500)]
    ready = threading.Event()
    try:
        # Leaving the block stops the collector at once: what is still on the bus
        # must be drained, not lost.
        with running(service.run, threading.Event(), ready):
            assert ready.wait(5)
            assert publisher.publish(counters) == 500
    finally:
        publisher.close()
    stored = [c for batch, _ in store.batches for c in batch]
    assert len(stored) == 500
    assert sorted(c.volume for c in stored) == [float(i) for i in range(500)]
    assert len({c.id for c in stored}) == 500


def test_integers_beyond_64_bits_are_verified_exactly() -> None:
    import json

    from nephoscope.signing import compute_signature

    message = signed(counter(1))
    # orjson reads 2**70 as a float: the signature verifies only on the exact reading.
    message["resource_metadata"] = {"huge": 2**64 - 1}
    message["counter_volume"] = 2**70
    message["message_signature"] = compute_signature(message, SECRET)
    envelope = {
        "oslo.version": "2.0",
        "oslo.message": json.dumps(
            {"event_type": "metering", "priority": "SAMPLE", "payload": [message]}
        ),
    }
    parsed = parse_body(json.dumps(envelope).encode(), SECRET)
    assert parsed.dead_letters == []
    [stored] = parsed.counters
    assert stored.volume == 2**70
    assert stored.resource_metadata["huge"] == 2**64 - 1


def test_retention_runs_in_the_writer_thread_on_its_interval() -> None:
    topic = f"t{uuid.uuid4().hex[:8]}"
    settings = Settings(
        metering_secret=SECRET,
        bus={"url": "memory://", "topic": topic},
        store={"retention": {"default": "30d", "interval": 0.2}},
    )
    store = RecordingStore()
    service = Collector(settings, store)  # type: ignore[arg-type]
    with running(service.run, threading.Event()):
        threading.Event().wait(0.7)
    assert 2 <= len(store.expiries) <= 5
    assert all(t.name.startswith("collector-writer") for t in store.expiries)
    assert service.stats.expired == 3 * len(store.expiries)


def test_nothing_to_expire_means_no_expiry() -> None:
    # The default archive policy expires its fine rollups; this one keeps everything.
    assert Settings().store.expires
    settings = Settings(
        metering_secret=SECRET,
        bus={"url": "memory://", "topic": "none"},
        store={"archive_policy": {"default": [{"granularity": "1h"}]}},
    )
    assert not settings.store.expires
    store = RecordingStore()
    service = Collector(settings, store)  # type: ignore[arg-type]
    stop = threading.Event()
    stop.set()
    service.run(stop)
    assert store.expiries == []


class QueueSink:
    """A dead-letter queue: records what it confirmed; fails while ``down``."""

    def __init__(self, store: RecordingStore) -> None:
        self.letters: list[Letter] = []
        self.store = store
        self.down = False
        #: At each put: (the batch was committed, a message was acknowledged).
        self.puts: list[tuple[bool, bool]] = []

    def put(self, letters: Sequence[Letter]) -> None:
        if self.down:
            raise ConnectionError("broker away")
        self.puts.append((bool(self.store.batches), any(m.acked for m in self.store.messages)))
        self.letters.extend(letters)


def queue_collector(store: RecordingStore) -> tuple[Collector, QueueSink]:
    sink = QueueSink(store)
    settings = Settings(metering_secret=SECRET, collector={"batch_size": 1000})
    service = Collector(settings, store, dead_letters=sink)  # type: ignore[arg-type]
    _flushed_by_hand.append(service)
    return service, sink


def test_with_a_dead_letter_queue_poison_goes_there_alone_before_the_ack() -> None:
    store = RecordingStore()
    service, sink = queue_collector(store)
    forged = counter_to_message(counter(2), "wrong secret")
    message = FakeMessage(body([signed(counter(1)), forged, signed(counter(3))]))
    store.messages.append(message)
    service.add(parse_body(message.body, SECRET), message)  # type: ignore[arg-type]
    result = service.flush()
    assert result == WriteResult(stored=2, duplicates=0, dead_letters=1)
    assert message.acked and sink.puts == [(True, False)], "after the commit, before the ack"
    [letter] = sink.letters
    # The poison meter message alone, not the envelope with the good ones.
    assert orjson.loads(letter.body) == forged
    assert letter.reason == "bad signature" and letter.message_id == forged["message_id"]
    assert (letter.queue, letter.routing_key) == ("metering.sample", "metering.sample")
    assert [d for _, dl in store.batches for d in dl] == [], "not in the store as well"
    assert service.stats.dead_letters == 1


def test_a_dead_letter_queue_that_fails_leaves_the_batch_unacknowledged() -> None:
    store = RecordingStore()
    service, sink = queue_collector(store)
    sink.down = True
    message = FakeMessage(body([signed(counter(1)), {"not": "a meter message"}]))
    service.add(parse_body(message.body, SECRET), message)  # type: ignore[arg-type]
    with pytest.raises(ConnectionError):
        service.flush()  # the consume loop reconnects; the broker delivers it again
    assert not message.acked and sink.letters == []
    # Delivered again: the sample is a duplicate, the letter is sent this time.
    sink.down = False
    again = FakeMessage(message.body)
    service.add(parse_body(again.body, SECRET), again)  # type: ignore[arg-type]
    assert service.flush() == WriteResult(stored=0, duplicates=1, dead_letters=1)
    assert again.acked and len(sink.letters) == 1


def test_a_store_outage_sends_no_dead_letter_until_the_batch_is_stored() -> None:
    store = RecordingStore()
    service, sink = queue_collector(store)
    store.fail_with = sa_exc.OperationalError("INSERT", {}, ConnectionError("down"))
    message = FakeMessage(body([signed(counter(1)), {"not": "a meter message"}]))
    service.add(parse_body(message.body, SECRET), message)  # type: ignore[arg-type]
    assert service.flush() is None
    assert message.requeued and sink.letters == [], "no copy per redelivery"


def test_samples_the_store_refuses_go_to_the_dead_letter_queue_before_the_ack() -> None:
    store = RecordingStore()
    service, sink = queue_collector(store)
    poison = counter(666)
    store.refuse = {poison.id or ""}
    message = FakeMessage(body([signed(counter(1)), signed(poison)]))
    store.messages.append(message)
    service.add(parse_body(message.body, SECRET), message)  # type: ignore[arg-type]
    assert service.flush() == WriteResult(stored=1, duplicates=0, dead_letters=1)
    assert message.acked and sink.puts == [(True, False)]
    [letter] = sink.letters
    assert letter.message_id == poison.id and "store refused the sample" in letter.reason
    assert [d for _, dl in store.batches for d in dl] == []


def test_a_bad_message_with_integers_beyond_64_bits_is_kept_as_sent() -> None:
    import json

    message = signed(counter(1))
    message["counter_volume"] = 2**70  # signature no longer matches
    envelope = {
        "oslo.version": "2.0",
        "oslo.message": json.dumps({"event_type": "metering", "payload": [message]}),
    }
    [dead] = parse_body(json.dumps(envelope).encode(), SECRET).dead_letters
    assert dead.reason == "bad signature"
    assert json.loads(dead.body)["counter_volume"] == 2**70


def _resigned(changes: dict[str, object], metadata: dict[str, object] | None = None) -> dict:
    message = signed(counter(7))
    message.update(changes)
    if metadata is not None:
        message["resource_metadata"] = metadata
    try:
        message["message_signature"] = compute_signature(message, SECRET, json_values=True)
    except UnicodeEncodeError:  # no one can sign a lone surrogate
        message["message_signature"] = "0" * 64
    return message


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        (_resigned({}, {"big": 10**400}), "64 bits"),
        (_resigned({}, {"big": 2**64}), "64 bits"),
        (_resigned({}, {"x": float("nan")}), "finite"),
        (_resigned({}, {"nested": {"deeper": [{"s": "\ud800"}]}}), "surrogate"),
        (_resigned({}, {"nul": "a\x00b"}), "NUL"),
        (_resigned({"timestamp": "9999-12-31T23:59:59.999999"}), "outside"),
        (_resigned({"timestamp": "0001-01-01T00:00:00+14:00"}), "calendar"),
        (_resigned({"resource_id": "r" * 256}), "255"),
        (_resigned({"project_id": "p\x00"}), "NUL"),
        (_resigned({"counter_volume": 10**400}), "beyond"),
        (_resigned({"counter_volume": 1e308}), "beyond"),
    ],
)
def test_what_no_reader_could_take_back_is_dead_lettered_alone(bad: dict, reason: str) -> None:
    good = [signed(counter(1)), signed(counter(2))]
    # Written by the standard library, as a sender that knows no better would.
    raw = json.dumps({"event_type": "metering", "payload": [good[0], bad, good[1]]}).encode()
    parsed = parse_body(raw, SECRET)
    assert [c.id for c in parsed.counters] == [good[0]["message_id"], good[1]["message_id"]]
    [dead] = parsed.dead_letters
    assert reason in dead.reason and dead.message_id == bad["message_id"]


def test_deep_nesting_is_dead_lettered_not_raised() -> None:
    raw = b'{"event_type": "metering", "payload": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    [dead] = parse_body(raw, SECRET).dead_letters
    assert "not JSON" in dead.reason


def test_a_collector_on_a_shared_bus_refuses_the_published_secret() -> None:
    shared = Settings(bus={"url": "amqp://guest:guest@127.0.0.1:5672//"})
    with pytest.raises(ConfigError, match="metering_secret"):
        Collector(shared, RecordingStore())  # type: ignore[arg-type]
