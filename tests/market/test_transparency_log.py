"""The transparency log against a dishonest operator who edits the database behind the
server's back (triggers dropped, the journal's hash chain recomputed): certificate
transparency's answer, RFC 9162 consistency proofs from a head a client saved."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from agents.audit import audit, compare
from agents.client import PollenClient
from agents.trust import Trust, TrustError
from crypto import BuyerKeys
from crypto.identity import canonical
from crypto.merkle import leaf_hash
from market.ledger.chain import chain_hash
from tests.utils.clock import FakeClock
from tests.utils.scenario import Scenario, running_job


def _settled(client: TestClient, clock: FakeClock, keys: BuyerKeys) -> Scenario:
    scn = running_job(client, clock, keys)
    for p in scn.providers:
        r = scn.submit(p, 1)
        assert r.status_code == 201, r.text
    assert scn.round(1)["state"] == "closed"
    return scn


def _rewrite_settlement(client: TestClient, cents: int) -> None:
    """Move `cents` of the first settlement from a provider's payable to the fees, then
    recompute the journal's chain and the log's leaves so that everything the server can
    check for itself agrees again."""
    engine = client.app.state.engine  # type: ignore[attr-defined]
    with engine.begin() as conn:
        pg = conn.dialect.name == "postgresql"
        for table in ("ledger_posting", "ledger_txn", "log_leaf"):
            if pg:
                conn.execute(text(f"ALTER TABLE {table} DISABLE TRIGGER USER"))
            else:
                for row in conn.execute(
                    text("SELECT name FROM sqlite_master WHERE type='trigger' AND tbl_name=:t"),
                    {"t": table},
                ).all():
                    conn.execute(text(f"DROP TRIGGER {row[0]}"))
        txn = conn.execute(
            text("SELECT id FROM ledger_txn WHERE kind='settle' ORDER BY seq")
        ).first()
        assert txn is not None
        legs = conn.execute(
            text("SELECT id, account, amount FROM ledger_posting WHERE txn_id=:t"), {"t": txn[0]}
        ).all()
        payable = next(lg for lg in legs if lg[1].endswith(":payable"))
        fees = next(lg for lg in legs if lg[1].endswith(":fees"))
        conn.execute(text("UPDATE ledger_posting SET amount=amount-:c WHERE id=:i"),
                     {"c": cents, "i": payable[0]})  # fmt: skip
        conn.execute(text("UPDATE ledger_posting SET amount=amount+:c WHERE id=:i"),
                     {"c": cents, "i": fees[0]})  # fmt: skip
    # Recompute the chain and the leaves through the models, as a careful operator would.
    from sqlmodel import Session, col, select

    from market.ledger.chain import GENESIS, txn_canonical
    from market.models import LedgerPosting, LedgerTransaction, LogLeaf

    with Session(engine) as s, engine.begin() as conn:
        txns = s.exec(select(LedgerTransaction).order_by(col(LedgerTransaction.seq))).all()
        prev, hashes = GENESIS, {}
        for t in txns:
            legs = s.exec(select(LedgerPosting).where(LedgerPosting.txn_id == t.id)).all()
            body = txn_canonical(t, legs)
            h = chain_hash(prev, body)
            conn.execute(text("UPDATE ledger_txn SET prev_hash=:p, hash=:h WHERE id=:i"),
                         {"p": prev, "h": h, "i": t.id})  # fmt: skip
            hashes[t.id] = (h, body)
            prev = h
        for leaf in s.exec(select(LogLeaf).where(LogLeaf.kind == "ledger")).all():
            doc = json.loads(leaf.payload)
            h, body = hashes[doc["txn"]["id"]]
            payload = canonical({"kind": "ledger", "hash": h, "txn": json.loads(body)}).decode()
            new = {"p": payload, "h": leaf_hash(payload.encode()).hex(), "i": leaf.index}
            conn.execute(text('UPDATE log_leaf SET payload=:p, leaf_hash=:h WHERE "index"=:i'), new)
    # ...and restarts the server, which rebuilds its tree from the rewritten leaves.
    from market.translog.log import forget

    forget(engine)


def test_rewritten_settlement_is_caught_by_every_saved_head(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: object
) -> None:
    """Issue 14 (b): 150 cents of a settled round moved from a provider's payable to the
    fees with the chain recomputed. `/v1/ledger/verify` cannot tell (it is the operator's own
    view), but every party holding an earlier signed head fails its consistency check."""
    from pathlib import Path

    scn = _settled(client, clock, buyer_keys)
    parties = [scn.buyer, *scn.providers]
    trusts = []
    for i, who in enumerate(parties):
        api = PollenClient("http://testserver", who.api_key, http=client)
        t = Trust(Path(str(tmp_path)) / f"party{i}.json")
        t.check_head(api)
        trusts.append((api, t))
    _rewrite_settlement(client, 150)
    assert client.get("/v1/ledger/verify").json()["ok"] is True  # the rewrite is seamless
    for api, t in trusts:
        with pytest.raises(TrustError, match="consistency check failed"):
            audit(api, t)


def test_honest_log_passes_every_audit(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: object
) -> None:
    """Control: heads saved before later appends stay consistent with the grown log."""
    from pathlib import Path

    scn = running_job(client, clock, buyer_keys)
    api = PollenClient("http://testserver", scn.buyer.api_key, http=client)
    t = Trust(Path(str(tmp_path)) / "trust.json")
    t.check_head(api)
    for p in scn.providers:
        assert scn.submit(p, 1).status_code == 201
    assert audit(api, t)


def test_two_heads_of_one_size_are_a_detected_fork(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: object
) -> None:
    """A split view (RFC 9162 §8.2, gossip): the operator shows two parties different
    trees of the same size, both signed; `pollen audit --compare` proves the fork."""
    from pathlib import Path

    from market.translog import current

    scn = _settled(client, clock, buyer_keys)
    api = PollenClient("http://testserver", scn.buyer.api_key, http=client)
    t = Trust(Path(str(tmp_path)) / "trust.json")
    sth = t.check_head(api)
    forged = current().record("tree-head", {**sth["body"], "root": "ab" * 32})
    compare(api, t, sth)  # the same head: fine
    with pytest.raises(TrustError, match="forked"):
        compare(api, t, forged)


def test_accepted_update_missing_from_the_aggregate_is_proven(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: object
) -> None:
    """Issue 14 (c): the server drops an accepted update from the sum. The provider holds
    the server's signed acceptance; the server's signed round-closed record leaves it out:
    the two signed records together prove the drop (an SCT-style promise, RFC 9162 §3)."""
    from pathlib import Path

    from market.services import merging

    scn = running_job(client, clock, buyer_keys)
    victim = scn.providers[0]
    r = scn.submit(victim, 1)
    assert r.status_code == 201
    receipt = r.json()
    api = PollenClient("http://testserver", victim.api_key, http=client)
    t = Trust(Path(str(tmp_path)) / "trust.json")
    t.keep_receipt({"leaf_index": receipt["leaf_index"], "record": receipt["record"]})
    real_merge = merging.close_sums

    def dropping_merge(session, job, rnd):  # type: ignore[no-untyped-def]
        real_merge(session, job, rnd)
        rnd.acc_providers = [p for p in rnd.acc_providers if p != victim.id]

    merging.close_sums = dropping_merge  # type: ignore[assignment]
    try:
        for p in scn.providers[1:]:
            assert scn.submit(p, 1).status_code == 201
    finally:
        merging.close_sums = real_merge  # type: ignore[assignment]
    assert scn.round(1)["state"] == "closed"
    with pytest.raises(TrustError, match="leaves it out of the aggregate"):
        audit(api, t)


def test_withheld_round_closed_record_fails_the_audit(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, tmp_path: object
) -> None:
    """The operator hides the round-closed record of a closed round (the one record that
    would prove an accepted update missing from the sum): the provider's audit does not
    pass for want of it, it fails naming the round."""
    from pathlib import Path

    import httpx

    from tests.agents.test_trust_attacks import Operator

    def withhold(request: httpx.Request, response: httpx.Response) -> httpx.Response:
        if request.url.path.endswith("/records") and request.method == "GET":
            kept = [r for r in response.json() if r["kind"] != "round-closed"]
            return httpx.Response(200, json=kept, request=request)
        return response

    scn = running_job(client, clock, buyer_keys)
    victim = scn.providers[0]
    r = scn.submit(victim, 1)
    assert r.status_code == 201
    t = Trust(Path(str(tmp_path)) / "trust.json")
    t.keep_receipt({"leaf_index": r.json()["leaf_index"], "record": r.json()["record"]})
    for p in scn.providers[1:]:
        assert scn.submit(p, 1).status_code == 201
    assert scn.round(1)["state"] == "closed"
    api = PollenClient("http://testserver", victim.api_key, transport=Operator(client, withhold))
    with pytest.raises(TrustError, match="serves no signed round-closed record"):
        audit(api, t)
