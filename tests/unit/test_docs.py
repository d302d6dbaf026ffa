"""docs/configuration.md and docs/writing-plugins.md say what the code does.

Checked here, without any service: every configuration key is documented with
its true default, the sample file and the other YAML examples load as they
claim, the quoted error message is the real one, every Python block compiles,
the quoted example plugin is the file in examples/, and every ``nephoscope``
command and option the pages name exists.
"""

from __future__ import annotations

import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from pydantic import BaseModel, TypeAdapter

from nephoscope.cli import app
from nephoscope.config import ConfigError, Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
CONFIGURATION = ROOT / "docs" / "configuration.md"
WRITING_PLUGINS = ROOT / "docs" / "writing-plugins.md"
DOCS = (CONFIGURATION, WRITING_PLUGINS)
EXAMPLE = ROOT / "examples" / "nephoscope-example-plugin"
EXAMPLE_CODE = EXAMPLE / "src" / "nephoscope_example" / "uptime.py"
EXAMPLE_PYPROJECT = EXAMPLE / "pyproject.toml"

#: Keys whose default is computed when the settings load; the doc describes it in words.
COMPUTED_DEFAULTS = frozenset({"host", "store.url", "publisher.buffer.path"})
#: Keys the sample file sets to something other than the default (the doc says so).
SAMPLE_NOT_DEFAULT = frozenset({"metering_secret"})
#: The YAML block that must fail to load, and the console block quoting its error.
BAD_CONFIG = "bad.yaml"


@dataclass(frozen=True)
class Block:
    """A fenced code block: its language, text, the heading above it and its first line."""

    lang: str
    text: str
    heading: str
    line: int


def code_blocks(path: Path) -> list[Block]:
    blocks: list[Block] = []
    heading = ""
    lang: str | None = None
    start = 0
    body: list[str] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if lang is None:
            if line.startswith("```"):
                lang, start, body = line[3:].strip(), number + 1, []
            elif line.startswith("#"):
                heading = line.lstrip("#").strip()
        elif line.startswith("```"):
            blocks.append(Block(lang, "\n".join(body) + "\n", heading, start))
            lang = None
        else:
            body.append(line)
    assert lang is None, f"{path.name}: unclosed code block from line {start}"
    return blocks


def where(path: Path, block: Block) -> str:
    return f"{path.name}:{block.line}"


# -- configuration keys --------------------------------------------------------


def _models(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models in an annotation: ``list[PollingSource]`` gives PollingSource."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in typing.get_args(annotation) for model in _models(arg)]


def setting_fields(model: type[BaseModel] = Settings, prefix: str = "") -> dict[str, Any]:
    """Every key of ``model`` as ``section.key`` (``polling.sources[].name``) -> its FieldInfo.

    Sections themselves are not keys; a list of models is, and so are its items' keys.
    """
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        key = prefix + name
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            fields.update(setting_fields(annotation, key + "."))
            continue
        fields[key] = info
        for nested in _models(annotation):
            fields.update(setting_fields(nested, key + "[]."))
    return fields


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().removeprefix("|").removesuffix("|").split("|")]


def key_rows(path: Path = CONFIGURATION) -> dict[str, dict[str, str]]:
    """Rows of the Markdown tables whose header has a Key and a Default column, by key."""
    rows: dict[str, dict[str, str]] = {}
    header: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = _cells(line)
        if header is None:
            header = [cell.lower() for cell in cells]
            continue
        if {"key", "default"} - set(header) or set("".join(cells)) <= set("-: "):
            continue
        row = dict(zip(header, cells, strict=True))
        key = row["key"].strip("`")
        assert key not in rows, f"{key} is documented twice"
        rows[key] = row
    return rows


def default_of(info: Any) -> Any:
    """A field's default as YAML would write it (JSON-compatible values)."""
    value = info.get_default(call_default_factory=True)
    return TypeAdapter(info.annotation).dump_python(value, mode="json")


def test_setting_fields_walks_every_section() -> None:
    keys = setting_fields()
    assert {"metering_secret", "bus.url", "polling.sources", "polling.sources[].meters"} <= set(
        keys
    )
    assert "bus" not in keys


def test_every_setting_is_documented() -> None:
    documented = key_rows()
    keys = setting_fields()
    missing = sorted(set(keys) - set(documented))
    assert not missing, f"keys missing from {CONFIGURATION.name}: {missing}"
    stale = sorted(set(documented) - set(keys))
    assert not stale, f"{CONFIGURATION.name} documents keys that do not exist: {stale}"


