"""`reverie install claude-code`: wire reverie's hook into Claude Code's settings.

Claude Code reads hooks from settings.json files shaped like::

    {"hooks": {"PostToolUse": [{"matcher": "*",
                                "hooks": [{"type": "command", "command": "...",
                                           "timeout": 10}]}]}}

Installing adds, for each event reverie listens to, one matcher group of its
own holding one command hook; the user's groups are never touched. Our
entries are recognised by their command (``... reverie hook claude-code``),
whichever Python path they name, so installing again changes nothing (or
updates the command if this reverie lives in another environment now), and
``--uninstall`` removes exactly those hooks, plus the groups, event lists and
``hooks`` object that it left empty.

Which file: ``--user`` (the default) is ``~/.claude/settings.json`` (or
``$CLAUDE_CONFIG_DIR/settings.json``): memory is personal, the daemon is the
user's, and workspaces are told apart by the hook itself, so one entry
covers every project. ``--project`` is ``<git top level>/.claude/settings.json``
(shared with the team through git: the command names this machine's Python,
so prefer ``--local``, ``.claude/settings.local.json``, which git ignores).

The file is rewritten atomically (a temporary file, fsync, rename, next to
the real file when settings.json is a symlink into a dotfiles repository),
with 2-space indentation, the previous content kept as
``settings.json.reverie.bak``. A file that is not valid JSON, or not shaped
as above, is refused (exit 2), never overwritten.

The command is ``<absolute python> -m reverie hook claude-code``: the
absolute interpreter path works whatever PATH Claude Code's shell has and
whichever virtualenv reverie is installed in, and ``-m reverie hook`` takes
the fast path that skips the CLI's parser (a `reverie` console script would
import the whole CLI first: ~25 ms more on every prompt and tool call).
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from reverie.errors import UsageError

Scope = Literal["user", "project", "local"]

# Every hook event reverie records (rpc/hook_claude.py documents their payloads).
EVENTS = (
    "SessionStart",
    "UserPromptSubmit",
    "PreToolUse",
    "PostToolUse",
    "PostToolUseFailure",
    "Notification",
    "Stop",
    "SubagentStart",
    "SubagentStop",
    "PreCompact",
    "PostCompact",
    "SessionEnd",
)
# Events whose matcher is a tool name: "*" matches every tool. The others
# either take no matcher or match a subtype (startup/resume, manual/auto, an
# agent type) where leaving it out means all.
TOOL_EVENTS = frozenset({"PreToolUse", "PostToolUse", "PostToolUseFailure"})
# Claude Code's own limit for the command, in seconds (its default is 60).
# The hook bounds itself to 2.5 s; this is only the backstop.
TIMEOUT_S = 10
BACKUP_SUFFIX = ".reverie.bak"

_OURS = re.compile(r"(?:^|[\s/'\"])(?:-m\s+reverie|reverie)['\"]?\s+hook\s+claude-code(?:\s|$)")


def hook_command(python: str | None = None) -> str:
    return f"{shlex.quote(python or sys.executable)} -m reverie hook claude-code"


def is_ours(hook: object) -> bool:
    """Whether a hook entry is reverie's Claude Code hook (by its command)."""
    if not isinstance(hook, dict):
        return False
    command = hook.get("command")
    return isinstance(command, str) and _OURS.search(command) is not None


def settings_path(scope: Scope, cwd: str | None = None) -> Path:
    if scope == "user":
        base = os.environ.get("CLAUDE_CONFIG_DIR")
        return (Path(base).expanduser() if base else Path.home() / ".claude") / "settings.json"
    from reverie.rpc.workspace import workspace_for

    root = Path(workspace_for(cwd).root)  # the git top level, or the directory itself
    name = "settings.json" if scope == "project" else "settings.local.json"
    return root / ".claude" / name


@dataclass
class Plan:
    path: Path
    command: str
    action: str  # installed, updated, uninstalled, unchanged
    added: list[str] = field(default_factory=list)  # events given our hook
    updated: list[str] = field(default_factory=list)  # events whose hook command changed
    removed: list[str] = field(default_factory=list)  # events whose hook was removed
    settings: dict[str, Any] = field(default_factory=dict)  # the content to write
    existed: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)


