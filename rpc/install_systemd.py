"""`reverie install systemd`: write the systemd units with this machine's paths.

The units are rendered here, not copied from packaging/systemd/: the copies
shipped there are this module's output for a `reverie` command in
/usr/local/bin (system) or ~/.local/bin (user), and
tests/test_install_systemd.py keeps them equal: there is one source.

``--system`` writes ``reverie.service`` and ``reverie.socket`` to
/etc/systemd/system and the sysusers.d entry for the ``reverie`` user to
/etc/sysusers.d/reverie.conf. ``--user`` (the default: no root needed)
writes the user variants to ``$XDG_CONFIG_HOME/systemd/user``. ``--prefix``
stages everything under another root (packaging), ``--unit-dir`` puts the
units elsewhere. systemctl is never run: the commands to run next are
printed, because enabling a service is the operator's decision.

ExecStart is ``<sys.executable> -m reverie daemon``: the interpreter that
runs this command, whichever virtualenv or pyenv it lives in (a pyenv shim
or a PATH lookup would not survive systemd's empty PATH). ProtectHome=yes
would hide an interpreter (or an editable checkout) under /home or /root,
so then the system unit gets ProtectHome=tmpfs with read-only binds of
exactly those directories.

The user units sandbox with seccomp and prctl only: mount namespaces
(ProtectSystem=, PrivateTmp=...) would need unprivileged user namespaces in
a user manager, which many hosts disable, and they would hide the data dir
the CLI shares with the daemon (~/.local/state/reverie).

Every file written starts with MARKER: ``--uninstall`` removes a file only
if it does, and installing refuses to overwrite a file that does not.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from reverie.errors import UsageError
from reverie.rpc._cli_base import emit_json
from reverie.rpc.install_claude import _atomic_write

Scope = Literal["user", "system"]
MARKER = "# Written by `reverie install systemd`; `--uninstall` removes it."
SHIPPED_MARKER = (
    "# Shipped copy for `reverie` in {where}; `reverie install systemd`\n"
    "# writes these units with this machine's paths instead."
)
# Where `pip install` (as root) and `pip install --user` or pipx put the command.
SHIPPED_EXEC = {"system": "/usr/local/bin/reverie daemon", "user": "%h/.local/bin/reverie daemon"}
_SHIPPED_WHERE = {"system": "/usr/local/bin", "user": "~/.local/bin (pip --user, pipx)"}
# Directories that ProtectHome=yes makes empty and inaccessible.
HOME_DIRS = ("/home", "/root", "/run/user")

_SERVICE_HEAD = """\
[Unit]
Description=reverie memory daemon for AI agents
Documentation=https://pypi.org/project/reverie/
Requires=reverie.socket
After=reverie.socket

[Service]
# READY=1 once the socket accepts; WATCHDOG=1 every WatchdogSec/2.
Type=notify
NotifyAccess=main
ExecStart={exec_start}
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
# 78 (EX_CONFIG) means bad config, locked or foreign data: restarting cannot help.
RestartPreventExitStatus=78
WatchdogSec=30
TimeoutStopSec=30
UMask=0077
"""

_SANDBOX_COMMON = """\
NoNewPrivileges=yes
# Unix sockets only (the daemon's own, sd_notify, the journal). The http
# embedder needs the network: see packaging/systemd/README.md for a drop-in.
RestrictAddressFamilies=AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
# CPython, APSW, hnswlib and the lexical embedder never map memory both
# writable and executable: tests/test_install_systemd.py runs the daemon
# under the same seccomp filter. See packaging/systemd/README.md for torch.
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
# Not ~@resources: torch's OpenMP pins its threads (sched_setaffinity).
SystemCallFilter=~@privileged
SystemCallErrorNumber=EPERM
"""

_SYSTEM_SERVICE = (
    _SERVICE_HEAD
    + """
