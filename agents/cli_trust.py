"""`pollen audit`: any party re-verifies what it holds against the transparency log."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def identity_path(keys: Path) -> Path:
    """The buyer's Ed25519 identity key file, next to its CKKS key file."""
    return keys.parent / f"{keys.name}.identity"


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit_cmd(
        state_dir: Annotated[Path, typer.Option(help="An agent's --state-dir or a buyer's --out.")],
        server: Annotated[str, typer.Option(envvar="POLLEN_SERVER")] = "http://127.0.0.1:8000",
        api_key: Annotated[str, typer.Option(envvar="POLLEN_API_KEY")] = "",
        compare_with: Annotated[
            Path | None,
            typer.Option("--compare", help="Another party's trust file or saved head (JSON)."),
        ] = None,
    ) -> None:
        """Re-verify signatures, receipts' inclusion and the log's consistency; exit 1 on the
        first discrepancy."""
        from agents.audit import audit, compare, load_head, trust_files
        from agents.client import PollenClient
        from agents.state import StateFile
        from agents.trust import Trust, TrustError

        key = api_key or StateFile(state_dir / "agent-state.json").get("api_key") or None
        files = trust_files(state_dir)
        if not files:
            err_console.print(f"audit: no trust file in {state_dir}")
            raise typer.Exit(1)
        with PollenClient(server, key) as client:
            try:
                for path in files:
                    trust = Trust(path)
                    for line in audit(client, trust):
                        console.print(f"ok  {path.name}: {line}")
                    if compare_with is not None:
                        compare(client, trust, load_head(compare_with))
                        console.print(f"ok  {path.name}: same log as {compare_with}")
            except TrustError as exc:
                err_console.print(f"[bold red]AUDIT FAILED[/bold red] ({path.name}): {exc}")
                raise typer.Exit(1) from exc
