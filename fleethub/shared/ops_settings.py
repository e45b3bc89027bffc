"""`[ops]`: each service's operations listener (Prometheus `/metrics`, `/health/live`, `/health/ready`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OpsListen(BaseModel):
    """Where one service's operations listener binds (per replica: one port per process)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Interface of the operations listener (unauthenticated: keep it "
                                               "on loopback or a network only the scraper and the probes reach).")
    port: int | None = Field(None, ge=0, le=65535,
                             description="Port of the operations listener; 0 picks a free one; unset: no listener.")


class OpsSettings(BaseModel):
    """`[ops.<service>]`: the operations listener of each service (`fleethub up` turns every one on)."""

    model_config = ConfigDict(extra="forbid")

    auth: OpsListen = Field(default_factory=OpsListen, description="[ops.auth]: the auth replicas' listener.")
    api: OpsListen = Field(default_factory=OpsListen, description="[ops.api]: the api replicas' listener.")
    spawner: OpsListen = Field(default_factory=OpsListen, description="[ops.spawner]: the spawner workers' listener.")
    proxy: OpsListen = Field(default_factory=OpsListen,
                             description="[ops.proxy]: a proxy node's listener (worker i of a node with "
                                         "proxy.workers > 1 takes port + i).")
    culler: OpsListen = Field(default_factory=OpsListen, description="[ops.culler]: the culler's listener.")

    def of(self, service: str) -> OpsListen:
        """The listener settings of `service`."""
        listen: OpsListen = getattr(self, service)
        return listen
