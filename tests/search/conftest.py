"""Fixtures of the search tests: a fresh PostgreSQL database, unique study names and a
single torch thread."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

POSTGRES = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "test"}


def _connect(dbname: str):
    import psycopg2

    return psycopg2.connect(**(POSTGRES | {"dbname": dbname}), connect_timeout=3)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL of a new PostgreSQL database on 127.0.0.1:5432, dropped after the session.

    Optuna creates its tables in the new database, so the tests share nothing with other
    users of the server. The tests are skipped when the server is unreachable.
    """
    psycopg2 = pytest.importorskip("psycopg2", reason="psycopg2 is not installed")
    try:
        admin = _connect(POSTGRES["dbname"])
    except psycopg2.OperationalError as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else ""
        pytest.skip(f"PostgreSQL at 127.0.0.1:5432 is unreachable: {first_line}")
    name = f"topselect_test_{uuid.uuid4().hex[:12]}"
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        yield f"postgresql+psycopg2://{POSTGRES['user']}@127.0.0.1:5432/{name}"
    finally:
        with admin.cursor() as cursor:
            # FORCE ends connections that pooled engines of the tests still hold open.
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


@pytest.fixture
def unique_study_name() -> str:
    """A study name no other test uses."""
    return f"study-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def single_torch_thread() -> Iterator[None]:
    """Run torch on one intra-op thread for the test, then restore the previous count.

    The tiny MLPs of these tests gain nothing from threads. On two busy cores a second
    thread made their training steps about 15 times slower (10 tracked trials: 15 s with
    two threads, 0.9 s with one, while other processes kept both cores busy).
    """
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
