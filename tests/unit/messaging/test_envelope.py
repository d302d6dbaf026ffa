import json

import orjson
import pytest

from nephoscope.messaging.envelope import decode_envelope, encode_notification
from nephoscope.messaging.errors import RejectedMessage


def test_v2_round_trip_has_oslo_fields() -> None:
    body = encode_notification(
        [{"a": 1}], event_type="metering", priority="SAMPLE", publisher_id="me"
    )
    outer = json.loads(body)
    assert outer["oslo.version"] == "2.0"
    inner = json.loads(outer["oslo.message"])
    assert {"message_id", "publisher_id", "event_type", "priority", "payload", "timestamp"} <= set(
        inner
    )
    assert decode_envelope(body) == inner
    assert inner["payload"] == [{"a": 1}]


def test_v1_plain_message_is_accepted() -> None:
    message = {"event_type": "compute.instance.exists", "payload": {}}
    assert decode_envelope(orjson.dumps(message)) == message
    assert decode_envelope(message) == message


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe not json", "not JSON"),
        (b"[1, 2]", "JSON list"),
        (b'{"oslo.version": "3.0", "oslo.message": "{}"}', "version"),
        (b'{"oslo.version": "2.0", "oslo.message": "{oops"}', "oslo.message is not JSON"),
        (b'{"oslo.version": "2.0", "oslo.message": "[1]"}', "not a JSON object"),
    ],
)
def test_malformed_bodies_are_rejected_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(RejectedMessage, match=reason):
        decode_envelope(body)
