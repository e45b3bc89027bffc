"""`fleethub status` beside a running `fleethub up` (found through its data dir: the runtime file and the
`status` seed it keeps), with JSON logs on: every service's line is one JSON object, and a spawn's request id
is in the api's and the spawner's lines."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fleethub.shared.net import free_port
from tests.integration.test_up import start_up, stop_up, token
from tests.support.cluster import env_without_fleethub

pytestmark = pytest.mark.integration


@pytest.fixture
def data_root() -> Iterator[Path]:
    # outside pytest's basetemp, as test_up's: the embedded PostgreSQL's system user must reach it
    root = Path(tempfile.mkdtemp(prefix="fleethub-test-status-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def status(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fleethub", "status", "--data-dir", str(data_dir), *args],
                          env=env_without_fleethub(), capture_output=True, text=True, timeout=60)


def test_status_of_a_running_fleethub_up(data_root: Path) -> None:
    data_dir = data_root / "hub"
    config = data_root / "fleethub.toml"
    config.write_text('log_format = "json"\n')
    port = free_port()
    proc, _, lines = start_up(data_dir, port, config)
    try:
        headers = {"Authorization": f"token {token(data_dir, 'admin')}", "X-Request-Id": "up-spawn-1"}
        r = httpx.post(f"http://127.0.0.1:{port}/hub/api/users/admin/server", headers=headers, timeout=30)
        assert r.status_code in (201, 202), r.text
        assert r.headers["x-request-id"] == "up-spawn-1"
        out = status(data_dir, "--json", "--wait", "1.5")
        assert out.returncode == 0, out.stdout + out.stderr
        report = json.loads(out.stdout)
        assert {k: len(v) for k, v in report["services"].items()} == \
            {"auth": 1, "api": 1, "spawner": 1, "proxy": 1, "culler": 1}, report["services"]
        assert [(s["user"], s["status"]) for s in report["servers"]] in ([("admin", "running")],
                                                                        [("admin", "pending")])
        assert {c["consumer"] for s in report["streams"] for c in s["consumers"]} >= {"spawner-local"}
        assert report["dead_letters"] == 0 and report["errors"] == []
    finally:
        assert stop_up(proc) == 0
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    # everything the services wrote is JSON (what `up` prints itself, and the fake user server, is not)
    others = [line for line in lines if not line.startswith("{") and " INFO " in line]
    assert not others, others
    tagged = {r["service"] for r in logged if r.get("request_id") == "up-spawn-1"}
    assert {"api", "spawner"} <= tagged, tagged

    out = status(data_dir)  # nothing runs on the data dir any more
    assert out.returncode == 2 and "no `fleethub up` is running on" in out.stderr
