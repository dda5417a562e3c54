"""`pollen audit`: re-verify everything a party holds against the transparency log.

For the trust file(s) in a state directory (an agent's `trust.json`, a buyer's
`<job>.trust.json`): the server's key is still the pinned one; the current signed head is
consistent with the saved one (RFC 9162 §2.1.4); every signed receipt verifies and its leaf
is included under that head (§2.1.3); every update the server signed as accepted is among
the providers its signed round-closed record says the aggregate holds; and the money:

- a provider: every signed `settlement` record naming it and every signed `payout` record is
  in the log, the ledger leaves they cite hold exactly the signed amounts, the earnings the
  server reports per job are the sum of the signed settlements, every payout it reports as
  paid has its signed record with the same amount, and payouts never exceed what was settled;
- a buyer (`<job>.trust.json`): the job's signed settlement records, their ledger leaves,
  and the receipt agree to the cent, and funded = paid + fees + refunded + escrow.

`compare` checks a head another party saved against ours: two different trees of one size
is a forked log. The first discrepancy raises `TrustError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents.client import PollenClient
from agents.trust import Trust, TrustError
from crypto.identity import SignatureError, canonical, verify_record
from crypto.merkle import ProofError, verify_consistency
from dataspec.money import PayoutPublic
from dataspec.records import LoggedRecord
from dataspec.states import ROUND_HAS_AGGREGATE

Json = dict[str, Any]


def trust_files(state_dir: Path) -> list[Path]:
    return sorted([*state_dir.glob("trust.json"), *state_dir.glob("*.trust.json")])


def audit(client: PollenClient, trust: Trust) -> list[str]:
    """Run every check on one trust file; returns what was verified, raises on the first
    discrepancy."""
    done = []
    key = trust.server_key(client)
    head = trust.check_head(client)
    size = head["body"]["size"]
    done.append(f"tree head of size {size} signed by the pinned key, consistent with the last")
    closes: dict[tuple[str, int], Json] = {}
    for receipt in trust.data.get("receipts", []):
        record = receipt["record"]
        try:
            body = verify_record(record, key, kind="accepted")
        except SignatureError as exc:
            raise TrustError(f"receipt at leaf {receipt['leaf_index']}: {exc}") from exc
        trust.check_inclusion(client, int(receipt["leaf_index"]), canonical(record).decode())
        job_id, number = str(body["job_id"]), int(body["round"])
        if (job_id, number) not in closes:
            for r in client.job_records(job_id):
                if r.kind == "round-closed":
                    b = verify_record(r.record, key, kind="round-closed")
                    closes[(job_id, int(b["round"]))] = b
                    trust.check_inclusion(client, r.index, canonical(r.record).decode())
        close = closes.get((job_id, number))
        if close is None:
            state = client.get_round(job_id, number).state
            if state in ROUND_HAS_AGGREGATE:
                raise TrustError(
                    f"job {job_id} round {number} is {state}, but the server serves no signed "
                    f"round-closed record for it: the receipt at leaf {receipt['leaf_index']} "
                    "cannot be checked against the aggregate"
                )
            done.append(f"receipt job {job_id} round {number}: signed, in the log ({state})")
            continue
        if body["provider_id"] not in close["included"]:
            raise TrustError(
                f"job {job_id} round {number}: the server signed that it accepted the update of "
                f"{body['provider_id']} (leaf {receipt['leaf_index']}), but its signed "
                f"round-closed record leaves it out of the aggregate"
            )
        done.append(f"receipt job {job_id} round {number}: signed, in the log, in the sum")
    me = client.me()
    job_of_file = buyer_job(trust)
    if me.role == "buyer" and job_of_file is not None:
        done += audit_buyer_money(client, trust, key, job_of_file)
    elif me.role == "provider":
        done += audit_provider_money(client, trust, key, str(me.id))
    return done


def buyer_job(trust: Trust) -> str | None:
    """The job a buyer's trust file is for (`<job>.trust.json`), None for an agent's."""
    name = trust.file.path.name
    suffix = ".trust.json"
    return name[: -len(suffix)] if name.endswith(suffix) else None


def _signed(client: PollenClient, trust: Trust, key: str, r: LoggedRecord) -> Json:
    """A served money record: signed by the server's pinned key and included in the log."""
    try:
        body: Json = verify_record(r.record, key, kind=r.kind)
    except SignatureError as exc:
        raise TrustError(f"the {r.kind} record at leaf {r.index} is forged: {exc}") from exc
    trust.check_inclusion(client, r.index, canonical(r.record).decode())
    return body


