"""docs/meters.md must list exactly the meters the plugins produce, with their type and unit.

The helpers here (:func:`read_tables`, :func:`read_meter_tables`,
:func:`documented`, :func:`doc_problems`) work for any namespace: a plugin family whose plugins can
be run in a test passes what they emitted to :func:`doc_problems`, as the host
test below does.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from nephoscope.counter import TYPES, Counter
from nephoscope.plugin import (
    NAMESPACES,
    NS_NOTIFICATION,
    NS_POLL_CENTRAL,
    NS_POLL_COMPUTE,
    NS_POLL_HOST,
    NotificationBase,
    PollsterBase,
    load_plugins,
)

ROOT = Path(__file__).resolve().parents[2]
METERS_DOC = ROOT / "docs" / "meters.md"
EXAMPLE_ORIGIN = "example plugin"
ORIGINS = frozenset({"Ceilometer", "Nephoscope", EXAMPLE_ORIGIN})
#: A Markdown table is a meter table when its header has all of these.
REQUIRED_COLUMNS = ("name", "type", "unit", "resource", "origin", "namespace", "plugin")
POLL_NAMESPACES = (NS_POLL_HOST, NS_POLL_COMPUTE, NS_POLL_CENTRAL)


@dataclass(frozen=True)
class DocMeter:
    """One row of a meter table."""

    name: str
    type: str
    unit: str
    resource: str
    origin: str
    namespace: str
    plugin: str
    description: str
    line: int


def _cells(line: str) -> list[str]:
    inner = line.strip()
    inner = inner.removeprefix("|").removesuffix("|")
    return [cell.strip().strip("`").strip() for cell in inner.split("|")]


def _is_separator(cells: list[str]) -> bool:
    return all(cell and set(cell) <= set("-: ") for cell in cells)


def read_tables(path: Path, required: Iterable[str]) -> list[dict[str, str]]:
    """Rows of the Markdown tables at ``path`` whose header has every ``required`` column.

    A row maps each column name, lower case, to its cell, and ``line`` to its line number.
    """
    wanted = set(required)
    rows: list[dict[str, str]] = []
    header: list[str] | None = None
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.lstrip().startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = [cell.lower() for cell in cells]
            continue
        if _is_separator(cells) or not wanted <= set(header):
            continue
        assert len(cells) == len(header), f"{path.name}:{number}: {len(cells)} cells"
        rows.append({**dict(zip(header, cells, strict=True)), "line": str(number)})
    return rows


def read_meter_tables(path: Path = METERS_DOC) -> list[DocMeter]:
    """Every row of every meter table in the Markdown file at ``path``."""
    return [
        DocMeter(
            name=row["name"],
            type=row["type"],
            unit=row["unit"],
            resource=row["resource"],
            origin=row["origin"],
            namespace=row["namespace"],
            plugin=row["plugin"],
            description=row.get("description", ""),
            line=int(row["line"]),
        )
        for row in read_tables(path, REQUIRED_COLUMNS)
    ]


def documented(
    namespace: str, path: Path = METERS_DOC, *, examples: bool = False
) -> dict[str, DocMeter]:
    """The rows of ``namespace`` by meter name: built-in plugins', or the examples' ones."""
    return {
        row.name: row
        for row in read_meter_tables(path)
        if row.namespace == namespace and (row.origin == EXAMPLE_ORIGIN) is examples
    }


def builtin_entry_points(namespace: str) -> list[importlib.metadata.EntryPoint]:
    """Entry points that Nephoscope itself ships (not separately installed plugins)."""
    return [
        ep
        for ep in importlib.metadata.entry_points(group=namespace)
        if ep.dist is not None and ep.dist.name == "nephoscope"
    ]


def doc_problems(
    doc: Mapping[str, DocMeter],
    declared: Mapping[str, Iterable[str]],
    emitted: Mapping[str, Iterable[Counter]] | None = None,
) -> list[str]:
    """What disagrees between one namespace's doc rows and its plugins.

    ``declared`` maps each plugin (entry-point name) to the meters it declares;
    ``emitted`` to counters it produced in a test run. With ``emitted``, a row
    that no plugin emitted is a problem too.
    """
    problems: list[str] = []
    producers: dict[str, set[str]] = {}
    for plugin, names in declared.items():
        for name in names:
            producers.setdefault(name, set()).add(plugin)
    seen: dict[str, tuple[str, str]] = {}
    for plugin, counters in (emitted or {}).items():
        for c in counters:
            producers.setdefault(c.name, set()).add(plugin)
            seen.setdefault(c.name, (c.type, c.unit))
            row = doc.get(c.name)
            if row is not None and (row.type, row.unit) != (c.type, c.unit):
                problems.append(
                    f"{c.name}: documented as {row.type} {row.unit!r} (line {row.line}), "
                    f"plugin {plugin} emits {c.type} {c.unit!r}"
                )
    for name, plugins in sorted(producers.items()):
        row = doc.get(name)
        if row is None:
            problems.append(f"{name}: produced by {', '.join(sorted(plugins))}, not documented")
        elif row.plugin not in plugins:
            problems.append(
                f"{name}: documented for plugin {row.plugin} (line {row.line}), "
                f"produced by {', '.join(sorted(plugins))}"
            )
    if emitted is not None:
        for name, row in sorted(doc.items()):
            if name not in seen:
                problems.append(f"{name}: documented (line {row.line}) but never emitted")
    # A pollster may declare more than it emitted in one run; keep messages unique.
    return list(dict.fromkeys(problems))


def test_meter_tables_are_well_formed() -> None:
    rows = read_meter_tables()
    assert rows, "no meter table found"
    keys = [(row.namespace, row.name) for row in rows]
    assert len(keys) == len(set(keys)), "a meter is listed twice in one namespace"
    for row in rows:
        where = f"{row.name} (line {row.line})"
        assert row.type in TYPES, where
        assert row.unit, where
        assert row.resource, where
        assert row.origin in ORIGINS, where
        assert row.namespace in NAMESPACES, where
        assert row.plugin, where
        assert row.description, where


def test_doc_has_a_section_for_each_origin() -> None:
    text = METERS_DOC.read_text(encoding="utf-8")
    for heading in ("## Host", "## Compute", "## Central", "## Notifications"):
        assert heading in text


@pytest.mark.parametrize("namespace", POLL_NAMESPACES)
def test_every_declared_pollster_meter_is_documented(namespace: str) -> None:
    declared: dict[str, tuple[str, ...]] = {}
    for entry_point in builtin_entry_points(namespace):
        # The class is enough: instantiating a pollster may need its service (libvirt).
        plugin = entry_point.load()
        assert isinstance(plugin, type) and issubclass(plugin, PollsterBase), entry_point
        assert plugin.meters, f"{entry_point.name} declares no meters"
        declared[entry_point.name] = plugin.meters
    assert doc_problems(documented(namespace), declared) == []


def test_host_pollsters_emit_exactly_the_documented_meters() -> None:
    from tests.unit.host.fakes import FakePsutil, make_manager, new_context

    builtin = [ep.name for ep in builtin_entry_points(NS_POLL_HOST)]
    loaded = load_plugins(NS_POLL_HOST, PollsterBase, names=builtin)
    assert loaded.plugins and not loaded.failed and not loaded.unusable
    manager = make_manager(FakePsutil())
    context = new_context()
    emitted = {
        name: list(pollster.get_counters(manager, context))
        for name, pollster in loaded.plugins.items()
    }
    declared = {name: pollster.meters for name, pollster in loaded.plugins.items()}
    assert doc_problems(documented(NS_POLL_HOST), declared, emitted) == []


def test_compute_pollsters_emit_exactly_the_documented_meters() -> None:
    from tests.unit.compute.testdriver import Manager, inspector, new_context, settings

    from nephoscope.compute.discovery import discover_instances

    builtin = [ep.name for ep in builtin_entry_points(NS_POLL_COMPUTE)]
    loaded = load_plugins(NS_POLL_COMPUTE, PollsterBase, names=builtin)
    assert loaded.plugins and not loaded.failed and not loaded.unusable
    # libvirt's test driver on tests/fixtures/libvirt/node.xml: one cycle, shared.
    manager = Manager(inspector(), settings())
    context = new_context(discover_instances(manager))
    emitted = {
        name: list(pollster.get_counters(manager, context))  # type: ignore[arg-type]
        for name, pollster in loaded.plugins.items()
    }
    declared = {name: pollster.meters for name, pollster in loaded.plugins.items()}
    assert doc_problems(documented(NS_POLL_COMPUTE), declared, emitted) == []


#: The Plugin column of meters produced by the shipped meter definitions.
DEFINITIONS_PLUGIN = "meters.yaml"


def test_notification_meters_are_documented_both_ways() -> None:
    """Every meter the built-in notification plugins and the shipped definitions can
    produce has its row, and every row is produced by a recorded-style notification."""
    from tests.unit.notification.helpers import fixture_paths, load

    from nephoscope.notification import NotificationProcessor, load_definitions

    builtin = [ep.name for ep in builtin_entry_points(NS_NOTIFICATION)]
    loaded = load_plugins(NS_NOTIFICATION, NotificationBase, names=builtin)
    assert loaded.plugins and not loaded.failed and not loaded.unusable
    definitions = load_definitions()
    declared: dict[str, list[str]] = {
        name: list(getattr(plugin, "meters", ())) for name, plugin in loaded.plugins.items()
    }
    for name, meters in declared.items():
        assert meters, f"notification plugin {name} declares no meters"
    # Definitions that read their meter name from the notification declare nothing:
    # what they emit from the fixtures is checked instead.
    declared[DEFINITIONS_PLUGIN] = [d.fixed_name for d in definitions if d.fixed_name]
    producers = {
        **{name: NotificationProcessor({name: plugin}) for name, plugin in loaded.plugins.items()},
        DEFINITIONS_PLUGIN: NotificationProcessor({}, definitions),
    }
    emitted: dict[str, list[Counter]] = {name: [] for name in producers}
    for path in fixture_paths():
        for name, producer in producers.items():
            outcome = producer.process(load(path.stem))
            assert not outcome.problems, (path.name, outcome.problems)
            emitted[name].extend(outcome.counters)
    # The flavor meters stand in the table as one row, `instance:<flavor name>`.
    flavors = [c for c in emitted["instance"] if c.name.startswith("instance:")]
    assert flavors
    emitted["instance"] = [
        replace(c, name="instance:<flavor name>") if c in flavors else c
        for c in emitted["instance"]
    ]
    assert doc_problems(documented(NS_NOTIFICATION), declared, emitted) == []


def _row(name: str, type_: str = "gauge", unit: str = "KB", plugin: str = "p") -> DocMeter:
    return DocMeter(name, type_, unit, "<host>", "Nephoscope", NS_POLL_HOST, plugin, "d", 1)


def _counter(name: str, type_: str = "gauge", unit: str = "KB") -> Counter:
    from tests.unit.host.fakes import WHEN

    return Counter(name, type_, unit, 1, None, None, "r", WHEN)  # type: ignore[arg-type]


def test_doc_problems_finds_each_kind_of_disagreement() -> None:
    doc = {
        "ok": _row("ok"),
        "wrong.unit": _row("wrong.unit"),
        "wrong.type": _row("wrong.type"),
        "wrong.plugin": _row("wrong.plugin", plugin="other"),
        "stale": _row("stale"),
    }
    declared = {"p": ["ok", "wrong.unit", "wrong.type", "wrong.plugin", "undocumented.declared"]}
    emitted = {
        "p": [
            _counter("ok"),
            _counter("wrong.unit", unit="MB"),
            _counter("wrong.type", type_="cumulative"),
            _counter("wrong.plugin"),
            _counter("undocumented.emitted"),
        ]
    }
    problems = doc_problems(doc, declared, emitted)
    assert [p.split(":")[0] for p in problems] == [
        "wrong.unit",
        "wrong.type",
        "undocumented.declared",
        "undocumented.emitted",
        "wrong.plugin",
        "stale",
    ]
    # Without a run, only declarations are checked: nothing is "never emitted".
    assert doc_problems({"ok": _row("ok"), "stale": _row("stale")}, {"p": ["ok"]}) == []


def test_read_meter_tables_skips_other_tables(tmp_path: Path) -> None:
    doc = tmp_path / "meters.md"
    doc.write_text(
        "| Column | Meaning |\n| --- | --- |\n| Name | the name |\n\n"
        "| Name | Type | Unit | Resource | Origin | Namespace | Plugin | Description |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
        "| `a.b` | gauge | % | `<host>` | Nephoscope | `nephoscope.poll.host` | `x` | A. |\n",
        encoding="utf-8",
    )
    (row,) = read_meter_tables(doc)
    assert (row.name, row.unit, row.resource, row.plugin, row.line) == (
        "a.b",
        "%",
        "<host>",
        "x",
        7,
    )
