"""A proxy node of several worker processes on one port: the supervisor.

The supervisor binds the public (and API) port with SO_REUSEPORT without listening, which reserves
the port (resolving port 0) while the kernel sends it no connection; then it starts `proxy.workers`
processes that bind the same port with SO_REUSEPORT and listen once each holds the whole route
table. The kernel spreads connections over the listening workers. A worker that dies is restarted
(with backoff); the others serve meanwhile. On SIGTERM the workers drain and stop; a worker whose
supervisor disappears stops by itself. The supervisor is the subreaper of its workers' descendants.

Every worker is a whole node: its own NATS connection, route table, upstream pool and activity
batches (published under its own replica id), so no state is shared between processes.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from fleethub.services.proxy.app import SHUTDOWN_GRACE, WORKER_ENV, WORKER_INDEX_ENV, api_token
from fleethub.shared.procs import become_subreaper, reap_orphans
from fleethub.shared.service import bind_socket
from fleethub.shared.settings import ServiceSettings, child_env

log = logging.getLogger(__name__)

POLL = 0.2
MAX_BACKOFF = 10.0


def _port(sock: socket.socket) -> int:
    return int(sock.getsockname()[1])


def worker_env(settings: ServiceSettings, port: int, api_port: int | None,
               redirect_port: int | None = None) -> dict[str, str]:
    """The environment of one worker: the node's settings with its resolved ports, one worker each."""
    overrides: dict[str, Any] = {"port": port, "workers": 1}
    if api_port is not None:
        overrides["api_port"] = api_port
    if redirect_port is not None:
        overrides["http_redirect_port"] = redirect_port
    proxy = settings.proxy.model_copy(update=overrides)
    env = child_env(settings.model_copy(update={"proxy": proxy}))
    env[WORKER_ENV] = str(os.getpid())
    return env


class Supervisor:
    """Starts, restarts and stops the workers of one node."""

    def __init__(self, settings: ServiceSettings) -> None:
        conf = settings.proxy
        self.count = conf.workers
        self.reserved = [bind_socket(conf.host, conf.port, listen=False, reuse_port=True)]
        api_port = None
        if conf.api_port is not None:
            api_token(settings)  # refuse to start workers that would all refuse
            api = bind_socket(conf.api_host, conf.api_port, listen=False, reuse_port=True)
            self.reserved.append(api)
            api_port = _port(api)
        redirect_port = None
        if conf.http_redirect_port is not None:
            redirect = bind_socket(conf.host, conf.http_redirect_port, listen=False, reuse_port=True)
            self.reserved.append(redirect)
            redirect_port = _port(redirect)
        self.port = _port(self.reserved[0])
        self.env = worker_env(settings, self.port, api_port, redirect_port)
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * self.count
        self.deaths: list[list[float]] = [[] for _ in range(self.count)]
        self.due: list[float] = [0.0] * self.count  # when a dead worker may be restarted
        self.stopping = False

    def start(self, i: int) -> None:
        self.procs[i] = subprocess.Popen([sys.executable, "-m", "fleethub", "run", "proxy"],
                                         env={**self.env, WORKER_INDEX_ENV: str(i)})

    def check(self, now: float) -> None:
        """Restart dead workers: at once the first time, then with growing delays while they keep dying."""
        for i, proc in enumerate(self.procs):
            if proc is not None and proc.poll() is None:
                continue
            if proc is not None and proc.returncode == 0 and not self.stopping:
                log.warning("proxy worker %d stopped for a hub shutdown; the node stops", i)
                self.stopping = True  # a worker only exits 0 when told to stop (signal or hub.shutdown)
                return
            if proc is not None:
                recent = [t for t in self.deaths[i] if now - t < 60]
                self.deaths[i] = [*recent, now]
                delay = min(0.25 * 2 ** len(recent), MAX_BACKOFF) if recent else 0.0
                log.error("proxy worker %d (pid %d) exited with %s; restarting in %.1fs", i, proc.pid,
                          proc.returncode, delay)
                self.procs[i] = None
                self.due[i] = now + delay
            if now >= self.due[i]:
                self.start(i)

    def stop(self) -> None:
        """SIGTERM every worker, wait for them to drain, SIGKILL stragglers."""
        live = [p for p in self.procs if p is not None and p.poll() is None]
        for proc in live:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + SHUTDOWN_GRACE + 5
        for proc in live:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for sock in self.reserved:
            sock.close()

    def own_pids(self) -> set[int]:
        return {p.pid for p in self.procs if p is not None}


def supervise(settings: ServiceSettings) -> None:
    """Run the workers of one node until SIGINT/SIGTERM."""
    sup = Supervisor(settings)
    become_subreaper()

    def on_signal(signum: int, frame: Any) -> None:
        sup.stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("proxy node on port %d: %d workers", sup.port, sup.count)
    try:
        for i in range(sup.count):
            sup.start(i)
        while not sup.stopping:
            time.sleep(POLL)
            sup.check(time.monotonic())
            reap_orphans(sup.own_pids())
    finally:
        sup.stop()
        reap_orphans(set())
