"""`pollen` commands about data and models: start a job from a CSV, cancel it, download its
model, predict with it.

pollen job init --data FILE [--label L] [--task T] [--out job.yaml]
pollen job cancel JOB
pollen job model JOB --out model.safetensors
pollen model predict MODEL --data FILE --out predictions.csv
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

console = Console()
model_app = typer.Typer(help="Use a trained model.", no_args_is_help=True)

ServerOpt = Annotated[
    str, typer.Option("--server", envvar="POLLEN_SERVER", help="Marketplace base URL.")
]
ApiKeyOpt = Annotated[
    str,
    typer.Option("--api-key", envvar="POLLEN_API_KEY", help="Your API key (or POLLEN_API_KEY)."),
]
if TYPE_CHECKING:
    from agents.client import PollenClient

DEFAULT_SERVER = "http://127.0.0.1:8000"


def _client(server: str, api_key: str) -> PollenClient:
    from agents.client import PollenClient

    if not api_key:
        raise ValueError("no API key: pass --api-key or set POLLEN_API_KEY")
    return PollenClient(server, api_key)


def job_init(
    data: Annotated[Path, typer.Option(help="The buyer's data (CSV/npz/Parquet).")],
    label: Annotated[str, typer.Option(help="Label column.")] = "label",
    task: Annotated[
        str | None, typer.Option(help="classification or regression (asked when unclear).")
    ] = None,
    out: Annotated[Path, typer.Option(help="Where to write the job YAML.")] = Path("job.yaml"),
    force: Annotated[bool, typer.Option(help="Overwrite OUT if it exists.")] = False,
) -> None:
    """Write a commented job YAML derived from a data file (schema, task, model, money)."""
    from agents.jobspec import init_yaml

    if task not in (None, "classification", "regression"):
        raise ValueError(f"--task must be classification or regression, not {task!r}")
    if out.exists() and not force:
        raise ValueError(f"{out} exists; pass --force to overwrite it")
    text = init_yaml(data, label=label, task=task, out=out)
    out.write_text(text)
    console.print(f"wrote [bold]{out}[/bold]; edit it, then: pollen job post {out}")


def job_cancel(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = "",
) -> None:
    """Cancel a job: unspent escrow is refunded, rounds already done are paid."""
    job = _client(server, api_key).cancel_job(job_id)
    console.print(f"job {job.id} is {job.state}")


def job_model(
    job_id: Annotated[str, typer.Argument(metavar="JOB")],
    out: Annotated[Path, typer.Option(help="Where to write the model.")] = Path(
        "model.safetensors"
    ),
    server: ServerOpt = DEFAULT_SERVER,
    api_key: ApiKeyOpt = "",
) -> None:
    """Download a completed job's final model (it carries its schema and classes)."""
    from agents.contract import Contract

    data = _client(server, api_key).get_final_model(job_id)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    contract = Contract.from_bytes(data)
    console.print(f"wrote {out}: {contract.task} model ({contract.model.arch}) of job {job_id}")


def model_predict(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="A Pollen model file.")],
    data: Annotated[Path, typer.Option(help="Rows to predict (CSV/npz/Parquet, raw).")],
    out: Annotated[Path, typer.Option(help="Predictions CSV to write.")] = Path("predictions.csv"),
) -> None:
    """Predict for new raw rows with the model's own preprocessing: class and
    probabilities (classification) or the value (regression)."""
    from agents.contract import predict, write_predictions
    from agents.tabular import read_table

    if not model.is_file():
        raise FileNotFoundError(f"no model file at {model}")
    contract, results = predict(model.read_bytes(), read_table(data))
    write_predictions(results, out)
    console.print(f"wrote {len(results)} {contract.task} predictions to {out}")


def model_show(
    model: Annotated[Path, typer.Argument(metavar="MODEL", help="A Pollen model file.")],
) -> None:
    """Print the contract a model file carries (task, columns, classes)."""
    from agents.contract import Contract

    contract = Contract.from_bytes(model.read_bytes())
    console.print_json(contract.to_json())


def register(app: typer.Typer, job_app: typer.Typer, friendly: Callable[[Any], Any]) -> None:
    """Add the commands to the `pollen` CLI; ``friendly`` turns errors into one line."""
    job_app.command("init")(friendly(job_init))
    job_app.command("cancel")(friendly(job_cancel))
    job_app.command("model")(friendly(job_model))
    model_app.command("predict")(friendly(model_predict))
    model_app.command("show")(friendly(model_show))
    app.add_typer(model_app, name="model")
