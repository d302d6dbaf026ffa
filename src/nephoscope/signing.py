"""Meter message signatures, computed exactly as Ceilometer computes them.

The signature is an HMAC-SHA256 over the message's (key, ``str(value)``) pairs in
sorted key order, nested dicts flattened as ``parent:child``, and the
``message_signature`` field itself skipped. Feeding the pairs to one HMAC as a
single byte string gives the same digest as updating it pair by pair.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Mapping
from operator import itemgetter
from typing import Any, Protocol, cast

import orjson

__all__ = ["SIGNATURE_FIELD", "compute_signature", "recursive_keypairs", "verify_signature"]

SIGNATURE_FIELD = "message_signature"


def _encode_sequence_item(value: Any) -> Any:
    # Ceilometer turns the text inside a list into UTF-8 bytes (and a dict inside
    # a list into one with sorted, encoded keys) before taking str() of the list,
    # so "['a']" is signed as "[b'a']". Signatures must match, so we do the same.
    if isinstance(value, str):
        return value.encode("utf-8")
    if isinstance(value, Mapping):
        return {
            _encode_sequence_item(k): _encode_sequence_item(v) for k, v in sorted(value.items())
        }
    if isinstance(value, (list, tuple)):
        return [_encode_sequence_item(item) for item in value]
    return value


def recursive_keypairs(data: Mapping[str, Any], separator: str = ":") -> Iterator[tuple[str, Any]]:
    """Yield ``(flattened_key, value)`` for every leaf of ``data``, sorted level by level.

    Lists are leaves, with their text encoded as Ceilometer encodes it.
    """
    for name, value in sorted(data.items()):
        if isinstance(value, Mapping):
            for subname, subvalue in recursive_keypairs(value, separator):
                yield f"{name}{separator}{subname}", subvalue
        elif isinstance(value, (list, tuple)):
            yield name, _encode_sequence_item(value)
        else:
            yield name, value


class _Digest(Protocol):
    def copy(self) -> _Digest: ...

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


# HMAC state after the key, per secret: copying it skips hashing the key again.
_keyed: dict[str, _Digest] = {}


def _keyed_hmac(secret: str) -> _Digest:
    keyed = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)
    # hmac.HMAC wraps OpenSSL's HMAC object; copying, updating and reading that
    # one directly skips three Python-level calls per message, on the hot path
    # of publisher and collector. Same digest; the wrapper is kept where there
    # is no such object.
    inner = getattr(keyed, "_hmac", None)
    return cast(_Digest, inner) if inner is not None else keyed


_SCALARS = frozenset({str, int, float, bool, type(None)})


def _flatten(data: Mapping[str, Any], prefix: str, parts: list[str]) -> None:
    # The hot path of both publisher and collector: same output as
    # recursive_keypairs, without generator and ABC checks for plain values.
    for name in sorted(data):
        value = data[name]
        kind = type(value)
        key = f"{prefix}{name}"
        if kind in _SCALARS:
            parts.append(key)
            parts.append(str(value))
        elif kind is dict or isinstance(value, Mapping):
            _flatten(value, f"{key}:", parts)
        else:
            if isinstance(value, (list, tuple)):
                value = _encode_sequence_item(value)
            parts.append(key)
            parts.append(str(value))


# A meter message's fields in sorted order, split around resource_metadata: the
# common shape is signed without sorting or walking the top level. Formatting
# a str, int, float, bool or None in an f-string gives the same text as str().
_METER_HEAD = (
    "counter_name",
    "counter_type",
    "counter_unit",
    "counter_volume",
    "message_id",
    "monotonic_time",
    "project_id",
    "project_name",
    "resource_id",
)
_METER_TAIL = ("source", "timestamp", "user_id", "user_name")
_METER_FIELDS = frozenset((*_METER_HEAD, "resource_metadata", *_METER_TAIL))
_meter_values = itemgetter(*_METER_HEAD, "resource_metadata", *_METER_TAIL)


# Signed text of resource_metadata documents, by their JSON. Only for messages
# whose values are JSON values: there, equal JSON means equal text to sign
# (elsewhere an Enum and its value, or NaN and None, would share a key).
_metadata_texts: dict[bytes, str] = {}
_METADATA_TEXTS_LIMIT = 4096


def _metadata_text(metadata: dict[str, Any], cached: bool) -> str:
    key = None
    if cached and metadata:
        try:
            key = orjson.dumps(metadata)
        except TypeError:  # integers beyond 64 bits: just flatten
            pass
        else:
            text = _metadata_texts.get(key)
            if text is not None:
                return text
    parts: list[str] = []
    _flatten(metadata, "resource_metadata:", parts)
    text = "".join(parts)
    if key is not None:
        if len(_metadata_texts) >= _METADATA_TEXTS_LIMIT:
            _metadata_texts.clear()
        _metadata_texts[key] = text
    return text


def _meter_message_text(m: Mapping[str, Any], cached: bool) -> str | None:
    """The signed text of a plain meter message, or None when it has another shape."""
    if len(m) - (SIGNATURE_FIELD in m) != len(_METER_FIELDS):
        return None
    try:
        v = _meter_values(m)
    except KeyError:
        return None
    metadata = v[9]
    if type(metadata) is not dict or not _SCALARS.issuperset(map(type, v[:9] + v[10:])):
        return None
    return (
        f"counter_name{v[0]}counter_type{v[1]}counter_unit{v[2]}counter_volume{v[3]}"
        f"message_id{v[4]}monotonic_time{v[5]}project_id{v[6]}project_name{v[7]}"
        f"resource_id{v[8]}{_metadata_text(metadata, cached)}source{v[10]}timestamp{v[11]}"
        f"user_id{v[12]}user_name{v[13]}"
    )


def _signed_bytes(message: Mapping[str, Any], cached: bool) -> bytes:
    text = _meter_message_text(message, cached)
    if text is None:
        parts: list[str] = []
        if SIGNATURE_FIELD in message:
            message = {k: v for k, v in message.items() if k != SIGNATURE_FIELD}
        _flatten(message, "", parts)
        text = "".join(parts)
    return text.encode("utf-8")


def compute_signature(message: Mapping[str, Any], secret: str, *, json_values: bool = False) -> str:
    """Return the hex HMAC-SHA256 signature of a meter message; ``""`` when there is no secret.

    ``json_values=True`` promises that every value is one JSON decoding gives
    (as in a message read from the bus, or built JSON-safe to be sent), which
    lets a resource_metadata seen before be signed without walking it again.
    """
    if not secret:
        return ""
    keyed = _keyed.get(secret)
    if keyed is None:
        if len(_keyed) >= 16:
            _keyed.clear()
        keyed = _keyed[secret] = _keyed_hmac(secret)
    digest = keyed.copy()
    digest.update(_signed_bytes(message, json_values))
    return digest.hexdigest()


def verify_signature(message: Mapping[str, Any], secret: str, *, json_values: bool = False) -> bool:
    """Tell whether ``message`` carries the signature that ``secret`` gives it.

    With no secret configured every message is accepted, as in Ceilometer.
    ``json_values`` as for :func:`compute_signature`.
    """
    if not secret:
        return True
    given = message.get(SIGNATURE_FIELD)
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(compute_signature(message, secret, json_values=json_values), given)
