"""Encryptions of zero made ahead: the same ciphertexts SEAL makes, each zero used once.

Attacks: a zero handed out twice (two updates with the same c1 differ by exactly their
plaintexts' difference, so the operator learns one from the other), a zero of another key,
and a pool whose envelopes decrypt or validate differently from freshly encrypted ones."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tenseal.sealapi as seal

from crypto import (
    Accumulator,
    BuyerKeys,
    CryptoError,
    EnvelopeBinding,
    PublicContext,
    decrypt_aggregate,
    encrypt_update,
    validate_envelope,
)
from crypto.envelope import write_update
from crypto.sealio import array_to_ciphertext, ciphertext_to_array
from crypto.zeropool import ZeroPool

P = 5000  # three ciphertexts at N = 2048


def _binding(params: int = P) -> EnvelopeBinding:
    return EnvelopeBinding("job_z", 2, "prv_z", params, 10)


def _coefficients(envelope: bytes, public: PublicContext, params: int = P) -> np.ndarray:
    return validate_envelope(envelope, public, _binding(params)).coefficients


def test_pool_ciphertext_is_seal_encryption_with_that_zero(public: PublicContext) -> None:
    pool = ZeroPool(public, 1)
    assert pool.fill() == 1
    zero = pool._zeros[0].copy()
    x = np.random.default_rng(1).normal(0, 0.05, 2048)
    envelope = encrypt_update(public, x, binding=_binding(2048), weight=0.5, samples=3, zeros=pool)
    assert len(pool) == 0
    # SEAL's own encryption, given the same zero: encode, add the plaintext, set the scale.
    preset = public.preset
    plain = seal.Plaintext()
    slots = 0.5 * x[0::2] + 0.5j * x[1::2]
    public.encoder.encode(slots.tolist(), preset.scale, plain)
    cipher = array_to_ciphertext(
        zero, public.seal_context, parms_id=public.data_parms_id, scale=1.0
    )
    cipher.scale = preset.scale
    seal.Evaluator(public.seal_context).add_plain_inplace(cipher, plain)
    assert np.array_equal(_coefficients(envelope, public, 2048)[0], ciphertext_to_array(cipher))


def test_pool_envelope_validates_and_decrypts_like_a_fresh_one(
    keys: BuyerKeys, public: PublicContext
) -> None:
    x = np.random.default_rng(2).normal(0, 0.05, P)
    pool = ZeroPool(public, public.preset.chunks_for(P))
    pool.fill()
    pooled = encrypt_update(public, x, binding=_binding(), weight=0.25, samples=7, zeros=pool)
    fresh = encrypt_update(public, x, binding=_binding(), weight=0.25, samples=7)
    assert len(pooled) == len(fresh)
    results = []
    for envelope in (pooled, fresh):
        acc = Accumulator.empty(public, job_id="job_z", round=2, param_count=P, summands=10)
        acc.add(validate_envelope(envelope, public, _binding()))
        results.append(decrypt_aggregate(keys, acc.to_bytes()).total.astype(np.float64))
    assert np.max(np.abs(results[0] - 0.25 * x)) < 1e-4
    assert np.max(np.abs(results[0] - results[1])) < 1e-4


def test_a_zero_is_used_once(public: PublicContext) -> None:
    pool = ZeroPool(public, 4)
    pool.fill()
    zeros = pool.take(3)
    assert len(pool) == 1 and zeros.fresh == 0
    zeros.consume()
    with pytest.raises(CryptoError, match="already used"):
        zeros.consume()
    more = pool.take(3)  # one left, two made on the spot
    assert more.fresh == 2 and len(pool) == 0


def test_two_envelopes_from_one_pool_never_share_c1(public: PublicContext) -> None:
    chunks = public.preset.chunks_for(P)
    pool = ZeroPool(public, 2 * chunks)
    pool.fill()
    x = np.random.default_rng(3).normal(0, 0.05, P)
    first = _coefficients(
        encrypt_update(public, x, binding=_binding(), weight=0.5, samples=1, zeros=pool), public
    )
    second = _coefficients(
        encrypt_update(public, x, binding=_binding(), weight=0.5, samples=1, zeros=pool), public
    )
    c1 = np.concatenate([first[:, 1], second[:, 1]]).reshape(2 * chunks, -1)
    assert len({row.tobytes() for row in c1}) == 2 * chunks


def _wait_for(predicate: Callable[[], bool], timeout: float = 60.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


def test_background_zeros_come_from_a_child_at_the_lowest_priority(
    keys: BuyerKeys, public: PublicContext
) -> None:
    """The zeros are made by another process at nice 19 (never by a thread holding the
    agent's interpreter lock), and an envelope made from them decrypts to the update."""
    idle = ZeroPool(public, 1)
    idle.start_filling()
    assert idle._maker is not None
    _wait_for(lambda: os.getpriority(os.PRIO_PROCESS, idle._maker.process.pid) == 19)
    idle.close()
    # The rest at the caller's priority: a test machine busy with other work may leave
    # nothing idle for a child at nice 19.
    chunks = public.preset.chunks_for(P)
    pool = ZeroPool(public, chunks, nice=0)
    pool.start_filling()
    assert pool._maker is not None
    child = pool._maker.process
    _wait_for(lambda: len(pool) == chunks)
    x = np.random.default_rng(5).normal(0, 0.05, P)
    envelope = encrypt_update(public, x, binding=_binding(), weight=1.0, samples=1, zeros=pool)
    acc = Accumulator.empty(public, job_id="job_z", round=2, param_count=P, summands=10)
    acc.add(validate_envelope(envelope, public, _binding()))
    assert np.max(np.abs(decrypt_aggregate(keys, acc.to_bytes()).total - x)) < 1e-4
    _wait_for(lambda: len(pool) == chunks)  # refilled for the next envelope
    pool.close()
    assert child.poll() is not None
    assert len(pool) == chunks  # what it holds stays usable


def test_background_zeros_are_distinct_and_stop_at_capacity(public: PublicContext) -> None:
    pool = ZeroPool(public, 6, nice=0)
    pool.start_filling()
    _wait_for(lambda: len(pool) == 6)
    time.sleep(0.5)
    assert len(pool) == 6
    zeros = pool.take(6).consume()
    assert len({row.tobytes() for row in zeros[:, 1]}) == 6
    pool.stop()
    assert not pool.filling
    pool.close()


def test_the_child_goes_when_its_agent_is_killed(tmp_path: Path) -> None:
    """kill -9 of the agent leaves no process making zeros behind."""
    script = tmp_path / "agent.py"
    script.write_text(
        "import sys, time\n"
        "from crypto import BuyerKeys\n"
        "from crypto.zeropool import ZeroPool\n"
        "pool = ZeroPool(BuyerKeys.generate().public_context(), 1000, nice=0)\n"
        "pool.start_filling()\n"
        "print(pool._maker.process.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": root}
    agent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    assert agent.stdout is not None
    child = int(agent.stdout.readline())
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait()

    def gone() -> bool:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{child}/stat").read_text().split()[2] == "Z"

    _wait_for(gone)


def test_zeros_of_another_key_refused(public: PublicContext, other_public: PublicContext) -> None:
    pool = ZeroPool(other_public, 3)
    with pytest.raises(CryptoError, match="another public key"):
        write_update(
            io.BytesIO(), public, np.zeros(P), binding=_binding(), weight=1.0, samples=1,
            zeros=pool,
        )  # fmt: skip


def test_plaintext_preset_needs_no_zeros(public: PublicContext) -> None:
    with pytest.raises(CryptoError, match="does not encrypt"):
        ZeroPool(public.for_preset("plain-f32-v1"), 1)


def test_written_file_is_the_envelope_bytes(public: PublicContext, tmp_path: object) -> None:
    """A file written in batches validates (its header is written last, at its start)."""
    x = np.random.default_rng(4).normal(0, 0.05, 70 * 2048 + 5)  # more than one batch
    binding = _binding(x.size)
    out = io.BytesIO()
    out.write(b"prefix")
    size = write_update(out, public, x, binding=binding, weight=1.0, samples=1)
    data = out.getvalue()[6:]
    assert size == len(data)
    assert validate_envelope(data, public, binding).coefficients.shape[0] == 71


@pytest.mark.parametrize("raw", ["20", "-1", "high"])
def test_a_bad_niceness_setting_is_refused(
    public: PublicContext, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("POLLEN_ZEROS_NICE", raw)
    with pytest.raises(ValueError, match="POLLEN_ZEROS_NICE"):
        ZeroPool(public, 1)
