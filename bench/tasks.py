"""`python -m bench tasks`: federated vs centralized on real-looking tables, through the real
server and agent processes.

Two jobs, each split over 3 provider agents (their own processes, CKKS-encrypted updates,
record-level DP off with ``--no-dp`` so the comparison is with exact training):

- **classification**: a generated loan table (income with empty cells, a text ``region``
  column with empty cells, integer age and term, text labels ``repaid``/``default``), schema
  derived from the buyer's held-out file as ``pollen job post`` does (categories, fills and
  missing indicators, standardization);
- **regression**: scikit-learn's shipped diabetes set (442 rows, target 25–346), ``linear``
  model on the standardized target.

The centralized baseline trains the same model, from the same initial weights, with the same
code on the union of the providers' rows for as many passes (rounds × local epochs), and both
are scored on the buyer's held-out rows. Writes bench/results/tasks.json.
"""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from agents.buyer import BuyerRun, buyer_identity, post_job
from agents.client import PollenClient
from agents.data import concat, prepare
from agents.models import build_model, model_spec
from agents.processes import free_port, start_agent, start_server, stop, wait_ready
from agents.sample_tables import diabetes_table, loan_table, split_rows, write_table_csv
from agents.table_schema import derive_job_schema
from agents.tabular import Table, read_table
from agents.training import evaluate, evaluate_regression, train_local
from bench.common import console, print_table, write_result
from crypto import BuyerKeys

PROVIDERS = 3
ROUNDS = 5
EPOCHS = 2
SEED = 7


def _spec(title: str, task: str, arch: str, schema: Any, lr: float) -> dict[str, Any]:
    return {
        "title": title, "task": task, "model": {"arch": arch}, "rounds": ROUNDS,
        "local_epochs": EPOCHS, "learning_rate": lr, "batch_size": 16, "seed": SEED,
        "schema": schema.model_dump(exclude_none=True), "min_providers": PROVIDERS,
        "max_providers": PROVIDERS, "quorum": PROVIDERS, "min_samples": 20,
        "budget_cents": 200 * PROVIDERS * ROUNDS, "price_cap_cents": 200,
        "round_deadline_s": 300, "offer_ttl_s": 600,
    }  # fmt: skip


def _centralized(spec: dict[str, Any], providers: list[Table], test: Table) -> dict[str, float]:
    schema = derive_job_schema(test, label=spec["schema"]["label"]["name"], task=spec["task"])
    assert schema.model_dump(exclude_none=True) == spec["schema"]
    union = concat([prepare(t, schema) for t in providers])
    model = build_model(model_spec(spec["model"]), schema.n_features, schema.n_classes, seed=SEED)
    train_local(model, union, epochs=EPOCHS * ROUNDS, lr=spec["learning_rate"],
                batch_size=spec["batch_size"], seed=SEED)  # fmt: skip
    held = prepare(test, schema)
    if schema.task == "regression":
        r = evaluate_regression(model, held, offset=schema.label.offset, scale=schema.label.scale)
        return {"r2": r.r2, "rmse": r.rmse, "mae": r.mae}
    return {"accuracy": evaluate(model, held).accuracy}


def _federated(
    url: str, admin: PollenClient, workdir: Path, name: str, label: str,
    spec: dict[str, Any], providers: list[Table], test_csv: Path,
) -> dict[str, float]:  # fmt: skip
    keys = BuyerKeys.generate()
    buyer = PollenClient(url, PollenClient(url, None).register(role="buyer", name=name).api_key)
    job = post_job(buyer, keys, spec, identity=buyer_identity(workdir / name))
    admin.credit_job(job.id, spec["budget_cents"])
    procs = []
    try:
        for i, table in enumerate(providers):
            path = workdir / f"{name}-p{i}.csv"
            write_table_csv(table, path)
            procs.append(start_agent(
                url, path, workdir / f"{name}-a{i}", i, workdir / f"{name}-a{i}.log",
                ["--label", label, "--classes", "", "--no-dp", "--poll", "0.1"], operator=admin,
            ))  # fmt: skip
        run = BuyerRun(buyer, keys, job.id, read_table(test_csv), out_dir=workdir / name,
                       poll_s=0.1)  # fmt: skip
        outcome = run.run()
        for p in procs:
            p.wait(timeout=120)
    finally:
        for p in procs:
            stop(p)
    last = outcome.reports[-1]
    return {k: v for k, v in last.metrics().items() if k != "loss"}


