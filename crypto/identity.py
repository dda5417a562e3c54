"""Ed25519 identities and signed records: who said what, checkable by anyone.

Every buyer, provider and the server hold an Ed25519 identity key. A **signed record** is a
small JSON document `{"kind", "body", "signer", "sig"}`: `sig` is the signature over
`b"pollen/" + kind + b"\\n" + canonical(body)` (the kind separates domains, so a signature made
for one purpose is never valid for another), `signer` the SHA-256 fingerprint of the raw
public key. `canonical` is sorted-key, compact, ASCII JSON: the same bytes on every machine.

A key file holds the 32-byte private seed as hex, mode 0600, created on first use.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from crypto.errors import PollenError

__all__ = [
    "IdentityKey",
    "SignatureError",
    "canonical",
    "fingerprint",
    "sign_record",
    "verify_record",
    "verify_signature",
]

Record = dict[str, Any]


class SignatureError(PollenError):
    """A signature, a signer or a pinned key does not match: refuse what it covers."""

    code = "signature-invalid"
    title = "Signature does not verify"


def canonical(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def fingerprint(public_key_hex: str) -> str:
    """SHA-256 of the raw 32-byte public key, hex."""
    return hashlib.sha256(bytes.fromhex(public_key_hex)).hexdigest()


def _message(kind: str, body: Any) -> bytes:
    return b"pollen/" + kind.encode() + b"\n" + canonical(body)


class IdentityKey:
    """An Ed25519 private key with the few operations Pollen needs."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private

    @classmethod
    def generate(cls) -> IdentityKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_seed_hex(cls, seed: str) -> IdentityKey:
        try:
            raw = bytes.fromhex(seed.strip())
            return cls(Ed25519PrivateKey.from_private_bytes(raw))
        except ValueError as exc:
            raise SignatureError(f"not an Ed25519 private key (64 hex digits): {exc}") from exc

    @classmethod
    def load_or_create(cls, path: str | os.PathLike[str]) -> IdentityKey:
        """The key in `path`, made (mode 0600) on first use; refuses a file others can read."""
        target = Path(path)
        if target.exists():
            if target.stat().st_mode & 0o077:
                raise SignatureError(f"identity key {target} is readable by others (chmod 600)")
            return cls.from_seed_hex(target.read_text())
        key = cls.generate()
        target.parent.mkdir(parents=True, exist_ok=True)
        # Written whole to a private temporary name, then linked into place: processes starting
        # together (several server workers on one data dir) never read a half-written key, and
        # the one that loses the race takes the winner's key.
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(key.seed_hex() + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.link(tmp, target)
        except FileExistsError:
            return cls.from_seed_hex(target.read_text())
        finally:
            tmp.unlink(missing_ok=True)
        return key

    def seed_hex(self) -> str:
        raw = self._private.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        return raw.hex()

    @property
    def public_hex(self) -> str:
        raw = self._private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return raw.hex()

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_hex)

    def sign(self, kind: str, body: Any) -> str:
        return self._private.sign(_message(kind, body)).hex()

    def record(self, kind: str, body: Any) -> Record:
        return sign_record(self, kind, body)


def verify_signature(public_key_hex: str, kind: str, body: Any, sig_hex: str) -> None:
    """Raise SignatureError unless `sig_hex` is the key's signature of (kind, body)."""
    try:
        key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        key.verify(bytes.fromhex(sig_hex), _message(kind, body))
    except (InvalidSignature, ValueError) as exc:
        raise SignatureError(f"{kind} signature does not verify") from exc


def sign_record(key: IdentityKey, kind: str, body: Any) -> Record:
    return {"kind": kind, "body": body, "signer": key.fingerprint, "sig": key.sign(kind, body)}


def verify_record(record: Record, public_key_hex: str, *, kind: str | None = None) -> Any:
    """Check a signed record against a public key (and its kind); returns its body."""
    if kind is not None and record.get("kind") != kind:
        raise SignatureError(f"expected a {kind} record, got {record.get('kind')!r}")
    if record.get("signer") != fingerprint(public_key_hex):
        raise SignatureError(
            f"{record.get('kind')} record is signed by {str(record.get('signer'))[:16]}…, "
            f"not by the expected key {fingerprint(public_key_hex)[:16]}…"
        )
    verify_signature(public_key_hex, str(record["kind"]), record.get("body"), str(record["sig"]))
    return record.get("body")
