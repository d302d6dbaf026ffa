"""Meter definitions: Ceilometer's ``meters.yaml`` format, read and evaluated.

A definitions file is a mapping with one key, ``metric``, a list of entries::

    metric:
      - name: volume.size
        event_type: ['volume.exists', 'volume.create.*']
        type: gauge
        unit: GB
        volume: $.payload.size
        resource_id: $.payload.volume_id
        project_id: $.payload.tenant_id

Each entry turns the notifications whose event type it matches into counters.
Values are JSONPath expressions evaluated against the notification, or
literals; ``lookup`` names the fields that hold one value per counter
(``$.payload.metrics[*].value``). The file is checked when it is loaded: an
entry that cannot work stops start-up with the file, the entry and the reason.
The package's README.md, section "Meter definitions", says what is supported.

JSONPath is evaluated by jsonpath-rw-ext, the library Ceilometer evaluates
``meters.yaml`` with, so an expression an operator wrote for Ceilometer selects
the same values here. jsonpath-ng (its maintained fork) was tried and left:
since 1.12 ``[*]`` no longer selects an object (Ceilometer's Swift definition
``$.payload.measurements.[*].metric.[*].name`` finds nothing), and 2.0
announces the removal of ``|`` and of unquoted words in filters
(``[?key=image_id]``), which shipped Ceilometer definitions use.
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any, Final

import yaml
from jsonpath_rw_ext import parser as jsonpath_parser

from nephoscope.counter import TYPES, Counter, InvalidCounter
from nephoscope.notification.common import compile_event_types, parse_timestamp, to_number

__all__ = [
    "SHIPPED_DEFINITIONS",
    "DefinitionError",
    "EvaluationError",
    "MeterDefinition",
    "definition_view",
    "load_definitions",
    "read_definitions",
]

LOG = logging.getLogger(__name__)

#: The definitions Nephoscope ships (nova, cinder, glance, neutron, swift, keystone).
SHIPPED_DEFINITIONS: Final[Traversable] = files("nephoscope.notification").joinpath(
    "definitions", "meters.yaml"
)

#: The attributes of a counter an entry can set, in Ceilometer's names.
SAMPLE_FIELDS: Final = (
    "name",
    "type",
    "unit",
    "volume",
    "resource_id",
    "user_id",
    "project_id",
    "timestamp",
)
REQUIRED: Final = ("name", "type", "event_type", "unit", "volume", "resource_id")
KNOWN_KEYS: Final = frozenset({*SAMPLE_FIELDS, "event_type", "metadata", "lookup", "user_metadata"})
#: Attributes whose text is a literal unless it holds a ``$`` (the others are always JSONPath).
_TEXT_ATTRIBUTES: Final = frozenset({"name", "type", "unit"})
#: Ceilometer's reserved user metadata: Nova metadata keys with this prefix are kept.
_USER_METADATA_PREFIX: Final = "metering."
_USER_METADATA_LIMIT: Final = 256

_MISSING: Final[Any] = object()


class DefinitionError(Exception):
    """A definitions file or entry that cannot be used; says where and why."""

    def __init__(
        self, source: str, reason: str, index: int | None = None, name: Any = None
    ) -> None:
        where = source
        if index is not None:
            where += f": metric[{index}]"
            if isinstance(name, str) and name:
                where += f" ({name})"
        super().__init__(f"{where}: {reason}")
        self.source = source
        self.index = index
        self.reason = reason


class EvaluationError(Exception):
    """A definition matched a notification it cannot turn into a counter."""


# -- JSONPath ----------------------------------------------------------------------

_parse_lock = threading.Lock()
_parser: Any = None
_compiled: dict[str, Any] = {}


def _jsonpath(text: str) -> Any:
    """The compiled expression; the PLY parser is not thread-safe, so parsing is locked.

    jsonpath-rw-ext prints its ``sub`` expressions on standard output when it
    parses them, which would corrupt ``nephoscope notifications``' JSON lines:
    parsing (done while definitions load, never per message) runs with
    standard output held back.
    """
    global _parser
    with _parse_lock:
        found = _compiled.get(text)
        if found is None:
            with contextlib.redirect_stdout(io.StringIO()):
                if _parser is None:
                    _parser = jsonpath_parser.ExtentedJsonPathParser()
                found = _compiled[text] = _parser.parse(text)
        return found


class _Timedelta:
    """Ceilometer's ``timedelta`` plugin: seconds between two timestamps."""

    name = "timedelta"

    def __init__(self) -> None:
        pass

    def __call__(self, values: list[Any]) -> list[Any]:
        if len(values) != 2:
            raise EvaluationError(f"timedelta needs two timestamps, found {len(values)}")
        try:
            start, end = (parse_timestamp(v) for v in values)
        except ValueError as exc:
            raise EvaluationError(f"timedelta: {exc}") from None
        return [abs((end - start).total_seconds())]


