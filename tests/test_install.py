"""`reverie install claude-code`: real settings files in temporary homes and projects."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from reverie.rpc import install_claude

USER_SETTINGS: dict[str, Any] = {
    "model": "opus",
    "permissions": {"allow": ["Bash(npm test:*)"], "deny": []},
    "hooks": {
        "PreToolUse": [
            {
                "matcher": "Bash",
                "hooks": [{"type": "command", "command": "~/bin/check-bash.sh", "timeout": 5}],
            }
        ],
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send done"}]}],
    },
    "env": {"FOO": "bar"},
}


class Env:
    def __init__(self, root: Path) -> None:
        self.home = root / "home"
        self.home.mkdir()
        skip = ("CLAUDE_", "REVERIE_")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(skip)}
        self.env["HOME"] = str(self.home)
        self.user_file = self.home / ".claude" / "settings.json"

    def run(self, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "reverie", "install", "claude-code", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=cwd or self.home,
            timeout=60,
        )

    def ok(self, *args: str, cwd: Path | None = None) -> dict[str, Any]:
        out = self.run(*args, "--json", cwd=cwd)
        assert out.returncode == 0, out.stderr
        result: dict[str, Any] = json.loads(out.stdout)
        return result


@pytest.fixture
def env(short_tmp: Path) -> Env:
    return Env(short_tmp)


def ours(settings: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """{event: [our hook entries]}."""
    found: dict[str, list[dict[str, Any]]] = {}
    for event, groups in settings.get("hooks", {}).items():
        for group in groups:
            for h in group.get("hooks", []):
                if install_claude.is_ours(h):
                    found.setdefault(event, []).append(h)
    return found


def write(path: Path, settings: Any) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = (json.dumps(settings, indent=4) if not isinstance(settings, str) else settings).encode()
    path.write_bytes(data)
    return data


def test_install_keeps_the_users_settings_and_is_idempotent(env: Env) -> None:
    original = write(env.user_file, USER_SETTINGS)
    res = env.ok()
    assert res["action"] == "installed" and res["settings"] == str(env.user_file)
    assert res["added"] == list(install_claude.EVENTS)
    text = env.user_file.read_text()
    assert text.startswith('{\n  "model": "opus",') and text.endswith("}\n")  # 2-space JSON
    settings = json.loads(text)
    # Everything the user had is still there, in place.
    assert [k for k in settings] == ["model", "permissions", "hooks", "env"]
    assert {k: v for k, v in settings.items() if k != "hooks"} == {
        k: v for k, v in USER_SETTINGS.items() if k != "hooks"
    }
    assert settings["hooks"]["PreToolUse"][0] == USER_SETTINGS["hooks"]["PreToolUse"][0]
    assert settings["hooks"]["Stop"][0] == USER_SETTINGS["hooks"]["Stop"][0]
    # One entry of ours per event, in a group of its own.
    mine = ours(settings)
    assert set(mine) == set(install_claude.EVENTS)
    assert all(len(v) == 1 for v in mine.values())
    command = f"{sys.executable} -m reverie hook claude-code"
    assert {h["command"] for v in mine.values() for h in v} == {command}
    assert settings["hooks"]["PostToolUse"] == [
        {"matcher": "*", "hooks": [{"type": "command", "command": command, "timeout": 10}]}
    ]
    backup = Path(res["backup"])
    assert backup.read_bytes() == original
    # Again: nothing changes, not even the backup.
    before = env.user_file.read_bytes()
    again = env.ok()
    assert again["action"] == "unchanged" and again["backup"] is None
    assert env.user_file.read_bytes() == before and backup.read_bytes() == original


def test_uninstall_removes_exactly_what_install_added(env: Env) -> None:
    write(env.user_file, USER_SETTINGS)
    env.ok()
    res = env.ok("--uninstall")
    assert res["action"] == "uninstalled" and set(res["removed"]) == set(install_claude.EVENTS)
    assert json.loads(env.user_file.read_text()) == USER_SETTINGS
    assert env.ok("--uninstall")["action"] == "unchanged"
    # From settings without any hooks: uninstalling leaves no trace of "hooks".
    write(env.user_file, {"model": "opus"})
    env.ok()
    env.ok("--uninstall")
    assert json.loads(env.user_file.read_text()) == {"model": "opus"}


def test_a_missing_file_is_created_and_text_output(env: Env) -> None:
    out = env.run()
    assert out.returncode == 0, out.stderr
    assert "added reverie's hook for 12 events" in out.stdout
    assert set(ours(json.loads(env.user_file.read_text()))) == set(install_claude.EVENTS)
    assert not (env.user_file.parent / "settings.json.reverie.bak").exists()
    assert "already installed" in env.run().stdout


@pytest.mark.parametrize(
    "content",
    [
        '{"hooks": {"Stop": [}',  # not JSON
        "// a comment\n{}",
        "[1, 2]",  # not an object
        '{"hooks": []}',  # hooks not an object
        '{"hooks": {"Stop": {"command": "x"}}}',  # an event not a list
    ],
)
def test_a_file_it_cannot_read_is_refused_untouched(env: Env, content: str) -> None:
    original = write(env.user_file, content)
    for args in ((), ("--uninstall",)):
        out = env.run(*args)
        if args and content.startswith('{"hooks": {"Stop": {'):
            # Uninstall has nothing of ours to find in a list it cannot read: no change.
            assert out.returncode == 0
            continue
        assert out.returncode == 2, (args, out)
        assert str(env.user_file) in out.stderr and "reverie: error:" in out.stderr
        assert out.stdout == ""
    assert env.user_file.read_bytes() == original
    assert not (env.user_file.parent / "settings.json.reverie.bak").exists()


def test_an_older_install_is_updated_not_duplicated(env: Env) -> None:
    old = "/old/venv/bin/python -m reverie hook claude-code"
    settings = {
        "hooks": {
            "Stop": [
                {"hooks": [{"type": "command", "command": old, "timeout": 3}]},
                {"hooks": [{"type": "command", "command": "reverie hook claude-code"}]},
            ],
            "SessionStart": [
                {
                    "hooks": [
                        {"type": "command", "command": "echo hi"},
                        {"type": "command", "command": old},
                    ]
                }
            ],
        }
    }
    write(env.user_file, settings)
    res = env.ok()
    assert set(res["updated"]) == {"Stop", "SessionStart"}
    assert set(res["added"]) == set(install_claude.EVENTS) - {"Stop", "SessionStart"}
    new = json.loads(env.user_file.read_text())
    command = install_claude.hook_command()
    assert new["hooks"]["Stop"] == [
        {"hooks": [{"type": "command", "command": command, "timeout": 3}]}  # the timeout kept
    ]
    echo = {"type": "command", "command": "echo hi"}
    assert new["hooks"]["SessionStart"] == [
        {"hooks": [echo, {"type": "command", "command": command}]}
    ]
    env.ok("--uninstall")
    assert json.loads(env.user_file.read_text())["hooks"] == {
        "SessionStart": [{"hooks": [{"type": "command", "command": "echo hi"}]}]
    }


def test_project_and_local_scopes(env: Env, short_tmp: Path) -> None:
    repo = short_tmp / "repo"
    (repo / "src" / "deep").mkdir(parents=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    res = env.ok("--project", cwd=repo / "src" / "deep")
    project_file = repo / ".claude" / "settings.json"
    assert res["settings"] == str(project_file) and project_file.is_file()
    res = env.ok("--local", cwd=repo / "src")
    assert res["settings"] == str(repo / ".claude" / "settings.local.json")
    assert not env.user_file.exists()  # --user was not touched
    plain = short_tmp / "plain"
    plain.mkdir()
    assert env.ok("--project", cwd=plain)["settings"] == str(plain / ".claude" / "settings.json")
    out = env.run("--project", "--user")
    assert out.returncode == 2 and "not allowed with" in out.stderr


def test_dry_run_writes_nothing(env: Env) -> None:
    original = write(env.user_file, USER_SETTINGS)
    res = env.ok("--dry-run")
    assert res["dry_run"] and res["action"] == "installed" and res["backup"] is None
    assert set(ours(res["content"])) == set(install_claude.EVENTS)
    assert env.user_file.read_bytes() == original
    text = env.run("--dry-run")
    assert "would be added" in text.stdout and '"hooks": {' in text.stdout
    assert env.user_file.read_bytes() == original
    assert [p.name for p in env.user_file.parent.iterdir()] == ["settings.json"]


def test_a_symlinked_settings_file_stays_a_symlink(env: Env, short_tmp: Path) -> None:
    dotfiles = short_tmp / "dotfiles" / "claude-settings.json"
    write(dotfiles, {"model": "opus"})
    os.chmod(dotfiles, 0o600)
    env.user_file.parent.mkdir(parents=True)
    env.user_file.symlink_to(dotfiles)
    env.ok()
    assert env.user_file.is_symlink() and env.user_file.resolve() == dotfiles
    assert set(ours(json.loads(dotfiles.read_text()))) == set(install_claude.EVENTS)
    assert stat.S_IMODE(dotfiles.stat().st_mode) == 0o600  # the mode kept


def test_claude_config_dir_is_honoured(env: Env, short_tmp: Path) -> None:
    env.env["CLAUDE_CONFIG_DIR"] = str(short_tmp / "cc")
    assert env.ok()["settings"] == str(short_tmp / "cc" / "settings.json")
    assert not env.user_file.exists()


def test_the_installed_command_runs(env: Env, short_tmp: Path) -> None:
    """Run the hook exactly as Claude Code would: the command through a shell."""
    env.ok()
    settings = json.loads(env.user_file.read_text())
    command = settings["hooks"]["UserPromptSubmit"][0]["hooks"][0]["command"]
    payload = {
        "session_id": "s",
        "cwd": str(short_tmp),
        "hook_event_name": "UserPromptSubmit",
        "prompt": "what did we decide about the cache?",
    }
    out = subprocess.run(
        command,
        shell=True,
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=30,
        env={
            **env.env,
            "REVERIE_SOCKET": str(short_tmp / "none.sock"),
            "REVERIE_SPOOL_DIR": str(short_tmp / "spool"),
        },
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, "", "")
    assert len(list((short_tmp / "spool").glob("*.jsonl"))) == 1


def test_is_ours_recognises_only_reverie_hook_commands() -> None:
    yes = [
        "/usr/bin/python3 -m reverie hook claude-code",
        "'/path with space/python' -m reverie hook claude-code",
        "reverie hook claude-code",
        "/home/u/.local/bin/reverie hook claude-code --socket /x",
        "REVERIE_CAPTURE=off python -m reverie hook claude-code",
    ]
    no = [
        "reverie hook generic --event x",
        "python -m reverie search x",
        "myreverie hook claude-code",
        "echo reverie hook claude-codex",
        "",
    ]
    assert all(install_claude.is_ours({"command": c}) for c in yes)
    assert not any(install_claude.is_ours({"command": c}) for c in no)
    assert not install_claude.is_ours({"type": "command"}) and not install_claude.is_ours("x")


def test_the_contrib_example_is_what_install_writes() -> None:
    example = Path(__file__).resolve().parents[1] / "contrib" / "claude-code" / "settings.json"
    text = example.read_text().replace("/usr/bin/python3", sys.executable)
    written = install_claude.plan({}, install_claude.hook_command()).settings
    assert json.loads(text) == written
