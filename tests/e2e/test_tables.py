"""Real tables end to end: a loan CSV with categories, empty cells and text labels, and a
regression, through the real server and agent processes; the final model predicts new rows."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agents.buyer import BuyerRun, post_job
from agents.cli import app
from agents.client import PollenClient
from agents.contract import Contract
from agents.jobspec import load_spec
from agents.processes import start_agent, stop
from agents.sample_tables import diabetes_table, loan_table, split_rows, write_table_csv
from agents.tabular import read_table
from crypto import BuyerKeys
from crypto.identity import IdentityKey
from tests.e2e.conftest import LiveServer

pytestmark = pytest.mark.e2e
ROUNDS = 2

JOB_YAML = """\
title: {title}
task: {task}
schema_from: buyer.csv
label: {label}
model: {{arch: {arch}}}
rounds: {rounds}
local_epochs: 10
learning_rate: 0.1
batch_size: 16
min_providers: 2
max_providers: 2
quorum: 2
min_samples: 20
price_cap_cents: 500
budget_cents: 5000
round_deadline_s: 120
offer_ttl_s: 600
"""


def _run_job(
    server: LiveServer, tmp_path: Path, tables: list, label: str, task: str, arch: str
) -> tuple[PollenClient, str, BuyerRun, list[str]]:
    buyer_table, *providers = tables
    write_table_csv(buyer_table, tmp_path / "buyer.csv")
    (tmp_path / "job.yaml").write_text(
        JOB_YAML.format(title=f"{task} e2e", task=task, label=label, arch=arch, rounds=ROUNDS)
    )
    keys = BuyerKeys.generate()
    # The buyer signs the manifest and every model: agents trust nothing unsigned.
    identity = IdentityKey.generate()
    anon = PollenClient(server.url, None)
    buyer = PollenClient(server.url, anon.register(role="buyer", name="b").api_key)
    job = post_job(buyer, keys, load_spec(tmp_path / "job.yaml"), identity=identity)
    PollenClient(server.url, server.admin_key).credit_job(job.id, 5000)
    procs = []
    for i, table in enumerate(providers):
        path = tmp_path / f"p{i}.csv"
        write_table_csv(table, path)
        extra = ["--label", label, "--classes", ""]
        procs.append(
            start_agent(
                server.url,
                path,
                tmp_path / f"a{i}",
                i,
                tmp_path / f"a{i}.log",
                extra,
                operator=PollenClient(server.url, server.admin_key),
            )
        )
    try:
        run = BuyerRun(
            buyer, keys, job.id, read_table(tmp_path / "buyer.csv"),
            out_dir=tmp_path / "out", poll_s=0.2, identity=identity,
        )  # fmt: skip
        run.run()
        codes = [p.wait(timeout=120) for p in procs]
    finally:
        for p in procs:
            stop(p)
    logs = [(tmp_path / f"a{i}.log").read_text() for i in range(len(providers))]
    assert codes == [0] * len(providers), logs
    return buyer, str(job.id), run, logs


def _download_and_predict(server: LiveServer, buyer: PollenClient, job_id: str, tmp_path: Path,
                          rows: Path) -> list[dict[str, str]]:  # fmt: skip
    model = tmp_path / "final.safetensors"
    runner = CliRunner()
    got = runner.invoke(app, ["job", "model", job_id, "--out", str(model), "--server",
                              server.url, "--api-key", buyer.api_key])  # fmt: skip
    assert got.exit_code == 0, got.output
    assert Contract.from_bytes(model.read_bytes()).job_id == job_id
    out = tmp_path / "pred.csv"
    got = runner.invoke(
        app, ["model", "predict", str(model), "--data", str(rows), "--out", str(out)]
    )
    assert got.exit_code == 0, got.output
    return list(csv.DictReader(out.open()))


def test_loan_table_with_categories_gaps_and_text_labels(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """Two agents on loan CSVs with empty cells and text columns train a text-label model;
    it predicts 'repaid'/'default' for new raw rows, well above chance."""
    tables = split_rows(loan_table(480, seed=4), 3, seed=0)
    buyer, job_id, run, _ = _run_job(
        live_server, tmp_path, tables, "outcome", "classification", "logreg"
    )
    status = buyer.get_job(job_id)
    assert status.state == "completed"
    assert all(len(r.included) == 2 for r in status.rounds)
    assert run.state.section("rounds")[str(ROUNDS)]["accuracy"] > 0.7
    rows = tmp_path / "new.csv"
    write_table_csv(tables[0], rows)  # the label column is ignored, unseen rows work alike
    preds = _download_and_predict(live_server, buyer, job_id, tmp_path, rows)
    truth = [str(v) for v in tables[0].columns["outcome"].values]
    assert {p["prediction"] for p in preds} <= {"repaid", "default"}
    hits = sum(p["prediction"] == t for p, t in zip(preds, truth, strict=True))
    assert hits / len(truth) > 0.7


def test_regression_job_reports_rmse_mae_r2(live_server: LiveServer, tmp_path: Path) -> None:
    """A regression (diabetes target) trains with MSE on the standardized target; each round
    records RMSE, MAE and R²; the final model predicts values in the target's units."""
    tables = split_rows(diabetes_table(), 3, seed=0)
    buyer, job_id, _, _ = _run_job(live_server, tmp_path, tables, "target", "regression", "linear")
    status = buyer.get_job(job_id)
    assert status.state == "completed"
    last = status.rounds[-1].metrics
    assert set(last) == {"loss", "rmse", "mae", "r2"} and last["r2"] > 0.2
    assert 30 < last["rmse"] < 80
    rows = tmp_path / "rows.csv"
    write_table_csv(tables[0], rows)
    preds = [float(p["prediction"]) for p in _download_and_predict(
        live_server, buyer, job_id, tmp_path, rows)]  # fmt: skip
    truth = [float(v) for v in tables[0].columns["target"].values]
    # In the target's units: centred on the target's mean (a standardized output would sit
    # near 0) and as close to the truth as the round's own RMSE says. A linear model may
    # extrapolate past the target's range on a few rows, so the range is no bound.
    mean_truth = sum(truth) / len(truth)
    assert abs(sum(preds) / len(preds) - mean_truth) < 0.25 * mean_truth
    rmse = (sum((p - t) ** 2 for p, t in zip(preds, truth, strict=True)) / len(truth)) ** 0.5
    assert rmse < 80
