"""What a careful operator fears: another uid on the socket, secrets leaving the store.

Part 1 runs the real `reverie` CLI as `nobody` (needs root; skipped otherwise).
Part 2 plants secrets from the redaction corpus straight into a stopped
daemon's database (as an older version or an import would have left them),
then reads every output path. Part 3 checks config secrets never surface.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest
from harness import Daemon
from test_redaction import SECRET_CASES, Case, leaks

REPO = Path(__file__).resolve().parents[1]

# --- part 1: another uid ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def nobody_site() -> Iterator[Path]:
    """A directory nobody can read, holding reverie and the client's only dependencies.

    Our interpreter may live under root's 0700 home; /usr/bin/python3 of the
    same minor version runs the client with these copies instead.
    """
    if os.geteuid() != 0:
        pytest.skip("switching to another uid needs root")
    try:
        pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no user named nobody")
    if not Path("/usr/bin/python3").exists() or sys.version_info[:2] != (3, 11):
        pytest.skip("needs /usr/bin/python3 of our minor version")
    import msgspec

    site = Path(msgspec.__file__).parents[1]
    with tempfile.TemporaryDirectory(prefix="rv-site-", dir="/tmp") as d:
        root = Path(d)
        root.chmod(0o755)
        for name in ("msgspec", "certifi"):
            shutil.copytree(site / name, root / name)
        shutil.copy(site / "typing_extensions.py", root)
        (root / "reverie").symlink_to(REPO)
        for p in root.rglob("*"):
            p.chmod(0o755 if p.is_dir() else 0o644)
        yield root


def _cli_as(
    site: Path, argv: list[str], *, gid: int | None = None, groups: tuple[int, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """The real CLI (python -m reverie ...) as nobody, with the given groups only."""
    user = pwd.getpwnam("nobody")
    code = (
        f"import sys, runpy; sys.path.insert(0, {str(site)!r}); "
        f"sys.argv = ['reverie', *{argv!r}]; runpy.run_module('reverie', run_name='__main__')"
    )
    return subprocess.run(
        ["/usr/bin/python3", "-I", "-B", "-c", code],
        user=user.pw_uid,
        group=user.pw_gid if gid is None else gid,
        extra_groups=list(groups),
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"},
        cwd="/",
    )


def _setpriv_works() -> bool:
    return shutil.which("setpriv") is not None


def test_nobody_cannot_connect_to_the_default_socket(short_tmp: Path, nobody_site: Path) -> None:
    short_tmp.chmod(0o755)
    with Daemon(short_tmp).start() as d:
        st = d.socket.stat()
        assert st.st_mode & 0o777 == 0o600 and st.st_uid == os.getuid()
        assert not d.socket.parent.stat().st_mode & 0o002  # no world-writable dir
        out = _cli_as(nobody_site, ["status", "--socket", str(d.socket)])
        assert out.returncode == 1, out
        assert f"cannot connect to {d.socket}: permission denied" in out.stderr
        assert "[access_denied]" in out.stderr and "Traceback" not in out.stderr
        assert "refused connection" not in d.log()  # the kernel refused: the daemon saw nothing


def test_setpriv_nobody_is_refused_with_an_error_frame_and_a_log_line(
    short_tmp: Path, nobody_site: Path
) -> None:
    if not _setpriv_works():
        pytest.skip("no setpriv")
    short_tmp.chmod(0o755)
    with Daemon(short_tmp, config='[daemon]\nsocket_mode = "0666"\n').start() as d:
        code = (
            f"import sys, runpy; sys.path.insert(0, {str(nobody_site)!r}); "
            f"sys.argv = ['reverie', 'status', '--socket', {str(d.socket)!r}]; "
            "runpy.run_module('reverie', run_name='__main__')"
        )
        out = subprocess.run(
            [
                *("setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"),
                *("/usr/bin/python3", "-I", "-B", "-c", code),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin"},
            cwd="/",
        )
        uid = pwd.getpwnam("nobody").pw_uid
        assert out.returncode == 1, out
        assert f"uid {uid} is not allowed to use this daemon [access_denied]" in out.stderr
        log = d.log()
        assert f"refused connection peer_uid={uid} peer_pid=" in log
        with d.client() as c:
            assert c.status().connections == 1


def test_an_allowed_uid_uses_the_cli(short_tmp: Path, nobody_site: Path) -> None:
    short_tmp.chmod(0o755)
    uid = pwd.getpwnam("nobody").pw_uid
    config = f'[daemon]\nsocket_mode = "0666"\nallowed_uids = [{uid}]\n'
    with Daemon(short_tmp, config=config).start() as d:
        out = _cli_as(nobody_site, ["remember", "--socket", str(d.socket), "from nobody"])
        assert out.returncode == 0, out.stderr
        with d.client() as c:
            assert [h.memory.content for h in c.search("nobody").hits] == ["from nobody"]


def _a_group_nobody_is_not_in() -> grp.struct_group:
    user = pwd.getpwnam("nobody")
    for g in grp.getgrall():
        if g.gr_gid not in (0, user.pw_gid) and "nobody" not in g.gr_mem:
            return g
    pytest.skip("no spare group")


def test_members_of_the_socket_group_are_served_and_others_are_not(
    short_tmp: Path, nobody_site: Path
) -> None:
    short_tmp.chmod(0o755)
    g = _a_group_nobody_is_not_in()
    config = f'[daemon]\nsocket_mode = "0660"\nsocket_group = "{g.gr_name}"\n'
    with Daemon(short_tmp, config=config).start() as d:
        assert d.socket.stat().st_gid == g.gr_gid
        status = ["status", "--json", "--socket", str(d.socket)]
        # A supplementary member (SO_PEERGROUPS), and one whose primary group it is.
        for kw in ({"groups": (g.gr_gid,)}, {"gid": g.gr_gid}):
            out = _cli_as(nobody_site, status, **kw)  # type: ignore[arg-type]
            assert out.returncode == 0, (kw, out.stderr)
            assert json.loads(out.stdout)["connections"] >= 1
        # Not a member: the file's mode refuses it.
        out = _cli_as(nobody_site, status)
        assert out.returncode == 1 and "permission denied" in out.stderr
    # A mode an operator widened (or systemd's socket) still lets in members only.
    config = f'[daemon]\nsocket_mode = "0666"\nsocket_group = "{g.gr_name}"\n'
    with Daemon(short_tmp, config=config).start() as d:
        status = ["status", "--socket", str(d.socket)]
        assert _cli_as(nobody_site, status, groups=(g.gr_gid,)).returncode == 0
        out = _cli_as(nobody_site, status)
        assert out.returncode == 1 and "[access_denied]" in out.stderr


def test_a_socket_dir_others_can_write_to_is_refused(short_tmp: Path) -> None:
    shared = short_tmp / "shared"
    shared.mkdir()
    shared.chmod(0o777)  # e.g. /tmp/reverie-UID made by someone else, world-writable
    d = Daemon(short_tmp)
    d.socket = shared / "r.sock"
    d.start(wait=False)
    assert d.proc is not None and d.proc.wait(30) != 0
    assert "is writable by others" in d.log()
    assert not d.socket.exists()
    if os.geteuid() == 0:
        shared.chmod(0o755)
        os.chown(shared, pwd.getpwnam("nobody").pw_uid, -1)  # owned by another user
        d.start(wait=False)
        assert d.proc.wait(30) != 0
        assert "belongs to uid" in d.log()
    shared.chmod(0o1777)  # sticky, like /tmp: nobody can replace our file
    if os.geteuid() == 0:
        os.chown(shared, 0, -1)
    with d.start():
        pass


# --- part 2: secrets already in the database never leave it --------------------------------

PLACE = "QQplaceholderQQ"


def _plantable(case: Case) -> bool:
    # Substituted into JSON and SQL text as is: no quotes, escapes or newlines.
    return not any(ch in case.text for ch in "\"\\\n\r\t'") and len(case.text) < 300


def _planted() -> tuple[str, list[str]]:
    """One prose text per secret kind, and the secrets it holds."""
    seen: set[str] = set()
    texts, secrets = [], []
    for case in SECRET_CASES:
        kind = ",".join(case.kinds)
        if kind in seen or not _plantable(case):
            continue
        seen.add(kind)
        texts.append(case.text)
        secrets.extend(case.must_remove)
    return " ; ".join(texts), secrets


PLANTED, SECRETS = _planted()


def _context(out: str, piece: str) -> str:
    i = out.find(piece)
    line_start = out.rfind("\n", 0, i) + 1
    return out[line_start : out.find("\n", i)][:3000]


def _leaks(out: str) -> list[str]:
    return [piece for s in SECRETS for piece in leaks(s, out)]


class Cli:
    def __init__(self, d: Daemon, cwd: Path) -> None:
        self.d, self.cwd = d, cwd

    def __call__(self, *argv: str, stdin: str = "", check: bool = True) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "reverie", *argv],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            env=self.d.environ(),
            cwd=self.cwd,
        )
        if check:
            assert out.returncode == 0, (argv, out.stderr)
        return out.stdout + out.stderr


def _hook(cli: Cli, event: dict[str, object]) -> str:
    return cli("hook", "claude-code", stdin=json.dumps(event))


def _plant(db: Path) -> int:
    """Put PLANTED wherever the placeholder sits, in every text column of every table."""
    conn = apsw.Connection(str(db))
    n = 0
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'memories_fts%' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        with conn:
            for t in tables:
                for _cid, col, typ, *_ in list(conn.execute(f"PRAGMA table_info({t})")):
                    if typ.upper() != "TEXT":
                        continue
                    conn.execute(
                        f"UPDATE {t} SET {col} = replace({col}, ?, ?) WHERE {col} LIKE ?",
                        (PLACE, PLANTED, f"%{PLACE}%"),
                    )
                    n += conn.changes()
    finally:
        conn.close()
    return n


def _mcp_outputs(socket_path: Path, cwd: Path, mids: list[int]) -> str:
    """Every reading tool of the MCP bridge, through the SDK's stdio client."""
    try:
        from mcp import ClientSession
        from mcp.types import TextContent
        from mcp_helpers import run_bridge
    except ImportError:
        return ""  # the extra reverie[mcp] is not installed: no bridge to check
    calls: list[tuple[str, dict[str, object]]] = [
        ("memory_search", {"query": "deploy runbook rotate", "all_workspaces": True}),
        ("brief", {"prompt": "deploy runbook"}),
        ("sitrep", {}),
        ("dreams_status", {}),
        *[("memory_get", {"memory_id": m}) for m in mids],
    ]
    texts: list[str] = []

    async def body(session: ClientSession) -> None:
        for name, args in calls:
            r = await session.call_tool(name, args)
            assert not r.is_error, (name, r)
            texts.extend(c.text for c in r.content if isinstance(c, TextContent))
            texts.append(json.dumps(r.structured_content))

    run_bridge(socket_path, cwd, body)
    texts.append((cwd / "bridge.err").read_text())
    out = "\n".join(texts)
    assert "[REDACTED:" in out  # the planted rows came back, redacted
    return out


