"""The command line: only `serve` creates the signing secret; `token` and `session` use it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.conftest import ServerProcess

TOKEN_ARGS = ["token", "--user", "u", "--name", "U", "--site", "Roubaix", "--role", "admin"]


def collab(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLAB_")}
    return subprocess.run(
        [sys.executable, "-m", "collab", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
    )


def test_token_without_a_secret_fails_and_says_where_it_looked(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = collab(*TOKEN_ARGS, cwd=elsewhere)
    assert result.returncode != 0
    assert result.stdout == ""  # no token a server would reject
    assert str(elsewhere / "data" / "secret") in result.stderr
    assert "--data" in result.stderr and "COLLAB_SECRET" in result.stderr
    assert not (elsewhere / "data").exists()  # nothing was created
    session = collab("session", "create", "--title", "t", "--slides", "s", cwd=elsewhere)
    assert session.returncode != 0 and str(elsewhere / "data" / "secret") in session.stderr
    assert not (elsewhere / "data").exists()


def test_token_with_the_servers_data_is_accepted_by_the_server(tmp_path: Path) -> None:
    data = tmp_path / "server-data"
    server = ServerProcess(data, env={"COLLAB_SECRET": ""})  # the server generates its secret
    try:
        server.start()
        assert (data / "secret").exists()
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        result = collab(*TOKEN_ARGS, "--data", str(data), cwd=elsewhere)
        assert result.returncode == 0, result.stderr
        token = result.stdout.strip()
        r = httpx.get(f"{server.base_url}/api/slides", headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
    finally:
        server.stop()


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = collab("--help", cwd=tmp_path)
    assert result.returncode == 0
    for command in ("serve", "token", "session"):
        assert command in result.stdout
    assert "collab session create" in result.stdout
