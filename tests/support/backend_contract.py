"""`BackendContract`: what every spawner backend must do, as tests a backend's test module inherits.

Each test is a real start against the real system (a process, a container, a Slurm job). A backend's test
subclasses it (the class name starts with `Test`, so pytest collects it; this base does not) and gives:

- `backend_name` (a name of `spawner.backends`, e.g. "local"), or `worker_factory` (below);
- the fixture `settings` (`ServiceSettings`: the `[spawner]` settings the backend runs with, its system's
  address; `data_dir` in a tmp dir);
- `serve_cmd`: the server command (the real `jupyterhub-singleuser`, or a small HTTP server such as
  tests/support/fake_singleuser.py answering under `JUPYTERHUB_SERVICE_PREFIX`), as it runs on the
  backend's system;
- `kill_server(state)`: kill a running server from outside (SIGKILL its process, `docker kill`, ...);
- `leftovers(identity)`: what of that server still exists on the system (descriptions; empty: nothing) —
  it looks for itself (/proc, `docker ps -a`, `squeue`), never through the backend under test;
- `remove_leftovers(identity)`: end those by the system's own means (`kill`, `docker rm -f`, `scancel`):
  the cleanup after a test whose backend did not stop its server, so a failing test leaks nothing.

A real `jupyterhub-singleuser` asks the hub's API for its version before it listens: the session fixture
`hub_api_url` (tests/conftest.py, tests/support/hub_api_stub.py) answers that (put it in `spawner.hub_api_url`).

Optional: the fixture `user` (a user the system knows: a Unix account), `failing_cmd` (exits at once
printing `FAIL_TEXT`), `silent_cmd` (runs and never listens), `dying_cmd(after)` (answers, then exits
`after` seconds later), `server_output(spec, state)` (where a user reads the server's output: its log
file by default), the time limits below, and `worker_factory` ("module:function", settings -> backend)
when `load_backend(settings, backend_name)` does not build it.

tests/integration/spawner/test_local_contract.py is the example (about 30 lines). A "worker" is a backend
instance: `make_backend(settings)` again is another worker, which shares nothing in memory with the
first. The adoption tests run the worker as a process of its own (tests/support/contract_worker.py, which
builds the backend from the same settings and `backend_name` / `worker_factory`) and SIGKILL it during a
start. A test of the contract set to None in a subclass is not collected (for a second subclass that
repeats only some tests, e.g. with a slower real server).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from fleethub.services.spawner.backends import Backend, ServerSpec, load_backend
from fleethub.services.spawner.env import server_env
from fleethub.shared.events import new_id
from fleethub.shared.names import encode_token, server_prefix
from fleethub.shared.procs import become_subreaper, reap_orphans
from fleethub.shared.settings import ServiceSettings, child_env

WORKER = Path(__file__).with_name("contract_worker.py")
REPO = Path(__file__).resolve().parents[2]
SECRET_KEY = "contract-secret-key-" + "k" * 24
FAIL_TEXT = "contract: the notebook directory /nonexistent/contract does not exist"


@dataclass
class Started:
    """What a test started, for the cleanup that runs whatever the test's outcome."""

    identities: list[dict[str, Any]] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)