def test_secrets_planted_in_the_database_never_come_out(short_tmp: Path) -> None:
    assert len(SECRETS) >= 8, "the corpus should give many kinds of secrets"
    work = short_tmp / "proj"
    work.mkdir()
    d = Daemon(short_tmp).start()
    cli = Cli(d, work)
    text = f"deploy runbook {PLACE} rotate credentials"
    mids = [
        json.loads(cli("remember", "--json", "--kind", "fact", "--meta", f"note={PLACE}", t))["id"]
        for t in (text, f"second {PLACE} runbook entry", f"third deploy {PLACE} runbook")
    ]
    cli("update", str(mids[0]), "--content", f"deploy runbook v2 {PLACE} rotate")
    sid = "sess-sec-1"
    cli("session", "start", "--id", sid, f"work on {PLACE}")
    cli("session", "log", "--session", sid, f"log line {PLACE}")
    cli("session", "heartbeat", "--session", sid, f"progress {PLACE}", check=False)
    cli("world", "set", "-", stdin=f"# World\nstate {PLACE}\n")
    cli("claim", "--session", sid, "--note", f"mine {PLACE}", "src/app.py")
    ep = json.loads(cli("episode", "start", "--json", f"task {PLACE}"))["id"]
    cli(
        "episode",
        "step",
        "--param",
        f"k={PLACE}",
        "--result",
        f"ok {PLACE}",
        str(ep),
        "bash",
        "run",
    )
    cli("episode", "end", "--notes", f"notes {PLACE}", str(ep), "success")
    hook_base = {"session_id": "hook-sess", "cwd": str(work), "transcript_path": "/nonexistent"}
    # A whole session of observations for light sleep's session summary.
    for prompt in (f"fix {PLACE} now", f"and check {PLACE} again"):
        _hook(cli, {**hook_base, "hook_event_name": "UserPromptSubmit", "prompt": prompt})
    _hook(cli, {**hook_base, "hook_event_name": "SessionEnd", "reason": "other"})
    cli("session", "end", "--session", sid, "--summary", f"done {PLACE}")
    assert d.stop() == 0
    assert _plant(d.data_dir / "reverie.db") >= 10

    d.start()
    try:
        outputs: dict[str, str] = {}

        def check(name: str, *argv: str, stdin: str = "") -> None:
            outputs[name] = cli(*argv, stdin=stdin, check=False)

        check("search-lexical", "search", "--json", "--mode", "lexical", "--explain", "runbook")
        check("search-hybrid", "search", "--json", "--explain", "deploy runbook rotate")
        check("search-text", "search", "--explain", "runbook")
        for m in mids:
            check(f"get-{m}", "get", "--json", str(m))
            check(f"get-text-{m}", "get", str(m))
        check("versions", "versions", "--json", "--full", str(mids[0]))
        check("export", "export")
        check("brief", "brief", "--json", "--prompt", "deploy runbook")
        check("brief-text", "brief", "--prompt", "deploy runbook")
        check("sitrep", "sitrep", "--json")
        check("world", "world", "--json")
        check("claims", "claims", "--json")
        check("session-show", "session", "show", "--json", "--session", sid)
        check("session-logs", "session", "logs", "--json", "--session", sid)
        check("session-list", "session", "list", "--json")
        check("episode-show", "episode", "show", "--json", str(ep))
        check("episode-list", "episode", "list", "--json")
        check("episode-similar", "episode", "similar", "--json", "task")
        check("events", "events", "--json")
        check(
            "hook-start",
            "hook",
            "claude-code",
            stdin=json.dumps({**hook_base, "hook_event_name": "SessionStart", "source": "startup"}),
        )
        check(
            "hook-prompt",
            "hook",
            "claude-code",
            stdin=json.dumps(
                {**hook_base, "hook_event_name": "UserPromptSubmit", "prompt": "deploy runbook"}
            ),
        )
        for phase in ("light-sleep", "rem", "deep-sleep"):
            check(f"dream-{phase}", "dreams", "run", "--json", "--phase", phase)
        check("dreams-status", "dreams", "status", "--json")
        # What the dreams wrote (summaries, digests) read back.
        check("export-after-dreams", "export", "--include-forgotten")
        check("search-after-dreams", "search", "--json", "--explain", "runbook deploy")
        check("brief-after-dreams", "brief", "--json", "--prompt", "runbook")
        outputs["mcp"] = _mcp_outputs(d.socket, work, mids)
        found = {name: _leaks(out) for name, out in outputs.items()}
        bad = {k: v[:1] for k, v in found.items() if v}
        assert bad == {}, {k: _context(outputs[k], v[0]) for k, v in bad.items()}
        # The planted rows did come back (redacted): the checks read real data.
        # The dreams derived text from the planted rows.
        for tag in ("session-summary", "rem-cluster", "rem-digest"):
            assert f'"{tag}"' in outputs["export-after-dreams"], tag
        assert "[REDACTED:" in outputs["export"] and "[REDACTED:" in outputs["get-" + str(mids[0])]
    finally:
        d.stop()
    assert _leaks(d.log()) == []


