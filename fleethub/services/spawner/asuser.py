"""The as-user helper of the `system-user` backend: it starts every server as its account (run by a root
worker with `--as`, or through `spawner.system_user.mediator`: `sudo -n -E -u alice -- python -I -m
fleethub.services.spawner.asuser …`, as SudoSpawner's `sudospawner`), and finds and ends the account's
servers for a worker that is not root.

    exec [--as UID:GID:GROUPS] -- CMD ARG...
                         start a server: as UID, GID and the comma-separated GROUPS when given (the
                         worker is root and starts it directly: an event loop such as uvloop cannot
                         switch users itself), the environment as the worker gave it (sudo resets
                         PATH and adds SUDO_*), cwd the account's home, a session of its own, then
                         exec CMD (never as root)
    find MARKER          print the pids (JSON) of this account's session leaders carrying MARKER
    end MARKER GRACE     SIGTERM their process groups, SIGKILL after GRACE seconds, then SIGKILL every
                         process of this account still carrying MARKER (kernels in sessions of their own)

Standard library only besides `marks`/`procs`: it starts fast (each start, and a non-root worker's look
for a server another worker started).
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import sys
import time

from fleethub.services.spawner.marks import marked_processes
from fleethub.shared.procs import pid_alive, signal_group

PATH_VAR = "FH_SERVER_PATH"
"""The server's PATH, carried past the mediator (sudo replaces PATH with its secure_path)."""

KEEP_VAR = "FH_SERVER_ENV"
"""The names of the server's environment (comma-separated; names only): what the mediator added goes."""


def _become(spec: str) -> None:
    uid, gid, groups = spec.split(":")
    os.setgroups([int(g) for g in groups.split(",") if g])
    os.setgid(int(gid))
    os.setuid(int(uid))


def _exec(argv: list[str], become: str | None) -> int:
    if become is not None:
        try:
            _become(become)
        except (OSError, ValueError) as exc:
            print(f"fleethub: cannot switch to the account ({become}): {exc}", file=sys.stderr)
            return 126
    if os.getuid() == 0 or os.geteuid() == 0:
        print("fleethub: refusing to run a user server as root (the mediator ran it as uid 0)", file=sys.stderr)
        return 126
    path = os.environ.pop(PATH_VAR, None)
    if path is not None:
        os.environ["PATH"] = path
    keep = os.environ.pop(KEEP_VAR, None)
    if keep is not None:  # the server's environment is what the worker gave, not what sudo added (SUDO_*, TERM)
        wanted = set(keep.split(","))
        for name in [name for name in os.environ if name not in wanted]:
            del os.environ[name]
    home = os.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    try:
        os.chdir(home)
    except OSError as exc:
        print(f"fleethub: cannot enter the home directory {home}: {exc.strerror}", file=sys.stderr)
        return 126
    try:
        os.setsid()  # the server leads its own session, as with the direct start: found and ended the same way
    except OSError:
        pass  # already a group leader (the mediator made it one)
    try:
        os.execvp(argv[0], argv)
    except OSError as exc:
        print(f"fleethub: cannot run the server command {argv[0]!r}: {exc.strerror}", file=sys.stderr)
    return 127


def _end(marker: str, grace: float) -> None:
    uid = os.getuid()
    leaders = marked_processes(marker, uid=uid)
    for pid in leaders:
        signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(pid_alive(pid) for pid in leaders) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in leaders:
        signal_group(pid, signal.SIGKILL)
    for pid in marked_processes(marker, uid=uid, leaders=False):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main(argv: list[str]) -> int:
    """Run one action (see the module docstring); its exit status."""
    if argv[:1] == ["exec"] and "--" in argv and argv[-1] != "--":
        options, command = argv[1:argv.index("--")], argv[argv.index("--") + 1:]
        if options in ([], ) or (len(options) == 2 and options[0] == "--as"):
            return _exec(command, options[1] if options else None)
    if len(argv) == 2 and argv[0] == "find":
        print(json.dumps(marked_processes(argv[1], uid=os.getuid())))
        return 0
    if len(argv) == 3 and argv[0] == "end":
        _end(argv[1], float(argv[2]))
        return 0
    print("usage: asuser exec [--as UID:GID:GROUPS] -- CMD... | find MARKER | end MARKER GRACE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
