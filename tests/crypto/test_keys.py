"""Buyer key pair: secret file hygiene, public export, fingerprints."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as seal

from crypto import (
    BuyerKeys,
    ContextError,
    EnvelopeBinding,
    KeyFileError,
    PresetError,
    PublicContext,
    encrypt_update,
)
from crypto.presets import PRESETS, get_preset


def test_secret_key_file_is_owner_only(keys: BuyerKeys, tmp_path: Path) -> None:
    """The secret context is written with mode 0600 and loads back to the same key."""
    path = tmp_path / "buyer.key"
    keys.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert BuyerKeys.load(path).fingerprint == keys.fingerprint


def test_save_refuses_to_overwrite(keys: BuyerKeys, tmp_path: Path) -> None:
    """An existing key file is never clobbered."""
    path = tmp_path / "buyer.key"
    keys.save(path)
    before = path.read_bytes()
    with pytest.raises(KeyFileError, match="already exists"):
        keys.save(path)
    assert path.read_bytes() == before


def test_load_refuses_exposed_key(keys: BuyerKeys, tmp_path: Path) -> None:
    """A secret key readable by others is refused with the chmod to fix it."""
    path = tmp_path / "buyer.key"
    keys.save(path)
    os.chmod(path, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        BuyerKeys.load(path)


def test_load_missing_and_garbage(tmp_path: Path) -> None:
    """Missing and foreign files give clear errors."""
    with pytest.raises(KeyFileError, match="keys init"):
        BuyerKeys.load(tmp_path / "nope.key")
    junk = tmp_path / "junk.key"
    junk.write_bytes(b"hello")
    os.chmod(junk, 0o600)
    with pytest.raises(KeyFileError, match="not a Pollen secret key"):
        BuyerKeys.load(junk)


def test_exported_context_is_public_and_cannot_decrypt(keys: BuyerKeys) -> None:
    """The exported bytes hold no secret key: TenSEAL sees a public context that can't decrypt."""
    data = keys.public_context().to_bytes()
    raw = ts.context_from(data)
    assert raw.is_public() and not raw.has_secret_key()
    public = PublicContext.from_bytes(data)
    assert public.is_public()
    vec = ts.ckks_vector(raw, [1.0, 2.0, 3.0], scale=2**31)
    with pytest.raises(ValueError):
        vec.decrypt()


def test_public_context_refuses_secret_and_garbage(keys: BuyerKeys) -> None:
    """The server-side parser refuses a context with a secret key, garbage and empty bytes."""
    secret_bytes = keys._context.serialize(save_secret_key=True)
    with pytest.raises(ContextError, match="secret key"):
        PublicContext.from_bytes(secret_bytes)
    for bad in (b"", b"\x00" * 100, os.urandom(5000)):
        with pytest.raises(ContextError):
            PublicContext.from_bytes(bad)


def test_public_context_refuses_unknown_parameters() -> None:
    """A context at parameters no preset names is refused."""
    odd = ts.context(ts.SCHEME_TYPE.CKKS, 4096, coeff_mod_bit_sizes=[30, 30, 30])
    odd.make_context_public()
    with pytest.raises(ContextError, match="no known CKKS preset"):
        PublicContext.from_bytes(odd.serialize())


def test_fingerprint_is_stable(keys: BuyerKeys) -> None:
    """Re-exporting and re-parsing a context never changes its fingerprint."""
    first = keys.public_context()
    again = PublicContext.from_bytes(first.to_bytes())
    assert first.fingerprint == again.fingerprint == keys.fingerprint
    assert again.to_bytes() == first.to_bytes()
    assert len(first.fingerprint) == 64
    assert BuyerKeys.generate().fingerprint != keys.fingerprint


def test_presets_are_secure_and_known() -> None:
    """Every preset passes SEAL's 128-bit check; unknown ids are refused by name."""
    for preset in PRESETS.values():
        if preset.is_plain:
            continue
        preset.check_security()
        params = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
        params.set_poly_modulus_degree(preset.poly_modulus_degree)
        params.set_coeff_modulus(
            seal.CoeffModulus.Create(preset.poly_modulus_degree, list(preset.coeff_mod_bit_sizes))
        )
        context = seal.SEALContext(params, True, seal.SEC_LEVEL_TYPE.TC128)
        assert context.parameters_set(), context.parameters_error_message()
    with pytest.raises(PresetError, match="known presets"):
        get_preset("ckks-nope")


def test_wider_preset_round_trips() -> None:
    """The 4096 preset encrypts and decrypts too (keys, envelope, aggregate all generic)."""
    from crypto import Accumulator, decrypt_aggregate, validate_envelope

    keys = BuyerKeys.generate("ckks-add-4096-v1")
    public = keys.public_context()
    x = np.linspace(-1, 1, 5000, dtype=np.float32)
    binding = EnvelopeBinding("j", 1, "p", x.size, 2)
    acc = Accumulator.empty(public, job_id="j", round=1, param_count=x.size, summands=2)
    acc.add(
        validate_envelope(
            encrypt_update(public, x, binding=binding, weight=1.0, samples=1), public, binding
        )
    )
    out = decrypt_aggregate(keys, acc.to_bytes())
    assert np.max(np.abs(out.total - x)) < 1e-6
