"""A curious operator recovers the buyer's CKKS secret key from one round: Li and Micciancio,
"On the Security of Homomorphic Encryption on Approximate Numbers", Eurocrypt 2021.

The operator holds the round's aggregate (c0, c1 in NTT form mod q) and sees the next global
model the buyer publishes. It undoes the optimizer step, multiplies by Σ weight, re-encodes
with the public context's encoder and gets a plaintext p close to the decrypted polynomial
c0 + c1·s, so s = (p − c0) / c1 pointwise mod q. Against an exact decryption the recovered
polynomial is the secret key; through `decrypt_aggregate`, whose output carries fresh noise of
rms ≥ 25 per coefficient (8× SEAL's RLWE error σ = 3.2), it is garbage.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import tenseal.sealapi as seal

from agents.optim import FedAdam, FedAvg, ServerOptimizer
from crypto import (
    Accumulator,
    BuyerKeys,
    DecryptedAggregate,
    EnvelopeBinding,
    PublicContext,
    decrypt_aggregate,
    encrypt_update,
    validate_envelope,
)
from crypto.aggregate import _decrypt_exact
from crypto.sealio import array_to_ciphertext, ciphertext_to_array

PARAMS = 3000  # two ciphertexts; the attack needs only the first, full one
WEIGHTS = (1.0, 0.6, 0.35)  # Σ weight is in the aggregate's header: the operator knows it
SCALES = (0.001, 0.01, 0.03, 0.1)
RESIDUAL_FLOOR = 25.0  # 8 × SEAL's RLWE error σ = 3.2, per coefficient
FEDADAM = FedAdam()  # the job's hyperparameters are public


@pytest.fixture(scope="module")
def round_aggregate(public: PublicContext) -> Accumulator:
    """What the server holds once three providers' real TenSEAL ciphertexts are summed."""
    rng = np.random.default_rng(12)
    acc = Accumulator.empty(public, job_id="j", round=1, param_count=PARAMS, summands=3)
    for i, weight in enumerate(WEIGHTS):
        binding = EnvelopeBinding("j", 1, f"p{i}", PARAMS, 3)
        update = rng.normal(0.0, 2e-3, PARAMS).astype(np.float32)
        env = encrypt_update(public, update, binding=binding, weight=weight, samples=100)
        acc.add(validate_envelope(env, public, binding))
    return Accumulator.from_bytes(acc.to_bytes(), public)


def _mod_ints(poly: np.ndarray) -> list[int]:
    return [int(c) for c in poly]


