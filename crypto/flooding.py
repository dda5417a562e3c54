"""Noise flooding: every decryption the buyer's key makes carries fresh Gaussian noise.

CKKS decryption returns the message *and* the encryption error, c0 + c1·s = m + e. Whoever
holds the ciphertext and sees the decrypted values (here: the operator, who stores each
round's aggregate and sees the next global model the buyer publishes) re-encodes them into
m + e and solves s = (m + e − c0) / c1: Li and Micciancio, "On the Security of Homomorphic
Encryption on Approximate Numbers", Eurocrypt 2021. Adding fresh noise to the decoded values
hides e: the re-encoded polynomial is then m + e + f with f an independent Gaussian far wider
than e, and (c1, c1·s + f) is one more RLWE sample with a larger error than the key's own.

Calibration. A preset names the noise it wants in the coefficient domain
(`Preset.flood_coeff_rms`). SEAL's CKKS packs two reals per complex slot and its canonical
embedding is, up to a factor, unitary: iid N(0, σ²) on each of the N reals becomes iid
N(0, (σ·Δ)² / (N/2)) on each coefficient, so σ = rms · sqrt(N/2) / Δ (`Preset.flood_sigma`;
tests/crypto/test_key_recovery.py measures it). For `ckks-add-2048-v1` that is 4.8e-7 per
value: 32 per coefficient, 10× SEAL's RLWE error σ = 3.2, and a max error of about 2.4e-6 (5σ)
over a million values.

The noise comes from `os.urandom` through Box–Muller, never from a seedable generator: an
operator who could predict f could subtract it.
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # presets choose their codec, which floods: no import at run time
    from crypto.presets import Preset

_MANTISSA = 2.0**-53


def standard_normal(count: int) -> np.ndarray:
    """`count` iid N(0, 1) float64 values from the operating system's CSPRNG."""
    pairs = (count + 1) // 2
    words = np.frombuffer(os.urandom(16 * pairs), dtype="<u8").reshape(2, pairs)
    u1 = ((words[0] >> np.uint64(11)).astype(np.float64) + 1.0) * _MANTISSA  # (0, 1]
    u2 = (words[1] >> np.uint64(11)).astype(np.float64) * _MANTISSA  # [0, 1)
    radius = np.sqrt(-2.0 * np.log(u1))
    angle = (2.0 * math.pi) * u2
    return np.concatenate((radius * np.cos(angle), radius * np.sin(angle)))[:count]


def flood(values: np.ndarray, preset: Preset) -> np.ndarray:
    """`values` (a CKKS decryption) plus fresh N(0, preset.flood_sigma²) noise on each."""
    exact = np.asarray(values, dtype=np.float64)
    return exact + preset.flood_sigma * standard_normal(exact.size).reshape(exact.shape)
