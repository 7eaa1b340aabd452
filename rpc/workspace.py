"""Workspace identity: which project a path belongs to.

A workspace is what memories, sessions, claims and the world state are kept
per. Its id comes from what the code *is*, not from the folder it sits in:

1. The path (default: the current directory) is made absolute and resolved
   (symlinks followed); a file stands for its directory.
2. Walking up from there, the first ``.git`` found (a directory, or a
   ``gitdir:`` file as in linked worktrees, submodules and
   ``--separate-git-dir``) makes the path part of that repository, as git
   itself decides.
3. The remote names the repository: ``origin``, else the first remote by name.
   Its URL is normalised so that every spelling of one repository gives one
   id: credentials, port, scheme and a trailing ``.git`` or ``/`` are dropped,
   ``git@host:owner/repo``, ``ssh://git@host:22/owner/repo`` and
   ``https://user:token@host/owner/repo.git`` all become
   ``git:host/owner/repo``. Hosts are lower-cased; paths are lower-cased on
   hosts that ignore case (GitHub, GitLab.com, Bitbucket, Codeberg, Azure
   DevOps); ``ssh.github.com``-style SSH-over-443 hosts map to their site. A
   remote that is a local path (``/srv/git/app.git``, ``file:///...``) gives
   ``git:/srv/git/app``. So two clones of one repository, in folders of any
   name, share a workspace, and two repositories that happen to share a folder
   name do not.
4. A linked worktree (``git worktree add``) belongs to its main repository:
   same remote, same id. Without a remote, the id is the main repository's
   top level, ``path:/abs/main`` (for a bare main repository, its directory),
   so worktrees still share it; ``git init`` in a folder that was already a
   workspace keeps its id.
5. Outside git, the id is the resolved directory itself: ``path:/abs/dir``.

Nothing here raises: a missing ``git`` binary, an unreadable or broken
repository (a worktree whose main repository was deleted, a garbled
``.git`` file) falls back to rule 5. Identity depends on the path only:
``GIT_DIR``/``GIT_WORK_TREE`` in the caller's environment are ignored, as are
``url.*.insteadOf`` rewrites and ``include`` files in git's configuration.

By default the repository files are read directly (a few ``stat`` calls and
two small reads, tens of microseconds); ``method="git"`` asks a ``git``
subprocess for the top level and common directory instead (milliseconds:
the Claude Code hook cannot afford it).
"""

from __future__ import annotations

import os
import re
from typing import Literal, NamedTuple

__all__ = ["Workspace", "normalize_remote", "workspace_for"]


class Workspace(NamedTuple):
    """Where a path belongs.

    ``id`` is the stable key (``git:github.com/owner/repo``, ``git:/srv/git/app``
    or ``path:/abs/dir``); ``label`` is a short human name (the repository's or
    the folder's); ``root`` is the top level of the working tree holding the
    path (a linked worktree's own folder), or the directory outside git;
    ``remote`` is the normalised remote, if any; ``git`` says whether the path
    is inside a git working tree.
    """

    id: str
    label: str
    root: str
    remote: str | None
    git: bool


class _Repo(NamedTuple):
    toplevel: str  # the working tree holding the path
    common_dir: str  # the main repository's git directory
    main: str  # the main repository's top level (or bare directory)


def workspace_for(
    path: str | os.PathLike[str] | None = None, *, method: Literal["files", "git"] = "files"
) -> Workspace:
    """The workspace of ``path`` (default: the current directory); never raises."""
    where = _resolve(path)
    try:
        repo = _find_repo(where) if method == "files" else _ask_git(where)
        if repo is None:
            return _outside(where)
        remote = _remote_of(repo)
    except (OSError, ValueError, UnicodeError):
        return _outside(where)
    if remote is not None:
        name = remote.rstrip("/").rsplit("/", 1)[-1]
        return Workspace(f"git:{remote}", name, repo.toplevel, remote, True)
    return Workspace(f"path:{repo.main}", _basename(repo.main), repo.toplevel, None, True)


def _resolve(path: str | os.PathLike[str] | None) -> str:
    try:
        raw = os.fspath(path) if path is not None else os.getcwd()
        resolved = os.path.realpath(raw)
        return os.path.dirname(resolved) if os.path.isfile(resolved) else resolved
    except (OSError, ValueError, TypeError):
        # No current directory (deleted under us) or an unusable path.
        return _deleted_cwd()