class _Split:
    """Ceilometer's ``split`` plugin: one segment of each value split on a separator."""

    name = "split"

    def __init__(self, separator: str = ".", segment: int = 0, max_split: int | None = None):
        if not isinstance(separator, str) or not separator:
            raise ValueError("separator must be a non-empty string")
        if not isinstance(segment, int) or isinstance(segment, bool):
            raise ValueError("segment must be an integer")
        if max_split is not None and (not isinstance(max_split, int) or max_split < 0):
            raise ValueError("max_split must be a non-negative integer")
        self.separator, self.segment, self.max_split = separator, segment, max_split

    def __call__(self, values: list[Any]) -> list[Any]:
        result = []
        for value in values:
            parts = str(value).split(
                self.separator, -1 if self.max_split is None else self.max_split
            )
            result.append(parts[self.segment] if -len(parts) <= self.segment < len(parts) else None)
        return result


_PLUGINS: Final[Mapping[str, Callable[..., Callable[[list[Any]], list[Any]]]]] = {
    "timedelta": _Timedelta,
    "split": _Split,
}


@dataclass(frozen=True, slots=True)
class _Field:
    """How one attribute is read: a literal, or JSONPath alternatives through an optional plugin."""

    attribute: str
    text: str
    literal: Any = _MISSING
    paths: tuple[Any, ...] = ()
    plugin: Callable[[list[Any]], list[Any]] | None = None

    @property
    def is_literal(self) -> bool:
        return self.literal is not _MISSING

    def values(self, data: Mapping[str, Any]) -> list[Any]:
        """Every value the expression selects, nulls included, in order."""
        if self.literal is not _MISSING:
            return [self.literal]
        found: list[Any] = []
        for path in self.paths:
            try:
                found.extend(match.value for match in path.find(data))
            except Exception as exc:  # an expression's arithmetic on what it found
                raise EvaluationError(
                    f"{self.attribute}: {self.text} failed: {type(exc).__name__}: {exc}"
                ) from None
        if self.plugin is not None:
            found = self.plugin([v for v in found if v is not None])
        return found

    def first(self, data: Mapping[str, Any]) -> Any:
        """The first non-null value; None when only nulls were selected; _MISSING for nothing."""
        values = self.values(data)
        for value in values:
            if value is not None:
                return value
        return None if values else _MISSING


def _field(attribute: str, spec: Any) -> _Field:
    """Read one attribute's specification; raises ValueError with the reason."""
    if isinstance(spec, bool):
        raise ValueError(f"{spec!r} is neither a JSONPath expression nor a number")
    if isinstance(spec, (int, float)):
        return _Field(attribute, repr(spec), literal=spec)
    if isinstance(spec, str):
        if attribute in _TEXT_ATTRIBUTES and "$" not in spec:
            return _Field(attribute, spec, literal=spec)
        return _Field(attribute, spec, paths=(_compile(spec),))
    if isinstance(spec, list):
        return _Field(attribute, " | ".join(map(str, spec)), paths=_compile_all(spec))
    if isinstance(spec, dict):
        unknown = set(spec) - {"fields", "plugin"}
        if unknown:
            raise ValueError(f"unknown key(s) {', '.join(sorted(map(str, unknown)))}")
        if "fields" not in spec:
            raise ValueError("'fields' is required with 'plugin'")
        fields = spec["fields"]
        paths = _compile_all(fields if isinstance(fields, list) else [fields])
        plugin = _plugin(spec.get("plugin")) if spec.get("plugin") is not None else None
        return _Field(attribute, str(fields), paths=paths, plugin=plugin)
    raise ValueError(f"{spec!r} is neither a JSONPath expression nor a number")


def _compile(text: str) -> Any:
    if not text.strip():
        raise ValueError("empty JSONPath expression")
    try:
        return _jsonpath(text)
    except Exception as exc:  # jsonpath-rw raises plain Exceptions for syntax errors
        raise ValueError(f"{text!r} is not valid JSONPath: {exc}") from None


