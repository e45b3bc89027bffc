"""fleethub: a multi-user Jupyter hub built as independent services over NATS JetStream and PostgreSQL.

The one installed package: the command line (`cli`, `up`: `fleethub up | run | migrate | token`), the
services (`fleethub.services.<name>`, each its own process) and their common library (`fleethub.shared`).
"""

__version__ = "0.1.0"
