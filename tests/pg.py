"""A fresh PostgreSQL database for one test, dropped at its end (as tests/test_store_postgres.py
does): reached at COLLAB_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres);
when it does not answer the test is skipped, except under CI, where it fails."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator

import asyncpg
import pytest

ADMIN_URL = os.environ.get("COLLAB_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


@contextlib.asynccontextmanager
async def fresh_database(prefix: str = "collab_test") -> AsyncIterator[str]:
    try:
        admin = await asyncpg.connect(ADMIN_URL, timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required under CI and does not answer at {ADMIN_URL}: {exc}")
        pytest.skip(f"PostgreSQL does not answer at {ADMIN_URL} ({exc}); set COLLAB_TEST_PG_URL")
    name = f"{prefix}_{secrets.token_hex(6)}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield f"{ADMIN_URL.rpartition('/')[0]}/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()