# The dedicated user comes from sysusers.d (reverie.sysusers).
User=reverie
Group=reverie
# The daemon keeps its data in $STATE_DIRECTORY (/var/lib/reverie) and, when
# started without the socket unit, binds $RUNTIME_DIRECTORY/reverie.sock.
StateDirectory=reverie
StateDirectoryMode=0700
RuntimeDirectory=reverie
RuntimeDirectoryMode=0755
RuntimeDirectoryPreserve=yes
CacheDirectory=reverie
CacheDirectoryMode=0700
ConfigurationDirectory=reverie
# The config is /etc/reverie/reverie.toml, read if present; the minilm
# embedder's model cache goes to /var/cache/reverie.
Environment=XDG_CONFIG_HOME=/etc XDG_CACHE_HOME=/var/cache/reverie HOME=/var/lib/reverie

# --- sandbox (`systemd-analyze security reverie.service`: README, "Running as a service")
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
{protect_home}PrivateTmp=yes
PrivateDevices=yes
DevicePolicy=closed
PrivateIPC=yes
PrivateMounts=yes
PrivateNetwork=yes
IPAddressDeny=any
ProtectHostname=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectProc=invisible
ProcSubset=pid
RemoveIPC=yes
KeyringMode=private
# Not PrivateUsers=: it would map every client but root to "nobody", and the
# daemon checks its clients' uids (daemon.allowed_uids).
"""
    + _SANDBOX_COMMON
    + """
[Install]
WantedBy=multi-user.target
Also=reverie.socket
"""
)

_SYSTEM_SOCKET = """\
# Socket activation: systemd listens and starts reverie.service on the first
# connection, passing the listening socket as fd 3 (LISTEN_FDS=1). Members of
# the group reverie may connect; the daemon itself answers only root, its own
# uid and the uids in daemon.allowed_uids.
[Unit]
Description=reverie memory daemon socket
Documentation=https://pypi.org/project/reverie/

[Socket]
ListenStream=/run/reverie/reverie.sock
SocketUser=reverie
SocketGroup=reverie
SocketMode=0660
DirectoryMode=0755
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""

_SYSUSERS = """\
# sysusers.d(5): the system user and group reverie runs as;
# `systemd-sysusers` creates them.
#Type Name    ID GECOS                   Home directory   Shell
u     reverie -  "reverie memory daemon" /var/lib/reverie /usr/sbin/nologin
"""

_USER_SERVICE = (
    _SERVICE_HEAD
    + """
# No StateDirectory=/RuntimeDirectory=: the daemon then uses the same paths
# as the CLI, $XDG_STATE_HOME/reverie and $XDG_RUNTIME_DIR/reverie/reverie.sock.

# --- sandbox: seccomp and prctl only, which need no privileges (see
# rpc/install_systemd.py for why there are no mount namespaces here).
"""
    + _SANDBOX_COMMON
    + """
[Install]
WantedBy=default.target
Also=reverie.socket
"""
)

_USER_SOCKET = """\
# Socket activation for `systemctl --user`: the socket the CLI looks for,
# $XDG_RUNTIME_DIR/reverie/reverie.sock, passed to reverie.service as fd 3.
[Unit]
Description=reverie memory daemon socket (user)
Documentation=https://pypi.org/project/reverie/

[Socket]
ListenStream=%t/reverie/reverie.sock
SocketMode=0600
DirectoryMode=0700
RemoveOnStop=yes

[Install]
WantedBy=sockets.target
"""


def unit_quote(word: str) -> str:
    """One ExecStart= word: systemd's specifiers (%) and variables ($) escaped, quoted if needed."""
    word = word.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word


def exec_start(python: str | None = None) -> str:
    return " ".join(unit_quote(w) for w in (python or sys.executable, "-m", "reverie", "daemon"))


def hidden_paths(python: str | None = None) -> list[str]:
    """Directories the daemon must read that ProtectHome=yes would hide (outermost only)."""
    import reverie

    exe = python or sys.executable
    candidates = {
        os.path.dirname(os.path.dirname(os.path.abspath(exe))),  # the venv or prefix
        os.path.dirname(os.path.dirname(os.path.realpath(exe))),  # the base interpreter's
        os.path.realpath(os.path.dirname(reverie.__file__)),  # an editable checkout
    }
    if python is None:
        candidates |= {sys.prefix, sys.base_prefix, sys.exec_prefix}
    hidden = sorted(
        p for p in candidates if any(p == h or p.startswith(h + "/") for h in HOME_DIRS)
    )
    return [p for p in hidden if not any(p.startswith(q + "/") for q in hidden if q != p)]


