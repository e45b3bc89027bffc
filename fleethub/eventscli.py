"""`fleethub events [--follow] [--since TIME] [--type PATTERN …]`: the hub's events as JSON lines (the
envelope of docs/events.md, one per line), read with the read-only `events` NATS account."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fleethub.shared.errors import ConfigError
from fleethub.shared.settings import ServiceSettings, load_settings

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: an ISO 8601 time (UTC unless it names an offset) or a duration before now (`90s`, `10m`,
    `1h30m`, `2d`).

    Raises:
        ConfigError: neither.
    """
    value = text.strip()
    if value and _DURATION.sub("", value) == "":
        seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(value))
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--since {text!r}: not an ISO time (2026-01-31T12:00:00Z) nor a duration "
                          "(30s, 10m, 1h30m, 2d)") from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)


def _nats_url(settings: ServiceSettings) -> str:
    """The configured NATS, else the embedded one of a running `fleethub up` on the data dir."""
    from fleethub.shared.procs import pid_alive
    from fleethub.up import RUNTIME_FILE

    if "nats_url" in settings.model_fields_set:
        return settings.nats_url
    runtime_file = settings.data_dir.resolve() / RUNTIME_FILE
    if runtime_file.exists():
        runtime = json.loads(runtime_file.read_text())
        if pid_alive(int(runtime["pid"])):
            return str(runtime["nats_url"])
    raise ConfigError(f"no running `fleethub up` on {settings.data_dir.resolve()}: start it, pass --data-dir, "
                      "or set FLEETHUB_NATS_URL")


def _seed(args: argparse.Namespace, settings: ServiceSettings) -> Path | None:
    from fleethub.shared.bus.natsconfig import seed_file
    from fleethub.up import NATS_KEYS_DIR

    if args.nkey_file is not None:
        if not args.nkey_file.is_file():
            raise ConfigError(f"--nkey-file {args.nkey_file}: no such file")
        return Path(args.nkey_file)
    default = seed_file(settings.data_dir.resolve() / NATS_KEYS_DIR, "events")
    return default if default.is_file() else None


async def _print_events(args: argparse.Namespace, settings: ServiceSettings, url: str, nkey: Path | None) -> None:
    from fleethub.shared.bus import Bus, BusError, Credentials
    from fleethub.shared.eventtypes import type_matches

    since = parse_since(args.since) if args.since is not None else None
    credentials = Credentials(identity="events", nkey_file=nkey, tls_ca_file=settings.nats_tls_ca_file,
                              tls_cert_file=settings.nats_tls_cert_file, tls_key_file=settings.nats_tls_key_file)
    bus = Bus(url, settings.nats_namespace, "fleethub-events-cli", credentials)
    try:
        # nats-py keeps trying a server that refuses connections: our own deadline makes it an error
        await asyncio.wait_for(bus.connect(timeout=args.timeout), args.timeout + 1)
    except (TimeoutError, BusError) as exc:
        await bus.close()
        detail = f": {exc}" if isinstance(exc, BusError) else ""
        raise ConfigError(f"cannot reach NATS at {url} within {args.timeout:g}s{detail}") from None
    try:
        async for body in bus.tail_events(since=since, follow=args.follow):
            try:
                envelope = json.loads(body)
            except ValueError:
                continue
            if isinstance(envelope, dict) and type_matches(str(envelope.get("type")), args.type or ()):
                sys.stdout.write(json.dumps(envelope, separators=(",", ":")) + "\n")
                sys.stdout.flush()
    finally:
        await bus.close()


LEAVE_AFTER = 5.0  # seconds a Ctrl-C leaves for closing the connection before the process just exits


def _interrupted(signum: int, frame: Any) -> None:
    """Ctrl-C: stop reading (KeyboardInterrupt, exit 130), and exit anyway if closing the connection hangs
    (nats-py can swallow a cancellation, which would keep the loop waiting for its tasks)."""
    def leave() -> None:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
        os._exit(130)

    watchdog = threading.Timer(LEAVE_AFTER, leave)
    watchdog.daemon = True
    watchdog.start()
    raise KeyboardInterrupt


def events(args: argparse.Namespace) -> int:
    """Print the events (see the module docstring); `--follow` until Ctrl-C."""
    from fleethub.shared.eventtypes import check_patterns

    try:
        check_patterns(args.type or ())
    except ValueError as exc:
        raise ConfigError(f"--type: {exc}") from None
    if args.since is not None:
        parse_since(args.since)  # a bad --since fails before connecting
    overrides: dict[str, object] = {}
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    settings = load_settings(args.config, **overrides)
    url = _nats_url(settings)
    # stdout carries the events only; the bus's reconnect chatter stays out of stderr, its errors do not
    logging.basicConfig(level=logging.ERROR, format="fleethub events: %(message)s", stream=sys.stderr)
    signal.signal(signal.SIGINT, _interrupted)
    try:
        asyncio.run(_print_events(args, settings, url, _seed(args, settings)))
    except BrokenPipeError:  # `fleethub events | head`: the reader has had enough
        # Python flushes stdout once more at exit: point it at /dev/null so that does not fail again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """The `events` subcommand's parser."""
    p = sub.add_parser("events", help="print the hub's events as JSON lines (read-only events account)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing new events until Ctrl-C")
    p.add_argument("--since", default=None, metavar="TIME",
                   help="from this ISO time or this long ago (30s, 10m, 1h30m, 2d); default: the stream's start")
    p.add_argument("--type", action="append", default=None, metavar="PATTERN",
                   help="only events of this type (server.ready, server.*); repeatable")
    p.add_argument("--nkey-file", type=Path, default=None,
                   help="the events account's nkey seed (default: <data-dir>/nats-keys/events.nk when present)")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for NATS (default 5)")
    p.set_defaults(func=events)
    return p
