"""The crash-point plan: what `FLEETHUB_FAULT` may say, and what a point does when it is reached."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from fleethub.shared import faults


def test_a_plan_names_known_points_actions_and_counts() -> None:
    plan = faults.parse("spawner.after_lease_before_start:kill@2, spawner.handle_spawn:raise")
    assert {p: (a.action, a.nth) for p, a in plan.items()} == {
        "spawner.after_lease_before_start": ("kill", 2), "spawner.handle_spawn": ("raise", 1)}
    assert faults.parse("") == {}


@pytest.mark.parametrize("text, named", [
    ("spawner.nowhere:kill", "unknown crash point 'spawner.nowhere'"),
    ("spawner.handle_spawn", "needs an action"),
    ("spawner.handle_spawn:explode", "needs an action"),
    ("spawner.handle_spawn:kill@0", "count after @"),
    ("spawner.handle_spawn:kill@x", "count after @"),
])
def test_a_bad_plan_is_refused_by_name(text: str, named: str) -> None:
    with pytest.raises(ValueError, match=named):
        faults.parse(text)


def _run(plan: str, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], env={**os.environ, "FLEETHUB_FAULT": plan},
                          capture_output=True, text=True, timeout=60)


def test_kill_acts_the_nth_time_and_raise_every_time_from_the_nth() -> None:
    code = ("from fleethub.shared.faults import fault\n"
            "for i in range(3):\n"
            "    print(i, flush=True)\n"
            "    fault('spawner.after_state_saved')\n")
    out = _run("spawner.after_state_saved:kill@2", code)
    assert out.returncode == -signal.SIGKILL
    assert out.stdout.split() == ["0", "1"]
    code = ("from fleethub.shared.faults import fault, FaultInjected\n"
            "hits = []\n"
            "for i in range(4):\n"
            "    try:\n"
            "        fault('spawner.handle_spawn')\n"
            "    except FaultInjected:\n"
            "        hits.append(i)\n"
            "print(hits)\n")
    out = _run("spawner.handle_spawn:raise@2", code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[1, 2, 3]"


def test_an_unlisted_point_in_the_code_is_a_bug() -> None:
    with pytest.raises(ValueError, match="not listed"):
        faults.fault("spawner.somewhere_new")
