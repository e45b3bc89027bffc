"""The api service owns the REST API and the hub pages, and the *desired* state of users and servers.

It writes `users`, `api_tokens` and `servers` (desired state and last activity), turns start and
stop requests into commands through the transactional outbox, records the proxies' activity batches,
and revokes a server's token when the server stops.
"""