def _deleted_cwd() -> str:
    """Where the deleted working directory was.

    Linux still names it in /proc/self/cwd. $PWD is used only if it is gone
    too: a $PWD that exists is some other directory (a parent process's
    shell, or a stale value after chdir), not ours.
    """
    try:
        return os.readlink("/proc/self/cwd").removesuffix(" (deleted)")
    except OSError:
        pass
    pwd = os.environ.get("PWD")
    if pwd and not os.path.exists(pwd):
        return os.path.abspath(pwd)
    return os.sep


def _outside(where: str) -> Workspace:
    return Workspace(f"path:{where}", _basename(where), where, None, False)


def _basename(path: str) -> str:
    return os.path.basename(path.rstrip(os.sep)) or path


# ---------------------------------------------------------------------------
# Finding the repository: by reading files, or by asking git


def _find_repo(start: str) -> _Repo | None:
    directory = start
    while True:
        dotgit = os.path.join(directory, ".git")
        if os.path.isdir(dotgit):
            return _repo_from_gitdir(directory, dotgit)
        if os.path.isfile(dotgit):
            return _repo_from_gitdir(directory, _read_gitdir_file(dotgit))
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent


def _read_gitdir_file(dotgit: str) -> str:
    """The git directory a ``.git`` file points to (``gitdir: <path>``)."""
    with open(dotgit, encoding="utf-8") as f:
        line = f.readline(4096).strip()
    if not line.startswith("gitdir:"):
        raise ValueError(f"{dotgit} is not a gitdir file")
    target = line[len("gitdir:") :].strip()
    return os.path.normpath(os.path.join(os.path.dirname(dotgit), target))


def _repo_from_gitdir(toplevel: str, gitdir: str) -> _Repo:
    if not os.path.isfile(os.path.join(gitdir, "HEAD")):
        raise ValueError(f"{gitdir} is not a git directory")  # a dangling worktree
    commondir_file = os.path.join(gitdir, "commondir")
    if not os.path.isfile(commondir_file):
        # Its own repository: a plain clone, a submodule, --separate-git-dir.
        return _Repo(toplevel, gitdir, toplevel)
    with open(commondir_file, encoding="utf-8") as f:
        common = os.path.realpath(os.path.join(gitdir, f.readline(4096).strip()))
    return _Repo(toplevel, common, _main_of(common))


def _main_of(common_dir: str) -> str:
    """The main repository's top level for a common git directory."""
    if os.path.basename(common_dir) == ".git":
        return os.path.dirname(common_dir)
    return common_dir  # a bare repository (or a submodule's modules/ entry)


