"""JupyterHub's own OpenAPI spec, fuzzed by schemathesis against a live hub: never a 5xx, always JSON errors.

The spec is the committed copy `tests/support/jupyterhub-rest-api.yml` (servers: `/hub/api`). The auth and
api apps run in-process on real NATS and PostgreSQL (`running_hub`), served by uvicorn on a free
127.0.0.1 port; schemathesis sends its requests from a worker thread over real HTTP.

Four passes over every operation, each request sent with a fresh token of the pass's user:

| pass | token | path parameters | requests per operation |
|---|---|---|---|
| 1 | admin | generated | `MAX_EXAMPLES` positive, `MAX_EXAMPLES` negative |
| 2 | admin | alice's: server `box`, group `staff`, the service | `MAX_EXAMPLES` positive, then NASTY ones |
| 3 | plain user bob | generated | as pass 1 (mostly 403 and 404) |
| 4 | plain user bob | bob's own | as pass 2 |

Generation is derandomized (the same requests every run). "NASTY ones": the simplest generated request
again, with each `NASTY` value in turn in each of its first `MAX_SLOTS` places.

What must hold for every response:
- no server error: schemathesis' `not_a_server_error`;
- a 4xx is JupyterHub's JSON `{"status": n, "message": "..."}` (contract §0; the spec documents almost no
  error responses, so it cannot say so itself);
- where the spec documents the status: its media type and its response schema (`content_type_conformance`,
  `response_schema_conformance`), with JupyterHub's known deviations from its own spec allowed for:
  `NULLABLE` (fields the spec types as strings that JupyterHub sends as null) and `DEVIATIONS` (checks not
  run on an operation, each with the reason). Statuses themselves are not checked against the spec: it lists
  almost no 4xx, and 401 where JupyterHub answers 403. A documented response without content (a server
  start's 201/202, JupyterHub's empty `text/plain`) has no media type to check.

`POST /shutdown` is not sent at all (`EXCLUDED`).
"""

from __future__ import annotations

import asyncio
import copy
import json
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given
from schemathesis import GenerationMode
from schemathesis.core.failures import FailureGroup

from fleethub.shared.db.engine import make_engine
from fleethub.shared.routes import serve_reconciliation
from fleethub.shared.service import bind_socket
from fleethub.shared.settings import ServiceSettings
from tests.support.hub import Hub, hub_settings

pytestmark = pytest.mark.integration

SPEC = Path(__file__).resolve().parents[3] / "support" / "jupyterhub-rest-api.yml"
MAX_EXAMPLES = 10  # per operation, generation mode and pass
MAX_SLOTS = 10  # places per operation (pass 2 and 4) that get each NASTY value
SERVICE = "announcer"

# Operations never sent, and why.
EXCLUDED = {
    # It stops every user server, and in a deployed hub every service process exits (SIGTERM to itself,
    # fleethub.shared.service.exit_on_hub_shutdown). The apps here are built without an advertised URL, so they would
    # not, but that SIGTERM would reach the test process itself were it ever wired; JupyterHub would exit and
    # end the run. Its body validation and scope are covered in test_hub_admin.py.
    ("POST", "/shutdown"),
}

# Fields JupyterHub's models (jupyterhub/apihandlers/base.py) send as null that the spec types as a string:
# a user with no ready default server, nothing pending, never active; a server never started; a token
# that never expires, was never used, or has no note. Fleethub sends what JupyterHub sends.
NULLABLE = {
    "User": ("server", "pending", "last_activity", "auth_state"),
    "Server": ("pending", "started", "last_activity"),
    "Token": ("expires_at", "last_activity", "note"),
    "NewToken": ("expires_at", "last_activity", "note"),
}

# Checks not run on an operation because JupyterHub (and so fleethub) does not do what the spec says there.
# A 5xx is never waived: `not_a_server_error` runs everywhere.
SCHEMA, CONTENT = "response_schema_conformance", "content_type_conformance"
DEVIATIONS: dict[str, tuple[set[str], str]] = {
    "GET /services": ({SCHEMA}, "a JSON object keyed by service name, not an array (and never paginated)"),
    "POST /authorizations/token": ({SCHEMA, CONTENT}, "removed in JupyterHub 2.0: always 404"),
    "GET /oauth2/authorize": ({SCHEMA, CONTENT}, "a browser flow: a redirect to the login page without a cookie"),
    "POST /oauth2/token": ({SCHEMA, CONTENT}, "a 200 needs a real authorization code: generated bodies get 400"),
}
CHECKS = ("not_a_server_error", CONTENT, SCHEMA)

