"""The lifecycle vocabulary: stored values, the transition table, and which transitions and requests may be built."""

from __future__ import annotations

import itertools

import pytest

from fleethub.shared.events import ServerFailed, ServerReady, ServerStopped, SpawnServer, StopServer
from fleethub.shared.lifecycle import (
    ACTIVE,
    COMMANDS,
    CREATED,
    DONE,
    TRANSITIONS,
    DesiredState,
    Guard,
    IllegalTransition,
    Request,
    ServerKey,
    ServerStatus,
    Transition,
    sources,
)

KEY = ServerKey("alice", "gpu")
S = ServerStatus
D = DesiredState
ALLOWED = [(src, to) for src, targets in TRANSITIONS.items() for to in sorted(targets)]
REFUSED = [(src, to) for src, to in itertools.product(S, S) if to not in TRANSITIONS[src]]


def _move(src: ServerStatus, to: ServerStatus) -> Transition:
    """A move of the row from `src` to `to`: over a done row a new spawn's, else the leased row's own."""
    return Transition(key=KEY, spawn_id="s1", to=to, expected=frozenset({src}),
                      guard=Guard.NEW_SPAWN if src in DONE else Guard.LEASED, worker="w1",
                      url="/user/alice/gpu/", target="http://127.0.0.1:1", state={})


def test_stored_values_are_the_plain_strings() -> None:
    # what PostgreSQL holds and JSON carries: these never change (no migration, same events)
    assert [s.value for s in ServerStatus] == ["pending", "running", "stopping", "stopped", "failed"]
    assert [s.value for s in DesiredState] == ["running", "stopped"]
    running: str = ServerStatus.RUNNING
    assert running == "running" and f"{ServerStatus.FAILED}" == "failed"
    assert "stopping" in ACTIVE  # a string read from a row is found in the sets


def test_every_status_is_active_or_done_and_has_a_way_on() -> None:
    assert ACTIVE | DONE == set(ServerStatus) and not ACTIVE & DONE
    assert set(TRANSITIONS) == set(ServerStatus)
    assert CREATED == {S.PENDING, S.STOPPED}
    assert sources(S.PENDING) == DONE
    assert sources(S.RUNNING) == {S.PENDING}
    assert sources(S.STOPPED) == {S.RUNNING, S.STOPPING, S.STOPPED, S.FAILED}


@pytest.mark.parametrize(("src", "to"), ALLOWED, ids=[f"{a}->{b}" for a, b in ALLOWED])
def test_every_allowed_transition_can_be_made(src: ServerStatus, to: ServerStatus) -> None:
    assert _move(src, to).expected == {src}


@pytest.mark.parametrize(("src", "to"), REFUSED, ids=[f"{a}->{b}" for a, b in REFUSED])
def test_every_other_transition_is_refused(src: ServerStatus, to: ServerStatus) -> None:
    with pytest.raises(IllegalTransition):
        _move(src, to)


def test_the_spawners_moves_expect_what_the_table_allows() -> None:
    assert Transition.claim(KEY, "s1", worker="w1", lease_ttl=30, backend="local").expected == DONE
    assert Transition.tombstone(KEY, "s1").expected == DONE
    assert Transition.stopping(KEY, "s1", worker="w1", lease_ttl=30).expected == ACTIVE
    assert Transition.ready(KEY, "s1", worker="w1", url="/u/", target="http://t", state={}).expected == {S.PENDING}
    assert Transition.stopped(KEY, "s1", worker="w1", reason="api").expected == {S.RUNNING, S.STOPPING}
    assert Transition.failed(KEY, "s1", worker="w1", message="boom").expected == {S.PENDING}
    exited = Transition.stopped(KEY, "s1", worker="w1", reason="exited", expected=frozenset({S.RUNNING}))
    assert exited.expected == {S.RUNNING}


def test_moves_announce_their_outcome_and_nothing_else() -> None:
    [ready] = Transition.ready(KEY, "s1", worker="w1", url="/u/", target="http://t", state={}).events
    assert isinstance(ready, ServerReady) and (ready.user, ready.server_name, ready.spawn_id) == ("alice", "gpu", "s1")
    assert (ready.url, ready.target) == ("/u/", "http://t")
    [stopped] = Transition.stopped(KEY, "s1", worker="w1", reason="culler").events
    assert isinstance(stopped, ServerStopped) and stopped.reason == "culler"
    [failed] = Transition.failed(KEY, "s1", worker="w1", message="boom").events
    assert isinstance(failed, ServerFailed) and failed.message == "boom"
    assert Transition.claim(KEY, "s1", worker="w1", lease_ttl=30, backend="local").events == ()
    assert Transition.tombstone(KEY, "s1").events == ()
    assert Transition.stopping(KEY, "s1", worker="w1", lease_ttl=30).events == ()