# --- part 3: the configuration's secrets ------------------------------------------------------

EMBED_KEY = "rvk-embed-" + "Q7w8E9r0T1" * 3
LLM_KEY = "rvk-llm-" + "Z2x3C4v5B6" * 3
NEW_KEY = "rvk-new-" + "P9o8I7u6Y5" * 3


def _wait_for(d: Daemon, line: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while line not in d.log():
        assert time.monotonic() < deadline, d.log()[-3000:]
        time.sleep(0.05)


class _EchoingServer:
    """An endpoint that refuses every call and echoes the request's headers back."""

    def __init__(self) -> None:
        import http.server
        import threading

        paths: list[str] = []
        self.paths = paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                paths.append(self.path)
                body = json.dumps({"error": f"bad token: {self.headers}"}).encode()
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_config_secrets_never_appear_in_logs_or_outputs(short_tmp: Path) -> None:
    server = _EchoingServer()
    config = (
        '[daemon]\nlog_level = "debug"\n'
        f'[embedder]\nname = "http"\nurl = "{server.url}"\napi_key = "{EMBED_KEY}"\n'
        'model = "m"\ndim = 8\n'
        f'[dreams]\npreset = "off"\n[dreams.rem.llm]\nurl = "{server.url}"\n'
        'api_key_env = "RV_TEST_LLM_KEY"\n'
    )
    d = Daemon(short_tmp, config=config, env={"RV_TEST_LLM_KEY": LLM_KEY})
    work = short_tmp / "w"
    work.mkdir()
    cli = Cli(d, work)
    outputs: dict[str, str] = {}
    try:
        d.start()
        for t in ("cache warmup notes", "cache warmup plans", "cache warmup steps"):
            cli("remember", t)
        outputs["search"] = cli("search", "--json", "cache warmup", check=False)
        outputs["status"] = cli("status", "--json")
        outputs["config"] = cli("config", "show", "--json")
        outputs["config-text"] = cli("config", "show")
        outputs["running"] = cli("config", "show", "--running", "--json")
        outputs["metrics"] = cli("metrics", "--json")
        outputs["doctor"] = cli("doctor", "--json", check=False)
        outputs["rem"] = cli("dreams", "run", "--json", "--phase", "rem", check=False)
        outputs["dreams-status"] = cli("dreams", "status", "--json")
        # A reload with a new key (and a bad file first): it names keys, never values.
        assert d.config_path is not None
        d.config_path.write_text(config + "[embedder\n")
        d.signal(signal.SIGHUP)
        _wait_for(d, "reload ok=false")
        d.config_path.write_text(config.replace(EMBED_KEY, NEW_KEY))
        d.signal(signal.SIGHUP)
        _wait_for(d, "reload ok=true")
        outputs["status-after-reload"] = cli("status", "--json")
        outputs["running-after-reload"] = cli("config", "show", "--running", "--json")
        assert "embedder.api_key" in outputs["running-after-reload"]  # pending a restart
    finally:
        d.stop()
        server.close()
    outputs["log"] = d.log()
    for name, out in outputs.items():
        for key in (EMBED_KEY, LLM_KEY, NEW_KEY):
            assert key not in out, (name, out[-3000:])
    assert "***" in outputs["config"]  # the key is there, masked
    # Both clients called the endpoint (and got the key echoed back in an error).
    assert any(p.endswith("/embeddings") for p in server.paths), server.paths
    assert any(p.endswith("/chat/completions") for p in server.paths), server.paths
    assert "HTTP 401" in outputs["rem"]  # the LLM's refusal is in the run's notes, masked
    for f in d.data_dir.iterdir():  # nor in what was stored (the run's notes, the WAL)
        if f.is_file():
            data = f.read_bytes()
            assert not [k for k in (EMBED_KEY, LLM_KEY, NEW_KEY) if k.encode() in data], f


def test_dream_texts_cut_rows_only_after_redacting_them() -> None:
    """A clip through an unredacted secret would keep a piece no pattern recognizes."""
    from reverie.phases import rem_clusters, session_summary
    from reverie.store.redaction import redact

    token = "ghp_" + "A1b2C3d4E5" * 3 + "f6G7h8"
    text = "word " * 38 + "token " + token + " end"  # the 200-char clip falls in the token
    obs = [
        session_summary.Observation(i, "User: " + text, "UserPromptSubmit", [], 1e9 + i)
        for i in range(2)
    ]
    mems = [rem_clusters.Member(i, "fact", text, 1e9 + i) for i in range(3)]
    for out in (
        session_summary.summarize("s", "h", obs, 2000),
        rem_clusters.summary_text(mems, 2000),
    ):
        out = redact(out)  # as remember() stores it
        assert "token [RE" in out
        assert not [token[i : i + 6] for i in range(len(token) - 5) if token[i : i + 6] in out]


def test_the_daemon_writes_files_for_its_own_uid_only(short_tmp: Path) -> None:
    d = Daemon(short_tmp)
    d.data_dir.mkdir(mode=0o755)  # made by hand, e.g. `mkdir -p ~/.local/state/reverie`
    d.data_dir.chmod(0o755)
    old = os.umask(0o022)
    try:
        d.start()
    finally:
        os.umask(old)
    try:
        with d.client() as c:
            c.remember("a private note")
            assert c.search("private").hits
    finally:
        assert d.stop() == 0
    files = [p for p in d.data_dir.rglob("*") if p.name != "daemon.lock"]
    assert any(p.name == "reverie.db" for p in files)
    loose = {str(p.relative_to(d.data_dir)): oct(p.stat().st_mode & 0o777) for p in files}
    assert {k: v for k, v in loose.items() if int(v, 8) & 0o077} == {}