class BackendContract:
    """The backend contract; see the module docstring for what a subclass gives."""

    backend_name: ClassVar[str] = "local"
    worker_factory: ClassVar[str | None] = None
    serve_cmd: ClassVar[list[str]] = []

    ready_timeout: ClassVar[float] = 20.0
    """Seconds a started server may take to answer HTTP (a real jupyterhub-singleuser takes a few)."""
    start_timeout: ClassVar[float] = 20.0
    """Seconds `start` may take (as `spawner.start_timeout`)."""
    gone_within: ClassVar[float] = 10.0
    """Seconds after which a server that exited (or was killed) must poll False."""
    die_after: ClassVar[float] = 2.0
    """Seconds `dying_cmd` serves before it exits (after it answered)."""
    leftover_grace: ClassVar[float] = 0.0
    """Seconds the system may take after `stop` returned to show nothing left (0: at once, as promised)."""

    # --- what a subclass gives ------------------------------------------------------------------

    @pytest.fixture
    def settings(self, tmp_path: Path) -> ServiceSettings:
        raise NotImplementedError("a BackendContract subclass provides the `settings` fixture")

    @pytest.fixture
    def user(self) -> str:
        return "contract-user"

    async def kill_server(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    async def leftovers(self, identity: dict[str, Any]) -> list[str]:
        raise NotImplementedError

    async def remove_leftovers(self, identity: dict[str, Any]) -> None:
        """End what `leftovers` lists without the backend (the cleanup after a test whose backend failed)."""
        raise NotImplementedError

    def failing_cmd(self) -> list[str]:
        return ["/bin/sh", "-c", f"echo '{FAIL_TEXT}' >&2; exit 3"]

    def silent_cmd(self) -> list[str]:
        return ["/bin/sh", "-c", "exec sleep 300"]

    def dying_cmd(self, after: float) -> list[str]:
        return ["timeout", "-s", "KILL", f"{after:g}", *self.serve_cmd]

    async def server_output(self, spec: ServerSpec, state: dict[str, Any]) -> str:
        """What the server wrote, where its user can read it (default: the spawn's log file)."""
        if spec.log_path is None or not spec.log_path.exists():
            return ""
        return spec.log_path.read_text(errors="replace")

    def make_backend(self, settings: ServiceSettings) -> Backend:
        """A fresh backend instance: another worker."""
        if self.worker_factory:
            module, _, name = self.worker_factory.partition(":")
            import importlib

            return getattr(importlib.import_module(module), name)(settings)  # type: ignore[no-any-return]
        return load_backend(settings, self.backend_name)

    # --- the contract's own fixtures and helpers ------------------------------------------------

    @pytest.fixture
    async def started(self, settings: ServiceSettings) -> AsyncIterator[Started]:
        """Everything a test starts is stopped at the end, by a fresh backend, whatever the outcome."""
        become_subreaper()  # servers of a killed worker process are re-parented to us and reaped here
        record = Started()
        try:
            yield record
        finally:
            for proc in record.workers:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
            cleaner = self.make_backend(settings)
            for identity in record.identities:
                try:
                    await cleaner.stop(identity)
                except Exception as exc:  # report, but go on cleaning the rest
                    print(f"cleanup stop of {identity} failed: {exc!r}", file=sys.stderr)
                # a backend under test may fail to stop: the system's own means end what it left
                if await self.leftovers(identity):
                    print(f"cleanup: the backend left {await self.leftovers(identity)}", file=sys.stderr)
                    await self.remove_leftovers(identity)
                    for _ in range(50):
                        reap_orphans()
                        if not await self.leftovers(identity):
                            break
                        await asyncio.sleep(0.1)
            reap_orphans()

    @pytest.fixture
    def backend(self, settings: ServiceSettings) -> Backend:
        return self.make_backend(settings)

    def spec(self, settings: ServiceSettings, user: str, cmd: list[str] | None = None,
             server_name: str = "") -> ServerSpec:
        """A spawn of `user`'s server running `cmd` (default `serve_cmd`), as the worker builds it."""
        config = settings.spawner.model_copy(update={"cmd": list(cmd or self.serve_cmd), "args": []})
        spawn_id = new_id()
        return ServerSpec(
            user=user, server_name=server_name, spawn_id=spawn_id, prefix=server_prefix(user, server_name),
            env=server_env(settings, SECRET_KEY, user, server_name, spawn_id, config=config),
            log_path=settings.data_dir / "logs" / f"{encode_token(user)}.{encode_token(server_name)}.log",
            config=config,
        )

    async def _start(self, backend: Backend, spec: ServerSpec,
                     started: Started) -> tuple[dict[str, Any], dict[str, Any]]:
        identity = backend.identity(spec)
        started.identities.append(identity)
        state = await asyncio.wait_for(backend.start(spec, identity), self.start_timeout)
        return identity, state

    async def _answers(self, url: str) -> int | None:
        try:
            async with httpx.AsyncClient(timeout=2.0) as client:
                return (await client.get(url)).status_code
        except httpx.HTTPError:
            return None

    async def _wait_ready(self, backend: Backend, spec: ServerSpec, state: dict[str, Any]) -> str:
        """Wait until the server answers at `<target><prefix>api`; returns that URL."""
        deadline = time.monotonic() + self.ready_timeout
        url = f"{backend.target(state)}{spec.prefix}api"
        while True:
            status = await self._answers(url)
            if status is not None and status < 500:
                return url
            if not await backend.poll(state):
                output = await self.server_output(spec, state)
                pytest.fail(f"the server exited before answering {url}; its output:\n{output[-2000:]}")
            if time.monotonic() > deadline:
                output = await self.server_output(spec, state)
                pytest.fail(f"the server did not answer {url} within {self.ready_timeout:g}s; its output:\n"
                            f"{output[-2000:]}")
            await asyncio.sleep(0.1)

    async def _polls_false_within(self, backend: Backend, state: dict[str, Any], seconds: float) -> float:
        t0 = time.monotonic()
        while await backend.poll(state):
            if time.monotonic() - t0 > seconds:
                pytest.fail(f"poll still True {seconds:g}s after the server ended: {state}")
            await asyncio.sleep(0.1)
        return time.monotonic() - t0

    async def _assert_nothing_left(self, settings: ServiceSettings, identity: dict[str, Any]) -> None:
        deadline = time.monotonic() + self.leftover_grace
        while True:
            reap_orphans()
            left = await self.leftovers(identity)
            if not left or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.1)
        assert not left, f"left behind after stop: {left}"
        other = self.make_backend(settings)  # another worker sees nothing either
        assert await other.locate(identity) is None
        assert not await other.poll(identity)

    # --- the contract ---------------------------------------------------------------------------

    async def test_start_reach_stop(self, settings: ServiceSettings, backend: Backend, user: str,
                                    started: Started) -> None:
        spec = self.spec(settings, user)
        identity, state = await self._start(backend, spec, started)
        assert {k: state[k] for k in identity} == identity, "the state holds the identity unchanged"
        url = await self._wait_ready(backend, spec, state)
        async with httpx.AsyncClient(timeout=5.0) as client:
            assert (await client.get(url)).status_code < 400
        assert await backend.poll(state)
        assert await backend.poll(identity), "poll from the identity alone"
        await backend.stop(state)
        assert not await backend.poll(state)
        await self._assert_nothing_left(settings, identity)
        assert await self._answers(url) is None

    async def test_identity_and_state_are_json_without_secrets(self, settings: ServiceSettings, backend: Backend,
                                                               user: str, started: Started) -> None:
        spec = self.spec(settings, user)
        assert backend.identity(spec) != backend.identity(self.spec(settings, user)), \
            "two spawns (two spawn ids) have different identities"
        identity, state = await self._start(backend, spec, started)
        token = spec.env["JUPYTERHUB_API_TOKEN"]
        for name, value in (("identity", identity), ("state", state)):
            text = json.dumps(value)
            assert json.loads(text) == value, f"the {name} is not plain JSON: {value!r}"
            for secret in (token, SECRET_KEY):
                assert secret not in text, f"the {name} holds a secret: {text}"
        await backend.stop(state)

    async def test_stop_never_started_and_double_stop(self, settings: ServiceSettings, backend: Backend,
                                                      user: str, started: Started) -> None:
        never = backend.identity(self.spec(settings, user))
        await backend.stop(never)
        await self.make_backend(settings).stop(never)
        assert not await backend.poll(never)
        assert await backend.locate(never) is None

        spec = self.spec(settings, user)
        identity, state = await self._start(backend, spec, started)
        await self._wait_ready(backend, spec, state)
        await backend.stop(state)
        await backend.stop(state)
        await self.make_backend(settings).stop(identity)
        await self._assert_nothing_left(settings, identity)

    async def test_killed_from_outside_polls_false(self, settings: ServiceSettings, backend: Backend, user: str,
                                                   started: Started) -> None:
        spec = self.spec(settings, user)
        identity, state = await self._start(backend, spec, started)
        await self._wait_ready(backend, spec, state)
        await self.kill_server(state)
        await self._polls_false_within(backend, state, self.gone_within)
        await self._polls_false_within(self.make_backend(settings), identity, self.gone_within)
        await backend.stop(state)  # stopping a dead server is no error and removes what it left
        await self._assert_nothing_left(settings, identity)

    async def test_dies_after_ready_polls_false(self, settings: ServiceSettings, backend: Backend, user: str,
                                                started: Started) -> None:
        spec = self.spec(settings, user, self.dying_cmd(self.die_after))
        identity, state = await self._start(backend, spec, started)
        await self._wait_ready(backend, spec, state)
        await self._polls_false_within(backend, state, self.die_after + self.gone_within)
        await backend.stop(state)
        await self._assert_nothing_left(settings, identity)

    async def test_failing_start_says_why(self, settings: ServiceSettings, backend: Backend, user: str,
                                          started: Started) -> None:
        spec = self.spec(settings, user, self.failing_cmd())
        identity = backend.identity(spec)
        started.identities.append(identity)
        t0 = time.monotonic()
        try:
            state = await asyncio.wait_for(backend.start(spec, identity), self.start_timeout)
        except TimeoutError:
            pytest.fail(f"start of a command that exits at once did not return within {self.start_timeout:g}s")
        except Exception as exc:
            assert str(exc), f"start failed without a message: {exc!r}"
            state = identity
        else:
            took = await self._polls_false_within(backend, state, self.gone_within)
            output = await self.server_output(spec, state)
            assert FAIL_TEXT in output, f"the server's error does not reach its user; output: {output[-2000:]!r}"
            print(f"\nfailing start: poll False after {time.monotonic() - t0:.2f}s ({took:.2f}s of polling)")
        await backend.stop(state)
        await self._assert_nothing_left(settings, identity)

    async def test_start_timeout_leaves_nothing(self, settings: ServiceSettings, backend: Backend, user: str,
                                                started: Started) -> None:
        """A server that never answers: the worker gives up (its start or HTTP deadline) and stops it."""
        spec = self.spec(settings, user, self.silent_cmd())
        identity = backend.identity(spec)
        started.identities.append(identity)
        try:
            state = await asyncio.wait_for(backend.start(spec, identity), self.start_timeout)
        except TimeoutError:
            state = identity  # the worker's start_timeout: it stops what the identity names
        else:
            await asyncio.sleep(1.0)
            assert await backend.poll(state), "a server that runs without listening polls True"
            assert await self._answers(f"{backend.target(state)}{spec.prefix}api") is None
        await backend.stop(state)
        assert not await backend.poll(state)
        await self._assert_nothing_left(settings, identity)

    async def _adopt_after_kill(self, settings: ServiceSettings, user: str, started: Started, tmp_path: Path,
                                kill_at: str) -> None:
        spec = self.spec(settings, user)
        job = {
            "backend": self.backend_name, "factory": self.worker_factory, "kill_at": kill_at,
            "identity_file": str(tmp_path / "identity.json"), "note_file": str(tmp_path / "note.json"),
            "spec": {"user": spec.user, "server_name": spec.server_name, "spawn_id": spec.spawn_id,
                     "prefix": spec.prefix, "env": spec.env,
                     "log_path": str(spec.log_path) if spec.log_path else None,
                     "config": spec.config.model_dump(mode="json")},
        }
        job_file = tmp_path / "job.json"
        job_file.write_text(json.dumps(job))
        job_file.chmod(0o600)
        env = {**child_env(settings), "PYTHONPATH": str(REPO)}
        errors = tmp_path / "worker.err"
        with errors.open("wb") as err:
            proc = subprocess.Popen([sys.executable, str(WORKER), str(job_file)], env=env, stdout=err,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=tmp_path)
        started.workers.append(proc)
        t0 = time.monotonic()
        while proc.poll() is None:
            identity_file = Path(job["identity_file"])
            if identity_file.exists() and not started.identities:
                started.identities.append(json.loads(identity_file.read_text()))
            if time.monotonic() - t0 > self.start_timeout + self.ready_timeout:
                pytest.fail(f"the worker was not killed during its start; its output: {errors.read_text()}")
            await asyncio.sleep(0.05)
        assert proc.returncode == -signal.SIGKILL, f"worker ended with {proc.returncode}: {errors.read_text()}"
        identity = json.loads(Path(job["identity_file"]).read_text())
        if not started.identities:
            started.identities.append(identity)
        note = json.loads(Path(job["note_file"]).read_text())
        print(f"\nworker SIGKILLed ({kill_at}) {time.monotonic() - t0:.2f}s after it was run; start had "
              f"{'' if note['start_returned'] else 'not '}returned")

        adopter = self.make_backend(settings)  # the worker that adopts the row: it has the identity alone
        found = await adopter.locate(identity)
        assert found is not None, "a fresh backend does not find the server the killed worker started"
        assert {k: found[k] for k in identity} == identity
        assert await adopter.poll(identity)
        assert await adopter.poll(found)
        await self._wait_ready(adopter, spec, found)
        await adopter.stop(identity if kill_at == "found" else found)
        assert not await adopter.poll(identity)
        await self._assert_nothing_left(settings, identity)

    async def test_adopt_after_worker_killed_during_start(self, settings: ServiceSettings, user: str,
                                                          started: Started, tmp_path: Path) -> None:
        await self._adopt_after_kill(settings, user, started, tmp_path, "found")

    async def test_adopt_after_worker_killed_before_reporting(self, settings: ServiceSettings, user: str,
                                                              started: Started, tmp_path: Path) -> None:
        await self._adopt_after_kill(settings, user, started, tmp_path, "returned")



class StartAndAdoptOnly:
    """Put first in a contract subclass's bases (`class TestXSingleuser(StartAndAdoptOnly, TestX)`) to collect
    only start-reach-stop and adoption after a worker killed during its start: for a second run with a slower
    real server (`jupyterhub-singleuser`), where the other tests show nothing more than with the small one."""

    test_identity_and_state_are_json_without_secrets: Any = None
    test_stop_never_started_and_double_stop: Any = None
    test_dies_after_ready_polls_false: Any = None
    test_failing_start_says_why: Any = None  # these two run no serve_cmd
    test_start_timeout_leaves_nothing: Any = None
    test_adopt_after_worker_killed_before_reporting: Any = None
    test_killed_from_outside_polls_false: Any = None
