"""The permission table as data: least privilege checked against the code it describes, the generated
docs current, and the rendered nats-server block holding public keys only."""

from __future__ import annotations

from pathlib import Path

from fleethub.services.api.consumers import CONSUMERS
from fleethub.shared.bus.natsconfig import authorization_block, ensure_seeds, seed_file
from fleethub.shared.bus.permissions import API_DURABLES, IDENTITIES, SERVICES, TABLE, grants
from fleethub.shared.bus.topology import Names
from fleethub.shared.eventdocs import render_architecture
from fleethub.shared.events import COMMANDS, EVENTS, subject_filter

DOCS = Path(__file__).resolve().parents[3] / "docs"
NAMES = Names("fh")


def test_the_architecture_doc_shows_the_current_table() -> None:
    current = (DOCS / "architecture.md").read_text()
    assert render_architecture(current) == current, "docs/architecture.md is stale: python -m fleethub.shared.eventdocs"


def test_no_identity_is_granted_everything() -> None:
    for identity in IDENTITIES:
        p = grants(identity, NAMES)
        for pattern in (*p.publish, *p.subscribe):
            assert pattern not in (">", "*") and not pattern.startswith((">", "*.", "$JS.>", "$JS.API.>", "$KV.>")), \
                (identity, pattern)


def test_each_message_type_has_exactly_the_publishers_that_emit_it() -> None:
    def publishers(subject: str) -> set[str]:
        return {i for i in IDENTITIES if subject in grants(i, NAMES).publish}

    expected = {"spawn": {"api"}, "stop": {"api", "culler"}, "server.progress": {"spawner"},
                "server.ready": {"spawner"}, "server.stopped": {"spawner"}, "server.failed": {"spawner"},
                "user.logged_in": {"auth"}, "user.logged_out": {"auth"}, "activity.reported": {"proxy"}}
    for model in (*COMMANDS, *EVENTS):
        assert publishers(subject_filter(model, "fh")) == expected.get(model.TYPE, {"api"}), model.TYPE


def test_only_the_spawner_writes_routes_and_each_registry_writer_its_own_keys() -> None:
    def writers(prefix: str) -> set[str]:
        return {i for i in IDENTITIES if any(p.startswith(prefix) for p in grants(i, NAMES).publish)}

    assert writers("$KV.fh_routes.") == {"spawner", "proxy"}
    assert [p for p in grants("proxy", NAMES).publish if p.startswith("$KV.fh_routes.")] == ["$KV.fh_routes.path",
                                                                                     "$KV.fh_routes.path.>"]
    assert writers("$KV.fh_registry.auth.") == {"auth"} and writers("$KV.fh_registry.api.") == {"api"}
    assert writers("$JS.API.STREAM.UPDATE.") == {"api"}
    assert writers("$JS.API.STREAM.CREATE.") == {"api", "auth"}
    auth_creates = [p for p in grants("auth", NAMES).publish if "STREAM.CREATE" in p]
    assert auth_creates == ["$JS.API.STREAM.CREATE.KV_fh_registry"]
    assert writers("$JS.API.STREAM.DELETE.") == set() and writers("$JS.API.STREAM.PURGE.") == set()


def test_the_apis_durables_are_the_ones_the_table_protects() -> None:
    assert {b.durable for b in CONSUMERS} == set(API_DURABLES)


def test_each_identity_subscribes_to_its_own_inbox_only() -> None:
    for identity in IDENTITIES:
        inboxes = [s for s in grants(identity, NAMES).subscribe if s.startswith("_INBOX")]
        assert inboxes == [f"_INBOX_{identity}.>"]


def test_only_services_declare_and_the_api_alone_updates() -> None:
    assert [i for i in IDENTITIES if TABLE[i].updates] == ["api"]
    assert TABLE["api"].declares == ("cmd", "evt", "routes", "registry")
    assert {i: TABLE[i].declares for i in SERVICES if i != "api" and TABLE[i].declares} == {"auth": ("registry",)}


def test_seeds_are_private_kept_and_absent_from_the_server_config(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    public = ensure_seeds(keys)
    assert keys.stat().st_mode & 0o777 == 0o700
    seeds = {i: seed_file(keys, i).read_bytes() for i in IDENTITIES}
    assert all(seed_file(keys, i).stat().st_mode & 0o777 == 0o600 for i in IDENTITIES)
    assert all(s.startswith(b"SU") for s in seeds.values()) and len(set(seeds.values())) == len(IDENTITIES)
    assert ensure_seeds(keys) == public  # kept: regenerated only when missing
    seed_file(keys, "culler").unlink()
    again = ensure_seeds(keys)
    assert again["culler"] != public["culler"] and {k: v for k, v in again.items() if k != "culler"} == \
        {k: v for k, v in public.items() if k != "culler"}
    block = authorization_block(again, "fh")
    assert all(v in block for v in again.values())
    assert not any(seed_file(keys, i).read_bytes().strip().decode() in block for i in IDENTITIES)
