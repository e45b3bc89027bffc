"""The `fleethub` command: `up`, `run SERVICE`, `migrate`, `token USER`, `passwd USER`, `nats-config --out DIR`,
`kube-secrets`, `status`, `events`."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path

from fleethub.shared.errors import FleethubError
from fleethub.shared.settings import ServiceSettings, load_settings

SERVICES = ("auth", "api", "spawner", "proxy", "culler")


def _settings(args: argparse.Namespace, **overrides: object) -> ServiceSettings:
    if getattr(args, "data_dir", None) is not None:
        overrides.setdefault("data_dir", args.data_dir)
    return load_settings(args.config, **overrides)


def cmd_run(args: argparse.Namespace) -> int:
    """Run one service in this process until SIGINT/SIGTERM."""
    settings = _settings(args)
    from fleethub.shared.logging import setup_logging

    setup_logging(settings.log_level, args.service, settings.log_format)
    if args.service != "proxy":  # the proxy needs no database
        asyncio.run(_check_schema(settings))
    module = importlib.import_module(f"fleethub.services.{args.service}.app")
    module.run(settings)
    return 0


async def _check_schema(settings: ServiceSettings) -> None:
    """Refuse to start a service on a database at another schema version (a clear NotMigrated)."""
    from fleethub.shared.db.engine import make_engine
    from fleethub.shared.db.migrate import ensure_migrated

    engine = make_engine(settings.require_database_url(), pool_size=1)
    try:
        await ensure_migrated(engine)
    except OSError as exc:
        from fleethub.shared.errors import ConfigError

        raise ConfigError(f"cannot reach the database (FLEETHUB_DATABASE_URL): {exc}") from None
    finally:
        await engine.dispose()


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply the schema migrations to FLEETHUB_DATABASE_URL."""
    settings = _settings(args)
    from fleethub.shared.db.engine import make_engine
    from fleethub.shared.db.migrate import head_revision, migrate

    async def go() -> None:
        engine = make_engine(settings.require_database_url(), pool_size=1)
        try:
            await migrate(engine)
        except OSError as exc:  # as `fleethub run` says it: no traceback for a database that is not there
            from fleethub.shared.errors import ConfigError

            raise ConfigError(f"cannot reach the database (FLEETHUB_DATABASE_URL): {exc}") from None
        finally:
            await engine.dispose()

    asyncio.run(go())
    print(f"database migrated to {head_revision()}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    """Start embedded NATS/PostgreSQL (unless URLs are given), migrate, and run every service."""
    from fleethub.up import up

    return up(args)


def cmd_token(args: argparse.Namespace) -> int:
    """Print a new API token for a user (created if missing) on the last line."""
    from fleethub.up import token

    return token(args)


def cmd_passwd(args: argparse.Namespace) -> int:
    """Set a password account's password (prompted, from stdin, or generated)."""
    from fleethub.passwd import passwd

    return passwd(args)


def cmd_nats_config(args: argparse.Namespace) -> int:
    """Write the NATS seeds and authorization block for an external NATS server."""
    from fleethub.up import nats_config

    return nats_config(args)


def cmd_kube_secrets(args: argparse.Namespace) -> int:
    """Print the Secrets of deploy/kubernetes (new NATS seeds and keys) as YAML."""
    from fleethub.kube import kube_secrets

    return kube_secrets(args, _settings(args))

def cmd_status(args: argparse.Namespace) -> int:
    """Print a deployment's services, replicas, queues, dead letters and servers."""
    from fleethub.status import status

    return status(args)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `fleethub` command."""
    parser = argparse.ArgumentParser(prog="fleethub", description="A multi-user Jupyter hub on NATS and PostgreSQL.")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, default=None, help="TOML configuration file")
        p.add_argument("--data-dir", type=Path, default=None, help="directory of embedded servers and runtime files")

    p = sub.add_parser("up", help="run everything on this machine (embedded NATS and PostgreSQL by default)")
    common(p)
    p.add_argument("--processes", action="store_true",
                   help="run each service in a process of its own, supervised (default: all in this process)")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("run", help="run one service")
    p.add_argument("service", choices=SERVICES)
    common(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("migrate", help="apply database migrations")
    common(p)
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("token", help="print a new API token for USER")
    p.add_argument("user")
    p.add_argument("--note", default="fleethub token", help="note stored with the token")
    common(p)
    p.set_defaults(func=cmd_token)

    p = sub.add_parser("passwd", help="set USER's password (password authenticator; the user is created if missing)")
    p.add_argument("user")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--stdin", action="store_true",
                        help="read the password from one line of standard input (the default when it is no terminal)")
    source.add_argument("--generate", action="store_true", help="generate a password and print it on the last line")
    p.add_argument("--admin", action="store_true", help="also make USER an admin")
    common(p)
    p.set_defaults(func=cmd_passwd)

    p = sub.add_parser("nats-config", help="write NATS credentials (one nkey seed per service) and the "
                                          "nats-server authorization block for an external NATS")
    p.add_argument("--out", type=Path, required=True, help="directory of the seeds (0700) and authorization.conf")
    p.add_argument("--namespace", default=None, help="namespace of the hub (default: from the configuration)")
    common(p)
    p.set_defaults(func=cmd_nats_config)

    p = sub.add_parser("kube-secrets", help="print new Secrets for deploy/kubernetes (NATS seeds and their "
                                           "authorization block, the hub's key, the first admin's password, "
                                           "FLEETHUB_DATABASE_URL) as YAML for `kubectl apply -f -`")
    p.add_argument("--k8s-namespace", default="fleethub", help="Kubernetes namespace of the hub (default: fleethub)")
    p.add_argument("--nats-namespace", default=None, help="the hub's NATS namespace (default: from the configuration)")
    common(p)
    p.set_defaults(func=cmd_kube_secrets)

    p = sub.add_parser("status", help="print a deployment's services and replicas, queue depths, dead letters and "
                                     "running servers (exit 1 if NATS or PostgreSQL cannot be reached)")
    p.add_argument("--json", action="store_true", help="one JSON document instead of tables")
    p.add_argument("--wait", type=float, default=1.0, help="seconds to wait for replicas to answer (default 1)")
    common(p)
    p.set_defaults(func=cmd_status)

    from fleethub.eventscli import add_parser

    common(add_parser(sub))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `fleethub` console script."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except FleethubError as exc:
        print(f"fleethub: error: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
