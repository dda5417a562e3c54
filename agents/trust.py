"""What a client checks before it believes the marketplace: keys, signatures, the log.

Certificate transparency (RFC 9162) applied to Pollen. Every party keeps a small trust file
in its state directory (`trust.json`, mode 0600) holding:

- the server's signing key, pinned the first time it is seen;
- the identity keys of the buyers it worked for, pinned on first sight or given up front
  (`--trust-buyer FINGERPRINT`), so a key the operator substitutes later is refused;
- the latest signed tree head it verified: every later head must be signed by the pinned key
  and come with a consistency proof from it (`check_head`), so a rewritten or forked history
  is caught by anyone who saw an earlier head;
- the server's signed receipts it was given, with their leaf indices, for `pollen audit`.

A failed check raises `TrustError`, which the agent and the buyer treat as final: they stop
and send nothing. Imports neither FastAPI nor the database.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from agents.client import ApiError, PollenClient
from agents.state import StateFile
from crypto import PublicContext
from crypto.errors import PollenError
from crypto.identity import IdentityKey, SignatureError, canonical, fingerprint, verify_record
from crypto.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion
from dataspec.records import Identity, LoggedRecord
from dataspec.views import JobPublic, SubmissionReceipt

logger = logging.getLogger(__name__)

Json = dict[str, Any]

# The job facts a signed manifest covers, as the server reports them in GET /v1/jobs/{id}.
MANIFEST_FIELDS = ("spec", "param_count", "budget_cents", "currency")
# Terms inside the spec named again at the manifest's top level, for readers of the log.
SPEC_TERMS = ("preset", "quorum", "rounds", "price_cap_cents", "round_deadline_s", "offer_ttl_s")


class TrustError(PollenError):
    """The marketplace served something its signatures or its log do not back: refuse."""

    code = "trust-refused"
    title = "Refused: not backed by a signature or the log"


def register_identity(client: PollenClient, key: IdentityKey, account_id: str) -> Identity:
    """Register `key` as the account's identity (once; a different key is refused, 409)."""
    record = key.record("identity", {"account_id": account_id, "public_key": key.public_hex})
    try:
        return client.register_identity(record)
    except ApiError as exc:
        if exc.status == 409:
            raise TrustError(f"the server holds another identity key for us: {exc.detail}") from exc
        raise


