"""What every `reverie` command shares: exit codes, output, common options.

The commands live in rpc/cli.py (memories, search, daemon) and in one
rpc/cli_<feature>.py module per feature, each with an ``add_commands(sub)``
that rpc/cli.py's parser calls.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import msgspec
from reverie.errors import UsageError

EXIT_ERROR, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_NOT_FOUND = 1, 2, 3, 4
json_encoder = msgspec.json.Encoder()


def emit_json(obj: Any) -> None:
    sys.stdout.write(json_encoder.encode(obj).decode() + "\n")


def emit(args: argparse.Namespace, result: Any, text: object) -> int:
    """A command's answer: the result as JSON with --json, else `text`; exit code 0."""
    if args.json:
        emit_json(result)
    else:
        print(text)
    return 0


def fail(message: str, code: int) -> NoReturn:
    sys.stderr.write(f"reverie: error: {message}\n")
    raise SystemExit(code)


def parse_meta(items: Sequence[str], option: str = "--meta") -> dict[str, Any]:
    """KEY=VALUE options (`option` names them in errors) as a dict."""
    meta: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{option} takes KEY=VALUE, not {item!r}")
        try:  # numbers, booleans and JSON values keep their type
            meta[key] = json.loads(value)
        except ValueError:
            meta[key] = value
    return meta


def ts(value: dt.datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else "-"


def one_line(text: str, width: int = 160) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--socket", help="daemon socket (default: $REVERIE_SOCKET, config, runtime dir)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