def test_documented_defaults_are_the_real_ones() -> None:
    documented = key_rows()
    for key, info in setting_fields().items():
        cell = documented[key]["default"]
        if info.is_required():
            assert cell == "required", f"{key} has no default: say 'required', not {cell!r}"
            continue
        literal = re.fullmatch(r"`([^`]*)`", cell)
        if key in COMPUTED_DEFAULTS:
            assert literal is None, f"{key}: its default is computed; describe it in words"
            continue
        assert literal, f"{key}: write the default as one YAML value in backticks, not {cell!r}"
        # Compared as the setting reads it, so `1m` documents a default of 60 seconds.
        adapter = TypeAdapter(info.annotation)
        written = adapter.dump_python(
            adapter.validate_python(yaml.safe_load(literal[1])), mode="json"
        )
        assert written == default_of(info), f"{key}: wrong default {cell}"


#: "Read by" cells that name no command.
NO_COMMAND = frozenset({"nothing yet", "no command yet", "every command with `--config`"})


def test_read_by_names_real_commands() -> None:
    for key, row in key_rows().items():
        cell = row["read by"]
        if cell in NO_COMMAND:
            continue
        for name in cell.split(", "):
            assert check_command(name.split()) is None, f"{key}: read by {name!r}?"


# -- the YAML examples -----------------------------------------------------------


