import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nephoscope.signing import compute_signature, verify_signature

ROOT = Path(__file__).resolve().parents[2]
# Computed by Ceilometer's implementation; a copy of the team's shared/vectors file.
VECTORS = ROOT / "tests" / "fixtures" / "meter-signatures.json"
SHARED = ROOT.parent / "shared" / "vectors" / "meter-signatures.json"


def _vectors() -> list[dict]:
    return json.loads(VECTORS.read_text(encoding="utf-8"))["vectors"]


def test_fixture_is_the_shared_copy() -> None:
    if not SHARED.exists():
        pytest.skip(f"no shared vectors beside this checkout ({SHARED})")
    assert json.loads(SHARED.read_text(encoding="utf-8")) == json.loads(
        VECTORS.read_text(encoding="utf-8")
    )


@pytest.mark.parametrize("vector", _vectors(), ids=lambda v: v["message"]["message_id"][:8])
def test_reference_vectors(vector: dict) -> None:
    assert compute_signature(vector["message"], vector["secret"]) == vector["signature"]
    signed = dict(vector["message"], message_signature=vector["signature"])
    assert verify_signature(signed, vector["secret"])


def test_there_are_vectors_for_every_awkward_case() -> None:
    messages = [v["message"] for v in _vectors()]
    assert len(messages) >= 40
    assert any("nested" in m["resource_metadata"] for m in messages)
    assert any(m["counter_volume"] is None for m in messages)


def test_signature_field_is_not_signed() -> None:
    message = {"a": 1, "b": {"c": "d"}}
    assert compute_signature(message, "k") == compute_signature(
        dict(message, message_signature="anything"), "k"
    )


def test_tampering_breaks_the_signature() -> None:
    message = {"counter_volume": 1, "resource_id": "r"}
    message["message_signature"] = compute_signature(message, "k")
    assert verify_signature(message, "k")
    assert not verify_signature(dict(message, counter_volume=2), "k")
    assert not verify_signature(message, "other")
    assert not verify_signature({"counter_volume": 1}, "k")


def test_no_secret_signs_nothing_and_accepts_all() -> None:
    assert compute_signature({"a": 1}, "") == ""
    assert verify_signature({"a": 1}, "")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.text(max_size=8)
    | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=10,
)


@given(
    st.dictionaries(st.text(max_size=8), json_values, max_size=6), st.text(min_size=1, max_size=10)
)
def test_signature_survives_a_json_round_trip(message: dict, secret: str) -> None:
    message = dict(message)
    message["message_signature"] = compute_signature(message, secret)
    assert verify_signature(json.loads(json.dumps(message)), secret)


@pytest.mark.parametrize("vector", _vectors()[:10], ids=lambda v: v["message"]["message_id"][:8])
def test_json_values_path_gives_the_same_signatures(vector: dict) -> None:
    for _ in range(2):  # the second time from the metadata cache
        assert (
            compute_signature(vector["message"], vector["secret"], json_values=True)
            == vector["signature"]
        )


def test_without_the_json_promise_look_alike_values_sign_differently() -> None:
    import enum

    class Colour(enum.Enum):
        RED = "red"

    message = _vectors()[0]["message"]
    base = dict(message, resource_metadata={"colour": "red"})
    odd = dict(message, resource_metadata={"colour": Colour.RED})
    compute_signature(base, "k", json_values=True)  # cache the JSON look-alike
    assert compute_signature(odd, "k") != compute_signature(base, "k")


def test_the_keyed_hmac_gives_the_digest_of_hmac_with_or_without_its_inner_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import hashlib
    import hmac

    from nephoscope import signing

    expected = hmac.new(b"k", b"text", hashlib.sha256).hexdigest()

    def one(secret: str) -> str:
        digest = signing._keyed_hmac(secret).copy()
        digest.update(b"text")
        return digest.hexdigest()

    assert one("k") == expected
    # A digest OpenSSL does not know makes hmac.HMAC work in Python, with no
    # OpenSSL object inside: the wrapper itself is used.
    sha256 = hashlib.sha256
    monkeypatch.setattr(hashlib, "sha256", lambda *data: sha256(*data))
    assert type(signing._keyed_hmac("k")) is hmac.HMAC
    assert one("k") == expected
