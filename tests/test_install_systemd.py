"""`reverie install systemd` and the units: real files in temporary dirs, real
`systemd-analyze verify`, and the daemon run under the unit's seccomp sandbox.

systemd itself is never started (there is no manager here): the sandbox test
builds the same seccomp filters that SystemCallFilter=@system-service
~@privileged, MemoryDenyWriteExecute=yes and RestrictAddressFamilies=AF_UNIX
make, with libseccomp (the library systemd uses), and runs the real daemon
under them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from harness import NO_DREAMS, wait_indexed
from reverie.rpc import install_systemd
from reverie.rpc.client import Client

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = ROOT / "packaging" / "systemd"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(
    ANALYZE is None, reason="systemd-analyze is not installed (Debian package `systemd`)"
)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reverie", "install", "systemd", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def ok(*args: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    out = cli(*args, "--json", env=env)
    assert out.returncode == 0, out.stderr
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if not p.is_dir()}


def verify(*units: Path, user: bool = False, env: dict[str, str] | None = None) -> str:
    assert ANALYZE is not None
    flag = ["--user"] if user else []
    out = subprocess.run(
        [ANALYZE, "verify", *flag, *map(str, units)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout + out.stderr  # verify exits 0 on warnings: callers want ""


def exposure(unit: Path) -> float:
    assert ANALYZE is not None
    out = subprocess.run(
        [ANALYZE, "security", "--offline=yes", str(unit)], capture_output=True, text=True
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", out.stdout)
    assert m, out.stdout + out.stderr
    return float(m.group(1))


def test_shipped_units_are_the_rendered_ones() -> None:
    for scope, where in (("system", SHIPPED), ("user", SHIPPED / "user")):
        for name, text in install_systemd.render(scope, shipped=True).items():
            assert (where / name).read_text() == text, f"{where / name} differs: regenerate it"


@needs_analyze
def test_shipped_units_verify_and_score() -> None:
    out = subprocess.run(
        [str(SHIPPED / "verify-units")], capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count(": ok") == 2, out.stdout
    assert exposure(SHIPPED / "reverie.service") <= 2.0


@needs_analyze
def test_system_install_writes_verifies_and_uninstalls(short_tmp: Path) -> None:
    units, prefix = short_tmp / "units", short_tmp / "root"
    args = ("--system", "--unit-dir", str(units), "--prefix", str(prefix))
    dry = ok(*args, "--dry-run")
    assert not units.exists() and not prefix.exists()
    assert [f["action"] for f in dry["files"]] == ["written"] * 3

    result = ok(*args)
    service, socket_unit = units / "reverie.service", units / "reverie.socket"
    sysusers = prefix / "etc" / "sysusers.d" / "reverie.conf"
    assert [Path(f["path"]) for f in result["files"]] == [service, socket_unit, sysusers]
    assert tree(short_tmp) == {
        "units/reverie.service",
        "units/reverie.socket",
        "root/etc/sysusers.d/reverie.conf",
    }
    text = service.read_text()
    assert f"\nExecStart={sys.executable} -m reverie daemon\n" in text
    assert os.access(sys.executable, os.X_OK)
    assert "\nUser=reverie\n" in text and "\nStateDirectory=reverie\n" in text
    assert "ListenStream=/run/reverie/reverie.sock" in socket_unit.read_text()
    assert re.search(r"^u\s+reverie\s", sysusers.read_text(), re.MULTILINE)
    hidden = install_systemd.hidden_paths()
    if hidden:  # a Python under /root or /home stays readable, the rest hidden
        assert "\nProtectHome=tmpfs\n" in text
        assert f"\nBindReadOnlyPaths={' '.join(hidden)}\n" in text
    else:
        assert "\nProtectHome=yes\n" in text
    assert verify(service, socket_unit) == ""
    assert exposure(service) <= 2.0
    assert result["commands"] == []  # staged under --prefix: nothing to run here

    again = ok(*args)
    assert not again["changed"] and {f["action"] for f in again["files"]} == {"unchanged"}

    # Enabled units are not removed: disabling needs their [Install] sections.
    wants = units / "multi-user.target.wants"
    wants.mkdir()
    (wants / "reverie.service").symlink_to(service)
    refused = cli(*args, "--uninstall")
    assert refused.returncode == 2 and "disable --now" in refused.stderr
    assert service.exists()
    (wants / "reverie.service").unlink()
    wants.rmdir()

    gone = ok(*args, "--uninstall")
    assert [f["action"] for f in gone["files"]] == ["removed"] * 3
    assert tree(short_tmp) == set()


def test_foreign_files_are_never_touched(short_tmp: Path) -> None:
    units = short_tmp / "units"
    units.mkdir()
    mine = "[Service]\nExecStart=/bin/true\n"
    (units / "reverie.socket").write_text(mine)
    args = ("--system", "--unit-dir", str(units), "--prefix", str(short_tmp / "root"))
    out = cli(*args)
    assert out.returncode == 2 and "not written by" in out.stderr
    assert tree(short_tmp) == {"units/reverie.socket"}  # a refused install writes nothing
    gone = ok(*args, "--uninstall")
    assert [f["action"] for f in gone["files"]] == ["absent", "foreign", "absent"]
    assert (units / "reverie.socket").read_text() == mine


def user_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "REVERIE_"))}
    runtime = home / "run"
    runtime.mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(home), XDG_RUNTIME_DIR=str(runtime))
    return env


@needs_analyze
def test_user_install(short_tmp: Path) -> None:
    home = short_tmp / "home"
    env = user_env(home)
    result = ok("--user", env=env)
    units = home / ".config" / "systemd" / "user"
    assert Path(result["unit_dir"]) == units
    assert tree(home) == {
        ".config/systemd/user/reverie.service",
        ".config/systemd/user/reverie.socket",
    }
    service, socket_unit = units / "reverie.service", units / "reverie.socket"
    text = service.read_text()
    assert f"\nExecStart={sys.executable} -m reverie daemon\n" in text
    # The daemon must use the CLI's own paths: no State/RuntimeDirectory, and
    # the socket the client looks for.
    assert "\nStateDirectory=" not in text and "\nUser=" not in text
    assert "ListenStream=%t/reverie/reverie.sock" in socket_unit.read_text()
    assert "MemoryDenyWriteExecute=yes" in text and "ProtectSystem" not in text
    assert verify(service, socket_unit, user=True, env=env) == ""
    assert result["commands"][:2] == [
        "systemctl --user daemon-reload",
        "systemctl --user enable --now reverie.socket reverie.service",
    ]
    # XDG_CONFIG_HOME moves the unit dir.
    env2 = dict(env, XDG_CONFIG_HOME=str(short_tmp / "cfg"))
    assert Path(ok("--user", env=env2)["unit_dir"]) == short_tmp / "cfg" / "systemd" / "user"
    ok("--user", "--uninstall", env=env2)
    gone = ok("--user", "--uninstall", env=env)
    assert [f["action"] for f in gone["files"]] == ["removed", "removed"]
    assert tree(home) == set() and tree(short_tmp / "cfg") == set()


def test_install_claude_code_rejects_systemd_options() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "reverie", "install", "claude-code", "--system", "--dry-run"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2 and "install systemd" in out.stderr
    assert cli("--project", "--dry-run").returncode == 2


# --- the daemon under the unit's seccomp sandbox ---------------------------

# Builds, with libseccomp, the filters systemd derives from the unit (one
# filter per setting, as systemd loads them), then execs the daemon.
LAUNCHER = r"""
import ctypes, ctypes.util, json, os, sys
lib = ctypes.CDLL(ctypes.util.find_library("seccomp"))
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
class Cmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("a", ctypes.c_uint64), ("b", ctypes.c_uint64)]
lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                       ctypes.c_uint, ctypes.POINTER(Cmp)]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ALLOW, ERRNO = 0x7FFF0000, lambda e: 0x00050000 | e
NE, MASKED_EQ = 1, 7
def nr(name):
    return lib.seccomp_syscall_resolve_name(name.encode())