def render(scope: Scope, *, python: str | None = None, shipped: bool = False) -> dict[str, str]:
    """The files to write, by name, for the scope."""
    head = SHIPPED_MARKER.format(where=_SHIPPED_WHERE[scope]) if shipped else MARKER
    start = SHIPPED_EXEC[scope] if shipped else exec_start(python)
    if scope == "user":
        return {
            "reverie.service": f"{head}\n" + _USER_SERVICE.format(exec_start=start),
            "reverie.socket": f"{head}\n" + _USER_SOCKET,
        }
    binds = [] if shipped else hidden_paths(python)
    if binds:
        protect_home = (
            "# The interpreter (or checkout) lives under a home directory: keep it\n"
            "# visible, read-only, and hide the rest of /home, /root and /run/user.\n"
            "ProtectHome=tmpfs\n"
            f"BindReadOnlyPaths={' '.join(unit_quote(b) for b in binds)}\n"
        )
    else:
        protect_home = "ProtectHome=yes\n"
    return {
        "reverie.service": f"{head}\n"
        + _SYSTEM_SERVICE.format(exec_start=start, protect_home=protect_home),
        "reverie.socket": f"{head}\n" + _SYSTEM_SOCKET,
        "reverie.sysusers": f"{head}\n" + _SYSUSERS,
    }


@dataclass
class FileAction:
    path: Path
    action: str  # written, updated, unchanged, removed, absent, foreign
    content: str = ""


@dataclass
class Result:
    scope: Scope
    unit_dir: Path
    exec_start: str
    dry_run: bool
    uninstall: bool
    files: list[FileAction] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return any(f.action in ("written", "updated", "removed") for f in self.files)


def default_unit_dir(scope: Scope, prefix: Path | None) -> Path:
    if scope == "system":
        return _under(prefix, Path("/etc/systemd/system"))
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return _under(prefix, Path(config) / "systemd" / "user")


def _under(prefix: Path | None, path: Path) -> Path:
    return prefix / path.relative_to("/") if prefix else path


def targets(scope: Scope, unit_dir: Path, prefix: Path | None) -> dict[str, Path]:
    """Where each rendered file goes."""
    paths = {name: unit_dir / name for name in ("reverie.service", "reverie.socket")}
    if scope == "system":
        paths["reverie.sysusers"] = _under(prefix, Path("/etc/sysusers.d/reverie.conf"))
    return paths


def run(
    scope: Scope,
    *,
    unit_dir: str | None = None,
    prefix: str | None = None,
    uninstall: bool = False,
    dry_run: bool = False,
    python: str | None = None,
) -> Result:
    root = Path(prefix).absolute() if prefix else None
    udir = Path(unit_dir).absolute() if unit_dir else default_unit_dir(scope, root)
    files = render(scope, python=python)
    result = Result(scope, udir, exec_start(python), dry_run, uninstall)
    if uninstall:
        _check_disabled(scope, udir)
    paths = targets(scope, udir, root)
    # Look first, write after: a refused install writes nothing.
    planned = [_apply(p, files[n], uninstall=uninstall, dry_run=True) for n, p in paths.items()]
    foreign = [str(f.path) for f in planned if f.action == "foreign"]
    if foreign and not uninstall:
        raise UsageError(
            f"{', '.join(foreign)} exists and was not written by `reverie install systemd`; "
            "move it away first: reverie does not overwrite it"
        )
    if foreign:
        result.notes.append(f"left alone (not written by reverie): {', '.join(foreign)}")
    for name, path in paths.items():
        result.files.append(_apply(path, files[name], uninstall=uninstall, dry_run=dry_run))
    result.commands = _commands(result, root)
    if scope == "system" and not uninstall and hidden_paths(python):
        result.notes.append(
            "the Python running reverie lives under a home directory: the user reverie "
            "must be able to read it (or install reverie system-wide and run this again)"
        )
    return result