def _ledger_money(client: PollenClient, trust: Trust, body: Json) -> Json:
    """What the ledger leaves a money record cites hold: payees, fees, refunds, paid."""
    out: Json = {"payees": {}, "fees": 0, "refund": 0, "paid": {}}
    for ref in body.get("ledger", []):
        index = int(ref["leaf_index"])
        leaf = client.log_leaf(index)
        trust.check_inclusion(client, index, leaf.payload)
        txn = json.loads(leaf.payload).get("txn", {})
        if txn.get("id") != ref["txn_id"]:
            raise TrustError(f"leaf {index} is not ledger transaction {ref['txn_id']}")
        for account, amount in txn.get("postings", []):
            parts = str(account).split(":")
            if parts[-1] == "payable" and amount > 0:
                out["payees"][parts[1]] = out["payees"].get(parts[1], 0) + int(amount)
            elif parts[-1] == "paid" and amount > 0:
                out["paid"][parts[1]] = out["paid"].get(parts[1], 0) + int(amount)
            elif account == "platform:fees":
                out["fees"] += int(amount)
            elif parts[-1] == "refunds":
                out["refund"] += int(amount)
    return out


def _check_settlement(client: PollenClient, trust: Trust, index: int, body: Json) -> None:
    """The ledger transaction a signed settlement cites moved exactly the signed money."""
    signed = {str(p["provider_id"]): int(p["cents"]) for p in body["payees"]}
    held = _ledger_money(client, trust, body)
    where = f"job {body['job_id']} round {body['round']}"
    for pid in sorted(set(signed) | set(held["payees"])):
        if signed.get(pid, 0) != held["payees"].get(pid, 0):
            raise TrustError(
                f"amount mismatch, {where}: the ledger (leaf "
                f"{[r['leaf_index'] for r in body['ledger']]}) pays {pid} "
                f"{held['payees'].get(pid, 0)} cents, the signed settlement record (leaf "
                f"{index}) {signed.get(pid, 0)}"
            )
    for name, field in (("fees", "fees_cents"), ("refund", "refund_cents")):
        if held[name] != int(body[field]):
            raise TrustError(
                f"amount mismatch, {where}: the ledger holds {held[name]} cents of {name}, "
                f"the signed settlement record (leaf {index}) {body[field]}"
            )


# A provider's money per (currency, job id), in cents.
PerJob = dict[tuple[str, str], int]


def audit_provider_money(client: PollenClient, trust: Trust, key: str, me: str) -> list[str]:
    """A provider's earnings and payouts as the server reports them hold to its signed
    settlement and payout records, and the payouts stay within the settlements."""
    settled, signed_payouts = _signed_provider_money(client, trust, key, me)
    reported, reported_paid, payouts = _reported_earnings(client, me)
    _check_earnings(settled, reported)
    _check_payouts(payouts, signed_payouts)
    _check_paid(signed_payouts, reported_paid, settled)
    return [
        f"earnings of {sum(settled.values())} cents on {len(settled)} job(s) match the "
        f"signed settlement records; {len(signed_payouts)} payout(s) match the signed payout "
        "records and stay within them"
    ]


def _signed_provider_money(
    client: PollenClient, trust: Trust, key: str, me: str
) -> tuple[PerJob, dict[str, Json]]:
    """What the signed records about `me` settle per job, and its signed payouts by id,
    each checked against the ledger leaves it cites."""
    settled: PerJob = {}
    signed_payouts: dict[str, Json] = {}
    for r in client.my_records():
        body = _signed(client, trust, key, r)
        if r.kind == "settlement":
            _check_settlement(client, trust, r.index, body)
            k = (str(body["currency"]), str(body["job_id"]))
            cents = sum(int(p["cents"]) for p in body["payees"] if p["provider_id"] == me)
            settled[k] = settled.get(k, 0) + cents
        elif r.kind == "payout":
            if body["provider_id"] != me:
                raise TrustError(f"the payout record at leaf {r.index} is another's")
            held = _ledger_money(client, trust, body)
            if held["paid"].get(me, 0) != int(body["cents"]):
                raise TrustError(
                    f"amount mismatch: payout {body['payout_id']}'s ledger leaf pays "
                    f"{held['paid'].get(me, 0)} cents, its signed payout record {body['cents']}"
                )
            signed_payouts[str(body["payout_id"])] = body
    return settled, signed_payouts


def _reported_earnings(client: PollenClient, me: str) -> tuple[PerJob, PerJob, list[PayoutPublic]]:
    """What the server reports `me` earned and was paid per job, and its paid payouts."""
    reported: PerJob = {}
    reported_paid: PerJob = {}
    payouts: list[PayoutPublic] = []
    for e in client.payouts().earnings:
        if e.provider_id != me:
            continue
        for j in e.jobs:
            reported[(e.currency, j["job_id"])] = int(j["earned_cents"])
            reported_paid[(e.currency, j["job_id"])] = int(j["paid_cents"])
        payouts += [p for p in e.payouts if p.status == "paid"]
    return reported, reported_paid, payouts


def _check_earnings(settled: PerJob, reported: PerJob) -> None:
    for cur, job in sorted(set(settled) | set(reported)):
        said, signed = reported.get((cur, job), 0), settled.get((cur, job), 0)
        if said != signed:
            raise TrustError(
                f"amount mismatch: the server reports {said} {cur} cents earned on job {job}, "
                f"its signed settlement records say {signed}"
            )


