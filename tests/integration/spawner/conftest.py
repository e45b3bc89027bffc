"""Fixtures of the spawner's backend tests that start real systems once per session."""

from __future__ import annotations

import pwd
from collections.abc import Iterator

import pytest

from tests.support.slurm import Slurm, slurm_cluster
from tests.support.unix_users import python_paths, traversable, unix_user


@pytest.fixture(scope="session")
def slurm() -> Iterator[Slurm]:
    """A real one-node Slurm cluster (private munged, slurmctld, slurmd), stopped at the session's end."""
    with slurm_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def batch_user() -> Iterator[pwd.struct_passwd]:
    """A real Unix account that can run this venv's Python (its jobs run as it); removed at the end."""
    with unix_user("fhb") as account, traversable(*python_paths()):
        yield account