def _to_coefficients(keys: BuyerKeys, ntt_poly: list[int]) -> np.ndarray:
    """Inverse NTT through SEAL, centred mod q: the polynomial's integer coefficients."""
    preset = keys.preset
    q, n = preset.data_moduli[0], preset.poly_modulus_degree
    if not any(ntt_poly):
        return np.zeros(n, dtype=np.int64)
    # Both halves of a ciphertext: SEAL refuses to transform one whose c1 is zero.
    coeffs = np.tile(np.array(ntt_poly, dtype=np.uint64), (2, 1, 1))
    parms = list(keys.seal_context.first_parms_id())
    cipher = array_to_ciphertext(coeffs, keys.seal_context, parms_id=parms, scale=preset.scale)
    seal.Evaluator(keys.seal_context).transform_from_ntt_inplace(cipher)
    raw = ciphertext_to_array(cipher)[0, 0].astype(np.int64)
    return np.where(raw > q // 2, raw - q, raw)


def _secret_key_ntt(keys: BuyerKeys) -> list[int]:
    """s mod the data prime, NTT form: the first block of SEAL's key-level secret key."""
    plain = keys._context.secret_key().data.data()
    return [plain.data(i) for i in range(keys.preset.poly_modulus_degree)]


@dataclass(frozen=True)
class Recovery:
    matches: int  # coefficients of the recovered polynomial equal to the secret key's
    residual_rms: float  # re-encoded published value minus c0 + c1·s, per coefficient
    equals_key: bool


def _recover_key(
    keys: BuyerKeys, public: PublicContext, acc: Accumulator, total: np.ndarray
) -> Recovery:
    """Li–Micciancio on the first ciphertext: s = (encode(total) − c0) / c1 mod q."""
    preset = public.preset
    q, n = preset.data_moduli[0], preset.poly_modulus_degree
    values = np.asarray(total, dtype=np.float64)[:n]
    plain = seal.Plaintext()
    public.encoder.encode((values[0::2] + 1j * values[1::2]).tolist(), preset.scale, plain)
    p = [plain.data(i) for i in range(n)]
    c0, c1 = _mod_ints(acc.coefficients[0, 0, 0]), _mod_ints(acc.coefficients[0, 1, 0])
    assert all(c1), "c1 has a zero NTT slot (probability ~N/q)"
    guess = [(pi - a) * pow(b, -1, q) % q for pi, a, b in zip(p, c0, c1, strict=True)]
    key = _secret_key_ntt(keys)
    truth = [(a + b * s) % q for a, b, s in zip(c0, c1, key, strict=True)]
    residual = _to_coefficients(keys, [(pi - t) % q for pi, t in zip(p, truth, strict=True)])
    recovered, secret = _to_coefficients(keys, guess), _to_coefficients(keys, key)
    return Recovery(
        matches=int(np.sum(recovered == secret)),
        residual_rms=float(np.sqrt(np.mean(residual.astype(np.float64) ** 2))),
        equals_key=guess == key,
    )


def _global_model(scale: float) -> np.ndarray:
    return np.random.default_rng(7).uniform(-scale, scale, PARAMS).astype(np.float32)


def _optimizer(name: str) -> ServerOptimizer:
    return FedAvg() if name == "fedavg" else FedAdam()


def _undo_step(name: str, w: np.ndarray, w_next: np.ndarray) -> np.ndarray:
    """The average update the operator infers from two published models."""
    step = w_next.astype(np.float64) - w.astype(np.float64)
    if name == "fedavg":
        return step
    # FedAdam's first step from m = 0, v = τ²: r = a·d / (sqrt(β2·τ² + b·d²) + τ) with
    # a = 1 − β1, b = 1 − β2; squaring gives (a² − b·r²)·d² − 2·a·r·τ·d + b·r²·τ² = 0.
    a, b, tau = 1.0 - FEDADAM.beta1, 1.0 - FEDADAM.beta2, FEDADAM.tau
    r = step / FEDADAM.lr
    return r * tau * (a + np.sqrt(a * a - (a * a - b * r * r) * b)) / (a * a - b * r * r)


def _publish_and_attack(
    keys: BuyerKeys,
    public: PublicContext,
    acc: Accumulator,
    agg: DecryptedAggregate,
    name: str,
    scale: float,
) -> Recovery:
    w = _global_model(scale)
    w_next = _optimizer(name).step(w, agg.average)
    return _recover_key(keys, public, acc, _undo_step(name, w, w_next) * acc.weight_sum)


def _exact(keys: BuyerKeys, acc: Accumulator) -> DecryptedAggregate:
    """What decryption gave before flooding: the exact sum, as float32."""
    return DecryptedAggregate(
        total=_decrypt_exact(keys, acc).astype(np.float32),
        count=acc.count,
        weight_sum=acc.weight_sum,
        samples_sum=acc.samples_sum,
        provider_ids=acc.provider_ids,
    )


def test_exact_decryption_leaks_the_secret_key(
    keys: BuyerKeys, public: PublicContext, round_aggregate: Accumulator
) -> None:
    """An exact decrypted sum, once public, gives the operator the buyer's secret key."""
    found = _recover_key(keys, public, round_aggregate, _decrypt_exact(keys, round_aggregate))
    assert found.equals_key and found.matches == public.preset.poly_modulus_degree


@pytest.mark.parametrize("scale", SCALES[:3])
@pytest.mark.parametrize("name", ["fedavg", "fedadam"])
def test_exact_decryption_leaks_through_the_optimizer(
    keys: BuyerKeys, public: PublicContext, round_aggregate: Accumulator, name: str, scale: float
) -> None:
    """Without flooding, the next global model alone is enough to recover the key."""
    exact = _exact(keys, round_aggregate)
    found = _publish_and_attack(keys, public, round_aggregate, exact, name, scale)
    assert found.equals_key, found


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("name", ["fedavg", "fedadam"])
def test_published_model_does_not_reveal_the_key(
    keys: BuyerKeys, public: PublicContext, round_aggregate: Accumulator, name: str, scale: float
) -> None:
    """Through decrypt_aggregate and the optimizer the operator is ≥ 25 rms per coefficient off."""
    agg = decrypt_aggregate(keys, round_aggregate.to_bytes())
    found = _publish_and_attack(keys, public, round_aggregate, agg, name, scale)
    print(f"{name} scale={scale}: {found}")
    assert not found.equals_key
    assert found.matches < public.preset.poly_modulus_degree // 100
    assert found.residual_rms >= RESIDUAL_FLOOR