def _check_payouts(payouts: list[PayoutPublic], signed_payouts: dict[str, Json]) -> None:
    """Every payout reported as paid has its signed record, with the same amount and job."""
    for p in payouts:
        sp = signed_payouts.get(p.id)
        if sp is None:
            raise TrustError(
                f"payout {p.id} ({p.amount_cents} {p.currency} cents, job "
                f"{p.job_id}) has no signed payout record in the log"
            )
        if (int(sp["cents"]), sp["currency"], sp["jobs"]) != (
            p.amount_cents,
            p.currency,
            [p.job_id],
        ):
            raise TrustError(
                f"amount mismatch: payout {p.id} is reported as {p.amount_cents} "
                f"{p.currency} cents for job {p.job_id}, its signed payout record says "
                f"{sp['cents']} {sp['currency']} cents for {sp['jobs']}"
            )


def _check_paid(signed_payouts: dict[str, Json], reported_paid: PerJob, settled: PerJob) -> None:
    """The signed payouts per job are what the server reports paid, and within what the
    signed settlements gave."""
    paid: PerJob = {}
    for body in signed_payouts.values():
        k = (str(body["currency"]), str(body["jobs"][0]))
        paid[k] = paid.get(k, 0) + int(body["cents"])
    for k in sorted(set(paid) | set(reported_paid)):
        if paid.get(k, 0) != reported_paid.get(k, 0):
            raise TrustError(
                f"amount mismatch: the server reports {reported_paid.get(k, 0)} {k[0]} cents "
                f"paid for job {k[1]}, its signed payout records say {paid.get(k, 0)}"
            )
        if paid.get(k, 0) > settled.get(k, 0):
            raise TrustError(
                f"job {k[1]}: the signed payouts ({paid[k]} {k[0]} cents) exceed the signed "
                f"settlements ({settled.get(k, 0)})"
            )


def audit_buyer_money(client: PollenClient, trust: Trust, key: str, job_id: str) -> list[str]:
    paid, fees, refund = 0, 0, 0
    per_payee: dict[str, int] = {}
    for r in client.job_records(job_id):
        if r.kind != "settlement":
            continue
        body = _signed(client, trust, key, r)
        if body["job_id"] != job_id:
            raise TrustError(f"the settlement record at leaf {r.index} is another job's")
        _check_settlement(client, trust, r.index, body)
        for p in body["payees"]:
            per_payee[p["provider_id"]] = per_payee.get(p["provider_id"], 0) + int(p["cents"])
            paid += int(p["cents"])
        fees += int(body["fees_cents"])
        refund += int(body["refund_cents"])
    receipt = client.receipt(job_id)
    for name, said, signed in (
        ("paid to providers", receipt.paid_cents, paid),
        ("fees", receipt.fees_cents, fees),
        ("refunded", receipt.refunded_cents, refund),
    ):
        if said != signed:
            raise TrustError(
                f"amount mismatch, job {job_id}: the receipt says {said} cents "
                f"{name}, the signed settlement records {signed}"
            )
    for line in receipt.providers:
        if int(line["earned_cents"]) != per_payee.get(line["provider_id"], 0):
            raise TrustError(
                f"amount mismatch, job {job_id}: the receipt pays {line['provider_id']} "
                f"{line['earned_cents']} cents, the signed settlement records "
                f"{per_payee.get(line['provider_id'], 0)}"
            )
    escrow = receipt.funded_cents - paid - fees - refund
    if escrow < 0 or escrow != receipt.escrow_cents:
        raise TrustError(
            f"job {job_id}: funded {receipt.funded_cents} ≠ paid {paid} + fees {fees} + "
            f"refunded {refund} + escrow {receipt.escrow_cents} by the signed settlement records"
        )
    return [
        f"job {job_id}: funded {receipt.funded_cents} = paid {paid} + fees {fees} + "
        f"refunded {refund} + escrow {escrow}, as the signed settlement records say"
    ]


def compare(client: PollenClient, trust: Trust, theirs: Json) -> None:
    """Check another party's saved head against ours: same log, or a proven fork."""
    key = trust.server_key(client)
    mine = trust.data.get("head")
    if mine is None:
        raise TrustError("no saved head to compare with: run `pollen audit` first")
    try:
        a = verify_record(mine, key, kind="tree-head")
        b = verify_record(theirs, key, kind="tree-head")
    except SignatureError as exc:
        raise TrustError(f"a head is not signed by the server's pinned key: {exc}") from exc
    if a["size"] == b["size"] and a["root"] != b["root"]:
        raise TrustError(
            f"the server signed two different trees of size {a['size']}: "
            f"{a['root'][:16]}… and {b['root'][:16]}…: the log forked (split view)"
        )
    small, large = (a, b) if a["size"] <= b["size"] else (b, a)
    proof = client.log_consistency(int(small["size"]), int(large["size"])).proof
    try:
        verify_consistency(
            int(small["size"]), int(large["size"]), bytes.fromhex(small["root"]),
            bytes.fromhex(large["root"]), [bytes.fromhex(p) for p in proof],
        )  # fmt: skip
    except ProofError as exc:
        raise TrustError(f"the two heads are not one log: {exc.message}") from exc


def load_head(path: Path) -> Json:
    doc = json.loads(path.read_text())
    head: Json = doc.get("head", doc) if isinstance(doc, dict) else {}
    return head
