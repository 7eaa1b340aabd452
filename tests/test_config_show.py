"""The example config, `reverie config show` (values and their sources) and `config check`."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import msgspec
import pytest
from harness import run_reverie
from reverie.daemon import config
from reverie.daemon import config_sources as cs

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "packaging" / "reverie.toml"


def _uncommented(text: str) -> str:
    # Settings are written `#key = value`; prose comments have a space after `#`.
    return re.sub(r"^#([A-Za-z_][A-Za-z0-9_]* = )", r"\1", text, flags=re.M)


def _struct_keys(tp: type[msgspec.Struct], prefix: str = "") -> list[str]:
    """Every leaf key of the Config tree, from the types (not from an instance)."""
    keys: list[str] = []
    for f in msgspec.structs.fields(tp):
        t = f.type
        if isinstance(t, type) and issubclass(t, msgspec.Struct):
            keys += _struct_keys(t, f"{prefix}{f.name}.")
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def _dig(tree: dict[str, Any], key: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def test_the_example_lists_every_key_with_its_default() -> None:
    text = EXAMPLE.read_text()
    # As shipped, every setting is commented out: the file means "the defaults".
    assert config.parse(text, str(EXAMPLE)) == config.Config()
    uncommented = _uncommented(text)
    raw = tomllib.loads(uncommented)
    defaults = dict(cs.leaves(config.Config()))
    missing, differ = [], []
    for key in _struct_keys(config.Config):
        found, value = _dig(raw, key)
        if not found:
            missing.append(key)
        elif value != msgspec.to_builtins(defaults[key]):
            differ.append((key, value, defaults[key]))
    assert not missing, f"keys missing from packaging/reverie.toml: {missing}"
    assert not differ, f"defaults differ in packaging/reverie.toml: {differ}"
    # ...and uncommented whole, it is accepted and is exactly the defaults.
    assert config.parse(uncommented, "uncommented") == config.Config()


def test_the_drift_check_would_catch_a_missing_key() -> None:
    text = _uncommented(EXAMPLE.read_text())
    raw = tomllib.loads(re.sub(r"^ef_construction = .*$", "", text, flags=re.M))
    assert not _dig(raw, "index.ef_construction")[0] and _dig(raw, "index.ef")[0]


def test_sources_default_file_env_flag(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text(
        "[daemon]\nsocket = '/file.sock'\nlog_level = 'warning'\n"
        "[search]\nmode = 'lexical'\n[dreams.light_sleep]\nhalf_life_days = 3.0\n"
        "[dreams.phases.rem]\ncron = 'off'\n"
    )
    monkeypatch.setenv("REVERIE_CONFIG", str(f))
    monkeypatch.setenv("REVERIE_LOG_LEVEL", "error")
    monkeypatch.delenv("REVERIE_SOCKET", raising=False)
    monkeypatch.delenv("REVERIE_DATA_DIR", raising=False)
    got = cs.LoadSpec(flags=cs.Flags(data_dir="/flag/data")).load_sourced()
    assert got.file == f
    assert got.source("daemon.socket") == f"file {f}"
    assert got.source("search.mode") == f"file {f}"
    assert got.source("dreams.light_sleep.half_life_days") == f"file {f}"
    assert got.source("dreams.phases") == f"file {f}"  # a map is one key
    assert got.source("daemon.log_level") == "env REVERIE_LOG_LEVEL"
    assert got.config.daemon.log_level == "error"
    assert got.source("daemon.data_dir") == "flag --data-dir"
    assert got.config.daemon.data_dir == "/flag/data"
    assert got.source("store.readers") == "default"
    # A flag beats the environment, which beats the file.
    flagged = cs.LoadSpec(flags=cs.Flags(log_level="debug")).load_sourced()
    assert flagged.config.daemon.log_level == "debug"
    assert flagged.source("daemon.log_level") == "flag --log-level"


def test_secrets_are_masked_by_name() -> None:
    for key in ("embedder.api_key", "dreams.rem.llm.api_key", "x.token", "y.db_password"):
        assert cs.is_secret(key) and cs.mask(key, "sk-123") == "***", key
    for key in ("embedder.api_key_env", "dreams.rem.llm.api_key_env", "embedder.model"):
        assert not cs.is_secret(key) and cs.mask(key, "VAR") == "VAR", key
    assert cs.mask("embedder.api_key", "") == ""  # unset stays visibly unset
    cfg = config.parse("[embedder]\nname = 'http'\nurl = 'http://x'\napi_key = 'sk-secret'\n")
    assert cs.masked(cfg)["embedder"]["api_key"] == "***"
    assert "sk-secret" not in json.dumps(cs.masked(cfg))


def test_bad_key_names_the_dotted_key() -> None:
    cases = {
        "[daemon]\nsockte = '/x'\n": "daemon.sockte",
        "[daemon]\nmax_connections = 0\n": "daemon.max_connections",
        "[dreams.light_sleep]\nhalf_life = 7.0\n": "dreams.light_sleep.half_life",
        "[dreams.light_sleep]\nhalf_life_days = 'x'\n": "dreams.light_sleep.half_life_days",
        "[nope]\n": "nope",
    }
    for text, key in cases.items():
        with pytest.raises(config.ConfigError) as e:
            config.parse(text, "t.toml")
        assert cs.bad_key(e.value.message) == key, (text, e.value.message)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("REVERIE_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "xdg"), XDG_STATE_HOME=str(tmp_path / "state"))
    env.update(XDG_RUNTIME_DIR=str(tmp_path / "run"))
    env.update(extra)
    return env


def test_config_show_cli(tmp_path: Path) -> None:
    f = tmp_path / "r.toml"
    f.write_text(
        "[embedder]\nname = 'http'\nurl = 'http://127.0.0.1:9'\napi_key = 'sk-live-abcdef'\n"
        "[sessions]\nstale_after_s = 60.0\n"
    )
    env = _env(tmp_path, REVERIE_CONFIG=str(f), REVERIE_SOCKET="/env/r.sock")
    out = run_reverie("config", "show", "--json", "--log-level", "debug", env=env)
    assert out.returncode == 0, out.stderr
    assert "sk-live-abcdef" not in out.stdout
    doc = json.loads(out.stdout)
    assert doc["file"] == str(f)
    assert doc["config"]["embedder"]["api_key"] == "***"
    assert doc["config"]["sessions"]["stale_after_s"] == 60.0
    assert doc["config"]["daemon"]["data_dir"] == str(tmp_path / "state" / "reverie")
    src = doc["sources"]
    assert set(src) == set(dict(cs.leaves(config.Config())))  # every key, one source each
    assert src["sessions.stale_after_s"] == f"file {f}"
    assert src["daemon.socket"] == "env REVERIE_SOCKET"
    assert src["daemon.log_level"] == "flag --log-level"
    assert src["index.m"] == "default"
    # The text form is TOML: it parses back into the effective config (secret masked).
    text = run_reverie("config", "show", "--config", str(f), env=env)
    assert text.returncode == 0, text.stderr
    assert "sk-live-abcdef" not in text.stdout
    assert re.search(r"^stale_after_s = 60\.0  # file .*r\.toml$", text.stdout, re.M)
    back = config.parse(text.stdout)
    assert back.sessions.stale_after_s == 60.0 and back.embedder.api_key == "***"
    assert back.daemon.socket == "/env/r.sock"


def test_config_check_cli(tmp_path: Path) -> None:
    env = _env(tmp_path)
    good = tmp_path / "good.toml"
    good.write_text("[search]\nmode = 'lexical'\n")
    out = run_reverie("config", "check", str(good), env=env)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
    shipped = run_reverie("config", "check", str(EXAMPLE), "--json", env=env)
    assert json.loads(shipped.stdout) == {
        "ok": True,
        "file": str(EXAMPLE),
        "key": "",
        "error": "",
        "keys_set": [],
    }
    bad = tmp_path / "bad.toml"
    bad.write_text("[search]\nmode = 'lexical'\n[dreams.rem]\nduplicate_treshold = 0.8\n")
    out = run_reverie("config", "check", str(bad), env=env)
    assert out.returncode == 1
    assert "bad key: dreams.rem.duplicate_treshold" in out.stderr
    out = run_reverie("config", "check", "--json", str(bad), env=env)
    doc = json.loads(out.stdout)
    assert out.returncode == 1 and doc["ok"] is False
    assert doc["key"] == "dreams.rem.duplicate_treshold"
    # Without FILE: the file the daemon would read, environment included.
    out = run_reverie("config", "check", env=_env(tmp_path, REVERIE_CONFIG=str(bad)))
    assert out.returncode == 1 and "duplicate_treshold" in out.stderr
    out = run_reverie("config", "check", env=_env(tmp_path, REVERIE_LOG_LEVEL="loud"))
    assert out.returncode == 1 and "REVERIE_LOG_LEVEL" in out.stderr
    out = run_reverie("config", "check", "--json", env=env)
    assert out.returncode == 0 and json.loads(out.stdout)["file"] is None