def rule(ctx, action, name, *cmps):
    n = nr(name)
    if n < 0:
        return
    arr = (Cmp * max(1, len(cmps)))(*cmps)
    assert lib.seccomp_rule_add_array(ctx, action, n, len(cmps), arr) == 0, name
allowed = json.loads(sys.argv[1])
# MemoryDenyWriteExecute=yes (systemd's seccomp form)
PROT_WRITE, PROT_EXEC, SHM_EXEC = 2, 4, 0o100000
ctx = lib.seccomp_init(ALLOW)
rule(ctx, ERRNO(1), "mmap", Cmp(2, MASKED_EQ, PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC))
rule(ctx, ERRNO(1), "mprotect", Cmp(2, MASKED_EQ, PROT_EXEC, PROT_EXEC))
rule(ctx, ERRNO(1), "pkey_mprotect", Cmp(2, MASKED_EQ, PROT_EXEC, PROT_EXEC))
rule(ctx, ERRNO(1), "shmat", Cmp(2, MASKED_EQ, SHM_EXEC, SHM_EXEC))
assert lib.seccomp_load(ctx) == 0
# RestrictAddressFamilies=AF_UNIX
ctx = lib.seccomp_init(ALLOW)
rule(ctx, ERRNO(97), "socket", Cmp(0, NE, 1, 0))
assert lib.seccomp_load(ctx) == 0
# SystemCallFilter=@system-service ~@privileged, SystemCallErrorNumber=EPERM
# (loaded last: it may not allow seccomp() itself)
ctx = lib.seccomp_init(ERRNO(1))
for name in allowed:
    rule(ctx, ALLOW, name)