def _ask_git(start: str) -> _Repo | None:
    """The same facts from `git rev-parse`: one subprocess, milliseconds."""
    import subprocess  # costs ~10 ms to import; only this path needs it

    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        done = subprocess.run(
            ["git", "-C", start, "rev-parse", "--show-toplevel", "--git-dir", "--git-common-dir"],
            capture_output=True,
            text=True,
            env=env,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None  # no git binary, or it hung
    lines = done.stdout.splitlines()
    if done.returncode != 0 or len(lines) != 3:
        return None
    toplevel, gitdir, common = (os.path.realpath(os.path.join(start, p)) for p in lines)
    if common == gitdir:
        return _Repo(toplevel, common, toplevel)
    return _Repo(toplevel, common, _main_of(common))


# ---------------------------------------------------------------------------
# The remote


def _remote_of(repo: _Repo) -> str | None:
    try:
        path = os.path.join(repo.common_dir, "config")
        with open(path, encoding="utf-8", errors="replace") as f:
            remotes = _remotes(f.read(1 << 20))
    except OSError:
        return None  # no config, or unreadable: the repository is still known
    if not remotes:
        return None
    url = remotes.get("origin") or remotes[min(remotes)]
    return normalize_remote(url, base=repo.main)


_SECTION = re.compile(r'\s*\[\s*([A-Za-z0-9.-]+)(?:\s+"((?:[^"\\]|\\.)*)")?\s*\]')
_KEY = re.compile(r"\s*([A-Za-z][A-Za-z0-9-]*)\s*(=?)")


def _remotes(config: str) -> dict[str, str]:
    """``{name: first url}`` of the ``[remote "name"]`` sections of a git config."""
    remotes: dict[str, str] = {}
    current: str | None = None
    lines = iter(config.splitlines())
    for line in lines:
        while line.endswith("\\") and not line.endswith("\\\\"):  # continuation
            line = line[:-1] + next(lines, "")
        section = _SECTION.match(line)
        if section:
            name, sub = section.group(1), section.group(2)
            if sub is not None:
                current = re.sub(r"\\(.)", r"\1", sub) if name.lower() == "remote" else None
            elif name.lower().startswith("remote."):
                current = name[len("remote.") :].lower()  # deprecated [remote.origin]
            else:
                current = None
            rest = line[section.end() :]
            if not rest.strip() or rest.lstrip()[0] in "#;":
                continue
            line = rest
        if current is None:
            continue
        key = _KEY.match(line)
        if key and key.group(1).lower() == "url" and key.group(2):
            url = _config_value(line[key.end() :])
            if url and current not in remotes:
                remotes[current] = url
    return remotes


def _config_value(raw: str) -> str:
    """A git config value: quotes removed, escapes applied, trailing comment dropped."""
    out: list[str] = []
    quoted = False
    chars = iter(raw.strip())
    for c in chars:
        if c == '"':
            quoted = not quoted
        elif c == "\\":
            nxt = next(chars, "")
            out.append({"n": "\n", "t": "\t", "b": "\b"}.get(nxt, nxt))
        elif c in "#;" and not quoted:
            break
        else:
            out.append(c)
    return "".join(out).strip()


# ---------------------------------------------------------------------------
# Normalising remote URLs

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SCP = re.compile(r"(?:[^@/:]+@)?(\[[^\]]+\]|[^:/]+):(?!//)(.*)")
_CASE_INSENSITIVE_HOSTS = frozenset(
    ["github.com", "gitlab.com", "bitbucket.org", "codeberg.org", "dev.azure.com"]
)
_HOST_ALIASES = {
    "ssh.github.com": "github.com",
    "altssh.gitlab.com": "gitlab.com",
    "altssh.bitbucket.org": "bitbucket.org",
}


def normalize_remote(url: str, *, base: str | None = None) -> str | None:
    """``host/owner/repo`` (or ``/abs/path`` for a local remote); None if unusable.

    ``base`` resolves a relative local path (git resolves those from the
    repository's top level).
    """
    url = url.strip()
    if not url:
        return None
    scheme = _SCHEME.match(url)
    if scheme:
        if scheme.group(1).lower() == "file":  # file:///abs or file://host/abs
            rest = url[scheme.end() :]
            return _local(rest if rest.startswith("/") else "/" + rest.partition("/")[2], base)
        authority, _, path = url[scheme.end() :].partition("/")
        host = _host(authority.rpartition("@")[2])
    else:
        scp = _SCP.fullmatch(url)
        if scp is None or len(scp.group(1)) == 1:  # a path, or a Windows drive (C:)
            return _local(url, base)
        host, path = scp.group(1).lower(), scp.group(2)
    if not host:
        return None
    host = _HOST_ALIASES.get(host, host)
    path = "/".join(p for p in path.split("/") if p)  # drop empty and edge slashes
    path = path.removesuffix(".git").rstrip("/")
    host, path = _azure(host, path)
    if host in _CASE_INSENSITIVE_HOSTS:
        path = path.lower()
    return f"{host}/{path}" if path else host


def _host(hostport: str) -> str:
    """The host of ``host[:port]`` or ``[v6]:port``, lower-cased, without the port."""
    if hostport.startswith("["):
        return hostport[: hostport.find("]") + 1].lower()
    return hostport.partition(":")[0].lower()


def _azure(host: str, path: str) -> tuple[str, str]:
    """Azure DevOps spells one repository three ways; use the https one."""
    parts = path.split("/")
    if host == "ssh.dev.azure.com" and len(parts) == 4 and parts[0] == "v3":
        return "dev.azure.com", f"{parts[1]}/{parts[2]}/_git/{parts[3]}"
    if host.endswith(".visualstudio.com") and len(parts) >= 3:
        org = host.split(".", 1)[0]
        parts = [p for p in parts if p != "DefaultCollection"]
        return "dev.azure.com", "/".join([org, *parts])
    return host, path


def _local(path: str, base: str | None) -> str:
    if base is not None and not os.path.isabs(path):
        path = os.path.join(base, path)
    path = os.path.realpath(path)
    path = path.removesuffix(os.sep + ".git").removesuffix(".git")
    return path.rstrip(os.sep) or os.sep
