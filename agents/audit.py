"""`pollen audit`: re-verify everything a party holds against the transparency log.

For the trust file(s) in a state directory (an agent's `trust.json`, a buyer's
`<job>.trust.json`): the server's key is still the pinned one; the current signed head is
consistent with the saved one (RFC 9162 §2.1.4); every signed receipt verifies and its leaf
is included under that head (§2.1.3); every update the server signed as accepted is among
the providers its signed round-closed record says the aggregate holds. `compare` checks a
head another party saved against ours: two different trees of one size is a forked log.
The first discrepancy raises `TrustError`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agents.client import PollenClient
from agents.trust import Trust, TrustError
from crypto.identity import SignatureError, canonical, verify_record
from crypto.merkle import ProofError, verify_consistency

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
                if r["kind"] == "round-closed":
                    b = verify_record(r["record"], key, kind="round-closed")
                    closes[(job_id, int(b["round"]))] = b
                    trust.check_inclusion(client, int(r["index"]), canonical(r["record"]).decode())
        close = closes.get((job_id, number))
        if close is not None and body["provider_id"] not in close["included"]:
            raise TrustError(
                f"job {job_id} round {number}: the server signed that it accepted the update of "
                f"{body['provider_id']} (leaf {receipt['leaf_index']}), but its signed "
                f"round-closed record leaves it out of the aggregate"
            )
        done.append(f"receipt job {job_id} round {number}: signed, in the log, in the sum")
    return done


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
    proof = client.log_consistency(int(small["size"]), int(large["size"]))["proof"]
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