def _compile_all(specs: list[Any]) -> tuple[Any, ...]:
    if not specs or not all(isinstance(s, str) for s in specs):
        raise ValueError("'fields' must be a JSONPath expression or a list of them")
    return tuple(_compile(s) for s in specs)


def _plugin(spec: Any) -> Callable[[list[Any]], list[Any]]:
    parameters: Any
    if isinstance(spec, str):
        name, parameters = spec, {}
    elif isinstance(spec, dict) and isinstance(spec.get("name"), str):
        name, parameters = spec["name"], spec.get("parameters") or {}
    else:
        raise ValueError("plugin must be a name or a mapping with 'name' and 'parameters'")
    factory = _PLUGINS.get(name)
    if factory is None:
        raise ValueError(
            f"plugin {name!r} is not supported: Nephoscope runs no Python plugins from "
            f"definitions; built in are {', '.join(sorted(_PLUGINS))}"
        )
    if not isinstance(parameters, dict):
        raise ValueError(f"plugin {name!r}: parameters must be a mapping")
    try:
        return factory(**parameters)
    except TypeError as exc:
        raise ValueError(f"plugin {name!r}: {exc}") from None
    except ValueError as exc:
        raise ValueError(f"plugin {name!r}: {exc}") from None


# -- the notification as definitions see it -------------------------------------------


def definition_view(message: Mapping[str, Any]) -> dict[str, Any]:
    """The notification in the shape Ceilometer evaluates definitions against.

    The oslo.messaging message as sent (``event_type``, ``publisher_id``,
    ``payload``, ``timestamp``, ``message_id``, ``_context_*``), plus ``ctxt``
    (the request context without its ``_context_`` prefixes) and ``metadata``
    (``message_id`` and ``timestamp``), so ``$.ctxt.user`` and
    ``$._context_user`` both work.
    """
    view = dict(message)
    if not isinstance(view.get("ctxt"), dict):
        view["ctxt"] = {k[9:]: v for k, v in message.items() if k.startswith("_context_")}
    if not isinstance(view.get("metadata"), dict):
        view["metadata"] = {
            "message_id": message.get("message_id"),
            "timestamp": message.get("timestamp"),
        }
    return view


def _first_of(mapping: Any, *keys: str) -> Any:
    if isinstance(mapping, Mapping):
        for key in keys:
            value = mapping.get(key)
            if value is not None:
                return value
    return None


def _text(value: Any, attribute: str) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise EvaluationError(f"{attribute}: {value!r} is not a non-empty string")


def _optional_text(value: Any, attribute: str) -> str | None:
    if value is None or value is _MISSING or value == "":
        return None
    return _text(value, attribute)


# -- definitions --------------------------------------------------------------------


