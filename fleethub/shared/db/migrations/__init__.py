"""Alembic migrations of the fleethub schema (applied by `fleethub migrate`)."""
