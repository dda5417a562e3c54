"""Envelopes checked and added from files, sums decrypted from files: same results, flat memory."""

from __future__ import annotations

import hashlib
import io
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from crypto import (
    Accumulator,
    AggregateError,
    BuyerKeys,
    CiphertextParameterError,
    CryptoError,
    EnvelopeBinding,
    PayloadHashError,
    PublicContext,
    check_envelope_file,
    decrypt_aggregate,
    decrypt_aggregate_file,
    encrypt_update,
    read_header,
    stream_envelope,
    validate_envelope,
)

P = 2_000_000  # 977 ciphertexts: a 20 MB envelope, a 32 MB sum, about 20 pieces
SUMMANDS = 4
_SHA_AT = 10 + 32 + 8 + 4 + 4 + 4 + 8 + 8 + 8 + 32 + 8  # payload_sha256 in the fixed header


def _binding(provider: str) -> EnvelopeBinding:
    return EnvelopeBinding("j", 1, provider, P, SUMMANDS)


@pytest.fixture(scope="module")
def updates() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    return [rng.normal(0, 0.01, P) for _ in range(3)]


@pytest.fixture(scope="module")
def envelopes(public: PublicContext, updates: list[np.ndarray]) -> list[bytes]:
    return [
        encrypt_update(public, x, binding=_binding(f"p{i}"), weight=1.0, samples=10)
        for i, x in enumerate(updates)
    ]


def _empty(public: PublicContext) -> Accumulator:
    return Accumulator.empty(public, job_id="j", round=1, param_count=P, summands=SUMMANDS)


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _peak_above(run: Callable[[], Any]) -> int:
    """Bytes `run` allocates at its peak beyond what was allocated before it started."""
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        run()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def _reseal(raw: bytearray) -> bytes:
    """The payload hash and header checksum recomputed, as a forger would."""
    end = 10 + struct.unpack_from("<I", raw, 6)[0]
    raw[_SHA_AT : _SHA_AT + 32] = hashlib.sha256(raw[end:]).digest()
    raw[end - 32 : end] = hashlib.sha256(raw[: end - 32]).digest()
    return bytes(raw)


def test_adding_from_a_file_holds_a_piece_beyond_the_sum(
    public: PublicContext, envelopes: list[bytes], tmp_path: Path
) -> None:
    """Checking and adding a 20 MB envelope from its file costs well under half a sum
    beyond the sum itself (the bytes path costs several sums)."""
    path = _file(tmp_path, "env", envelopes[0])
    acc = _empty(public)
    sum_bytes = acc.coefficients.nbytes

    def server_path() -> None:
        with path.open("rb") as handle:
            acc.add(check_envelope_file(handle, public, _binding("p0")))

    peak = _peak_above(server_path)
    assert acc.count == 1
    assert peak < 0.5 * sum_bytes, f"{peak / sum_bytes:.2f} sums beyond the sum"


def test_corrupt_last_piece_is_refused_and_the_sum_is_unchanged(
    public: PublicContext, envelopes: list[bytes], tmp_path: Path
) -> None:
    """A flipped byte, or a coefficient outside its modulus, in the payload's last piece is
    refused with the bytes path's error, and the sum's coefficients stay bit-identical."""
    acc = _empty(public)
    acc.add(validate_envelope(envelopes[0], public, _binding("p0")))
    before = acc.coefficients.copy()
    flipped = bytearray(envelopes[1])
    flipped[-1] ^= 0x01
    outside = bytearray(envelopes[1])
    outside[-5:] = b"\xff" * 5  # 2^40 - 1 > the 40-bit prime
    for bad, error in ((bytes(flipped), PayloadHashError),
                       (_reseal(outside), CiphertextParameterError)):  # fmt: skip
        with pytest.raises(error) as from_bytes:
            validate_envelope(bad, public, _binding("p1"))
        with _file(tmp_path, "bad", bad).open("rb") as handle, pytest.raises(error) as streamed:
            acc.add(check_envelope_file(handle, public, _binding("p1")))
        assert str(streamed.value) == str(from_bytes.value)
        assert np.array_equal(acc.coefficients, before)
        assert acc.count == 1 and acc.provider_ids == ["p0"]


def test_streamed_and_bytes_sums_are_bit_identical(
    public: PublicContext, envelopes: list[bytes], tmp_path: Path
) -> None:
    """Three updates added from files give exactly the sum the bytes path gives."""
    by_bytes, by_file = _empty(public), _empty(public)
    for i, env in enumerate(envelopes):
        by_bytes.add(validate_envelope(env, public, _binding(f"p{i}")))
        with _file(tmp_path, f"e{i}", env).open("rb") as handle:
            by_file.add(check_envelope_file(handle, public, _binding(f"p{i}")))
    assert np.array_equal(by_file.coefficients, by_bytes.coefficients)
    assert by_file.to_bytes() == by_bytes.to_bytes() == b"".join(by_file.chunks())


