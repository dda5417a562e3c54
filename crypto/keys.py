"""The buyer's CKKS key pair and the public context that leaves the buyer's machine.

The secret context is written once to a file created with mode 0600 and never leaves it.
What the marketplace and the providers receive is `PublicContext.to_bytes()`: TenSEAL's
serialization with the public key only (no secret, relinearization or Galois keys). Its
fingerprint, the SHA-256 of those canonical bytes, names the key everywhere else.
"""

from __future__ import annotations

import hashlib
import os
import stat
from functools import cached_property
from pathlib import Path

import tenseal as ts
import tenseal.sealapi as seal

from crypto.errors import ContextError, KeyFileError
from crypto.presets import DEFAULT_PRESET_ID, PRESETS, Preset, get_preset

_SECRET_MAGIC = b"POLLEN-CKKS-SECRET v1\n"
# A public context is tens of kilobytes; anything far larger is not one.
MAX_CONTEXT_BYTES = 4 * 1024 * 1024


def _public_bytes(context: ts.Context) -> bytes:
    return bytes(
        context.serialize(
            save_public_key=True,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=False,
        )
    )


def _preset_of(context: ts.Context) -> Preset:
    parms = context.data.seal_context().key_context_data().parms()
    degree = int(parms.poly_modulus_degree())
    moduli = tuple(int(m.value()) for m in parms.coeff_modulus())
    for preset in PRESETS.values():
        if preset.poly_modulus_degree == degree and preset.all_moduli == moduli:
            return preset
    raise ContextError(
        f"context parameters (N={degree}, {len(moduli)} primes) match no known CKKS preset"
    )


class PublicContext:
    """A buyer's public CKKS context: enough to encrypt and validate, never to decrypt."""

    def __init__(self, context: ts.Context, preset: Preset) -> None:
        self._context = context
        self.preset = preset

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicContext:
        """Parse untrusted bytes; refuse garbage, secret keys and unknown parameters."""
        if not data:
            raise ContextError("public context is empty")
        if len(data) > MAX_CONTEXT_BYTES:
            raise ContextError(f"public context exceeds {MAX_CONTEXT_BYTES} bytes")
        try:
            context = ts.context_from(data)
        except Exception as exc:  # TenSEAL raises assorted types on garbage
            raise ContextError("bytes are not a TenSEAL context") from exc
        if context.has_secret_key() or not context.is_public():
            raise ContextError("context holds a secret key; export the public context only")
        if not context.has_public_key():
            raise ContextError("context holds no public key")
        return cls(context, _preset_of(context))

    def to_bytes(self) -> bytes:
        return self._canonical

    def for_preset(self, preset_id: str) -> PublicContext:
        """This context as used by a job of `preset_id`: itself, or the view of a preset
        that does not encrypt (any key stands for it)."""
        if preset_id == self.preset.id:
            return self
        preset = get_preset(preset_id)
        if preset.codec.encrypts:
            raise ContextError(f"context is for preset {self.preset.id}, not {preset_id}")
        view = PublicContext(self._context, preset)
        view.__dict__["_canonical"] = self._canonical
        return view

    @cached_property
    def _canonical(self) -> bytes:
        return _public_bytes(self._context)

    @cached_property
    def fingerprint(self) -> str:
        """Hex SHA-256 of the canonical public bytes."""
        return hashlib.sha256(self._canonical).hexdigest()

    def is_public(self) -> bool:
        return bool(self._context.is_public()) and not self._context.has_secret_key()

    @property
    def seal_context(self) -> seal.SEALContext:
        return self._context.data.seal_context()

    @cached_property
    def data_parms_id(self) -> list[int]:
        return list(self.seal_context.first_parms_id())

    @cached_property
    def encryptor(self) -> seal.Encryptor:
        return self.new_encryptor()

    def new_encryptor(self) -> seal.Encryptor:
        """An encryptor of the caller's own (SEAL objects are not shared across threads)."""
        return seal.Encryptor(self.seal_context, self._context.public_key().data)

    @cached_property
    def encoder(self) -> seal.CKKSEncoder:
        return seal.CKKSEncoder(self.seal_context)


class BuyerKeys:
    """The buyer's secret CKKS context. Lives on the buyer's machine only."""

    def __init__(self, context: ts.Context, preset: Preset) -> None:
        if not context.has_secret_key():
            raise KeyFileError("context holds no secret key")
        self._context = context
        self.preset = preset

    @classmethod
    def generate(cls, preset_id: str = DEFAULT_PRESET_ID) -> BuyerKeys:
        preset = get_preset(preset_id)
        preset.check_security()
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            preset.poly_modulus_degree,
            coeff_mod_bit_sizes=list(preset.coeff_mod_bit_sizes),
        )
        context.global_scale = preset.scale
        return cls(context, preset)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the secret context to a new file readable by its owner only."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        body = self._context.serialize(
            save_public_key=True,
            save_secret_key=True,
            save_galois_keys=False,
            save_relin_keys=False,
        )
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise KeyFileError(f"{target} already exists; refusing to overwrite a key") from None
        with os.fdopen(fd, "wb") as f:
            f.write(_SECRET_MAGIC + self.preset.id.encode() + b"\n" + bytes(body))
            f.flush()
            os.fsync(f.fileno())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BuyerKeys:
        target = Path(path)
        try:
            mode = stat.S_IMODE(target.stat().st_mode)
            blob = target.read_bytes()
        except FileNotFoundError:
            raise KeyFileError(f"no secret key at {target}; run `pollen keys init`") from None
        if mode & 0o077:
            raise KeyFileError(
                f"{target} is readable by others (mode {mode:o}); run `chmod 600 {target}`"
            )
        if not blob.startswith(_SECRET_MAGIC):
            raise KeyFileError(f"{target} is not a Pollen secret key file")
        preset_line, _, body = blob[len(_SECRET_MAGIC) :].partition(b"\n")
        preset = get_preset(preset_line.decode(errors="replace"))
        try:
            context = ts.context_from(body)
        except Exception as exc:
            raise KeyFileError(f"{target} is damaged: {exc}") from exc
        return cls(context, preset)

    def public_context(self) -> PublicContext:
        return PublicContext.from_bytes(_public_bytes(self._context))

    @cached_property
    def fingerprint(self) -> str:
        return hashlib.sha256(_public_bytes(self._context)).hexdigest()

    @cached_property
    def _decryptor(self) -> seal.Decryptor:
        # Private: every decryption goes through crypto.decrypt_aggregate, which floods it.
        return seal.Decryptor(self._context.data.seal_context(), self._context.secret_key().data)

    @cached_property
    def encoder(self) -> seal.CKKSEncoder:
        return seal.CKKSEncoder(self._context.data.seal_context())

    @property
    def seal_context(self) -> seal.SEALContext:
        return self._context.data.seal_context()
