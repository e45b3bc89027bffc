"""Named crash points: places where a test makes a process die, stop or fail on purpose.

A test switches points on for one process with `FLEETHUB_FAULT` (read by `settings.fault_plan_text`),
a comma-separated list of `point:action` or `point:action@n` (act the n-th time the point is reached,
default the first). Actions:

- `kill`: SIGKILL this process (as `kill -9` would: no cleanup, no flush, no finally);
- `stop`: SIGSTOP this process (hung, holding its sockets; the test sends SIGCONT);
- `raise`: raise `FaultInjected` at the point (a handler that fails every time: a poison message).

Unset (production), `fault()` is one dict lookup. Every point is listed in `POINTS`, so that a misspelt
point in a test fails loudly instead of never firing, and `docs/faults.md` can list them.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass

from fleethub.shared.settings import FAULT_VAR, fault_plan_text

POINTS: dict[str, str] = {
    "api.after_commit_before_publish": "a start or stop request is committed with its command in the outbox; "
                                       "the relay has not published it",
    "api.after_publish_before_reply": "the command is published; the HTTP reply is not sent",
    "spawner.after_lease_before_start": "a worker claimed the spawn's lease; the backend has created nothing",
    "spawner.after_backend_create": "the backend created the server (a process exists); its state is not saved",
    "spawner.after_state_saved": "the backend state is saved; the route is not put",
    "spawner.after_route_before_ack": "the route is put and the server recorded ready; the command is not acked",
    "spawner.stop_after_backend_kill": "a stop deleted the route and ended the server; the stopped state is not "
                                       "written",
    "spawner.handle_spawn": "a worker begins handling a spawn command (with `raise`: a poison command)",
    "proxy.after_snapshot_before_serve": "a proxy node loaded its route table; it does not serve yet",
    "culler.after_stop_cmd": "the culler committed an idle server's stop; it has not gone on to the next",
    "culler.before_pass": "the culler begins a pass (with `raise`: the culler itself ends, as a service that "
                          "fails does)",
}


class FaultInjected(RuntimeError):
    """Raised at a crash point switched on with the `raise` action."""


@dataclass
class _Armed:
    action: str
    nth: int
    seen: int = 0


_plan: dict[str, _Armed] | None = None


def parse(text: str) -> dict[str, _Armed]:
    """The points and actions of a `FLEETHUB_FAULT` value.

    Raises:
        ValueError: an unknown point or action, or a bad count; the message names it.
    """
    plan: dict[str, _Armed] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        point, sep, rest = item.partition(":")
        action, _, count = rest.partition("@")
        if point not in POINTS:
            raise ValueError(f"{FAULT_VAR}: unknown crash point {point!r} (known: {', '.join(sorted(POINTS))})")
        if not sep or action not in ("kill", "stop", "raise"):
            raise ValueError(f"{FAULT_VAR}: {item!r} needs an action: kill, stop or raise")
        if count and (not count.isdigit() or int(count) < 1):
            raise ValueError(f"{FAULT_VAR}: {item!r}: the count after @ must be a whole number from 1")
        plan[point] = _Armed(action, int(count or 1))
    return plan


def fault(point: str) -> None:
    """Act at `point` if a test switched it on for this process; otherwise do nothing."""
    global _plan
    if _plan is None:
        _plan = parse(fault_plan_text())
    armed = _plan.get(point)
    if armed is None:
        if point not in POINTS:
            raise ValueError(f"crash point {point!r} is not listed in fleethub.shared.faults.POINTS")
        return
    armed.seen += 1
    if armed.seen != armed.nth and armed.action != "raise":
        return
    if armed.action == "raise":
        if armed.seen >= armed.nth:
            raise FaultInjected(f"fault injected at {point}")
        return
    if armed.action == "stop":
        os.kill(os.getpid(), signal.SIGSTOP)
        return
    os.kill(os.getpid(), signal.SIGKILL)
