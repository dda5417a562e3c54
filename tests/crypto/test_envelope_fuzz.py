"""A fuzzer over envelope parsing and validation: ≥10,000 structured mutations of valid
envelopes (CKKS and the plaintext preset), each either refused with an `EnvelopeError` or,
if it passes, provably as good as the original (only the fields a sender may choose differ).

Mutations: byte flips (raw, so checksums break), truncation and extension, random bytes with
and without the magic, every fixed header field rewritten and resealed (as a forger would),
identifier strings rewritten with honest or lying lengths, format versions, and payload bytes
rewritten with their hash recomputed.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import struct
import time
from collections import Counter
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from crypto import (
    EnvelopeBinding,
    EnvelopeError,
    PublicContext,
    encrypt_update,
    read_header,
    validate_envelope,
)
from crypto.presets import PLAIN_PRESET_ID

pytestmark = pytest.mark.slow

P = 40
BINDING = EnvelopeBinding("job_fuzz", 3, "prv_fuzz", P, 4)
# POLLEN_ENVELOPE_FUZZ_EXAMPLES raises the count (and randomizes) for a longer hunt.
EXAMPLES = int(os.environ.get("POLLEN_ENVELOPE_FUZZ_EXAMPLES", "10500"))
MIN_INPUTS = 10_000

_PREFIX = "<4sHI"
_PREFIX_SIZE = struct.calcsize(_PREFIX)
# The fixed header fields in layout order (see crypto/envelope.py).
FIELDS: list[tuple[str, str]] = [
    ("fingerprint", "32s"),
    ("param_count", "Q"),
    ("chunk_count", "I"),
    ("summands", "I"),
    ("round", "I"),
    ("weight", "d"),
    ("samples", "Q"),
    ("scale", "d"),
    ("parms_id0", "Q"),
    ("parms_id1", "Q"),
    ("parms_id2", "Q"),
    ("parms_id3", "Q"),
    ("payload_len", "Q"),
    ("payload_sha256", "32s"),
]
FIXED_SIZE = struct.calcsize("<" + "".join(f for _, f in FIELDS))
# Fields a sender chooses freely within their documented range.
SENDER_CHOSEN = {"weight", "samples"}


def _offset(name: str) -> int:
    index = [n for n, _ in FIELDS].index(name)
    return _PREFIX_SIZE + struct.calcsize("<" + "".join(f for _, f in FIELDS[:index]))


KINDS = ("flip", "truncate", "extend", "random", "magic", "field", "string", "payload")


@dataclass(frozen=True)
class Base:
    """A valid envelope and the context it validates under."""

    ctx: PublicContext
    data: bytes

    @property
    def header_len(self) -> int:
        return read_header(self.data).header_len


@pytest.fixture(scope="module")
def bases(public: PublicContext) -> list[Base]:
    vector = np.linspace(-0.01, 0.01, P).astype(np.float32)
    out = []
    for ctx in (public, public.for_preset(PLAIN_PRESET_ID)):
        data = encrypt_update(ctx, vector, binding=BINDING, weight=0.5, samples=120)
        validate_envelope(data, ctx, BINDING)
        out.append(Base(ctx, data))
    return out


def _reseal(raw: bytearray) -> bytes:
    """Recompute the header checksum over whatever header length the bytes declare."""
    (header_len,) = struct.unpack_from("<I", raw, 6)
    end = _PREFIX_SIZE + header_len
    if 32 <= end <= len(raw):
        raw[end - 32 : end] = hashlib.sha256(raw[: end - 32]).digest()
    return bytes(raw)


def _with_strings(base: Base, strings: list[bytes], lengths: list[int]) -> bytes:
    """The envelope with its identifier section rebuilt, header length fixed, resealed."""
    tail = b"".join(struct.pack("<H", n) + s for n, s in zip(lengths, strings, strict=True))
    fixed = base.data[_PREFIX_SIZE : _PREFIX_SIZE + FIXED_SIZE]
    payload = base.data[base.header_len :]
    header_len = FIXED_SIZE + len(tail) + 32
    head = base.data[:6] + struct.pack("<I", header_len) + fixed + tail
    return head + hashlib.sha256(head).digest() + payload


_U64 = st.integers(0, 2**64 - 1)
_U32 = st.integers(0, 2**32 - 1)
_FIELD_VALUES = {
    "Q": st.one_of(st.integers(0, 5000), _U64),
    "I": st.one_of(st.integers(0, 64), _U32),
    "d": st.floats(allow_nan=True, allow_infinity=True),
    "32s": st.binary(min_size=32, max_size=32),
}


@st.composite
def mutations(draw: st.DrawFn, bases: list[Base]) -> tuple[str, Base, bytes, str | None]:
    """(kind, base, mutated bytes, the header field changed if any)."""
    base = draw(st.sampled_from(bases))
    data = base.data
    kind = draw(st.sampled_from(KINDS))
    if kind == "flip":
        # Mostly inside the header, where parsing decisions are made.
        limit = base.header_len if draw(st.integers(0, 3)) else len(data)
        raw = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            raw[draw(st.integers(0, limit - 1))] ^= draw(st.integers(1, 255))
        if raw == data:  # two flips undid each other
            raw[0] ^= 1
        return kind, base, bytes(raw), None
    if kind == "truncate":
        return kind, base, data[: draw(st.integers(0, len(data) - 1))], None
    if kind == "extend":
        return kind, base, data + draw(st.binary(min_size=1, max_size=64)), None
    if kind == "random":
        return kind, base, draw(st.binary(max_size=2000)), None
    if kind == "magic":
        version = draw(st.one_of(st.just(1), st.integers(0, 65535)))
        header_len = draw(st.one_of(st.integers(0, 400), _U32))
        rest = draw(st.binary(max_size=600))
        raw = bytearray(struct.pack(_PREFIX, b"PLNE", version, header_len) + rest)
        return kind, base, _reseal(raw) if draw(st.booleans()) else bytes(raw), None
    if kind == "field":
        name, fmt = draw(st.sampled_from(FIELDS))
        value = draw(_FIELD_VALUES[fmt])
        raw = bytearray(data)
        struct.pack_into("<" + fmt, raw, _offset(name), value)
        return kind, base, _reseal(raw), name
    if kind == "string":
        header = read_header(data)
        strings = [s.encode() for s in (header.preset_id, header.job_id, header.provider_id)]
        which = draw(st.integers(0, 2))
        strings[which] = draw(
            st.one_of(
                st.text(max_size=300).map(str.encode),
                st.binary(max_size=300),
                st.just(strings[which] + b"\x00"),
            )
        )
        lengths = [len(s) for s in strings]
        if draw(st.integers(0, 3)) == 0:  # a length that lies about its string
            lengths[draw(st.integers(0, 2))] = draw(st.integers(0, 65535))
        return kind, base, _with_strings(base, strings, lengths), "strings"
    # "payload": rewrite payload bytes and recompute its hash, as a forger would.
    raw = bytearray(data)
    start = base.header_len
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(start, len(raw) - 1))
        # Random bytes mostly stay below a 40-bit modulus; runs of 0xFF do not.
        chunk = draw(st.one_of(st.binary(min_size=1, max_size=16), st.just(b"\xff" * 8)))
        raw[at : at + len(chunk)] = chunk[: len(raw) - at]
    struct.pack_into("<32s", raw, _offset("payload_sha256"), hashlib.sha256(raw[start:]).digest())
    return kind, base, _reseal(raw), "payload"


def _assert_as_good_as_original(base: Base, data: bytes, changed: str | None) -> None:
    """An input that passed validation: only what a sender may choose differs, in range."""
    ok = validate_envelope(data, base.ctx, BINDING)
    original = read_header(base.data)
    header = ok.header
    assert header.binding == original.binding
    assert (header.preset_id, header.fingerprint) == (original.preset_id, original.fingerprint)
    assert (header.chunk_count, header.scale, header.parms_id) == (
        original.chunk_count,
        original.scale,
        original.parms_id,
    )
    assert math.isfinite(header.weight) and 0 < header.weight <= 1
    assert header.samples >= 1
    if changed == "payload":
        # A rehashed payload is a forgery nobody can tell from a real ciphertext, but it
        # must still be well-formed: coefficients below their moduli, floats finite.
        if base.ctx.preset.is_plain:
            assert np.all(np.isfinite(ok.coefficients))
        else:
            moduli = np.array(base.ctx.preset.data_moduli, dtype=np.uint64).reshape(1, 1, -1, 1)
            assert np.all(ok.coefficients < moduli)
        return
    assert data[original.header_len :] == base.data[original.header_len :]
    if changed not in SENDER_CHOSEN:
        assert data == base.data, f"a changed {changed} passed validation"


def test_fuzzed_envelopes_are_refused_or_equivalent(bases: list[Base]) -> None:
    """≥10,000 mutated envelopes: each is refused with an EnvelopeError, never another
    exception, and none that passes differs from a valid envelope beyond its weight or
    sample count."""
    counts: Counter[str] = Counter()
    passed: Counter[str] = Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize="POLLEN_ENVELOPE_FUZZ_EXAMPLES" not in os.environ,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    @given(mutation=mutations(bases))
    def run(mutation: tuple[str, Base, bytes, str | None]) -> None:
        kind, base, data, changed = mutation
        counts[kind] += 1
        with contextlib.suppress(EnvelopeError):  # the server reads headers on their own too
            read_header(data)
        try:
            validate_envelope(data, base.ctx, BINDING)
        except EnvelopeError:
            return
        passed[kind] += 1
        _assert_as_good_as_original(base, data, changed)

    started = time.monotonic()
    run()
    elapsed = time.monotonic() - started
    total = sum(counts.values())
    assert total >= MIN_INPUTS, f"only {total} inputs ran: {counts}"
    assert min(counts[k] for k in KINDS) >= MIN_INPUTS // 50, counts
    # The raw corruptions never pass; the oracle above covers everything that did.
    assert passed["flip"] + passed["truncate"] + passed["extend"] + passed["random"] == 0
    print(f"envelope fuzz: {total} inputs in {elapsed:.1f} s: {dict(counts)}, passed {passed}")
