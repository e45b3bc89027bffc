"""The auth service owns identity: authenticators, the login form, logout and browser sessions.

It writes `accounts` (password authenticator), `sessions` and `login_throttle`, creates `users` rows at
first login (never for a password account: those belong to an existing user row), and announces logins
and logouts on the bus. The hub's OAuth2 provider will live here too.
"""
