"""The benchmark-only plaintext preset never runs on a server that did not opt in."""

from __future__ import annotations

from fastapi.testclient import TestClient

from crypto import PLAIN_PRESET_ID
from tests.utils.factories import job_body, register


def test_plaintext_job_refused_by_default(client: TestClient) -> None:
    """Posting a job with the plaintext preset is a 422 naming the opt-in, and creates nothing."""
    buyer = register(client, "buyer")
    response = client.post("/v1/jobs", json=job_body(preset=PLAIN_PRESET_ID), headers=buyer.headers)
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "POLLEN_ALLOW_PLAINTEXT_JOBS" in response.json()["detail"]
    assert client.get("/v1/jobs", headers=buyer.headers).json() == []
