"""The common library of every fleethub service.

Settings (`settings`), the event and command models with their subjects (`events`, `names`), the
NATS JetStream adapter (`bus`), the PostgreSQL schema and sessions (`db`), the transactional outbox
(`outbox`), secrets and hashing (`security`), scrubbed logging (`logging`), the error hierarchy
(`errors`), process supervision helpers (`procs`) and the embedded NATS/PostgreSQL launcher
(`embedded`).
"""
