"""Spawn overhead: fleethub's POST → route answering, against exec → first answer of the same server.

Starts `fleethub up` (embedded NATS and PostgreSQL) in a temporary data dir with the test suite's
stand-in user server, then for N users measures (a) the direct start of that server command and (b)
a spawn through the API until `/user/<name>/` answers through the proxy. Prints both and the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from fleethub.shared.net import free_port

ROOT = Path(__file__).resolve().parents[2]
FAKE = ROOT / "tests" / "support" / "fake_singleuser.py"


def wait_http(url: str, timeout: float = 30, headers: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            req = urllib.request.Request(url, headers=headers or {})
            with urllib.request.urlopen(req, timeout=2) as r:  # loopback only
                if r.status < 500:
                    return time.perf_counter() - t0
        except OSError:
            pass
        time.sleep(0.002)
    raise RuntimeError(f"{url} did not answer")


def direct_start() -> float:
    port = free_port()
    env = {**os.environ, "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{port}/user/x/",
           "JUPYTERHUB_SERVICE_PREFIX": "/user/x/"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, str(FAKE)], env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/user/x/api")
        return time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait()


def api(base: str, token: str, method: str, path: str, body: object | None = None) -> int:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"{base}/hub/api{path}", data=data, method=method,
                                 headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # loopback only
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spawns", type=int, default=20)
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="fleethub-bench-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETHUB_")}
    env.update(FLEETHUB_PROXY__PORT=str(port), FLEETHUB_SPAWNER__CMD=json.dumps([sys.executable, str(FAKE)]),
               FLEETHUB_API__SLOW_SPAWN_TIMEOUT="0")
    t0 = time.perf_counter()
    up = subprocess.Popen([sys.executable, "-m", "fleethub", "up", "--data-dir", str(data_dir)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert up.stdout is not None
        for line in up.stdout:
            if "is running" in line:
                break
        startup = time.perf_counter() - t0
        token = subprocess.run([sys.executable, "-m", "fleethub", "token", "admin", "--data-dir", str(data_dir)],
                               env=env, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        names = [f"bench{i}" for i in range(args.spawns)]
        api(base, token, "POST", "/users", {"usernames": names})
        direct = [direct_start() for _ in names]
        via_hub = []
        for name in names:
            t = time.perf_counter()
            status = api(base, token, "POST", f"/users/{name}/server")
            assert status in (201, 202), status
            wait_http(f"{base}/user/{name}/api")
            via_hub.append(time.perf_counter() - t)
        for name in names:
            api(base, token, "DELETE", f"/users/{name}/server")
    finally:
        up.send_signal(signal.SIGTERM)
        up.communicate(timeout=60)

    def ms(xs: list[float], q: float) -> float:
        return statistics.quantiles(xs, n=100)[int(q) - 1] * 1000 if len(xs) > 1 else xs[0] * 1000

    over = [h - d for h, d in zip(sorted(via_hub), sorted(direct), strict=True)]
    print(f"fleethub up → first answer: {startup:.2f} s")
    print(f"{'':28}{'p50 ms':>10}{'p90 ms':>10}")
    print(f"{'direct exec → answer':28}{ms(direct, 50):10.1f}{ms(direct, 90):10.1f}")
    print(f"{'fleethub POST → routed':28}{ms(via_hub, 50):10.1f}{ms(via_hub, 90):10.1f}")
    print(f"{'overhead (sorted pairs)':28}{ms(over, 50):10.1f}{ms(over, 90):10.1f}")
    print(f"ratio fleethub/direct at p50: {statistics.median(via_hub) / statistics.median(direct):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