class MeterDefinition:
    """One ``metric:`` entry: which notifications it meters, and how."""

    def __init__(self, entry: Mapping[str, Any], source: str, index: int) -> None:
        self.source = source
        self.index = index
        raw_name = entry.get("name")
        self.name_text = raw_name if isinstance(raw_name, str) else repr(raw_name)
        self.where = f"{source}: metric[{index}] ({self.name_text})"

        def fail(reason: str) -> DefinitionError:
            return DefinitionError(source, reason, index, raw_name)

        missing = [key for key in REQUIRED if entry.get(key) is None or entry.get(key) == ""]
        if missing:
            raise fail(f"required field(s) missing: {', '.join(missing)}")
        self.unknown_keys = sorted(str(k) for k in set(entry) - KNOWN_KEYS)

        event_types = entry["event_type"]
        if isinstance(event_types, str):
            event_types = [event_types]
        if not isinstance(event_types, list) or not event_types:
            raise fail("event_type must be a string or a list of strings")
        try:
            self.matches = compile_event_types(event_types)
        except ValueError as exc:
            raise fail(str(exc)) from None
        self.event_types: tuple[str, ...] = tuple(event_types)

        lookup = entry.get("lookup") or []
        if isinstance(lookup, str):
            lookup = [lookup]
        if not isinstance(lookup, list) or not all(k in SAMPLE_FIELDS for k in lookup):
            raise fail(f"lookup must list attributes among {', '.join(SAMPLE_FIELDS)}")
        self.lookup: tuple[str, ...] = tuple(lookup)

        self._fields: dict[str, _Field] = {}
        for attribute in SAMPLE_FIELDS:
            spec = entry.get(attribute)
            if spec is None or spec == "":
                continue
            try:
                self._fields[attribute] = _field(attribute, spec)
            except ValueError as exc:
                raise fail(f"{attribute}: {exc}") from None
        kind = self._fields["type"]
        if kind.is_literal and kind.literal not in TYPES:
            raise fail(f"type: {kind.literal!r} is not one of {', '.join(sorted(TYPES))}")

        metadata = entry.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise fail("metadata must be a mapping of names to JSONPath expressions")
        self._metadata: dict[str, _Field] = {}
        for key, spec in (metadata or {}).items():
            try:
                self._metadata[str(key)] = _field(f"metadata.{key}", spec)
            except ValueError as exc:
                raise fail(f"metadata.{key}: {exc}") from None
        self._has_metadata = metadata is not None
        user_metadata = entry.get("user_metadata")
        try:
            self._user_metadata = (
                _field("user_metadata", user_metadata) if user_metadata is not None else None
            )
        except ValueError as exc:
            raise fail(f"user_metadata: {exc}") from None

    @property
    def fixed_name(self) -> str | None:
        """The meter name when it is a literal, else None (a name read from the notification)."""
        name = self._fields["name"]
        return name.literal if name.is_literal else None

    # -- evaluation ----------------------------------------------------------------

    def counters(self, view: Mapping[str, Any]) -> tuple[list[Counter], int]:
        """The counters for one notification (see :func:`definition_view`), and how many
        were skipped because the notification gave null for their volume or resource.

        Raises :class:`EvaluationError` when the notification does not have what
        the definition reads.
        """
        metadata = self._resource_metadata(view)
        if not self.lookup:
            values = {a: f.first(view) for a, f in self._fields.items()}
            counter = self._counter(values, view, metadata)
            return ([counter], 0) if counter is not None else ([], 1)
        columns = self._columns(view)
        if not columns:
            return [], 0
        counters: list[Counter] = []
        skipped = 0
        for values in columns:
            counter = self._counter(values, view, metadata)
            if counter is None:
                skipped += 1
            else:
                counters.append(counter)
        return counters, skipped

    def _columns(self, view: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Lookup mode: one mapping of attribute values per counter."""
        found = {a: f.values(view) for a, f in self._fields.items()}
        sizing = [
            a for a in ("name", *self.lookup) if a in found and not self._fields[a].is_literal
        ]
        count = len(found[sizing[0]]) if sizing else 1
        if count == 0:
            return []
        columns: list[dict[str, Any]] = [{} for _ in range(count)]
        for attribute, values in found.items():
            if len(values) == count:
                for column, value in zip(columns, values, strict=True):
                    column[attribute] = value
            elif len(values) <= 1 and attribute not in self.lookup:
                only = values[0] if values else _MISSING
                for column in columns:
                    column[attribute] = only
            else:
                raise EvaluationError(
                    f"lookup: {count} value(s) of {sizing[0]} but {len(values)} of {attribute}"
                )
        return columns

    def _counter(
        self, values: Mapping[str, Any], view: Mapping[str, Any], metadata: dict[str, Any]
    ) -> Counter | None:
        fields = self._fields
        name = values["name"]
        if name is _MISSING or name is None:
            raise EvaluationError(f"name: {fields['name'].text} gave no meter name")
        volume = values["volume"]
        if volume is _MISSING:
            raise EvaluationError(f"volume: {fields['volume'].text} matched nothing")
        resource_id = values["resource_id"]
        if resource_id is _MISSING:
            raise EvaluationError(f"resource_id: {fields['resource_id'].text} matched nothing")
        if volume is None or resource_id is None:
            return None  # the service says there is no value yet: nothing to meter
        try:
            number = to_number(volume)
        except ValueError as exc:
            raise EvaluationError(f"volume: {exc}") from None
        kind = values["type"]
        if kind not in TYPES:
            raise EvaluationError(f"type: {kind!r} is not one of {', '.join(sorted(TYPES))}")
        unit = values["unit"]
        if not isinstance(unit, str):
            raise EvaluationError(f"unit: {unit!r} is not a string")
        ctxt = view.get("ctxt")
        user_id = values.get("user_id", _MISSING)
        if user_id is _MISSING or user_id is None:
            user_id = _first_of(ctxt, "user_id", "user")
        project_id = values.get("project_id", _MISSING)
        if project_id is _MISSING or project_id is None:
            project_id = _first_of(ctxt, "tenant_id", "tenant", "project_id")
        moment = values.get("timestamp", _MISSING)
        if moment is _MISSING or moment is None:
            moment = _first_of(view.get("metadata"), "timestamp") or view.get("timestamp")
        try:
            when = parse_timestamp(moment) if moment is not None else datetime.now(UTC)
        except ValueError as exc:
            raise EvaluationError(f"timestamp: {exc}") from None
        try:
            return Counter(
                name=_text(name, "name"),
                type=kind,
                unit=unit,
                volume=number,
                user_id=_optional_text(user_id, "user_id"),
                project_id=_optional_text(project_id, "project_id"),
                resource_id=_text(resource_id, "resource_id"),
                timestamp=when,
                resource_metadata=metadata,
            )
        except InvalidCounter as exc:
            raise EvaluationError(str(exc)) from None

    def _resource_metadata(self, view: Mapping[str, Any]) -> dict[str, Any]:
        if self._has_metadata:
            metadata: dict[str, Any] = {}
            for key, field in self._metadata.items():
                value = field.first(view)
                if value is not None and value is not _MISSING:
                    metadata[key] = value
        else:
            # As Ceilometer: without a metadata section, the payload is the metadata.
            payload = view.get("payload")
            metadata = dict(payload) if isinstance(payload, dict) else {}
            metadata["event_type"] = view.get("event_type")
            metadata["host"] = view.get("publisher_id")
        if self._user_metadata is not None:
            source = self._user_metadata.first(view)
            if isinstance(source, dict):
                reserved = {
                    key[len(_USER_METADATA_PREFIX) :].replace(".", "_"): (
                        value[:_USER_METADATA_LIMIT] if isinstance(value, str) else value
                    )
                    for key, value in source.items()
                    if isinstance(key, str) and key.startswith(_USER_METADATA_PREFIX)
                }
                reserved = {k: v for k, v in reserved.items() if k not in metadata}
                if reserved:
                    metadata["user_metadata"] = reserved
        return metadata


# -- loading ------------------------------------------------------------------------


def read_definitions(source: Path | Traversable, label: str | None = None) -> list[MeterDefinition]:
    """Every entry of one definitions file; raises :class:`DefinitionError` on the first bad one."""
    where = label or str(source)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as exc:
        raise DefinitionError(where, f"cannot read: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DefinitionError(where, f"not valid YAML{at}: {problem}") from None
    if data is None:
        LOG.warning("%s: empty, no meter definitions in it", where)
        return []
    if not isinstance(data, dict) or not isinstance(data.get("metric"), list):
        raise DefinitionError(where, "must be a mapping with a 'metric' list")
    unknown = sorted(str(k) for k in set(data) - {"metric"})
    if unknown:
        LOG.warning("%s: key(s) %s ignored", where, ", ".join(unknown))
    definitions = []
    for index, entry in enumerate(data["metric"]):
        if not isinstance(entry, dict):
            raise DefinitionError(where, "an entry must be a mapping", index)
        definition = MeterDefinition(entry, where, index)
        if definition.unknown_keys:
            LOG.warning(
                "%s: key(s) %s ignored", definition.where, ", ".join(definition.unknown_keys)
            )
        definitions.append(definition)
    return definitions


def load_definitions(paths: Iterable[Path] = (), *, shipped: bool = True) -> list[MeterDefinition]:
    """The shipped definitions (unless ``shipped`` is false), then those of ``paths``.

    An entry whose ``name`` (as written) repeats an earlier one replaces it, so a
    file of your own can redefine a shipped meter. Raises :class:`DefinitionError`.
    """
    sources: list[tuple[Path | Traversable, str]] = []
    if shipped:
        sources.append((SHIPPED_DEFINITIONS, "nephoscope/notification/definitions/meters.yaml"))
    sources.extend((path, str(path)) for path in paths)
    by_name: dict[str, MeterDefinition] = {}
    for source, label in sources:
        for definition in read_definitions(source, label):
            earlier = by_name.pop(definition.name_text, None)
            if earlier is not None:
                LOG.info("%s replaces %s", definition.where, earlier.where)
            by_name[definition.name_text] = definition
    return list(by_name.values())


def matching(definitions: Sequence[MeterDefinition], event_type: str) -> list[MeterDefinition]:
    """The definitions that meter ``event_type``."""
    return [d for d in definitions if d.matches(event_type)]