def test_malformed_transitions_are_refused() -> None:
    with pytest.raises(IllegalTransition, match="running may not move to pending"):
        Transition(key=KEY, spawn_id="s1", to=S.PENDING, guard=Guard.NEW_SPAWN, worker="w1",
                   expected=frozenset({S.RUNNING}))
    with pytest.raises(IllegalTransition, match="no row is created as failed"):
        Transition(key=KEY, spawn_id="s1", to=S.FAILED, guard=Guard.ANY_SPAWN)
    with pytest.raises(IllegalTransition, match="needs the writing worker"):
        Transition(key=KEY, spawn_id="s1", to=S.STOPPED)
    with pytest.raises(IllegalTransition, match="url, target and state"):
        Transition(key=KEY, spawn_id="s1", to=S.RUNNING, worker="w1")
    # a plain string names a status too
    assert Transition(key=KEY, spawn_id="s1", to="stopping", worker="w1").to is S.STOPPING  # type: ignore[arg-type]


def test_server_key() -> None:
    assert str(KEY) == "alice/gpu" and str(ServerKey("bob")) == "bob/"
    assert {KEY: 1}[ServerKey("alice", "gpu")] == 1
    with pytest.raises(AttributeError):
        KEY.user = "mallory"  # type: ignore[misc]


def test_each_desired_state_sends_its_command() -> None:
    assert set(COMMANDS) == set(DesiredState)
    start = Request.start(KEY, "s2", user_options={"size": "l"}, expected_spawn="s1", display_name="GPU",
                          backend="local")
    assert (start.to, start.expected, start.expected_spawn, start.display_name) == (D.RUNNING, frozenset(D), "s1",
                                                                                    "GPU")
    assert isinstance(start.command, SpawnServer)
    assert (start.command.user, start.command.server_name, start.command.spawn_id) == ("alice", "gpu", "s2")
    assert start.command.user_options == {"size": "l"}
    stop = Request.stop(KEY, "s1", reason="culler")  # the culler's: the row holds the spawn it stops, wanted running
    assert (stop.to, stop.expected, stop.expected_spawn) == (D.STOPPED, frozenset({D.RUNNING}), "s1")
    assert isinstance(stop.command, StopServer) and (stop.command.spawn_id, stop.command.reason) == ("s1", "culler")
    older = Request.stop(KEY, "s0", reason="api", expected=frozenset({D.STOPPED}), expected_spawn=None, server_id=7)
    assert (older.expected_spawn, older.server_id) == (None, 7)  # an older spawn runs; the row holds none
    assert older.command is not None and older.command.spawn_id == "s0"
    nothing = Request.stop(KEY, None, reason="api", expected_spawn="s1")  # nothing runs: only the desired state
    assert nothing.command is None and nothing.expected_spawn == "s1"


def test_malformed_requests_are_refused() -> None:
    spawn = SpawnServer(user="alice", server_name="gpu", spawn_id="s2")
    with pytest.raises(IllegalTransition, match="a start sends its spawn"):
        Request(key=KEY, to=D.RUNNING, expected=frozenset({D.STOPPED}), expected_spawn=None)
    with pytest.raises(IllegalTransition, match="does not send SpawnServer"):
        Request(key=KEY, to=D.STOPPED, expected=frozenset({D.RUNNING}), expected_spawn="s1", command=spawn)
    with pytest.raises(IllegalTransition, match="a command for another server"):
        Request(key=ServerKey("bob"), to=D.RUNNING, expected=frozenset({D.STOPPED}), expected_spawn=None,
                command=spawn)
    with pytest.raises(IllegalTransition, match="only a start records a display name"):
        Request(key=KEY, to=D.STOPPED, expected=frozenset({D.RUNNING}), expected_spawn="s1", display_name="GPU")
    with pytest.raises(IllegalTransition, match="some desired state"):
        Request(key=KEY, to=D.RUNNING, expected=frozenset(), expected_spawn=None, command=spawn)
    # plain strings name desired states too
    request = Request(key=KEY, to="running", expected=frozenset({"stopped"}),  # type: ignore[arg-type]
                      expected_spawn=None, command=spawn)
    assert request.to is D.RUNNING and request.expected == {D.STOPPED}
