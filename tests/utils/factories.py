"""Plain factory helpers: accounts, request bodies and model files for the API tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from fastapi.testclient import TestClient
from safetensors.numpy import save

ADMIN_KEY = "pk_test-admin-key"

SCHEMA: dict[str, Any] = {
    "features": [
        {"name": "age", "type": "int"},
        {"name": "bmi", "type": "float"},
        {"name": "glucose", "type": "float"},
    ],
    "label": {"name": "diabetic", "classes": [0, 1]},
}


@dataclass(frozen=True)
class Actor:
    id: str
    role: str
    api_key: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


def register(
    client: TestClient, role: str, name: str | None = None, *, verified: bool = True
) -> Actor:
    """A new account; a provider is approved by the operator unless `verified=False` (only
    verified providers are matched to jobs, see `market.services.verification`)."""
    r = client.post("/v1/accounts", json={"role": role, "name": name or role})
    assert r.status_code == 201, r.text
    body = r.json()
    actor = Actor(body["id"], role, body["api_key"])
    if role == "provider" and verified:
        approve(client, actor.id)
    return actor


def approve(client: TestClient, account_id: str) -> None:
    """The operator verifies a provider (as on the manual rail)."""
    r = client.post(
        f"/v1/admin/providers/{account_id}/approve",
        headers={"Authorization": f"Bearer {ADMIN_KEY}"},
    )
    assert r.status_code == 200, r.text


def admin(client: TestClient) -> Actor:
    r = client.get("/v1/accounts/me", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    assert r.status_code == 200, r.text
    return Actor(r.json()["id"], "admin", ADMIN_KEY)


def listing_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "clinic-a",
        "schema": SCHEMA,
        "samples": 500,
        "ask_cents": 100,
        "currency": "usd",
        "capacity": 2,
    }
    body.update(over)
    return body


def job_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "title": "diabetes risk",
        "model": {"arch": "mlp", "hidden": [8]},
        "rounds": 2,
        "local_epochs": 1,
        "learning_rate": 0.1,
        "schema": SCHEMA,
        "min_providers": 2,
        "max_providers": 3,
        "quorum": 2,
        "min_samples": 10,
        "budget_cents": 10_000,
        "currency": "usd",
        "price_cap_cents": 500,
        "round_deadline_s": 60,
        "offer_ttl_s": 300,
    }
    body.update(over)
    return body


def model_file(param_count: int = 200, seed: int = 0) -> bytes:
    """A safetensors model with `param_count` float32 parameters in two tensors."""
    rng = np.random.default_rng(seed)
    head = param_count // 2
    return save(
        {
            "a.weight": rng.standard_normal(head).astype(np.float32),
            "b.bias": rng.standard_normal(param_count - head).astype(np.float32),
        }
    )