def _check_disabled(scope: Scope, unit_dir: Path) -> None:
    """Refuse to remove enabled units: disabling needs their [Install] sections."""
    enabled = sorted(str(p) for p in unit_dir.glob("*.wants/reverie.s*") if p.is_symlink())
    if enabled:
        ctl = "systemctl --user" if scope == "user" else "systemctl"
        raise UsageError(
            f"reverie is still enabled ({', '.join(enabled)}): run "
            f"`{ctl} disable --now reverie.socket reverie.service` first"
        )


def _apply(path: Path, content: str, *, uninstall: bool, dry_run: bool) -> FileAction:
    try:
        current: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read {path}: {e}") from e
    ours = current is not None and current.startswith(MARKER + "\n")
    if uninstall:
        if current is None:
            return FileAction(path, "absent")
        if not ours:
            return FileAction(path, "foreign")
        if not dry_run:
            path.unlink()
        return FileAction(path, "removed")
    if current == content:
        return FileAction(path, "unchanged", content)
    if current is not None and not ours:
        return FileAction(path, "foreign", content)
    if not dry_run:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, content.encode("utf-8"), 0o644)
        except OSError as e:
            raise UsageError(f"cannot write {path}: {e.strerror or e}") from e
    return FileAction(path, "written" if current is None else "updated", content)


def _commands(result: Result, prefix: Path | None) -> list[str]:
    """What the operator runs next (nothing here runs them)."""
    if prefix is not None:
        return []  # a staged tree: the package's scripts run these on the target
    ctl = "systemctl --user" if result.scope == "user" else "systemctl"
    units = "reverie.socket reverie.service"
    custom = result.unit_dir != default_unit_dir(result.scope, None)
    if result.uninstall:
        return [f"{ctl} daemon-reload"]  # disabled already: _check_disabled
    commands = []
    if result.scope == "system":
        sysusers = next(f.path for f in result.files if f.path.name == "reverie.conf")
        commands.append(f"systemd-sysusers {sysusers}")
    if custom:
        commands.append(f"{ctl} link {result.unit_dir / 'reverie.service'}")
        commands.append(f"{ctl} link {result.unit_dir / 'reverie.socket'}")
    commands.append(f"{ctl} daemon-reload")
    commands.append(f"{ctl} enable --now {units}")
    if result.scope == "user":
        commands.append("loginctl enable-linger  # optional: keep it running while logged out")
    return commands


def cmd(args: argparse.Namespace) -> int:
    """`reverie install systemd`, from rpc/cli_hook.py's install command."""
    if args.scope not in ("user", "system"):
        raise UsageError("install systemd takes --user or --system")
    result = run(
        args.scope,
        unit_dir=args.unit_dir,
        prefix=args.prefix,
        uninstall=args.uninstall,
        dry_run=args.dry_run,
    )
    if args.json:
        emit_json(
            {
                "scope": result.scope,
                "unit_dir": str(result.unit_dir),
                "exec_start": result.exec_start,
                "dry_run": result.dry_run,
                "uninstall": result.uninstall,
                "changed": result.changed,
                "files": [
                    {
                        "path": str(f.path),
                        "action": f.action,
                        "content": f.content if result.dry_run and not result.uninstall else None,
                    }
                    for f in result.files
                ],
                "commands": result.commands,
                "notes": result.notes,
            }
        )
        return 0
    would = "would be " if result.dry_run else ""
    for f in result.files:
        done = f.action in ("written", "updated", "removed")
        print(f"{f.path}: {would if done else ''}{f.action}")
        if result.dry_run and f.content and f.action != "unchanged":
            print("  " + f.content.rstrip("\n").replace("\n", "\n  "))
    for note in result.notes:
        print(f"note: {note}")
    if result.commands:
        print("next, run:" if not result.dry_run else "then you would run:")
        for command in result.commands:
            print(f"  {command}")
    return 0