def test_a_file_changed_between_the_passes_voids_the_sum(
    public: PublicContext, envelopes: list[bytes]
) -> None:
    """An envelope file rewritten after its check is refused, and the half-added sum is
    never used again (it cannot be taken back)."""
    handle = io.BytesIO(envelopes[0])
    checked = check_envelope_file(handle, public, _binding("p0"))
    handle.seek(len(envelopes[0]) - 1)
    handle.write(b"\x00")
    acc = _empty(public)
    with pytest.raises(AggregateError, match="changed after it was checked"):
        acc.add(checked)
    with pytest.raises(AggregateError, match="void"):
        acc.to_bytes()


def test_header_checks_are_the_bytes_paths(public: PublicContext, envelopes: list[bytes]) -> None:
    """A wrong binding or a truncated file is refused from a file as from bytes."""
    env = envelopes[0]
    for data, binding in ((env, _binding("p9")), (env[:-100], _binding("p0")),
                          (env[:50], _binding("p0"))):  # fmt: skip
        with pytest.raises(CryptoError) as from_bytes:
            validate_envelope(data, public, binding)
        with pytest.raises(CryptoError) as streamed:
            check_envelope_file(io.BytesIO(data), public, binding)
        assert type(streamed.value) is type(from_bytes.value)
        assert str(streamed.value) == str(from_bytes.value)
    assert check_envelope_file(io.BytesIO(env), public, _binding("p0")).header == read_header(env)


def _chunks(data: bytes, size: int = 64 * 1024) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def test_one_pass_streams_give_the_files_sum(
    public: PublicContext, envelopes: list[bytes], tmp_path: Path
) -> None:
    """Updates read once from a stream of chunks (a blob's body) give exactly the sum that
    checking and adding them from their files gives."""
    by_file, by_stream = _empty(public), _empty(public)
    for i, env in enumerate(envelopes):
        with _file(tmp_path, f"e{i}", env).open("rb") as handle:
            by_file.add(check_envelope_file(handle, public, _binding(f"p{i}")))
        by_stream.add(stream_envelope(_chunks(env), len(env), public, _binding(f"p{i}")))
    assert by_stream.to_bytes() == by_file.to_bytes()


def test_a_bad_stream_voids_the_sum_it_went_into(
    public: PublicContext, envelopes: list[bytes]
) -> None:
    """A stream whose last piece is flipped, holds a coefficient outside its modulus, or is
    cut short or too long is refused with the file path's error, and the sum it went into is
    void; a wrong binding is refused before anything is added."""
    flipped = bytearray(envelopes[1])
    flipped[-1] ^= 0x01
    outside = bytearray(envelopes[1])
    outside[-5:] = b"\xff" * 5  # 2^40 - 1 > the 40-bit prime
    cases = [(bytes(flipped), len(flipped), PayloadHashError, "SHA-256"),
             (_reseal(outside), len(outside), CiphertextParameterError, "modulus"),
             (envelopes[1][:-7], len(envelopes[1]), CryptoError, "shorter"),
             (envelopes[1] + b"x", len(envelopes[1]), CryptoError, "longer")]  # fmt: skip
    for data, size, error, what in cases:
        acc = _empty(public)
        update = stream_envelope(_chunks(data), size, public, _binding("p1"))
        with pytest.raises(AggregateError, match=what) as raised:
            acc.add(update)
        assert isinstance(raised.value.__cause__, error)
        with pytest.raises(AggregateError, match="void"):
            acc.to_bytes()
    with pytest.raises(CryptoError) as from_file:
        check_envelope_file(io.BytesIO(envelopes[1]), public, _binding("p9"))
    with pytest.raises(CryptoError) as streamed:
        stream_envelope(_chunks(envelopes[1]), len(envelopes[1]), public, _binding("p9"))
    assert str(streamed.value) == str(from_file.value)


def test_file_decryption_matches_and_holds_the_result_only(
    keys: BuyerKeys,
    public: PublicContext,
    envelopes: list[bytes],
    updates: list[np.ndarray],
    tmp_path: Path,
) -> None:
    """Decrypting a sum from its file gives the bytes path's result within CKKS tolerance,
    holding little beyond the float32 result (the bytes path holds the sum several times)."""
    acc = _empty(public)
    for i, env in enumerate(envelopes):
        acc.add(validate_envelope(env, public, _binding(f"p{i}")))
    data = acc.to_bytes()
    path = _file(tmp_path, "sum", data)
    del acc
    out: list[Any] = []
    peak = _peak_above(lambda: out.append(decrypt_aggregate_file(keys, path)))
    streamed = out[0]
    whole = decrypt_aggregate(keys, data)
    assert streamed.total.dtype == np.float32 and streamed.total.shape == (P,)
    assert (streamed.count, streamed.provider_ids) == (3, ["p0", "p1", "p2"])
    assert np.max(np.abs(streamed.total - whole.total)) < 1e-5
    assert np.max(np.abs(streamed.total - sum(updates))) < 1e-5
    # Fresh noise on every decryption: the two results are not the same values.
    assert not np.array_equal(streamed.total, whole.total)
    assert peak < 4 * P + 8 * (1 << 20), f"{peak / (4 * P):.2f} results"
