"""The auth service owns identity: authenticators, the login form, logout and browser sessions.

It writes `accounts` (password authenticator) and `sessions`, creates `users` rows at first login,
and announces logins and logouts on the bus. The hub's OAuth2 provider will live here too.
"""
