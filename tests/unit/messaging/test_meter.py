from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from nephoscope.counter import Counter
from nephoscope.messaging.errors import RejectedMessage
from nephoscope.messaging.meter import counter_to_message, message_to_counter
from nephoscope.signing import compute_signature

SECRET = "s3cr3t"
NOW = datetime(2026, 11, 26, 12, 0, 0, 123456, tzinfo=UTC)
CEILOMETER_FIELDS = {
    "counter_name",
    "counter_type",
    "counter_unit",
    "counter_volume",
    "user_id",
    "user_name",
    "project_id",
    "project_name",
    "resource_id",
    "timestamp",
    "resource_metadata",
    "source",
    "message_id",
    "monotonic_time",
    "message_signature",
}


def counter(**changes: object) -> Counter:
    fields: dict[str, object] = dict(
        name="cpu",
        type="cumulative",
        unit="ns",
        volume=42,
        user_id="u",
        project_id="p",
        resource_id="r",
        timestamp=NOW,
        resource_metadata={"flavor": {"name": "m1"}, "tags": ("a",)},
        id="6b0a3d1e-8a4c-4c59-9d3e-0b8f3f7f1c11",
    )
    fields.update(changes)
    return Counter(**fields)  # type: ignore[arg-type]


def over_the_wire(message: dict) -> dict:
    return orjson.loads(orjson.dumps(message))


def test_message_has_ceilometer_fields_and_survives_the_bus() -> None:
    message = counter_to_message(counter(), SECRET)
    assert set(message) == CEILOMETER_FIELDS
    back = message_to_counter(over_the_wire(message), SECRET)
    assert back == counter(resource_metadata={"flavor": {"name": "m1"}, "tags": ["a"]})


def test_ceilometer_naive_timestamps_are_utc() -> None:
    message = counter_to_message(counter(), SECRET)
    message["timestamp"] = "2026-11-26T12:00:00.123456"
    message["message_signature"] = compute_signature(message, SECRET)
    assert message_to_counter(message, SECRET).timestamp == NOW


def test_numeric_string_volume_is_a_number() -> None:
    message = counter_to_message(counter(), SECRET)
    message["counter_volume"] = "17"
    message["message_signature"] = compute_signature(message, SECRET)
    assert message_to_counter(message, SECRET).volume == 17


def resign(message: dict, **changes: object) -> dict:
    message = dict(message, **changes)
    message["message_signature"] = compute_signature(message, SECRET)
    return message


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m: dict(m, counter_volume=43), "bad signature"),
        (
            lambda m: {k: v for k, v in m.items() if k != "message_signature"},
            "no message_signature",
        ),
        (lambda m: resign(m, counter_volume=None), "counter_volume"),
        (lambda m: resign(m, counter_volume="many"), "counter_volume"),
        (lambda m: resign(m, counter_volume=float("nan")), "counter_volume"),
        (lambda m: resign(m, counter_type="rate"), "counter_type"),
        (lambda m: resign(m, counter_name=""), "counter_name"),
        (lambda m: resign(m, timestamp="yesterday"), "timestamp"),
        (lambda m: resign(m, resource_metadata=[1]), "resource_metadata"),
        (lambda m: resign(m, resource_id=None), "resource_id"),
        (lambda m: resign(m, message_id=None), "message_id"),
    ],
)
def test_bad_messages_are_rejected_with_the_reason(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    message = mutate(counter_to_message(counter(), SECRET))
    with pytest.raises(RejectedMessage, match=reason) as caught:
        message_to_counter(message, SECRET)
    if message.get("message_id"):
        assert caught.value.message_id == message["message_id"]


def test_counter_needs_an_id_to_be_sent() -> None:
    with pytest.raises(ValueError, match="message id"):
        counter_to_message(counter(id=None), SECRET)


# Any text a store holds: NUL is refused at ingest (PostgreSQL's jsonb holds none).
stored_text = st.characters(codec="utf-8", exclude_characters="\x00")
metadata = st.dictionaries(
    st.text(stored_text, max_size=6),
    st.recursive(
        st.none()
        | st.integers(-(2**60), 2**60)
        | st.text(stored_text, max_size=6)
        | st.floats(allow_nan=False, allow_infinity=False),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.text(stored_text, max_size=4), inner, max_size=3)
        ),
        max_leaves=8,
    ),
    max_size=5,
)


@given(metadata, st.floats(-1e100, 1e100) | st.integers(-(2**62), 2**62))
def test_any_json_metadata_round_trips_verified(meta: dict, volume: float) -> None:
    message = counter_to_message(counter(resource_metadata=meta, volume=volume), SECRET)
    back = message_to_counter(over_the_wire(message), SECRET)
    assert back.volume == volume and back.resource_metadata == over_the_wire(meta)
