"""Hostile and heavy input (issue 11): deep nesting, huge and slow bodies, slide paths outside
the slide directories, tokens with string dates, and what a dying server leaves in its log."""

from __future__ import annotations

import time

import httpx
import jwt
import pytest

from tests.conftest import SECRET, LiveServer

# --- tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
async def test_date_claims_must_be_numbers(live: LiveServer, claim: str) -> None:
    now = int(time.time())
    claims = {"sub": "x", "role": "admin", "slides": "*", "exp": now + 600, "iat": now, "nbf": now - 5}
    good = jwt.encode(claims, SECRET, algorithm="HS256")
    claims[claim] = str(claims[claim])  # PyJWT alone accepts a numeric string
    bad = jwt.encode(claims, SECRET, algorithm="HS256")
    async with httpx.AsyncClient(base_url=live.base_url) as http:
        ok = await http.get("/api/slides", headers={"Authorization": f"Bearer {good}"})
        refused = await http.get("/api/slides", headers={"Authorization": f"Bearer {bad}"})
    assert ok.status_code == 200
    assert refused.status_code == 401
    assert claim in refused.json()["error"]
