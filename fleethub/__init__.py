"""fleethub: a multi-user Jupyter hub built as independent services over NATS JetStream and PostgreSQL.

This package holds the command line (`fleethub up | run | migrate | token`); the services live in
`services/`, the common library in `shared/`.
"""

__version__ = "0.1.0"
