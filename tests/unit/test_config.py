import stat
from pathlib import Path

import pytest

from nephoscope.config import (
    ConfigError,
    Settings,
    ensure_local_secret,
    is_loopback,
    load_settings,
    local_secret_file,
    refuse_default_secret,
)


def write(tmp_path: Path, text: str, name: str = "nephoscope.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults_are_the_embedded_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEPHOSCOPE_CONFIG", raising=False)
    settings = load_settings()
    assert settings.bus.url == "memory://"
    assert settings.store.url.startswith("sqlite:///") and settings.store.url.endswith(".db")
    assert settings.polling.namespaces == ["host"]


def test_unknown_key_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "bus:\n  ulr: amqp://\n")
    with pytest.raises(ConfigError, match=r"bus\.ulr: unknown key"):
        load_settings(path)


def test_bad_value_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "collector:\n  batch_size: -3\n")
    with pytest.raises(ConfigError, match=r"collector\.batch_size: .*greater than or equal to 1"):
        load_settings(path)


def test_invalid_yaml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bus:\n  url: [\n")
    with pytest.raises(ConfigError, match="line"):
        load_settings(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "nope.yaml")


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "bus:\n  url: memory://\n  exchange: mine\n")
    monkeypatch.setenv("NEPHOSCOPE_BUS__URL", "amqp://guest:guest@127.0.0.1//")
    settings = load_settings(path)
    assert settings.bus.url == "amqp://guest:guest@127.0.0.1//"
    assert settings.bus.exchange == "mine"


def test_config_file_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEPHOSCOPE_CONFIG", str(write(tmp_path, "metering_secret: s3cr3t\n")))
    assert load_settings().metering_secret == "s3cr3t"


def test_polling_file_like_ceilometer(tmp_path: Path) -> None:
    polling = write(
        tmp_path,
        "sources:\n  - name: fast\n    interval: 10\n    meters: ['hardware.cpu.*']\n"
        "  - name: rest\n    interval: 300\n    meters: ['*', '!hardware.cpu.*']\n",
        "polling.yaml",
    )
    settings = load_settings(write(tmp_path, f"polling:\n  file: {polling}\n"))
    assert [(s.name, s.interval) for s in settings.polling.sources] == [("fast", 10), ("rest", 300)]


def test_bad_polling_file_names_file_and_entry(tmp_path: Path) -> None:
    polling = write(tmp_path, "sources:\n  - name: x\n    interval: 0\n", "polling.yaml")
    with pytest.raises(ConfigError, match=r"polling.yaml: sources\[0\]: interval"):
        load_settings(write(tmp_path, f"polling:\n  file: {polling}\n"))


def test_duplicate_source_names(tmp_path: Path) -> None:
    path = write(tmp_path, "polling:\n  sources:\n" + "  - {name: a, interval: 5}\n" * 2)
    with pytest.raises(ConfigError, match="unique"):
        load_settings(path)


def test_misspelt_environment_name_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEPHOSCOPE_HOTS", "x")
    with pytest.raises(ConfigError, match="NEPHOSCOPE_HOTS: unknown key"):
        load_settings()


def test_environment_list_that_is_not_json_is_a_config_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NEPHOSCOPE_POLLING__NAMESPACES", "host")
    with pytest.raises(ConfigError, match="environment"):
        load_settings()


def test_polling_file_is_relative_to_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", "sources:\n  - {name: a, interval: 5}\n", "polling.yaml")
    config = write(tmp_path / "etc", "polling:\n  file: polling.yaml\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(config).polling.sources[0].name == "a"


def test_polling_file_with_duplicate_names(tmp_path: Path) -> None:
    write(tmp_path, "sources:\n" + "  - {name: a, interval: 5}\n" * 2, "polling.yaml")
    with pytest.raises(ConfigError, match="unique"):
        load_settings(write(tmp_path, "polling:\n  file: polling.yaml\n"))


@pytest.mark.parametrize("text", ["polling:\n  sources: []\n", "host: ''\n"])
def test_empty_values_that_would_meter_nothing(tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError):
        load_settings(write(tmp_path, text))


# -- the metering secret -------------------------------------------------------------------


def test_run_makes_a_secret_of_its_own_once_and_every_command_reads_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NEPHOSCOPE_CONFIG", raising=False)
    settings = load_settings()
    assert settings.uses_default_secret and not local_secret_file().exists()
    mine = ensure_local_secret(settings)
    path = local_secret_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not mine.uses_default_secret and len(mine.metering_secret) >= 32
    assert ensure_local_secret(settings).metering_secret == mine.metering_secret
    assert load_settings().metering_secret == mine.metering_secret


def test_a_configured_secret_wins_over_the_local_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NEPHOSCOPE_CONFIG", raising=False)
    ensure_local_secret(load_settings())
    path = write(tmp_path, "metering_secret: ours\n")
    assert load_settings(path).metering_secret == "ours"
    assert ensure_local_secret(load_settings(path)).metering_secret == "ours"


def test_the_published_secret_is_refused_where_others_could_use_it() -> None:
    default = Settings()
    with pytest.raises(ConfigError, match="metering_secret is the published default"):
        refuse_default_secret(default, "the bus is shared")
    refuse_default_secret(Settings(metering_secret="s3cr3t"), "the bus is shared")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.0.0.5", False),
        ("metering.example.org", False),
    ],
)
def test_loopback_hosts(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