def _compare(
    url: str,
    admin: PollenClient,
    workdir: Path,
    table: tuple[str, str, str, str, float, list[Table]],
) -> dict[str, Any]:
    """One table trained federated through the server and centrally on the same rows, both
    scored on the held-out part."""
    name, label, task, arch, lr, parts = table
    test, *providers = parts
    test_csv = workdir / f"{name}-test.csv"
    write_table_csv(test, test_csv)
    schema = derive_job_schema(read_table(test_csv), label=label, task=task)  # type: ignore[arg-type]
    spec = _spec(f"{name} ({task})", task, arch, schema, lr)
    console.print(f"{name}: {task}, {arch}, {schema.n_features} model inputs, "
                  f"{[len(p) for p in providers]} rows per provider, "
                  f"{len(test)} held out")  # fmt: skip
    fed = _federated(url, admin, workdir, name, label, spec, providers, test_csv)
    files = [read_table(workdir / f"{name}-p{i}.csv") for i in range(PROVIDERS)]
    cen = _centralized(spec, files, read_table(test_csv))
    return {
        "task": task, "arch": arch, "inputs": schema.n_features,
        "rows_per_provider": [len(p) for p in providers], "held_out": len(test),
        "federated": fed, "centralized": cen,
    }  # fmt: skip


def main() -> None:
    started = time.perf_counter()
    loans = split_rows(loan_table(1200, seed=SEED), PROVIDERS + 1, seed=SEED)
    diabetes = split_rows(diabetes_table(), PROVIDERS + 1, seed=SEED)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="pollen-bench-tasks-") as tmp:
        workdir = Path(tmp)
        (workdir / "server").mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        admin_key = secrets.token_urlsafe(16)
        server = start_server(workdir / "server", port, admin_key,
                              extra_env={"POLLEN_DEADLINE_TICK_S": "0.2"})  # fmt: skip
        try:
            wait_ready(url, server)
            admin = PollenClient(url, admin_key)
            for table in (
                ("loans", "outcome", "classification", "logreg", 0.1, loans),
                ("diabetes", "target", "regression", "linear", 0.05, diabetes),
            ):
                results[table[0]] = _compare(url, admin, workdir, table)
        finally:
            stop(server)
    cls, reg = results["loans"], results["diabetes"]
    print_table(
        f"Federated (3 agents, {ROUNDS} rounds, encrypted, no DP) vs centralized, held-out rows",
        ["table", "task", "metric", "federated", "centralized"],
        [["loans (categories, gaps, text labels)", "classification", "accuracy",
          f"{cls['federated']['accuracy']:.4f}", f"{cls['centralized']['accuracy']:.4f}"],
         ["diabetes", "regression", "R²", f"{reg['federated']['r2']:.4f}",
          f"{reg['centralized']['r2']:.4f}"],
         ["diabetes", "regression", "RMSE", f"{reg['federated']['rmse']:.2f}",
          f"{reg['centralized']['rmse']:.2f}"]],
    )  # fmt: skip
    write_result("tasks", {
        "providers": PROVIDERS, "rounds": ROUNDS, "local_epochs": EPOCHS, "dp": False,
        "federated_accuracy": cls["federated"]["accuracy"],
        "centralized_accuracy": cls["centralized"]["accuracy"],
        "federated_r2": reg["federated"]["r2"], "centralized_r2": reg["centralized"]["r2"],
        "federated_rmse": reg["federated"]["rmse"], "centralized_rmse": reg["centralized"]["rmse"],
        "tables": results, "seconds": round(time.perf_counter() - started, 1),
        "seed": SEED, "numpy": np.__version__,
    })  # fmt: skip


if __name__ == "__main__":
    main()