def sample_block() -> Block:
    """The first YAML block under a heading that contains 'sample'."""
    for block in code_blocks(CONFIGURATION):
        if block.lang == "yaml" and "sample" in block.heading.lower():
            return block
    raise AssertionError(f"{CONFIGURATION.name} has no YAML block under a 'sample' heading")


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No NEPHOSCOPE_* variables, and a scratch working directory."""
    for name in list(os.environ):
        if name.upper().startswith("NEPHOSCOPE_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _paths(data: Any, prefix: str = "") -> set[str]:
    if isinstance(data, dict):
        return {p for k, v in data.items() for p in {prefix + k} | _paths(v, prefix + k + ".")}
    if isinstance(data, list):
        return {p for item in data for p in _paths(item, prefix.rstrip(".") + "[].")}
    return set()


def test_sample_file_loads_and_holds_the_defaults(clean_environment: Path) -> None:
    block = sample_block()
    path = clean_environment / "nephoscope.yaml"
    path.write_text(block.text, encoding="utf-8")
    loaded = load_settings(path).model_dump(mode="json")
    defaults = load_settings().model_dump(mode="json")
    differing = {key for key in defaults if loaded[key] != defaults[key]}
    assert differing == SAMPLE_NOT_DEFAULT, where(CONFIGURATION, block)


def test_sample_file_names_every_key() -> None:
    block = sample_block()
    # Commented-out keys count: they show where a key goes and why it is left out.
    uncommented = re.sub(r"^(\s*)# ?(\w+:)", r"\1\2", block.text, flags=re.M)
    present = _paths(yaml.safe_load(uncommented))
    # A mapping of patterns to lists of models names its items' keys `key[].item`.
    for key, info in setting_fields().items():
        if typing.get_origin(info.annotation) is dict and _models(info.annotation):
            present |= {
                f"{key}[].{path.split('[].', 1)[1]}"
                for path in present
                if path.startswith(key + ".") and "[]." in path
            }
    missing = sorted(set(setting_fields()) - present)
    assert not missing, f"the sample ({where(CONFIGURATION, block)}) lacks {missing}"


def yaml_blocks() -> list[tuple[Path, Block]]:
    return [(path, b) for path in DOCS for b in code_blocks(path) if b.lang == "yaml"]


@pytest.mark.parametrize(
    ("path", "block"), yaml_blocks(), ids=[where(p, b) for p, b in yaml_blocks()]
)
def test_yaml_examples_load(clean_environment: Path, path: Path, block: Block) -> None:
    """A config example loads; a polling.yaml example loads as polling.file; bad.yaml fails."""
    data = yaml.safe_load(block.text)
    assert isinstance(data, dict), where(path, block)
    first_line = block.text.splitlines()[0]
    name = first_line[2:].strip() if first_line.startswith("# ") else "example.yaml"
    file = clean_environment / name
    file.write_text(block.text, encoding="utf-8")
    if name == BAD_CONFIG:
        with pytest.raises(ConfigError):
            load_settings(name)
    elif "sources" in data:
        config = clean_environment / "uses-polling-file.yaml"
        config.write_text(f"polling:\n  file: {file}\n", encoding="utf-8")
        assert load_settings(config).polling.sources
    else:
        load_settings(name)


def test_quoted_config_error_is_the_real_one(clean_environment: Path) -> None:
    blocks = code_blocks(CONFIGURATION)
    (bad,) = [b for b in blocks if b.lang == "yaml" and b.text.startswith(f"# {BAD_CONFIG}\n")]
    (console,) = [b for b in blocks if b.lang == "console" and "--config bad.yaml" in b.text]
    (clean_environment / BAD_CONFIG).write_text(bad.text, encoding="utf-8")
    with pytest.raises(ConfigError) as raised:
        load_settings(BAD_CONFIG)
    lines = console.text.splitlines()
    assert f"error: bad configuration: {raised.value}" in lines, where(CONFIGURATION, console)
    # settings_from() stops with status 2.
    assert lines[lines.index("$ echo $?") + 1] == "2"


# -- Python in writing-plugins.md ------------------------------------------------


def python_blocks() -> list[Block]:
    return [b for b in code_blocks(WRITING_PLUGINS) if b.lang == "python"]


def test_writing_plugins_has_python_blocks() -> None:
    assert len(python_blocks()) >= 4


@pytest.mark.parametrize(
    "block", python_blocks(), ids=[where(WRITING_PLUGINS, b) for b in python_blocks()]
)
def test_python_blocks_compile(block: Block) -> None:
    compile(block.text, where(WRITING_PLUGINS, block), "exec")


def test_quoted_example_plugin_is_the_shipped_one() -> None:
    quoted = [b for b in python_blocks() if "class UptimePollster(" in b.text]
    assert quoted, "writing-plugins.md no longer quotes the example pollster"
    shipped = EXAMPLE_CODE.read_text(encoding="utf-8")
    for block in quoted:
        assert block.text == shipped, f"{where(WRITING_PLUGINS, block)} differs from {EXAMPLE_CODE}"


def test_quoted_entry_point_is_the_shipped_one() -> None:
    quoted = [
        b for b in code_blocks(WRITING_PLUGINS) if b.lang == "toml" and "example_uptime" in b.text
    ]
    assert quoted
    shipped = EXAMPLE_PYPROJECT.read_text(encoding="utf-8")
    for block in quoted:
        assert block.text in shipped, f"{where(WRITING_PLUGINS, block)} is not in the pyproject"


# -- commands --------------------------------------------------------------------

#: ``nephoscope`` as a command: not part of a path, module or distribution name.
_COMMAND = re.compile(r"(?<![\w.-])nephoscope ")
#: Where a command written in a doc ends.
_END = re.compile(r"[`|#]|\s\(|$")


def command_mentions(path: Path) -> list[tuple[int, list[str]]]:
    """Each ``nephoscope ...`` command line in ``path``: its line number and its words."""
    mentions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        assert not re.search(r"`nephoscope\s*$", line), (
            f"{path.name}:{number}: keep a command in backticks on one line"
        )
        for match in _COMMAND.finditer(line):
            rest = line[match.end() :]
            end = _END.search(rest)
            words = rest[: end.start() if end else len(rest)].split()
            mentions.append((number, [w.rstrip(".,;:") for w in words]))
    return mentions


def _subcommands(command: Any) -> dict[str, Any] | None:
    # Typer vendors its own click: tell a group by its ``commands``, not by its class.
    commands = getattr(command, "commands", None)
    return commands if isinstance(commands, dict) else None


def check_command(words: list[str]) -> str | None:
    """What is wrong with ``nephoscope <words>``, or None."""
    command: Any = typer.main.get_command(app)
    path = ["nephoscope"]
    for word in words:
        if word.startswith("-"):
            option = word.split("=")[0]
            known = {"--help"} | {o for p in command.params for o in (*p.opts, *p.secondary_opts)}
            if option not in known:
                return f"{' '.join(path)} has no option {option}"
        elif (subcommands := _subcommands(command)) is not None:
            if word not in subcommands:
                return f"{' '.join(path)} has no command {word!r}"
            command = subcommands[word]
            path.append(word)
        # Otherwise it is an option's value: nothing to check.
    if _subcommands(command) is not None and len(path) > 1:
        return f"{' '.join(path)} needs a subcommand"
    return None


@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_commands_named_in_docs_exist(path: Path) -> None:
    mentions = command_mentions(path)
    assert mentions, f"{path.name} names no nephoscope command"
    problems = [
        f"{path.name}:{number}: {problem}"
        for number, words in mentions
        if words and (problem := check_command(words))
    ]
    assert not problems


def test_check_command_finds_mistakes() -> None:
    assert check_command(["poll", "--once", "--namespace", "host", "--config", "f.yaml"]) is None
    assert check_command(["db", "upgrade"]) is None
    assert check_command(["pol"]) == "nephoscope has no command 'pol'"
    assert check_command(["poll", "--twice"]) == "nephoscope poll has no option --twice"
    assert check_command(["db"]) == "nephoscope db needs a subcommand"