def load(path: Path) -> tuple[dict[str, Any], bool]:
    """The settings in ``path`` ({} if there is no file) and whether it existed."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, False
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {e}") from e
    if not text.strip():
        return {}, True
    try:
        settings = json.loads(text)
    except ValueError as e:
        raise UsageError(
            f"{path} is not valid JSON ({e}); fix it (or move it away) and run this again: "
            "reverie does not overwrite a file it cannot read"
        ) from e
    if not isinstance(settings, dict):
        raise UsageError(f"{path} does not hold a JSON object; not touching it")
    return settings, True


def plan(settings: dict[str, Any], command: str, *, uninstall: bool = False) -> Plan:
    """What installing (or uninstalling) does to ``settings``; the input is not modified."""
    new = copy.deepcopy(settings)
    result = Plan(Path(), command, "unchanged", settings=new)
    hooks = new.get("hooks")
    if hooks is None:
        if uninstall:
            return result
        hooks = new["hooks"] = {}
    if not isinstance(hooks, dict):
        raise UsageError('"hooks" in the settings is not an object; not touching it')
    if uninstall:
        _remove(hooks, result)
        if result.removed and not hooks:
            del new["hooks"]
        result.action = "uninstalled" if result.removed else "unchanged"
    else:
        for event in EVENTS:
            _install(hooks, event, command, result)
        if result.added:
            result.action = "installed"
        elif result.updated:
            result.action = "updated"
    return result


def _groups(hooks: dict[str, Any], event: str) -> list[Any]:
    groups = hooks.setdefault(event, [])
    if not isinstance(groups, list):
        raise UsageError(f'"hooks.{event}" in the settings is not a list; not touching it')
    return groups


def _install(hooks: dict[str, Any], event: str, command: str, result: Plan) -> None:
    groups = _groups(hooks, event)
    found = False
    for group in groups:
        entries = group.get("hooks") if isinstance(group, dict) else None
        if not isinstance(entries, list):
            continue
        for entry in list(entries):
            if not is_ours(entry):
                continue
            if found:  # a duplicate (two installs from other versions): one is enough
                entries.remove(entry)
                continue
            found = True
            if entry.get("command") != command or entry.get("type") != "command":
                entry.update(type="command", command=command)
                result.updated.append(event)
    _drop_empty(groups)
    if not found:
        ours: dict[str, Any] = {"matcher": "*"} if event in TOOL_EVENTS else {}
        ours["hooks"] = [{"type": "command", "command": command, "timeout": TIMEOUT_S}]
        groups.append(ours)
        result.added.append(event)


def _remove(hooks: dict[str, Any], result: Plan) -> None:
    for event in list(hooks):
        groups = hooks[event]
        if not isinstance(groups, list):
            continue  # not ours to judge
        removed = False
        for group in groups:
            entries = group.get("hooks") if isinstance(group, dict) else None
            if isinstance(entries, list) and any(is_ours(e) for e in entries):
                entries[:] = [e for e in entries if not is_ours(e)]
                removed = True
        if removed:
            _drop_empty(groups)
            result.removed.append(event)
            if not groups:
                del hooks[event]


def _drop_empty(groups: list[Any]) -> None:
    """Remove the groups whose hook list we emptied."""
    groups[:] = [
        g
        for g in groups
        if not (isinstance(g, dict) and isinstance(g.get("hooks"), list) and not g["hooks"])
    ]


def render(settings: dict[str, Any]) -> str:
    return json.dumps(settings, indent=2, ensure_ascii=False) + "\n"


def write(path: Path, settings: dict[str, Any]) -> Path | None:
    """Replace ``path`` atomically with ``settings``; return the backup's path (if any).

    A symlink is followed: the file it points to is replaced, the link stays.
    """
    target = Path(os.path.realpath(path))
    target.parent.mkdir(parents=True, exist_ok=True)
    backup = None
    try:
        mode = target.stat().st_mode & 0o777
        backup = target.with_name(target.name + BACKUP_SUFFIX)
        _atomic_write(backup, target.read_bytes(), mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    _atomic_write(target, render(settings).encode("utf-8"), mode)
    return backup


def _atomic_write(target: Path, data: bytes, mode: int) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fchmod(f.fileno(), mode)
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def run(
    scope: Scope,
    *,
    uninstall: bool = False,
    dry_run: bool = False,
    python: str | None = None,
    cwd: str | None = None,
) -> tuple[Plan, Path | None]:
    """Install (or uninstall) into the scope's settings file; (plan, backup path)."""
    path = settings_path(scope, cwd)
    settings, existed = load(path)
    try:
        result = plan(settings, hook_command(python), uninstall=uninstall)
    except UsageError as e:
        raise UsageError(f"{path}: {e.message}") from e
    result.path, result.existed = path, existed
    backup = None
    if result.changed and not dry_run:
        backup = write(path, result.settings)
    return result, backup
