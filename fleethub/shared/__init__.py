"""The common library of every fleethub service.

Settings (`settings`), a server's life (`lifecycle`: its statuses, allowed moves and the one transition
function), the event and command models with their subjects (`events`, `names`), the NATS JetStream
adapter (`bus`, the only importer of nats) and the route table's reconciliation (`routes`), the
PostgreSQL schema, sessions and advisory locks (`db`), the transactional outbox (`outbox`), password
accounts and the rules of new passwords, authenticators and the login throttle (`accounts`, `passwords`,
`authenticators`, `throttle`), secrets and hashing (`security`), auth_state encryption at rest (`crypt`),
scrubbed logging (`logging`), the error hierarchy (`errors`), process supervision helpers (`procs`),
sockets (`net`) and the embedded NATS/PostgreSQL launcher (`embedded`).
"""
