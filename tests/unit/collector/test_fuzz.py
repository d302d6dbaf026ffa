"""Whatever arrives on the bus, the collector neither crashes nor loses a good sample."""

import uuid
from datetime import UTC, datetime

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from nephoscope.collector import parse_body
from nephoscope.counter import Counter
from nephoscope.messaging.envelope import encode_notification
from nephoscope.messaging.meter import counter_to_message

SECRET = "fuzz"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)
meter_fields = st.sampled_from(
    [
        "counter_name",
        "counter_type",
        "counter_unit",
        "counter_volume",
        "resource_id",
        "timestamp",
        "message_id",
        "user_id",
        "project_id",
        "resource_metadata",
        "source",
    ]
)


def good_message(volume: float) -> dict:
    counter = Counter(
        "cpu", "cumulative", "ns", volume, "u", "p", "r", datetime(2026, 11, 26, tzinfo=UTC)
    )
    return counter_to_message(counter, SECRET, str(uuid.uuid4()))


def body(payload: object) -> bytes:
    return encode_notification(
        payload, event_type="metering", priority="SAMPLE", publisher_id="fuzz"
    )


@given(st.binary(max_size=300))
def test_any_bytes(raw: bytes) -> None:
    parsed = parse_body(raw, SECRET)
    assert len(parsed.dead_letters) + len(parsed.counters) >= 1 or raw.strip() == b""


@given(json_values)
def test_any_json_body(value: object) -> None:
    raw = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS) if value is not None else b"null"
    parse_body(raw, SECRET)


@given(st.lists(json_values, max_size=5), st.lists(st.integers(0, 10**9), max_size=5))
def test_junk_beside_good_messages_loses_nothing(junk: list, volumes: list[int]) -> None:
    good = [good_message(v) for v in volumes]
    parsed = parse_body(body([*junk, *good]), SECRET)
    assert [c.volume for c in parsed.counters][-len(good) or None :] == volumes[
        -len(good) or None :
    ]
    assert len(parsed.counters) + len(parsed.dead_letters) == len(junk) + len(good)


@settings(max_examples=200)
@given(meter_fields, json_values)
def test_signed_message_with_any_field_value(field: str, value: object) -> None:
    # Even when correctly signed, a bad field becomes a dead letter naming the field.
    message = good_message(1)
    message[field] = value
    message.pop("message_signature")
    from nephoscope.signing import compute_signature

    message["message_signature"] = compute_signature(message, SECRET)
    parsed = parse_body(body([message]), SECRET)
    assert len(parsed.counters) + len(parsed.dead_letters) == 1
    if parsed.dead_letters:
        assert parsed.dead_letters[0].reason