class Trust:
    """One party's pins, latest verified head and receipts, kept in `trust.json`."""

    def __init__(self, path: Path) -> None:
        self.file = StateFile(path)

    @classmethod
    def in_dir(cls, state_dir: Path) -> Trust:
        return cls(state_dir / "trust.json")

    @property
    def data(self) -> Json:
        return self.file.data

    def save(self) -> None:
        self.file.save()

    # -- the server's key and the log ----------------------------------------------------

    def server_key(self, client: PollenClient) -> str:
        served = client.log_key().public_key
        pinned = self.data.get("server_key")
        if pinned is None:
            self.data["server_key"] = served
            self.save()
            logger.info("pinned the server's key %s", fingerprint(served)[:16])
            return served
        if served != pinned:
            raise TrustError(
                f"the server now signs with key {fingerprint(served)[:16]}…, "
                f"not the pinned {fingerprint(pinned)[:16]}…"
            )
        return str(pinned)

    def check_head(self, client: PollenClient) -> Json:
        """Fetch the signed head, verify it and its consistency with the saved one, save it."""
        key = self.server_key(client)
        sth = client.log_head().model_dump(mode="json")
        try:
            body = verify_record(sth, key, kind="tree-head")
        except SignatureError as exc:
            raise TrustError(f"tree head refused: {exc}") from exc
        saved = self.data.get("head")
        if saved is not None:
            old = saved["body"]
            if body["size"] < old["size"]:
                raise TrustError(
                    f"the log shrank from {old['size']} to {body['size']} leaves: history rewritten"
                )
            proof = client.log_consistency(int(old["size"]), int(body["size"]))
            try:
                verify_consistency(
                    int(old["size"]), int(body["size"]), bytes.fromhex(old["root"]),
                    bytes.fromhex(body["root"]), [bytes.fromhex(p) for p in proof.proof],
                )  # fmt: skip
            except ProofError as exc:
                raise TrustError(
                    f"consistency check failed from the head of size {old['size']} we saw to "
                    f"size {body['size']}: {exc.message} (history rewritten or forked)"
                ) from exc
        self.data["head"] = sth
        self.save()
        return sth

    def check_inclusion(self, client: PollenClient, index: int, payload: str) -> None:
        """Verify that the leaf with `payload` sits at `index` under our latest head (a leaf
        appended since is checked under a newer head, itself proven consistent first)."""
        if "head" not in self.data or index >= int(self.data["head"]["body"]["size"]):
            self.check_head(client)
        head = self.data["head"]["body"]
        size = int(head["size"])
        if index >= size:
            raise TrustError(f"leaf {index} is not yet under the head of size {size}")
        proof = client.log_inclusion(index, size)
        try:
            verify_inclusion(
                index, size, leaf_hash(payload.encode()),
                [bytes.fromhex(p) for p in proof.proof], bytes.fromhex(head["root"]),
            )  # fmt: skip
        except ProofError as exc:
            raise TrustError(f"leaf {index} is not in the log: {exc.message}") from exc

    # -- the buyer's identity and its signed records -------------------------------------

    def buyer_key(self, client: PollenClient, buyer_id: str, expect: str | None = None) -> str:
        """The buyer's public key: pinned, or pinned now (must match `expect` if given)."""
        pins = self.data.setdefault("buyers", {})
        served = client.get_identity(buyer_id).public_key
        wanted = expect or (fingerprint(pins[buyer_id]) if buyer_id in pins else None)
        if wanted is not None and fingerprint(served) != wanted:
            raise TrustError(
                f"buyer {buyer_id}'s key is served as {fingerprint(served)[:16]}…, but we "
                f"trust {wanted[:16]}…: refusing (key substitution)"
            )
        if buyer_id not in pins:
            pins[buyer_id] = served
            self.save()
            logger.info("pinned buyer %s at %s", buyer_id, fingerprint(served)[:16])
        return str(pins[buyer_id])

    def manifest(
        self, client: PollenClient, view: JobPublic, expect_buyer: str | None = None
    ) -> Json:
        """The job's signed manifest, verified against the pinned buyer key and the job."""
        # Compared as the JSON the buyer signed, not as parsed values.
        job = view.model_dump(mode="json")
        key = self.buyer_key(client, str(job["buyer_id"]), expect_buyer)
        records = client.job_records(str(job["id"]))
        found = [r for r in records if r.kind == "manifest"]
        if not found:
            raise TrustError(f"job {job['id']} has no signed manifest: refusing to work for it")
        try:
            body: Json = verify_record(found[0].record, key, kind="manifest")
        except SignatureError as exc:
            raise TrustError(f"job {job['id']}'s manifest refused: {exc}") from exc
        if body.get("job_id") != job["id"] or body.get("buyer_id") != job["buyer_id"]:
            raise TrustError(f"the manifest served for job {job['id']} is another job's")
        for name in MANIFEST_FIELDS:
            if name in job and body.get(name) != job[name]:
                raise TrustError(f"job {job['id']}: the served {name} differs from the signed one")
        return body

    def check_context(self, manifest: Json, context: bytes) -> PublicContext:
        ctx = PublicContext.from_bytes(context)
        if ctx.fingerprint != manifest["context_fingerprint"]:
            raise TrustError(
                f"the context served for job {manifest['job_id']} has fingerprint "
                f"{ctx.fingerprint[:16]}…, the buyer signed "
                f"{manifest['context_fingerprint'][:16]}…: "
                "refusing to encrypt under it (key substitution)"
            )
        return ctx

    def check_model(self, client: PollenClient, manifest: Json, number: int, model: bytes) -> None:
        digest = hashlib.sha256(model).hexdigest()
        job_id = str(manifest["job_id"])
        if number == 1:
            signed = manifest["initial_model_sha256"]
        else:
            key = self.data["buyers"][manifest["buyer_id"]]
            records = [r for r in client.job_records(job_id) if r.kind == "model"]
            bodies = []
            for r in records:
                try:
                    bodies.append(verify_record(r.record, key, kind="model"))
                except SignatureError as exc:
                    raise TrustError(f"job {job_id}: a model record is forged: {exc}") from exc
            matching = [b for b in bodies if b.get("round") == number and b.get("job_id") == job_id]
            if not matching:
                raise TrustError(f"job {job_id} round {number}: the global model is not signed")
            signed = matching[0]["model_sha256"]
        if digest != signed:
            raise TrustError(
                f"job {job_id} round {number}: the model served (sha256 {digest[:16]}…) is not "
                f"the one the buyer signed ({str(signed)[:16]}…): refusing to train on it"
            )

    # -- the round-closed record ------------------------------------------------------------

    def round_closed(self, client: PollenClient, job_id: str, number: int) -> Json:
        """The server's signed round-closed record of round `number`, included in the log."""
        key = self.server_key(client)
        found = [r for r in client.job_records(job_id) if r.kind == "round-closed"]
        bodies: list[tuple[LoggedRecord, Json]] = []
        for r in found:
            try:
                body: Json = verify_record(r.record, key, kind="round-closed")
            except SignatureError as exc:
                raise TrustError(f"job {job_id}: a round-closed record is forged: {exc}") from exc
            if body.get("job_id") == job_id and body.get("round") == number:
                bodies.append((r, body))
        if not bodies:
            raise TrustError(
                f"job {job_id} round {number}: the server signed no round-closed record"
            )
        record, body = bodies[-1]
        self.check_inclusion(client, record.index, canonical(record.record).decode())
        return body

    def check_group_sums(
        self, client: PollenClient, job_id: str, number: int, sums: Mapping[int, bytes | Path]
    ) -> Json:
        """The group sums served (bytes, or the files they were downloaded to) are exactly
        the ones the signed round-closed record names: the same groups, each sum's sha256 as
        signed, and together they hold each included provider's update exactly once."""
        body = self.round_closed(client, job_id, number)
        signed = body.get("groups")
        where = f"job {job_id} round {number}"
        if not isinstance(signed, list):
            raise TrustError(f"{where}: the signed round-closed record names no group sums")
        by_index = {int(g["index"]): g for g in signed}
        if set(by_index) != set(sums):
            raise TrustError(
                f"{where}: the server releases groups {sorted(sums)}, its signed round-closed "
                f"record names {sorted(by_index)}"
            )
        members = [p for g in signed for p in g["members"]]
        if sorted(members) != sorted(body["included"]):
            raise TrustError(
                f"{where}: the signed groups hold {sorted(members)}, not each included "
                f"provider {sorted(body['included'])} exactly once"
            )
        for index, data in sorted(sums.items()):
            digest = sha256_of(data)
            if digest != by_index[index]["sum_sha256"]:
                raise TrustError(
                    f"{where}: group {index}'s sum served (sha256 {digest[:16]}…) is not the "
                    f"one the server signed ({str(by_index[index]['sum_sha256'])[:16]}…): "
                    "refusing to score it"
                )
        return body

    # -- receipts --------------------------------------------------------------------------

    def keep_receipt(self, receipt: Json) -> None:
        self.data.setdefault("receipts", []).append(receipt)
        self.save()

    def check_receipt(
        self, client: PollenClient, job_id: str, number: int, receipt: SubmissionReceipt
    ) -> None:
        """Check the server's signed `accepted` record, and keep it for `pollen audit`."""
        record = receipt.record
        if record is None:
            raise TrustError(f"job {job_id} round {number}: the server signed no receipt")
        try:
            body = verify_record(record, self.server_key(client), kind="accepted")
        except SignatureError as exc:
            raise TrustError(f"job {job_id} round {number}: receipt refused: {exc}") from exc
        if body["job_id"] != job_id or body["round"] != number:
            raise TrustError(f"job {job_id} round {number}: the receipt is for something else")
        self.keep_receipt({"leaf_index": receipt.leaf_index, "record": record})


def sha256_of(data: bytes | Path) -> str:
    """SHA-256 (hex) of `data`, or of the file at that path read a megabyte at a time."""
    if isinstance(data, bytes):
        return hashlib.sha256(data).hexdigest()
    digest = hashlib.sha256()
    with data.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_body(view: JobPublic, context_fingerprint: str, initial_model: bytes) -> Json:
    """What the buyer signs for a job: every term a provider relies on."""
    job = view.model_dump(mode="json")
    body = {name: job[name] for name in MANIFEST_FIELDS}
    body.update({name: job["spec"][name] for name in SPEC_TERMS})
    body.update(
        job_id=job["id"],
        buyer_id=job["buyer_id"],
        context_fingerprint=context_fingerprint,
        initial_model_sha256=hashlib.sha256(initial_model).hexdigest(),
    )
    return body


def digest_of(doc: Any) -> str:
    return hashlib.sha256(canonical(doc)).hexdigest()


def dump(doc: Any) -> str:
    return json.dumps(doc, indent=2, sort_keys=True)
