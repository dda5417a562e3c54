"""Money against the log: the server signs every settlement and payout, and each party's
`pollen audit` holds what the server reports (earnings, payouts, the buyer's receipt) and
the ledger's own leaves to those signed records. A settled amount rewritten behind the
server's back (triggers dropped, the journal's chain and the ledger's leaves recomputed)
fails every party's audit, even one that never saved an earlier head."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from agents.audit import audit
from agents.client import PollenClient
from agents.trust import Trust, TrustError
from crypto import BuyerKeys
from crypto.identity import canonical, verify_record
from crypto.merkle import leaf_hash, verify_inclusion
from tests.market.test_transparency_log import _rewrite_settlement, _settled
from tests.utils.clock import FakeClock
from tests.utils.scenario import Scenario


def _parties(client: TestClient, scn: Scenario, tmp: Path) -> list[tuple[PollenClient, Trust]]:
    """Fresh trust files (no saved head): the buyer's per job, each provider's own."""
    out = []
    api = PollenClient("http://testserver", scn.buyer.api_key, http=client)
    out.append((api, Trust(tmp / "buyer" / f"{scn.job_id}.trust.json")))
    for i, p in enumerate(scn.providers):
        api = PollenClient("http://testserver", p.api_key, http=client)
        out.append((api, Trust(tmp / f"agent{i}" / "trust.json")))
    return out


def _pay_out(client: TestClient, scn: Scenario) -> None:
    r = client.post("/v1/admin/payouts/run", headers=scn.admin.headers)
    assert r.status_code == 200, r.text
    batch = r.json()["batch"]
    assert batch is not None
    if batch["status"] != "paid":
        r = client.post(f"/v1/admin/payouts/{batch['id']}/mark-paid", headers=scn.admin.headers)
        assert r.status_code == 200, r.text


def test_settlement_and_payout_records_are_signed_and_served_with_proofs(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    scn = _settled(client, clock, buyer_keys)
    _pay_out(client, scn)
    key = client.get("/v1/log/key").json()["public_key"]
    receipt = client.get(f"/v1/jobs/{scn.job_id}/receipt", headers=scn.buyer.headers).json()
    settlements = [
        verify_record(r["record"], key, kind="settlement")
        for r in client.get(f"/v1/jobs/{scn.job_id}/records", headers=scn.buyer.headers).json()
        if r["kind"] == "settlement"
    ]
    assert sum(p["cents"] for b in settlements for p in b["payees"]) == receipt["paid_cents"]
    head = client.get("/v1/log/head").json()["body"]
    for r in client.get(f"/v1/jobs/{scn.job_id}/records", headers=scn.buyer.headers).json():
        assert r["inclusion"]["size"] == head["size"]
        verify_inclusion(
            r["index"], head["size"], leaf_hash(canonical(r["record"])),
            [bytes.fromhex(h) for h in r["inclusion"]["proof"]], bytes.fromhex(head["root"]),
        )  # fmt: skip
    assert sum(b["fees_cents"] for b in settlements) == receipt["fees_cents"]
    for p in scn.providers:
        mine = client.get("/v1/accounts/me/records", headers=p.headers).json()
        kinds = sorted(r["kind"] for r in mine)
        assert kinds == ["payout", "settlement"], kinds
        for r in mine:
            body = verify_record(r["record"], key, kind=r["kind"])
            leaf = client.get(f"/v1/log/leaves/{r['index']}", headers=p.headers).json()
            inc = r["inclusion"]
            head = client.get("/v1/log/head").json()["body"]
            assert inc["size"] == head["size"]
            verify_inclusion(
                r["index"], inc["size"], leaf_hash(leaf["payload"].encode()),
                [bytes.fromhex(h) for h in inc["proof"]], bytes.fromhex(head["root"]),
            )  # fmt: skip
            if r["kind"] == "payout":
                assert body["provider_id"] == p.id and body["jobs"] == [scn.job_id]
                assert body["rail"] == "manual" and body["rail_reference"]
        # A provider sees no one else's payout, nor a settlement it is not in.
        others = client.get(f"/v1/jobs/{scn.job_id}/records", headers=p.headers).json()
        for r in others:
            if r["kind"] == "payout":
                assert r["record"]["body"]["provider_id"] == p.id


def test_honest_money_passes_every_audit(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """Control: settled, paid out; every party's fresh audit checks the money and passes."""
    scn = _settled(client, clock, buyer_keys)
    _pay_out(client, scn)
    for api, t in _parties(client, scn, tmp_path):
        done = audit(api, t)
        assert any("signed settlement" in line for line in done), done


def test_rewritten_settlement_fails_every_fresh_audit(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """Issue 14 (b) for parties that never saved a head before the rewrite: 150 cents of
    one provider's share moved to the fees, chain and ledger leaves recomputed. The server's
    signed settlement record still says where the money went, so the buyer's receipt, the
    victim's earnings and the ledger leaf every payee checks no longer match it."""
    scn = _settled(client, clock, buyer_keys)
    parties = _parties(client, scn, tmp_path)
    _rewrite_settlement(client, 150)
    assert client.get("/v1/ledger/verify").json()["ok"] is True  # seamless to the server
    for api, t in parties:
        with pytest.raises(TrustError, match="signed settlement") as caught:
            audit(api, t)
        assert "amount mismatch" in str(caught.value)


def test_rewritten_settlement_fails_audits_after_payout(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """The same rewrite after the payouts, on parties that audited before: consistency."""
    scn = _settled(client, clock, buyer_keys)
    _pay_out(client, scn)
    parties = _parties(client, scn, tmp_path)
    for api, t in parties:
        assert audit(api, t)
    _rewrite_settlement(client, 150)
    for api, t in parties:
        with pytest.raises(TrustError, match="consistency check failed"):
            audit(api, t)


def test_payout_rewritten_in_the_database_fails_the_provider_audit(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: Path
) -> None:
    """A payout's amount raised in the database (so the provider looks paid more than it
    got): its earnings no longer match the signed payout record."""
    scn = _settled(client, clock, buyer_keys)
    _pay_out(client, scn)
    victim = scn.providers[0]
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE payout SET amount_cents = amount_cents + 500 WHERE provider_id = :p"),
            {"p": victim.id},
        )
    api = PollenClient("http://testserver", victim.api_key, http=client)
    with pytest.raises(TrustError, match="signed payout"):
        audit(api, Trust(tmp_path / "trust.json"))
