"""Models that carry their contract, predictions on raw rows, tasks and architectures."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError
from typer.testing import CliRunner

from agents.cli import app
from agents.contract import Contract, load_model, model_bytes
from agents.data import prepare
from agents.modelio import flatten, to_safetensors
from agents.models import CNNSpec, LinearSpec, LogRegSpec, build_model, model_spec
from agents.sample_tables import diabetes_table, loan_table, write_table_csv
from agents.table_schema import derive_job_schema
from agents.training import evaluate, evaluate_regression, train_local
from dataspec.jobs import JobCreate


def _spec(schema: Any, model: dict[str, Any], task: str) -> dict[str, Any]:
    return {
        "title": "t", "task": task, "model": model, "rounds": 1,
        "schema": schema.model_dump(exclude_none=True),
        "budget_cents": 1000, "price_cap_cents": 10,
    }  # fmt: skip


def test_predict_uses_the_model_file_alone(tmp_path: Path) -> None:
    """`pollen model predict` on raw rows (gaps, unseen region, no label) gives the classes and
    probabilities the trained model gives, from the file alone."""
    table = loan_table(300, seed=0)
    schema = derive_job_schema(table, label="outcome")
    spec = _spec(schema, {"arch": "logreg"}, "classification")
    model = build_model(LogRegSpec(arch="logreg"), schema.n_features, schema.n_classes, seed=0)
    train_local(model, prepare(table, schema), epochs=3, lr=0.1, seed=0)
    path = tmp_path / "model.safetensors"
    path.write_bytes(
        model_bytes(model, Contract.from_spec("job_1", JobCreate.model_validate(spec)))
    )
    rows = tmp_path / "new.csv"
    rows.write_text("id,income,age,region,term\n7,,30,mars,12\n8,90000,50,north,60\n")
    out = tmp_path / "pred.csv"
    result = CliRunner().invoke(
        app, ["model", "predict", str(path), "--data", str(rows), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    got = list(csv.DictReader(out.open()))
    assert [r["prediction"] for r in got] == ["default", "repaid"]
    assert set(got[0]) == {"row", "prediction", "p_default", "p_repaid"}
    assert abs(float(got[1]["p_default"]) + float(got[1]["p_repaid"]) - 1) < 1e-4
    loaded, contract = load_model(path.read_bytes())
    assert contract.job_id == "job_1" and contract.schema == schema
    assert np.array_equal(flatten(loaded), flatten(model))


def test_a_file_without_contract_is_refused_with_a_way_out(tmp_path: Path) -> None:
    """A bare weights file cannot be used blindly: the error says how to get the real one."""
    path = tmp_path / "bare.safetensors"
    path.write_bytes(to_safetensors(build_model(LogRegSpec(arch="logreg"), 3, 2, seed=0)))
    rows = tmp_path / "r.csv"
    rows.write_text("a\n1\n")
    result = CliRunner().invoke(app, ["model", "predict", str(path), "--data", str(rows)])
    assert result.exit_code == 1 and "pollen job model JOB" in result.output


def test_regression_learns_and_reports_in_target_units(tmp_path: Path) -> None:
    """Linear regression on diabetes: R² well above 0, RMSE in the target's units; predict
    writes values in those units."""
    table = diabetes_table()
    schema = derive_job_schema(table, label="target", task="regression")
    JobCreate.model_validate(_spec(schema, {"arch": "linear"}, "regression"))
    data = prepare(table, schema)
    model = build_model(LinearSpec(arch="linear"), schema.n_features, 1, seed=0)
    train_local(model, data, epochs=20, lr=0.05, seed=0)
    res = evaluate_regression(model, data, offset=schema.label.offset, scale=schema.label.scale)
    assert res.r2 > 0.4 and 40 < res.rmse < 70 and res.mae < res.rmse
    path = tmp_path / "m.safetensors"
    spec = _spec(schema, {"arch": "linear"}, "regression")
    path.write_bytes(
        model_bytes(model, Contract.from_spec("job_r", JobCreate.model_validate(spec)))
    )
    rows = tmp_path / "rows.csv"
    write_table_csv(table.take(np.arange(5)), rows)
    out = tmp_path / "p.csv"
    result = CliRunner().invoke(
        app, ["model", "predict", str(path), "--data", str(rows), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    values = [float(r["prediction"]) for r in csv.DictReader(out.open())]
    assert all(25 < v < 346 for v in values)


def test_cnn_on_digits_is_deterministic_and_learns() -> None:
    """The same spec and seed build a bit-identical CNN; trained on digits as 8x8 images it
    beats 90% accuracy on its training data."""
    from agents.experiment import load_digits_split

    split = load_digits_split(2, seed=0)
    spec = CNNSpec(arch="cnn", input_shape=[1, 8, 8], channels=[8])
    a = build_model(spec, 64, 10, seed=3)
    b = build_model(spec, 64, 10, seed=3)
    assert flatten(a).tobytes() == flatten(b).tobytes()
    assert to_safetensors(a) == to_safetensors(b)
    data = prepare(split.providers[0], split.schema)
    train_local(a, data, epochs=8, lr=0.3, seed=0)
    assert evaluate(a, data).accuracy > 0.9
    with pytest.raises(ValueError, match="holds 49 values"):
        build_model(CNNSpec(arch="cnn", input_shape=[1, 7, 7]), 64, 10, seed=0)


@pytest.mark.parametrize(
    ("model", "task", "ok"),
    [
        ({"arch": "logreg"}, "classification", True),
        ({"arch": "logreg"}, "regression", False),
        ({"arch": "linear"}, "regression", True),
        ({"arch": "linear"}, "classification", False),
        ({"arch": "mlp", "hidden": [8]}, "regression", True),
        ({"arch": "cnn", "input_shape": [1, 2, 2], "channels": [4]}, "classification", True),
        ({"arch": "cnn", "input_shape": [1, 2, 2], "channels": [4, 4]}, "classification", False),
        ({"arch": "cnn", "input_shape": [1, 3, 3]}, "classification", False),
        ({"arch": "logreg", "hidden": [3]}, "classification", False),
    ],
)
def test_server_and_agents_agree_on_models_and_tasks(
    model: dict[str, Any], task: str, ok: bool
) -> None:
    """A model/task pair the server accepts, every agent can build, and the reverse."""
    features = [{"name": f"p{i}"} for i in range(4)]
    label: dict[str, Any] = {"classes": [0, 1]} if task == "classification" else {}
    body = {
        "title": "t", "task": task, "model": model, "rounds": 1, "budget_cents": 100,
        "price_cap_cents": 1, "schema": {"features": features, "label": label},
    }  # fmt: skip
    try:
        JobCreate.model_validate(body)
        server_ok = True
    except ValidationError:
        server_ok = False
    try:
        build_model(model_spec(model), 4, 2 if task == "classification" else 1, seed=0)
        agent_ok = True
    except (ValidationError, ValueError):
        agent_ok = False
    assert server_ok == agent_ok == ok
