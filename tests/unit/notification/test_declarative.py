"""The meters.yaml format: what is read, how values are found, and what stops start-up."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tests.unit.notification.helpers import INSTANCE, PROJECT, USER, load, processor

from nephoscope.notification.common import compile_event_types
from nephoscope.notification.declarative import (
    DefinitionError,
    EvaluationError,
    MeterDefinition,
    definition_view,
    load_definitions,
    read_definitions,
)


def definition(**entry: Any) -> MeterDefinition:
    base: dict[str, Any] = {
        "name": "m",
        "event_type": "e.*",
        "type": "gauge",
        "unit": "u",
        "volume": "$.payload.v",
        "resource_id": "$.payload.id",
    }
    base.update(entry)
    return MeterDefinition({k: v for k, v in base.items() if v is not None}, "test.yaml", 0)


def evaluate(d: MeterDefinition, payload: Any, **message: Any) -> list[Any]:
    full = {"event_type": "e.x", "timestamp": "2024-05-01 12:00:00", "payload": payload, **message}
    counters, _skipped = d.counters(definition_view(full))
    return counters


def write(tmp_path: Path, text: str, name: str = "meters.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# -- event types ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "event_type", "matched"),
    [
        (["compute.instance.*"], "compute.instance.exists", True),
        (["compute.instance.*"], "compute.instances", False),
        (["volume.create.*"], "volume.create.end", True),
        (["image.send"], "image.send", True),
        (["image.send"], "image.send.extra", False),
        (["volume.?xists"], "volume.exists", True),
        (["a", "b.*"], "b.c", True),
        # Ceilometer's shipped regular expression: every instance event but two.
        (["compute.instance.(?!create.start|update).*"], "compute.instance.exists", True),
        (["compute.instance.(?!create.start|update).*"], "compute.instance.update", False),
        (["compute.instance.(?!create.start|update).*"], "compute.instance.create.start", False),
    ],
)
def test_event_type_patterns(patterns: list[str], event_type: str, matched: bool) -> None:
    assert compile_event_types(patterns)(event_type) is matched


# -- values -----------------------------------------------------------------------


def test_literals_and_paths() -> None:
    d = definition(name="instance", volume=1, unit="instance", resource_id="$.payload.id")
    (c,) = evaluate(d, {"id": "r1"})
    assert (c.name, c.volume, c.unit, c.resource_id) == ("instance", 1, "instance", "r1")


def test_paths_without_dollar_as_in_older_files() -> None:
    d = definition(volume="payload.size", resource_id="payload.id", user_id="_context_user")
    (c,) = evaluate(d, {"size": 3, "id": "r"}, _context_user="u1")
    assert (c.volume, c.user_id) == (3, "u1")


def test_numeric_text_volume_becomes_a_number() -> None:
    d = definition()
    assert [c.volume for c in evaluate(d, {"v": "17", "id": "r"})] == [17]
    assert [c.volume for c in evaluate(d, {"v": " 2.5 ", "id": "r"})] == [2.5]


@pytest.mark.parametrize("volume", ["big", True, [1], {"a": 1}, "nan"])
def test_a_volume_that_is_not_a_number_cannot_be_evaluated(volume: Any) -> None:
    with pytest.raises(EvaluationError, match="volume"):
        evaluate(definition(), {"v": volume, "id": "r"})


def test_missing_volume_is_an_error_but_a_null_one_is_skipped() -> None:
    d = definition()
    with pytest.raises(EvaluationError, match=r"volume: \$\.payload\.v matched nothing"):
        evaluate(d, {"id": "r"})
    counters, skipped = d.counters(definition_view({"payload": {"v": None, "id": "r"}}))
    assert (counters, skipped) == ([], 1)
    with pytest.raises(EvaluationError, match="resource_id"):
        evaluate(d, {"v": 1})


def test_owner_falls_back_to_the_request_context() -> None:
    d = definition()
    message = {"_context_user_id": "u1", "_context_tenant": "p1"}
    (c,) = evaluate(d, {"v": 1, "id": "r"}, **message)
    assert (c.user_id, c.project_id) == ("u1", "p1")
    (c,) = evaluate(definition(project_id="$.payload.owner"), {"v": 1, "id": "r", "owner": "p2"})
    assert c.project_id == "p2"
    # The new oslo shape, with ctxt, works as well.
    (c,) = evaluate(d, {"v": 1, "id": "r"}, ctxt={"user": "u3", "project_id": "p3"})
    assert (c.user_id, c.project_id) == ("u3", "p3")


def test_alternatives_give_the_first_value_found() -> None:
    d = definition(project_id=["$.payload.project_id", "$.payload.tenant_id"])
    (c,) = evaluate(d, {"v": 1, "id": "r", "tenant_id": "old"})
    assert c.project_id == "old"
    (c,) = evaluate(d, {"v": 1, "id": "r", "tenant_id": "old", "project_id": "new"})
    assert c.project_id == "new"


def test_expressions_concatenate_and_compute() -> None:
    d = definition(
        volume="$.payload.metrics[?(@.name='cpu.percent')].value * 100",
        resource_id='$.payload.host + "_" + $.payload.node',
    )
    payload = {"host": "h", "node": "n", "metrics": [{"name": "cpu.percent", "value": 0.25}]}
    (c,) = evaluate(d, payload)
    assert (c.volume, c.resource_id) == (25.0, "h_n")


def test_split_in_an_expression_and_as_a_plugin() -> None:
    d = definition(
        resource_id="$.payload.pool.`split(#, 0, 1)`",
        metadata={
            "backend": {
                "fields": "$.payload.pool",
                "plugin": {"name": "split", "parameters": {"separator": "#", "segment": 1}},
            }
        },
    )
    (c,) = evaluate(d, {"v": 1, "pool": "host@lvm#fast"})
    assert c.resource_id == "host@lvm"
    assert c.resource_metadata == {"backend": "fast"}


def test_timedelta_plugin() -> None:
    d = definition(volume={"fields": ["$.payload.begin", "$.payload.end"], "plugin": "timedelta"})
    (c,) = evaluate(d, {"id": "r", "begin": "2024-05-01T11:00:00", "end": "2024-05-01 12:00:30"})
    assert c.volume == 3630.0
    with pytest.raises(EvaluationError, match="timedelta"):
        evaluate(d, {"id": "r", "begin": "2024-05-01T11:00:00", "end": "soon"})


def test_timestamp_from_a_path_or_the_notification() -> None:
    (c,) = evaluate(definition(), {"v": 1, "id": "r"})
    assert c.timestamp.isoformat() == "2024-05-01T12:00:00+00:00"
    (c,) = evaluate(
        definition(timestamp="$.payload.at"), {"v": 1, "id": "r", "at": "2024-05-02T00:00:00Z"}
    )
    assert c.timestamp.isoformat() == "2024-05-02T00:00:00+00:00"
    with pytest.raises(EvaluationError, match="timestamp"):
        evaluate(definition(timestamp="$.payload.at"), {"v": 1, "id": "r", "at": "yesterday"})


def test_without_a_metadata_section_the_payload_is_the_metadata() -> None:
    (c,) = evaluate(definition(), {"v": 1, "id": "r", "x": [1]}, publisher_id="svc.host1")
    assert c.resource_metadata == {
        "v": 1,
        "id": "r",
        "x": [1],
        "event_type": "e.x",
        "host": "svc.host1",
    }


def test_lookup_gives_one_counter_per_value() -> None:
    d = definition(
        name="$.payload.metrics[*].name",
        unit="$.payload.metrics[*].unit",
        volume="$.payload.metrics[*].value",
        resource_id="$.payload.id",
        lookup=["name", "unit", "volume"],
    )
    metrics = [{"name": "a", "unit": "B", "value": 1}, {"name": "b", "unit": "s", "value": "2"}]
    counters = evaluate(d, {"id": "r", "metrics": metrics})
    assert [(c.name, c.unit, c.volume, c.resource_id) for c in counters] == [
        ("a", "B", 1, "r"),
        ("b", "s", 2, "r"),
    ]
    assert evaluate(d, {"id": "r", "metrics": []}) == []
    with pytest.raises(EvaluationError, match="lookup"):
        evaluate(
            d,
            {
                "id": "r",
                "metrics": [{"name": "a", "unit": "B"}, {"name": "b", "unit": "s", "value": 2}],
            },
        )


def test_a_name_read_from_the_notification() -> None:
    d = definition(name="$.payload.outcome.`sub(/.*/, )` + 'x.' + $.payload.outcome")
    assert [c.name for c in evaluate(d, {"v": 1, "id": "r", "outcome": "success"})] == ["x.success"]


# -- loading ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ({"volume": None}, r"required field\(s\) missing: volume"),
        ({"type": "rate"}, "type: 'rate' is not one of cumulative, delta, gauge"),
        ({"volume": "$.payload.[["}, "volume: .* is not valid JSONPath"),
        ({"event_type": "a.(b"}, "not a valid regular expression"),
        ({"event_type": []}, "event_type must be a string or a list"),
        ({"lookup": ["colour"]}, "lookup must list attributes"),
        ({"volume": True}, "neither a JSONPath expression nor a number"),
        (
            {"volume": {"fields": "$.payload.a", "plugin": "my_module.MyPlugin"}},
            "plugin 'my_module.MyPlugin' is not supported: Nephoscope runs no Python plugins",
        ),
        (
            {"volume": {"fields": "$.payload.a", "plugin": "bitfield"}},
            "built in are split, timedelta",
        ),
        ({"volume": {"plugin": "timedelta"}}, "'fields' is required"),
        ({"metadata": ["a"]}, "metadata must be a mapping"),
    ],
)
def test_bad_entries_are_refused_with_the_reason(entry: dict[str, Any], reason: str) -> None:
    with pytest.raises(DefinitionError, match=reason) as raised:
        definition(**entry)
    assert str(raised.value).startswith("test.yaml: metric[0] (m): ")


def test_a_bad_file_names_itself_the_entry_and_the_reason(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        metric:
          - name: good
            event_type: a
            type: gauge
            unit: u
            volume: 1
            resource_id: $.payload.id
          - name: bad
            event_type: a
            type: sometimes
            unit: u
            volume: 1
            resource_id: $.payload.id
        """,
    )
    with pytest.raises(DefinitionError) as raised:
        load_definitions([path])
    assert str(raised.value) == (
        f"{path}: metric[1] (bad): type: 'sometimes' is not one of cumulative, delta, gauge"
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("metric:\n  - name: a\n   type: gauge\n", "not valid YAML at line 3, column 4"),
        ("metrics: []\n", "must be a mapping with a 'metric' list"),
        ("- a\n", "must be a mapping with a 'metric' list"),
        ("metric:\n  - just text\n", r"metric\[0\]: an entry must be a mapping"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, reason: str) -> None:
    with pytest.raises(DefinitionError, match=reason):
        read_definitions(write(tmp_path, text))


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DefinitionError, match="cannot read"):
        load_definitions([tmp_path / "missing.yaml"])