# Values a client may send that no generator from the spec would, each put in turn in one place of a
# request (`_slots`: a path or query parameter, a JSON body value or key) in passes 2 and 4.
NASTY: tuple[Any, ...] = (
    "a\x00b",  # NUL: PostgreSQL text and JSONB refuse it
    "\ud800",  # a lone surrogate: JSON carries it (`\ud800`), UTF-8 cannot encode it
    "x" * 300,  # longer than any name may be
    "a/b",  # a path separator inside a name
    "..",  # a relative path segment as a name
    10**20,  # beyond PostgreSQL's bigint
    -(2**63) - 1,
    float("nan"),  # not JSON, though Python's parser takes it
    float("inf"),
)


@dataclass
class Findings:
    """What went wrong (the first example of each kind per operation) and how much was sent."""

    failures: dict[tuple[str, str], str] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)  # "2xx", "4xx", ...
    operations: set[str] = field(default_factory=set)

    def add(self, label: str, kind: str, text: str) -> None:
        self.failures.setdefault((label, kind), text)


@dataclass
class Pass:
    """Who sends, where the path parameters point, and which data."""

    user: str
    admin: bool
    target: str | None  # the user whose resources the path parameters point at; None: generated
    modes: tuple[GenerationMode, ...]


def _spec() -> dict[str, Any]:
    """The spec as schemathesis reads it, with `NULLABLE` applied."""
    spec: dict[str, Any] = copy.deepcopy(schemathesis.openapi.from_path(SPEC).raw_schema)
    schemas = spec["components"]["schemas"]
    for model, fields in NULLABLE.items():
        for name in fields:
            prop = schemas[model]["properties"][name]
            prop["type"] = [prop["type"], "null"]
            if "enum" in prop:
                prop["enum"] = [*prop["enum"], None]
    return spec


def _checks_for(label: str) -> list[Any]:
    waived = DEVIATIONS.get(label, (set(), ""))[0]
    return [getattr(schemathesis.checks, name) for name in CHECKS if name not in waived]


