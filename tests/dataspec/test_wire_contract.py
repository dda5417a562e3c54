"""The wire contract: what the agents refuse the server refuses, with the same words."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter, ValidationError

from agents.models import ModelSpec
from tests.utils.factories import job_body, register

MODELS: list[dict[str, Any]] = [
    {"arch": "logreg"},
    {"arch": "mlp", "hidden": [8, 4]},
    {"arch": "mlp", "hidden": [4096]},
    {"arch": "mlp", "hidden": [4097]},
    {"arch": "mlp", "hidden": [5000]},
    {"arch": "mlp", "hidden": [2] * 9},
    {"arch": "mlp"},
    {"arch": "mlp", "hidden": [0]},
    {"arch": "logreg", "hidden": [8]},
    {"arch": "linear", "input_shape": [1, 1, 3]},
    {"arch": "cnn"},
    {"arch": "cnn", "input_shape": [1, 1, 3], "channels": [8] * 5},
    {"arch": "cnn", "input_shape": [1, 1, 3], "channels": [0]},
    {"arch": "cnn", "input_shape": [1, 1, 3], "channels": [300]},
    {"arch": "cnn", "input_shape": [1, 1, 3], "hidden": [5000]},
    {"arch": "resnet"},
]


def _agent_refusal(model: dict[str, Any]) -> list[str]:
    try:
        TypeAdapter(ModelSpec).validate_python(model)
    except ValidationError as exc:
        return sorted(str(e["msg"]) for e in exc.errors())
    return []


@pytest.mark.parametrize("model", MODELS, ids=lambda m: str(m))
def test_agent_and_server_refuse_the_same_model_specs(
    client: TestClient, model: dict[str, Any]
) -> None:
    """A model spec one side refuses the other refuses too, with the same message."""
    buyer = register(client, "buyer")
    r = client.post("/v1/jobs", json=job_body(model=model), headers=buyer.headers)
    errors = r.json().get("errors", []) if r.status_code == 422 else []
    server = sorted(str(e["msg"]) for e in errors if e["loc"][:2] == ["body", "model"])
    assert _agent_refusal(model) == server
