"""`[[webhooks]]`: receivers outside the hub that get its events as signed HTTP POSTs (delivered by the api
replicas from one durable consumer per webhook; see `fleethub.services.api.webhooks`)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, field_validator

from fleethub.shared.eventtypes import check_patterns
from fleethub.shared.secret import Secret


class WebhookSettings(BaseModel):
    """One `[[webhooks]]` entry."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9-]{0,47}$",
                      description="Name of the webhook (letters, digits, '-'); its durable consumer is "
                                  "`webhook-<name>` on the events stream, so renaming starts afresh.")
    url: str = Field(description="http:// or https:// URL the events are POSTed to.")
    events: list[str] = Field(default_factory=lambda: ["*"], min_length=1,
                              description="Event types delivered, as patterns (`server.*`, `user.created`, `*`).")
    secret: Secret = Field(description="Key of the HMAC-SHA256 in the `Fleethub-Signature` header "
                                          "(at least 16 characters).")
    timeout: float = Field(10.0, gt=0, le=120, description="Seconds a POST may take before it counts as failed.")
    max_attempts: int = Field(25, ge=1, le=10_000,
                              description="Deliveries of one event before it is given up (a dead letter).")
    max_age: float = Field(86_400.0, gt=0,
                           description="Seconds after an event was published that it is still retried; a "
                                       "failure after that gives it up (a dead letter).")
    backoff_first: float = Field(1.0, gt=0, description="Seconds before the first retry; doubled each retry.")
    backoff_cap: float = Field(300.0, gt=0, description="Longest wait between two retries, in seconds.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{value!r} is not an http:// or https:// URL with a host")
        return value

    @field_validator("events")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        return check_patterns(value)

    @field_validator("secret")
    @classmethod
    def _long_secret(cls, value: SecretStr) -> SecretStr:
        if len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    def backoff(self, num_delivered: int) -> float:
        """Seconds before delivering again after the `num_delivered`-th delivery failed."""
        return float(min(self.backoff_cap, self.backoff_first * 2 ** min(max(num_delivered - 1, 0), 30)))


def _unique(hooks: list[WebhookSettings]) -> list[WebhookSettings]:
    names = [h.name for h in hooks]
    if len(set(names)) != len(names):
        raise ValueError("two [[webhooks]] entries have the same name")
    return hooks


Webhooks = Annotated[list[WebhookSettings], AfterValidator(_unique)]
"""The `[[webhooks]]` list (names unique)."""
