"""NATS over TLS: a service connects to a `tls://` URL checking the server's certificate against
`nats_tls_ca_file`, with its nkey on top; a client that does not trust the certificate, or that speaks
plaintext, does not get in."""

from __future__ import annotations

from pathlib import Path

import pytest

from fleethub.shared.bus import Bus, BusError, Credentials
from fleethub.shared.bus.natsconfig import seed_file, write_config
from fleethub.shared.embedded import EmbeddedNats
from fleethub.shared.events import UserCreated
from fleethub.shared.service import bus_credentials
from fleethub.shared.settings import load_settings
from tests.support.tlscert import self_signed

pytestmark = pytest.mark.integration
NS = "tls"


async def test_services_reach_nats_over_tls_with_their_nkeys(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path / "tls")
    config = write_config(tmp_path / "keys", NS)
    with EmbeddedNats(tmp_path / "nats", config=config, tls=(cert, key)) as server:
        assert server.url.startswith("tls://")
        settings = load_settings(None, nats_url=server.url, nats_namespace=NS, nats_tls_ca_file=cert,
                                 nats_nkey_file=seed_file(tmp_path / "keys", "api"))
        bus = Bus(settings.nats_url, NS, "tls-api", bus_credentials(settings, "api"))
        await bus.connect(timeout=10)
        try:
            await bus.ensure_topology()
            await bus.publish(UserCreated(name="tina"))
            info = await bus.js.stream_info(bus.names.evt_stream)
            assert info.state.messages == 1
        finally:
            await bus.close()

        # a client that does not trust the server's certificate (the system CAs only) is not connected
        untrusting = Bus(server.url, NS, "tls-untrusting",
                         Credentials(identity="api", nkey_file=seed_file(tmp_path / "keys", "api"),
                                     tls_ca_file=_other_ca(tmp_path)))
        with pytest.raises(BusError, match="TLS settings refused"):
            await untrusting.connect(timeout=3)
        await untrusting.close()

        # nor one that speaks plaintext to it
        plain = Bus(server.url.replace("tls://", "nats://"), NS, "tls-plain",
                    Credentials(identity="api", nkey_file=seed_file(tmp_path / "keys", "api")))
        with pytest.raises(BusError, match="TLS settings refused"):
            await plain.connect(timeout=3)
        await plain.close()


def _other_ca(tmp_path: Path) -> Path:
    cert, _ = self_signed(tmp_path / "other", "another-ca")
    return cert