def test_unknown_keys_are_ignored_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(
        tmp_path,
        "metric:\n  - {name: a, event_type: a, type: gauge, unit: u, volume: 1,"
        " resource_id: $.x, description: hello}\n",
    )
    with caplog.at_level(logging.WARNING):
        (d,) = read_definitions(path)
    assert d.unknown_keys == ["description"]
    assert "description" in caplog.text


def test_a_later_file_replaces_a_shipped_meter_by_name(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        metric:
          - name: image.size
            event_type: image.upload
            type: gauge
            unit: MB
            volume: $.payload.size
            resource_id: $.payload.id
        """,
    )
    shipped = load_definitions()
    mine = load_definitions([path])
    assert len(mine) == len(shipped)
    (image_size,) = [d for d in mine if d.fixed_name == "image.size"]
    assert image_size.source == str(path)
    assert load_definitions([path], shipped=False)[0].fixed_name == "image.size"


# -- a file in Ceilometer's own shapes ------------------------------------------------

CEILOMETER_STYLE = """\
---
metric:
  # The older style: paths without "$", context keys at the top level.
  - name: 'magnetodb.table.index.count'
    type: 'gauge'
    unit: 'index'
    event_type: 'magnetodb.table.create.end'
    volume: payload.index_count
    resource_id: payload.table_uuid
    user_id: _context_user

  # Meters the instance plugin owns, as Ceilometer's file defines them.
  - name: 'memory'
    event_type: &instance_events compute.instance.(?!create.start|update).*
    type: 'gauge'
    unit: 'MB'
    volume: $.payload.memory_mb
    user_id: $.payload.user_id
    project_id: $.payload.tenant_id
    resource_id: $.payload.instance_id
    user_metadata: $.payload.metadata
    metadata: &instance_meta
      host: $.payload.host
      flavor_name: $.payload.instance_type
      image_ref: $.payload.image_meta.base_image_ref

  - name: 'vcpus'
    event_type: *instance_events
    type: 'gauge'
    unit: 'vcpu'
    volume: $.payload.vcpus
    user_id: $.payload.user_id
    project_id: $.payload.tenant_id
    resource_id: $.payload.instance_id
    metadata:
       <<: *instance_meta

  - name: 'dns.domain.exists'
    event_type: 'dns.domain.exists'
    type: 'cumulative'
    unit: 's'
    volume:
      fields: [$.payload.audit_period_beginning, $.payload.audit_period_ending]
      plugin: 'timedelta'
    project_id: $.payload.tenant_id
    resource_id: $.payload.id
    user_id: $.ctxt.user
    metadata:
      status: $.payload.status
      host: $.publisher_id
"""


def test_a_ceilometer_style_file_loads_and_meters(tmp_path: Path) -> None:
    path = write(tmp_path, CEILOMETER_STYLE)
    definitions = read_definitions(path)
    assert [d.fixed_name for d in definitions] == [
        "magnetodb.table.index.count",
        "memory",
        "vcpus",
        "dns.domain.exists",
    ]
    table = {
        "event_type": "magnetodb.table.create.end",
        "timestamp": "2024-05-01 12:00:00",
        "_context_user": "u9",
        "payload": {"index_count": 3, "table_uuid": "t1"},
    }
    (c,) = definitions[0].counters(definition_view(table))[0]
    assert (c.volume, c.resource_id, c.user_id) == (3, "t1", "u9")
    dns = {
        "event_type": "dns.domain.exists",
        "timestamp": "2024-05-01 12:00:00",
        "_context_user": "u8",
        "publisher_id": "central.dns-1",
        "payload": {
            "id": "z1",
            "tenant_id": "p",
            "status": "ACTIVE",
            "audit_period_beginning": "2024-05-01T11:00:00",
            "audit_period_ending": "2024-05-01T12:00:00",
        },
    }
    (c,) = definitions[3].counters(definition_view(dns))[0]
    assert (c.volume, c.user_id, c.resource_metadata["host"]) == (3600.0, "u8", "central.dns-1")


def test_ceilometer_definitions_of_plugin_meters_never_double_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path, CEILOMETER_STYLE)
    with caplog.at_level(logging.WARNING):
        both = processor(path)
    assert "plugin instance emits too" in caplog.text
    exists = both.process(load("compute.instance.exists"))
    memory = [c for c in exists.counters if c.name == "memory"]
    assert len(memory) == 1 and exists.duplicates == 2  # memory and vcpus from the file
    # The plugin's counter is the one kept.
    assert memory[0].resource_metadata["event_type"] == "compute.instance.exists"
    # Where the plugin does not listen, the file's definitions meter alone.
    resized = dict(
        load("compute.instance.exists"), event_type="compute.instance.resize.confirm.end"
    )
    outcome = both.process(resized)
    assert sorted(c.name for c in outcome.counters) == ["memory", "vcpus"]
    assert outcome.counters[0].resource_id == INSTANCE
    assert outcome.counters[0].project_id == PROJECT and outcome.counters[0].user_id == USER
