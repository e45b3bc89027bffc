"""`fleethub passwd USER`: set a `password` account's password from the command line (the first admin of a
compose or external deployment, a locked-out admin), against the database `fleethub token` would use.

The password comes from two getpass prompts on a terminal, else from one line of standard input, or is
generated (`--generate`, printed on the last line). It passes the `[auth.password]` rules. The user (and
with `--admin` its admin flag) is created if missing; an existing account's password is replaced and the
user's login sessions end, as an admin's reset through the API does.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import sys

from fleethub.shared.errors import ConfigError
from fleethub.shared.names import normalize_username
from fleethub.shared.passwords import check_password_rules, generate_password
from fleethub.shared.settings import ServiceSettings, load_settings


def _read_password(args: argparse.Namespace, settings: ServiceSettings, name: str) -> str:
    if args.generate:
        return generate_password(settings.auth.password)
    if args.stdin or not sys.stdin.isatty():
        line = sys.stdin.readline()
        password = line[:-1] if line.endswith("\n") else line
        password = password[:-1] if password.endswith("\r") else password
        if not password:
            raise ConfigError("no password on standard input (one line is read)")
        return password
    password = getpass.getpass(f"New password for {name}: ")
    if getpass.getpass("Again: ") != password:
        raise ConfigError("the two passwords differ; nothing was changed")
    return password


async def _set(url: str, settings: ServiceSettings, name: str, password: str, admin: bool) -> int:
    from fleethub.shared.accounts import set_password
    from fleethub.shared.db.engine import make_engine, make_sessionmaker
    from fleethub.shared.db.migrate import ensure_migrated
    from fleethub.shared.logins import end_logins

    engine = make_engine(url, pool_size=1)
    try:
        await ensure_migrated(engine)
        async with make_sessionmaker(engine)() as session, session.begin():
            user_id = await set_password(session, name, password, rules=settings.auth.password,
                                         admin=True if admin else None)
            return await end_logins(session, settings.nats_namespace, user_id, normalize_username(name))
    except OSError as exc:
        raise ConfigError(f"cannot reach the database (FLEETHUB_DATABASE_URL): {exc}") from None
    finally:
        await engine.dispose()


def passwd(args: argparse.Namespace) -> int:
    """Set USER's password; with `--generate`, print it on the last line."""
    from fleethub.up import database_url

    overrides = {"data_dir": args.data_dir} if args.data_dir is not None else {}
    settings = load_settings(args.config, **overrides)
    name = normalize_username(args.user)
    if settings.auth.authenticator != "password":
        print(f"note: auth.authenticator is {settings.auth.authenticator!r}: the account is used only with "
              "the 'password' authenticator", file=sys.stderr)
    password = _read_password(args, settings, name)
    check_password_rules(password, name, settings.auth.password)  # before the database: a quick, clear refusal
    with contextlib.ExitStack() as stack:
        ended = asyncio.run(_set(database_url(settings, stack), settings, name, password, args.admin))
    role = " (an admin)" if args.admin else ""
    print(f"password of {name}{role} set; {ended} login session(s) ended")
    if args.generate:
        print(password)
    return 0