assert lib.seccomp_load(ctx) == 0
os.execv(sys.argv[2], sys.argv[2:])
"""


FORK_SAVE_PROBE = """
import sys
from pathlib import Path
import numpy as np
from reverie.store import index_file
from reverie.store.vector_index import VectorIndex
index = VectorIndex(8, model_id="m")
index.add(np.arange(10), np.random.default_rng(1).random((10, 8)))
writer = index_file.start_write(index._index, Path(sys.argv[1]) / "probe.bin", 0)
assert writer is not None, "fork refused"
writer.wait()
VectorIndex(8, model_id="m")._index.load_index(str(Path(sys.argv[1]) / "probe.bin"))
print("forked")
"""


def syscall_groups() -> dict[str, list[str]]:
    assert ANALYZE is not None
    out = subprocess.run([ANALYZE, "syscall-filter"], capture_output=True, text=True).stdout
    groups: dict[str, list[str]] = {}
    current: list[str] = []
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.strip() and not line.strip().startswith("#") and line.startswith(" "):
            current.append(line.strip())
    return groups


def expand(groups: dict[str, list[str]], name: str) -> set[str]:
    if not name.startswith("@"):
        return {name}
    return set().union(*(expand(groups, n) for n in groups[name]))


@needs_analyze
@pytest.mark.skipif(
    not __import__("ctypes.util").util.find_library("seccomp"), reason="libseccomp is absent"
)
def test_daemon_runs_under_the_units_seccomp_sandbox(short_tmp: Path) -> None:
    groups = syscall_groups()
    allowed = expand(groups, "@system-service") - expand(groups, "@privileged")
    assert "mmap" in allowed and "mount" not in allowed
    config = short_tmp / "r.toml"
    config.write_text(NO_DREAMS)  # the default embedder: lexical
    sock = short_tmp / "r.sock"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REVERIE_", "NOTIFY_"))}
    env.update(
        REVERIE_DATA_DIR=str(short_tmp / "data"),
        REVERIE_SOCKET=str(sock),
        REVERIE_CONFIG=str(config),
    )
    log = (short_tmp / "log").open("wb")
    cmd = [sys.executable, "-c", LAUNCHER, json.dumps(sorted(allowed))]
    proc = subprocess.Popen(
        [*cmd, sys.executable, "-m", "reverie", "daemon"], env=env, stdout=log, stderr=log
    )
    try:
        deadline = time.monotonic() + 60
        while not sock.exists():
            assert proc.poll() is None, (short_tmp / "log").read_text()
            assert time.monotonic() < deadline, (short_tmp / "log").read_text()
            time.sleep(0.05)
        with Client(sock, timeout=30, name="tests") as c:
            c.ping()
            mid = c.remember("the sandbox keeps hnswlib happy", workspace="w").id
            wait_indexed(c)  # the lexical embedder's vectors went into hnswlib
            for mode in ("lexical", "vector"):
                hits = c.search("sandbox hnswlib", workspace="w", mode=mode).hits
                assert [h.memory.id for h in hits][:1] == [mid], mode
        # The filters are really there: a test that cannot fail is no test.
        probe = subprocess.run(
            [*cmd, sys.executable, "-c", "import socket; socket.socket(socket.AF_INET)"],
            capture_output=True,
            text=True,
        )
        assert probe.returncode != 0 and "Address family not supported" in probe.stderr
        probe = subprocess.run(
            [*cmd, sys.executable, "-c", "import mmap; mmap.mmap(-1, 4096, prot=7)"],
            capture_output=True,
            text=True,
        )
        assert probe.returncode != 0 and "Operation not permitted" in probe.stderr
        # Index saves fork a writer child (index_file.start_write): the filter allows it.
        probe = subprocess.run(
            [*cmd, sys.executable, "-c", FORK_SAVE_PROBE, str(short_tmp)],
            capture_output=True,
            text=True,
        )
        assert probe.returncode == 0 and "forked" in probe.stdout, probe.stderr
    finally:
        proc.terminate()
        assert proc.wait(30) == 0, (short_tmp / "log").read_text()
        log.close()
