"""An agent declines an offer its data cannot serve, and says why (agents.provider)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agents.provider import ProviderAgent
from agents.sample_tables import loan_table
from agents.table_schema import derive_job_schema
from agents.tabular import Column, Table
from dataspec.views import JobPublic, OfferPublic
from tests.utils.views import job_view, offer_view


class _Market:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.declined: list[str] = []
        self.accepted: list[str] = []

    def list_offers(self) -> list[OfferPublic]:
        return [offer_view()]

    def get_job(self, job_id: str) -> JobPublic:
        return job_view(self.spec, id=job_id)

    def decline_offer(self, offer_id: str) -> None:
        self.declined.append(offer_id)

    def accept_offer(self, offer_id: str) -> None:
        self.accepted.append(offer_id)


def _run(tmp_path: Path, data: Table, spec: dict[str, Any]) -> tuple[_Market, list[str]]:
    market = _Market(spec)
    said: list[str] = []
    agent = ProviderAgent(
        market,  # type: ignore[arg-type]
        data, label="outcome", state_dir=tmp_path, listing_name="p", ask_cents=1,
        notify=said.append,
    )  # fmt: skip
    agent.handle_offers()
    return market, said


def test_agent_accepts_a_job_its_table_fits(tmp_path: Path) -> None:
    """Categories, gaps and text labels the job declares: the offer is accepted."""
    table = loan_table(60, seed=0)
    spec = {
        "schema": derive_job_schema(table, label="outcome").model_dump(),
        "model": {"arch": "logreg"},
    }
    market, _ = _run(tmp_path, loan_table(40, seed=1), spec)
    assert market.accepted == ["o1"] and market.declined == []


def test_agent_declines_extra_missing_or_renamed_columns(tmp_path: Path) -> None:
    """A column the job does not know, one it lacks, or gaps with no fill: declined, with why."""
    table = loan_table(60, seed=0)
    spec = {
        "schema": derive_job_schema(table, label="outcome").model_dump(),
        "model": {"arch": "logreg"},
    }
    extra = Table({**table.columns, "zip": Column("zip", "int", table.columns["age"].values)})
    market, said = _run(tmp_path / "a", extra, spec)
    assert market.declined == ["o1"] and market.accepted == []
    assert "extra column 'zip'" in said[-1]
    renamed = dict(table.columns)
    renamed["years"] = Column("years", "int", renamed.pop("age").values)
    market, said = _run(tmp_path / "b", Table(renamed), spec)
    assert market.declined == ["o1"] and "missing column 'age'" in said[-1]
    complete = loan_table(60, seed=0, missing=0.0)
    strict = derive_job_schema(complete, label="outcome").model_dump()
    market, said = _run(
        tmp_path / "c", loan_table(60, seed=2, missing=0.3), {**spec, "schema": strict}
    )
    assert market.declined == ["o1"] and "declares no fill" in said[-1]
