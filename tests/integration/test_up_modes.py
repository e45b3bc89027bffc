"""`fleethub up` hosts every service in its own interpreter by default (one process beside NATS and
PostgreSQL), and with `--processes` runs each in a process of its own, restarted when it dies."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from fleethub.shared.net import free_port
from tests.integration.test_up import data_root, leftover_processes, start_up, stop_up

pytestmark = pytest.mark.integration
__all__ = ["data_root"]  # the fixture, imported for the tests here

SERVICES = ("auth", "api", "spawner", "proxy", "culler")


def children(pid: int) -> dict[int, str]:
    """pid → command line of the live children of `pid`."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found[int(entry)] = cmd
    return found


def service_processes(pid: int) -> dict[str, int]:
    """service → pid of the `fleethub run SERVICE` children of `pid`."""
    out = {}
    for child, cmd in children(pid).items():
        for name in SERVICES:
            if cmd.rstrip().endswith(f"-m fleethub run {name}"):
                out[name] = child
    return out


def test_up_hosts_every_service_in_its_own_process(data_root: Path) -> None:
    data_dir = data_root / "hub"
    port = free_port()
    proc, _, lines = start_up(data_dir, port)
    try:
        kinds = sorted("nats" if "nats-server" in cmd else "postgres" if "postgres" in cmd else cmd
                       for cmd in children(proc.pid).values())
        assert kinds == ["nats", "postgres"], kinds  # no process per service: they run inside `up`
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as c:
            assert c.get("/hub/api/").status_code == 200
            assert c.get("/hub/login").status_code == 200
        text = "".join(lines)  # /hub/login is auth's, /hub/api/ the api's; the workers say they run
        for started in ("spawner worker spawner-", "proxy node proxy-", "culler running"):
            assert started in text, started
    finally:
        assert stop_up(proc) == 0
    assert leftover_processes(data_dir) == []


def test_up_with_processes_runs_and_restarts_each_service_in_its_own(data_root: Path) -> None:
    data_dir = data_root / "hub"
    port = free_port()
    proc, _, lines = start_up(data_dir, port, args=("--processes",))
    try:
        first = service_processes(proc.pid)
        assert set(first) == set(SERVICES), children(proc.pid)
        os.kill(first["api"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while True:
            now = service_processes(proc.pid)
            if now.get("api") not in (None, first["api"]):
                break
            assert time.monotonic() < deadline, "the api was not restarted:\n" + "".join(lines[-60:])
            time.sleep(0.1)
        assert {k: v for k, v in now.items() if k != "api"} == {k: v for k, v in first.items() if k != "api"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as c:
            while c.get("/hub/api/").status_code != 200:  # the new api registers with the proxy
                assert time.monotonic() < deadline, "the restarted api does not answer"
                time.sleep(0.1)
        assert any("service api exited with -9; restarting" in line for line in lines)
    finally:
        assert stop_up(proc) == 0
    assert leftover_processes(data_dir) == []


def _wait_line(lines: list[str], text: str, after: int, what: str, deadline: float) -> int:
    """The index of the first line from `after` on that holds `text`."""
    while True:
        for i in range(after, len(lines)):
            if text in lines[i]:
                return i
        assert time.monotonic() < deadline, f"{what}:\n" + "".join(lines[-80:])
        time.sleep(0.1)


def test_up_restarts_a_hosted_service_that_ends(data_root: Path) -> None:
    """The culler's task ends (a crash point raises from its 15th pass on, a second apart, so from the first pass
    of each restart): the host starts it again, after a backoff that grows; `up` and the other services run on,
    and only SIGTERM stops `up` (exit 0)."""
    data_dir = data_root / "hub"
    port = free_port()
    proc, _, lines = start_up(data_dir, port, extra_env={"FLEETHUB_CULLER__EVERY": "1",
                                                         "FLEETHUB_FAULT": "culler.before_pass:raise@15"})
    try:
        deadline = time.monotonic() + 90
        running = _wait_line(lines, "culler running", 0, "the culler never said it runs", deadline)
        ended = _wait_line(lines, "service culler ended", running + 1, "the culler did not end", deadline)
        assert "FaultInjected" in lines[ended] and "restarting it in 0.5s" in lines[ended], lines[ended]
        again = _wait_line(lines, "culler running", ended + 1, "the culler was not started again", deadline)
        ended = _wait_line(lines, "service culler ended", again + 1, "the restarted culler did not end", deadline)
        assert "restarting it in 1.0s" in lines[ended], lines[ended]
        _wait_line(lines, "culler running", ended + 1, "the culler was not started a third time", deadline)
        assert proc.poll() is None  # `up` runs on, and so do the others
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=15) as c:
            assert c.get("/hub/api/").status_code == 200
            assert c.get("/hub/login").status_code == 200
        assert not any("fleethub is stopping" in line for line in lines)
        ends = [line for line in lines if "service " in line and " ended (" in line]
        assert all(line.startswith("service culler ended") for line in ends), ends  # none other ended
    finally:
        assert stop_up(proc) == 0
    assert leftover_processes(data_dir) == []
