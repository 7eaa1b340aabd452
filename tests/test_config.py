"""Configuration: TOML decoded into typed structs, unknown keys named, env overrides."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from harness import Daemon
from reverie.daemon import config
from reverie.errors import ConfigError


def test_defaults_need_no_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in (
        "REVERIE_CONFIG",
        "REVERIE_DATA_DIR",
        "REVERIE_SOCKET",
        "STATE_DIRECTORY",
        "RUNTIME_DIRECTORY",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    cfg = config.load()
    assert cfg.data_path == tmp_path / "state" / "reverie"
    assert cfg.socket_path == tmp_path / "run" / "reverie" / "reverie.sock"
    assert cfg.daemon.socket_mode == "0600"


def test_systemd_directories_win(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REVERIE_CONFIG", raising=False)
    monkeypatch.delenv("REVERIE_DATA_DIR", raising=False)
    monkeypatch.delenv("REVERIE_SOCKET", raising=False)
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/reverie")
    monkeypatch.setenv("RUNTIME_DIRECTORY", "/run/reverie")
    cfg = config.load(env=True)
    assert str(cfg.data_path) == "/var/lib/reverie"
    assert str(cfg.socket_path) == "/run/reverie/reverie.sock"


def test_unknown_key_is_named() -> None:
    with pytest.raises(ConfigError, match=r"unknown field `sockte`.*daemon"):
        config.parse("[daemon]\nsockte = '/x'\n", "t.toml")
    with pytest.raises(ConfigError, match="unknown field `nope`"):
        config.parse("[nope]\n", "t.toml")


def test_bad_values_are_explained() -> None:
    with pytest.raises(ConfigError, match=r"t.toml: .*max_connections"):
        config.parse("[daemon]\nmax_connections = 0\n", "t.toml")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.parse("[daemon\n", "t.toml")
    with pytest.raises(ConfigError, match="socket_mode"):
        config.parse("[daemon]\nsocket_mode = '999'\n", "t.toml")


def test_environment_overrides_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text("[daemon]\ndata_dir = '/from/file'\nsocket = '/from/file.sock'\n")
    monkeypatch.setenv("REVERIE_CONFIG", str(f))
    monkeypatch.setenv("REVERIE_DATA_DIR", "/from/env")
    monkeypatch.delenv("REVERIE_SOCKET", raising=False)
    cfg = config.load()
    assert str(cfg.data_path) == "/from/env"
    assert str(cfg.socket_path) == "/from/file.sock"


def test_missing_named_config_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REVERIE_CONFIG", "/nonexistent/reverie.toml")
    with pytest.raises(ConfigError, match="REVERIE_CONFIG"):
        config.load()


def test_daemon_refuses_bad_config_with_the_key_named(short_tmp: Path) -> None:
    d = Daemon(short_tmp, config="[daemon]\nmax_conections = 3\n")
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(30) == 2
    assert "max_conections" in d.log()


def test_the_readme_documents_every_key_with_its_default() -> None:
    """The README's configuration block parses and equals the embedded defaults."""
    import re

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = re.search(r"## Configuration.*?```toml\n(.*?)```", readme, re.S)
    assert block, "README.md must show the configuration as a toml block"
    documented = config.parse(block.group(1), "README.md")
    assert documented == config.Config()

    def check(section: str, value: object) -> None:
        for f in type(value).__struct_fields__:
            sub = getattr(value, f)
            if isinstance(sub, msgspec.Struct):  # a sub-table, e.g. [dreams.rem]
                assert re.search(rf"^\[{section}\.{f}\]", block.group(1), re.M), (section, f)
                check(f"{section}.{f}", sub)
            else:
                assert re.search(rf"^{f} = ", block.group(1), re.M), f"[{section}] {f} missing"

    for section in config.Config.__struct_fields__:
        check(section, getattr(config.Config(), section))


def test_rem_settings_mirror_rem_config() -> None:
    """[dreams.rem] (phases/settings.py) has rem.py's RemConfig fields and defaults."""
    from reverie.phases import rem, settings

    assert msgspec.to_builtins(settings.RemConfig()) == msgspec.to_builtins(rem.RemConfig())
    tuned = msgspec.convert({"duplicate_threshold": 0.8, "max_ops": 7}, settings.RemConfig)
    got = msgspec.convert(msgspec.to_builtins(tuned), rem.RemConfig)
    assert (got.duplicate_threshold, got.max_ops) == (0.8, 7)


def test_dream_phase_tables_are_checked() -> None:
    cfg = config.parse(
        "[dreams.light_sleep]\nhalf_life_days = 7.0\n[dreams.deep_sleep]\nmaintenance = false\n"
    )
    assert cfg.dreams.light_sleep.half_life_days == 7.0 and not cfg.dreams.deep_sleep.maintenance
    with pytest.raises(ConfigError, match="half_life"):
        config.parse("[dreams.light_sleep]\nhalf_life = 7.0\n")


def test_where_the_file_is_looked_for(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """REVERIE_CONFIG, else systemd's ConfigurationDirectory, else root's /etc, else XDG."""
    monkeypatch.delenv("REVERIE_CONFIG", raising=False)
    monkeypatch.setenv("CONFIGURATION_DIRECTORY", str(tmp_path / "etc-reverie"))
    assert config.default_config_file() == tmp_path / "etc-reverie" / "reverie.toml"
    monkeypatch.delenv("CONFIGURATION_DIRECTORY")
    monkeypatch.delenv("XDG_CONFIG_HOME", raising=False)
    monkeypatch.setattr(config.os, "getuid", lambda: 0)
    assert config.default_config_file() == Path("/etc/reverie/reverie.toml")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert config.default_config_file() == tmp_path / "xdg" / "reverie" / "reverie.toml"
    (tmp_path / "xdg" / "reverie").mkdir(parents=True)
    (tmp_path / "xdg" / "reverie" / "reverie.toml").write_text("[store]\nreaders = 2\n")
    assert config.load().store.readers == 2