def _error_shape(response: schemathesis.Response) -> str | None:
    """Why a 4xx is not JupyterHub's JSON error, or None."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = (response.headers.get("content-type") or [""])[0]
    if not content_type.startswith("application/json"):
        return f"{response.status_code} with Content-Type {content_type!r}"
    try:
        body = json.loads(response.content)
    except ValueError:
        return f"{response.status_code} with a body that is not JSON: {response.content[:200]!r}"
    if not (isinstance(body, dict) and body.get("status") == response.status_code
            and isinstance(body.get("message"), str)):
        return f"{response.status_code} with body {body!r}"
    return None


Slot = Callable[[Any], None]


def _slots(case: Any) -> list[Slot]:
    """Setters, one per place in the request a NASTY value may go: a path parameter, a declared query
    parameter (sent or not), a value or a key of the JSON body, or a new key in any of its objects."""

    def in_url(container: dict[str, Any], key: str) -> Slot:
        def put(value: Any) -> None:  # a URL carries text; a lone surrogate cannot even be percent-encoded
            container[key] = "a\x00b" if value == "\ud800" else str(value)
        return put

    def at(item: dict[Any, Any] | list[Any], key: Any) -> Slot:
        return lambda value: item.__setitem__(key, value)

    def rename(item: dict[Any, Any], key: Any) -> Slot:
        return lambda value: item.__setitem__(str(value), item.pop(key))

    def add(item: dict[Any, Any], *, as_key: bool) -> Slot:
        return lambda value: item.__setitem__(*((str(value), "nasty") if as_key else ("nasty", value)))

    out = [in_url(case.path_parameters, key) for key in case.path_parameters]
    out += [in_url(case.query, param.name) for param in case.operation.query]
    todo = [case.body] if isinstance(case.body, dict | list) else []
    while todo:
        item = todo.pop()
        keys = list(item) if isinstance(item, dict) else list(range(len(item)))
        out += [at(item, key) for key in keys]
        todo += [item[key] for key in keys if isinstance(item[key], dict | list)]
        if isinstance(item, dict):  # its keys, and a key of its own (an empty `user_options` gets one)
            out += [rename(item, key) for key in keys] + [add(item, as_key=False), add(item, as_key=True)]
    return out


def _copy(case: Any) -> Any:
    out = case.derive(keep_auth=True)  # its own path parameters and query
    out.body = copy.deepcopy(case.body)
    return out


def _swapped(case: Any, where: int, value: Any) -> Any:
    """A copy of `case` with `value` put in its slot `where`."""
    out = _copy(case)
    _slots(out)[where](value)
    if isinstance(out.body, dict | list):  # NaN, infinity and lone surrogates: serialized by hand
        out.body = json.dumps(out.body).encode()
    return out


@dataclass
class Sender:
    """Sends one operation's requests with one token, checks each response, notes what fails."""

    operation: Any
    base_url: str
    session: requests.Session
    auth: dict[str, str]
    findings: Findings

    def __call__(self, case: Any) -> None:
        label, auth = self.operation.label, self.auth
        try:
            response = case.call(base_url=self.base_url, session=self.session, headers=auth, timeout=20,
                                 max_redirects=0)
        except requests.RequestException as exc:  # a dropped connection is a server error too
            self.findings.add(label, type(exc).__name__, f"{exc}\n{case.as_curl_command(headers=auth)}")
            return
        self.findings.statuses[f"{response.status_code // 100}xx"] += 1
        try:
            case.validate_response(response, checks=_checks_for(label), headers=auth)
        except FailureGroup as group:
            for failure in group.exceptions:
                self.findings.add(label, type(failure).__name__,
                                  f"{failure.title}\n{failure.message}\n{case.as_curl_command(headers=auth)}\n"
                                  f"-> {response.status_code} {response.content[:300]!r}")
        problem = _error_shape(response)
        if problem:
            self.findings.add(label, "error shape", f"{problem}\n{case.as_curl_command(headers=auth)}")

    def generated(self, mode: GenerationMode, path_parameters: dict[str, str] | None) -> Any:
        """Send the operation's generated examples; the first (Hypothesis' simplest), or None."""
        first: list[Any] = []
        strategy = self.operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

        @hypothesis.settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
                             phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=strategy)
        def send(case: Any) -> None:
            if not first:
                first.append(case)
            self(case)

        try:
            send()
        except hypothesis.errors.Unsatisfiable:
            pass  # nothing to negate in this operation (no parameters and no body)
        return first[0] if first else None

    def nasty(self, case: Any) -> None:
        """Send `case` again with each NASTY value in each of its slots in turn."""
        for where in range(min(len(_slots(_copy(case))), MAX_SLOTS)):
            for value in NASTY:
                self(_swapped(case, where, value))


def _fuzz(schema: Any, base_url: str, *, prepare: Callable[[], dict[str, str]],
          path_parameters: Callable[[str], dict[str, str]] | None, modes: tuple[GenerationMode, ...],
          findings: Findings) -> None:
    """Send every operation's requests; collect failures instead of stopping at the first."""
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            # a fresh token (and resources) per operation: what one operation deletes stays gone
            sender = Sender(operation, base_url, session, prepare(), findings)
            fixed = path_parameters(operation.path) if path_parameters else None
            for mode in modes:
                first = sender.generated(mode, fixed)
                if path_parameters and first is not None and mode == GenerationMode.POSITIVE:
                    sender.nasty(first)
            findings.operations.add(operation.label)


@asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """`app` behind uvicorn on a free 127.0.0.1 port, in this event loop: its origin."""
    sock = bind_socket("127.0.0.1", 0)
    # accepted connections inherit it: on asyncio's loop (uvloop sets it itself) a keep-alive response sent
    # as two writes otherwise waits ~40 ms for the client's delayed ACK
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    server = uvicorn.Server(uvicorn.Config(app, lifespan="off", log_level="warning"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()


@pytest.fixture
def settings(tmp_path: Path, nats_url: str, database_url: str, nats_namespace: str) -> ServiceSettings:
    """The `hub` fixture's settings: named servers allowed, one configured service."""
    return hub_settings(tmp_path, nats_url, database_url, nats_namespace, api={"allow_named_servers": True},
                        services=[{"name": SERVICE, "url": "http://127.0.0.1:9", "info": {"about": "test"}}])


async def _seed(hub: Hub) -> None:
    """The resources passes 2 and 4 point at, made again before each operation: the one before may have
    deleted or renamed them."""
    admin = await hub.headers_for("admin", admin=True)
    for name in ("alice", "bob"):
        await hub.token_for(name)
    c = hub.client
    expected: list[tuple[str, str, dict[str, Any] | None, tuple[int, ...]]] = [
        ("POST", "/hub/api/groups/staff", None, (201, 409)),
        ("POST", "/hub/api/groups/staff/users", {"users": ["alice", "bob"]}, (200,)),
        ("PUT", "/hub/api/users/alice/servers/box", {}, (201, 409)),
        ("PUT", "/hub/api/users/bob/servers/box", {}, (201, 409)),
        ("POST", "/hub/api/shares/alice/box", {"user": "bob"}, (200,)),
        ("POST", "/hub/api/shares/bob/box", {"group": "staff"}, (200,)),
        ("POST", "/hub/api/share-codes/alice/box", {}, (200,)),
    ]
    for method, path, body, statuses in expected:
        r = await c.request(method, path, json=body, headers=admin)
        assert r.status_code in statuses, (method, path, r.text)


def _known(user: str) -> Callable[[str], dict[str, str]]:
    """Path parameters naming `_seed`'s resources: `user`, alice's server, group `staff`, the service."""

    def params(path: str) -> dict[str, str]:
        out = {"name": user, "owner": "alice", "server_name": "box", "token_id": "a1",
               "cookie_name": "jupyterhub-hub-login", "cookie_value": "x"}
        if path.startswith("/groups/"):
            out["name"] = "staff"
        elif path.startswith("/services/"):
            out["name"] = SERVICE
        return {k: v for k, v in out.items() if "{" + k + "}" in path}

    return params


PASSES = (
    Pass("admin", admin=True, target=None, modes=(GenerationMode.POSITIVE, GenerationMode.NEGATIVE)),
    Pass("admin", admin=True, target="alice", modes=(GenerationMode.POSITIVE,)),
    Pass("bob", admin=False, target=None, modes=(GenerationMode.POSITIVE, GenerationMode.NEGATIVE)),
    Pass("bob", admin=False, target="bob", modes=(GenerationMode.POSITIVE,)),
)


@pytest.mark.timeout(300)  # the run takes 1-2 minutes
async def test_the_jupyterhub_spec_never_gets_a_server_error(hub: Hub) -> None:
    schema: schemathesis.BaseSchema = schemathesis.openapi.from_dict(_spec())
    for method, path in EXCLUDED:
        schema = schema.exclude(method=method, path=path)
    loop = asyncio.get_running_loop()
    findings = Findings()
    started = time.monotonic()
    assert isinstance(hub.transport, httpx.ASGITransport)
    await _seed(hub)
    # a spawner worker's answer to `POST/PATCH /proxy` (only the spawner writes routes; none runs here)
    engine = make_engine(hub.settings.require_database_url(), pool_size=1)
    reconciler = await serve_reconciliation(hub.bus, engine, hub.sessions, hub.settings.services)
    async with serving(hub.transport.app) as origin, AsyncExitStack() as cleanup:
        cleanup.push_async_callback(engine.dispose)
        cleanup.push_async_callback(reconciler.unsubscribe)
        for p in PASSES:
            async def ready(p: Pass = p) -> dict[str, str]:
                if p.target:
                    await _seed(hub)
                return await hub.headers_for(p.user, admin=p.admin)

            def prepare(ready: Callable[[], Any] = ready) -> dict[str, str]:
                headers: dict[str, str] = asyncio.run_coroutine_threadsafe(ready(), loop).result(30)
                return headers

            # schemathesis is synchronous: it runs in a thread while this loop serves the hub
            await asyncio.to_thread(_fuzz, schema, f"{origin}/hub/api", prepare=prepare,
                                    path_parameters=_known(p.target) if p.target else None, modes=p.modes,
                                    findings=findings)
    elapsed = time.monotonic() - started
    report = "\n\n".join(f"== {label}: {kind}\n{text}" for (label, kind), text in sorted(findings.failures.items()))
    print(f"schemathesis: {sum(findings.statuses.values())} requests ({dict(sorted(findings.statuses.items()))}) "
          f"to {len(findings.operations)} operations in {elapsed:.0f}s")
    assert len(findings.operations) == 53, sorted(findings.operations)  # every operation but the excluded
    assert not findings.failures, report
