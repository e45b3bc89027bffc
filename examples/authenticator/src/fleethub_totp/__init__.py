"""fleethub-totp: log in to fleethub with a user name and the six-digit code of an authenticator app."""

from fleethub_totp.authenticator import SECRETS_SETTING, TotpAuthenticator, totp

__all__ = ["SECRETS_SETTING", "TotpAuthenticator", "totp"]
