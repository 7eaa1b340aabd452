"""Redaction figures: import cost in a fresh process, latency per payload size, throughput.

    python tests/bench/bench_redaction.py

Fresh processes get a temporary bytecode cache (PYTHONPYCACHEPREFIX), so that
import figures are what an installed wheel pays, not source compilation.
"""

from __future__ import annotations

import json
import os
import random
import re
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from reverie.store.redaction import _clean, redact
from reverie.store.redaction_objects import redact_obj, redact_objs_deriving
from reverie.store.secret_patterns import fold, mask_of

ROOT = Path(__file__).resolve().parents[2]


def fresh_python(code: str, runs: int) -> list[str]:
    with tempfile.TemporaryDirectory() as cache:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = cache
        outs = []
        for _ in range(runs + 1):  # the first run fills the bytecode cache
            done = subprocess.run(
                [sys.executable, "-X", "importtime", "-c", code],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            outs.append(done.stdout + "\n" + done.stderr)
        return outs[1:]


def import_figures() -> None:
    code = (
        "import time; t0 = time.perf_counter(); import reverie.store.redaction as r; "
        f"t1 = time.perf_counter(); r.redact({json.dumps(HOOK_PAYLOAD)!r}); "
        "t2 = time.perf_counter(); print('T', (t1 - t0) * 1e3, (t2 - t1) * 1e3)"
    )
    selfs, totals, firsts = [], [], []
    for out in fresh_python(code, 15):
        # The redaction engine and the secret_* modules it is split into.
        rows = re.findall(
            r"import time:\s+(\d+) \|\s+\d+ \| reverie\.store\.(?:redaction|secret_\w+)$", out, re.M
        )
        assert rows, out
        selfs.append(sum(int(r) for r in rows) / 1000)
        t = re.search(r"^T (\S+) (\S+)$", out, re.M)
        assert t, out
        totals.append(float(t.group(1)))
        firsts.append(float(t.group(2)))
    own = statistics.median(selfs)
    print(f"import reverie.store.redaction and secret_*: own time, median {own:.2f} ms")
    print(
        f"import incl. parent packages (reverie/__init__ imports the client): "
        f"median {statistics.median(totals):.1f} ms"
    )
    first = statistics.median(firsts)
    print(f"first redact() of a 1 KB hook payload with a secret: median {first:.2f} ms")


HOOK_PAYLOAD = {
    "session_id": "8b0e7c6a-3f1d-4b2a-9c8e-1d2f3a4b5c6d",
    "transcript_path": "/home/alice/.claude/projects/app/8b0e7c6a.jsonl",
    "cwd": "/home/alice/src/app",
    "hook_event_name": "PostToolUse",
    "tool_name": "Bash",
    "tool_input": {
        "command": "export GITHUB_TOKEN=ghp_aB3dEfGhIjKlMnOpQrStUvWxYz0123456789 && gh pr list",
        "description": "List open pull requests",
    },
    "tool_response": {
        "stdout": "#12 fix token refresh race  main\n#13 add password reset flow  feat/reset\n" * 8,
        "stderr": "",
        "interrupted": False,
    },
}


def timeit(fn: Callable[[], object], budget: float = 0.5) -> float:
    """Best time of one call, in seconds, over repeated calls within ``budget``."""
    best = float("inf")
    deadline = time.perf_counter() + budget
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def corpus() -> dict[str, str]:
    rng = random.Random(7)
    source = "".join(
        p.read_text()
        for p in sorted((ROOT / "store").glob("*.py"))
        if p.name != "redaction.py" and not p.name.startswith("secret_")
    )
    prose = (
        (ROOT.parent / "shared" / "DESIGN.md").read_text()
        if (ROOT.parent / "shared" / "DESIGN.md").exists()
        else source
    )
    payload = json.dumps(HOOK_PAYLOAD)
    return {
        "python source": source,
        "prose (markdown)": prose,
        "hook payload JSON": payload,
        "base64 blob": "".join(
            rng.choice(string.ascii_letters + string.digits + "+/") for _ in range(200_000)
        ),
    }


def batch_figures() -> None:
    """What ingest pays: a batch of Claude Code events, payload and observation redacted."""
    sys.path.insert(0, str(ROOT / "tests" / "bench"))
    from bench_ingest import _batches
    from reverie.store.observations import observe

    for kind in ("session", "observations"):
        events = [e for client in range(4) for b in _batches(kind, client, 500, 2) for e in b]
        payloads = [e.payload for e in events]

        def derive(i: int, obj: object, events: list = events) -> str:  # type: ignore[type-arg]
            obs = observe(events[i].type, obj)  # type: ignore[arg-type]
            return obs.text if obs else ""

        t = timeit(lambda p=payloads, d=derive: redact_objs_deriving(p, d), budget=2.0)  # type: ignore[misc]
        print(
            f"redact_objs_deriving, {kind} batch (observe included): "
            f"{t / len(events) * 1e6:.2f} us/event"
        )
    text = "".join(p.read_text() for p in sorted((ROOT / "store").glob("*.py")))
    t = timeit(lambda: mask_of(text, fold(text)), budget=1.0)
    print(f"mask_of on python source: {t / len(text) * 1e9:.1f} ns/char")


def main() -> None:
    import_figures()
    print()
    texts = corpus()
    for name, text in texts.items():
        for size in (200, 2_000, 20_000):
            sample = (text * (size // len(text) + 1))[:size]
            t = timeit(lambda s=sample: redact(s))  # type: ignore[misc]
            print(f"redact {name:18s} {size:>7,d} B: {t * 1e6:9.1f} us  ({1 / t:>9,.0f} calls/s)")
    for name, text in texts.items():
        big = (text * (1_000_000 // len(text) + 1))[:1_000_000]
        t = timeit(lambda b=big: redact(b), budget=1.5)  # type: ignore[misc]
        print(f"redact {name:18s} 1 MB: {t * 1e3:7.1f} ms ({1 / t:5.1f} MB/s)")
    size = len(json.dumps(HOOK_PAYLOAD))
    t = timeit(lambda: redact_obj(HOOK_PAYLOAD))
    print(f"redact_obj(hook payload, {size} B JSON), strings remembered clean: {t * 1e6:.1f} us")
    t = timeit(lambda: (_clean.clear(), redact_obj(HOOK_PAYLOAD)))
    print(f"redact_obj(hook payload, {size} B JSON), nothing remembered: {t * 1e6:.1f} us")
    batch_figures()
    worst = ("self.token=", "_key=", "pass=pass", "://a:b@", 'password="', "Authorization: ")
    for unit in worst:
        text = (unit * (1_000_000 // len(unit) + 1))[:1_000_000]
        t0 = time.perf_counter()
        redact(text)
        print(f"adversarial 1 MB of {unit!r:20s}: {(time.perf_counter() - t0) * 1e3:7.1f} ms")


if __name__ == "__main__":
    main()
