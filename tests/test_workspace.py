"""Workspace identity on real repositories made with the real `git`.

Every repository test runs with both ways of finding the repository (reading
the files, and asking a `git` subprocess) and expects the same answer.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import pytest
from reverie.rpc.workspace import Workspace, normalize_remote, workspace_for

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs the git binary")

METHODS: list[Literal["files", "git"]] = ["files", "git"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A git identity and no user/system config, so the tests see only their repositories."""
    for key in list(os.environ):
        if key.startswith("GIT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("HOME", str(tmp_path))
    for who in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{who}_NAME", "Test")
        monkeypatch.setenv(f"GIT_{who}_EMAIL", "test@example.com")
    (tmp_path / "gitconfig").write_text(
        '[init]\n\tdefaultBranch = main\n[protocol "file"]\n\tallow = always\n'
    )
    yield tmp_path


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def make_repo(path: Path, remote: str | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q")
    (path / "README.md").write_text(f"# {path.name}\n")
    git(path, "add", "README.md")
    git(path, "commit", "-q", "-m", "first")
    if remote is not None:
        git(path, "remote", "add", "origin", remote)
    return path


def both(path: Path | str) -> Workspace:
    """The workspace by both methods, which must agree."""
    by_files = workspace_for(path, method="files")
    by_git = workspace_for(path, method="git")
    assert by_files == by_git
    return by_files


def real(path: Path) -> str:
    return os.path.realpath(path)


# ---------------------------------------------------------------------------
# Outside git


def test_outside_git_is_the_resolved_directory(env: Path) -> None:
    plain = env / "plain" / "dir"
    plain.mkdir(parents=True)
    ws = both(plain)
    assert ws == Workspace(f"path:{real(plain)}", "dir", real(plain), None, False)


def test_a_file_stands_for_its_directory(env: Path) -> None:
    (env / "notes").mkdir()
    (env / "notes" / "todo.txt").write_text("x")
    assert both(env / "notes" / "todo.txt").id == f"path:{real(env / 'notes')}"


def test_default_is_the_current_directory(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(env / "cwdrepo", "git@github.com:acme/cwd.git")
    monkeypatch.chdir(repo)
    assert workspace_for().id == "git:github.com/acme/cwd"


def test_deleted_current_directory_does_not_raise(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = env / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    for method in METHODS:
        ws = workspace_for(method=method)
        assert ws.id.startswith("path:")


# ---------------------------------------------------------------------------
# Inside git


def test_repo_without_remote_is_its_top_level_from_any_subdirectory(env: Path) -> None:
    repo = make_repo(env / "proj")
    deep = repo / "src" / "pkg" / "sub"
    deep.mkdir(parents=True)
    for where in (repo, deep, repo / "README.md"):
        ws = both(where)
        assert ws == Workspace(f"path:{real(repo)}", "proj", real(repo), None, True)


def test_git_init_keeps_a_folders_id(env: Path) -> None:
    folder = env / "grows-up"
    folder.mkdir()
    before = both(folder)
    make_repo(folder)
    after = both(folder)
    assert before.id == after.id and not before.git and after.git


@pytest.mark.parametrize(
    "url",
    [
        "git@github.com:Acme/Widget.git",
        "git@github.com:acme/widget",
        "https://github.com/acme/widget",
        "https://github.com/acme/widget.git/",
        "https://alice:ghp_notarealtoken000000000000000000000000@github.com/acme/widget.git",
        "http://GitHub.com/acme/widget",
        "ssh://git@github.com/acme/widget.git",
        "ssh://git@github.com:22/acme/widget.git",
        "ssh://git@ssh.github.com:443/acme/widget.git",
        "git://github.com/acme/widget.git",
        "git+ssh://git@github.com/acme/widget.git",
    ],
)
def test_every_spelling_of_a_github_remote_is_one_id(env: Path, url: str) -> None:
    repo = make_repo(env / "some-local-name", url)
    ws = both(repo / ".")
    assert ws.id == "git:github.com/acme/widget"
    assert ws.label == "widget"
    assert ws.remote == "github.com/acme/widget"
    assert ws.root == real(repo) and ws.git
    assert "alice" not in ws.id and "ghp_" not in ws.id


def test_self_hosted_remote_keeps_path_case_and_drops_port(env: Path) -> None:
    a = make_repo(env / "a", "ssh://git@git.example.com:2222/Team/Proj.git")
    b = make_repo(env / "b", "https://git.example.com:8443/Team/Proj")
    c = make_repo(env / "c", "https://git.example.com/team/proj")
    assert both(a).id == both(b).id == "git:git.example.com/Team/Proj"
    assert both(c).id == "git:git.example.com/team/proj"


def test_origin_is_preferred_then_the_first_remote_by_name(env: Path) -> None:
    repo = make_repo(env / "multi")
    git(repo, "remote", "add", "upstream", "https://github.com/up/stream.git")
    git(repo, "remote", "add", "fork", "https://github.com/me/fork.git")
    assert both(repo).id == "git:github.com/me/fork"
    git(repo, "remote", "add", "origin", "git@github.com:me/origin.git")
    assert both(repo).id == "git:github.com/me/origin"


def test_two_clones_of_one_remote_share_an_id(env: Path) -> None:
    source = make_repo(env / "source")
    server = env / "server" / "app.git"
    git(env, "clone", "-q", "--bare", str(source), str(server))
    first = env / "alice" / "app"
    second = env / "bob" / "completely-different-name"
    first.parent.mkdir()
    second.parent.mkdir()
    git(first.parent, "clone", "-q", str(server), str(first))
    git(second.parent, "clone", "-q", f"file://{server}", str(second))
    a, b = both(first), both(second)
    assert a.id == b.id == f"git:{real(server)[: -len('.git')]}"
    assert a.label == b.label == "app"
    assert a.root != b.root


def test_clones_with_different_url_spellings_share_an_id(env: Path) -> None:
    one = make_repo(env / "x" / "widget", "git@github.com:acme/widget.git")
    two = make_repo(env / "y" / "my-widget-copy", "https://github.com/acme/widget")
    assert both(one).id == both(two).id


def test_same_folder_name_different_repositories_differ(env: Path) -> None:
    plain_a = make_repo(env / "team-a" / "app")
    plain_b = make_repo(env / "team-b" / "app")
    assert both(plain_a).id != both(plain_b).id
    remote_a = make_repo(env / "r1" / "app", "git@github.com:acme/app.git")
    remote_b = make_repo(env / "r2" / "app", "git@github.com:other/app.git")
    assert both(remote_a).id != both(remote_b).id
    assert both(remote_a).label == both(remote_b).label == "app"


def test_worktree_maps_to_its_main_repository(env: Path) -> None:
    main = make_repo(env / "mainrepo")
    wt = env / "elsewhere" / "wt-feature"
    git(main, "worktree", "add", "-q", "-b", "feature", str(wt))
    (wt / "deep" / "er").mkdir(parents=True)
    no_remote = both(wt / "deep" / "er")
    assert no_remote == Workspace(f"path:{real(main)}", "mainrepo", real(wt), None, True)
    git(main, "remote", "add", "origin", "git@github.com:acme/mainrepo.git")
    with_remote = both(wt)
    assert with_remote.id == both(main).id == "git:github.com/acme/mainrepo"
    assert with_remote.root == real(wt)


def test_worktree_of_a_bare_repository(env: Path) -> None:
    source = make_repo(env / "src-repo")
    bare = env / "bare.git"
    git(env, "clone", "-q", "--bare", str(source), str(bare))
    git(bare, "remote", "remove", "origin")
    wt = env / "bare-wt"
    git(bare, "worktree", "add", "-q", str(wt))
    assert both(wt).id == f"path:{real(bare)}"
    git(bare, "remote", "add", "origin", "https://gitlab.com/Group/Sub/Repo.git")
    assert both(wt).id == "git:gitlab.com/group/sub/repo"


def test_submodule_is_its_own_repository(env: Path) -> None:
    lib = make_repo(env / "lib", "git@github.com:acme/lib.git")
    outer = make_repo(env / "outer", "git@github.com:acme/outer.git")
    git(outer, "submodule", "add", "-q", str(lib), "vendor/lib")
    inner = outer / "vendor" / "lib"
    assert both(inner).id == f"git:{real(lib)}"  # the submodule's own origin: the local path
    assert both(outer / "vendor").id == "git:github.com/acme/outer"


def test_symlinked_path_has_the_real_paths_id(env: Path) -> None:
    repo = make_repo(env / "target")
    link = env / "link"
    link.symlink_to(repo)
    assert both(link) == both(repo)


def test_missing_path_inside_a_repository_belongs_to_it(env: Path) -> None:
    repo = make_repo(env / "has-missing", "git@github.com:acme/m.git")
    assert workspace_for(repo / "not" / "yet" / "created").id == "git:github.com/acme/m"


# ---------------------------------------------------------------------------
# Broken repositories and no git: fall back, never raise


def test_dangling_gitdir_file_falls_back_to_the_path(env: Path) -> None:
    d = env / "dangling"
    d.mkdir()
    (d / ".git").write_text("gitdir: /nonexistent/worktrees/x\n")
    for method in METHODS:
        ws = workspace_for(d, method=method)
        assert ws == Workspace(f"path:{real(d)}", "dangling", real(d), None, False)


def test_garbled_git_file_falls_back_to_the_path(env: Path) -> None:
    d = env / "garbled"
    d.mkdir()
    (d / ".git").write_bytes(b"\xff\xfe not a gitdir line")
    assert workspace_for(d).id == f"path:{real(d)}"


def test_worktree_whose_main_repository_was_deleted(env: Path) -> None:
    main = make_repo(env / "doomed")
    wt = env / "orphan-wt"
    git(main, "worktree", "add", "-q", str(wt))
    shutil.rmtree(main)
    for method in METHODS:
        ws = workspace_for(wt, method=method)
        assert ws.id == f"path:{real(wt)}" and not ws.git


def test_missing_git_binary(env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(env / "nogit", "git@github.com:acme/nogit.git")
    empty = env / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert workspace_for(repo, method="git").id == f"path:{real(repo)}"
    assert workspace_for(repo, method="files").id == "git:github.com/acme/nogit"


def test_unusual_config_is_parsed_like_git(env: Path) -> None:
    repo = make_repo(env / "odd")
    with open(repo / ".git" / "config", "a") as f:
        f.write(
            '; a comment\n[remote "origin"] # trailing comment\n'
            '\tURL = "git@github.com:acme/odd.git" ; comment\n'
            "\turl = https://second.example.com/ignored\n"
        )
    assert git(repo, "remote", "get-url", "origin") == "git@github.com:acme/odd.git"
    assert both(repo).id == "git:github.com/acme/odd"


# ---------------------------------------------------------------------------
# normalize_remote on its own


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("git@gitlab.com:Group/Sub/Proj.git", "gitlab.com/group/sub/proj"),
        ("https://gitlab.com/group/sub/proj", "gitlab.com/group/sub/proj"),
        ("git@bitbucket.org:team/repo.git", "bitbucket.org/team/repo"),
        ("ssh://git@altssh.bitbucket.org:443/team/repo.git", "bitbucket.org/team/repo"),
        ("https://dev.azure.com/Org/Proj/_git/Repo", "dev.azure.com/org/proj/_git/repo"),
        ("git@ssh.dev.azure.com:v3/Org/Proj/Repo", "dev.azure.com/org/proj/_git/repo"),
        ("https://org.visualstudio.com/DefaultCollection/proj/_git/repo",
         "dev.azure.com/org/proj/_git/repo"),
        ("https://[2001:db8::1]:8443/a/b.git", "[2001:db8::1]/a/b"),
        ("file:///srv/git/app.git", "/srv/git/app"),
        ("file://localhost/srv/git/app.git", "/srv/git/app"),
        ("/srv/git/app/.git", "/srv/git/app"),
        ("  ", None),
    ],
)  # fmt: skip
def test_normalize_remote(url: str, expected: str | None) -> None:
    assert normalize_remote(url) == expected


def test_relative_local_remote_resolves_from_the_repository(env: Path) -> None:
    assert normalize_remote("../shared/app.git", base=str(env / "repo")) == real(
        env / "shared" / "app"
    )
