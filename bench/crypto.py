"""`python -m bench crypto`: Pollen's CKKS pipeline beside NVIDIA FLARE's default and plaintext.

P parameters, `providers` updates with entries ~N(0, 0.01). The three configurations run
interleaved, update by update, so that a noisy shared machine slows them alike and the
ratios hold. Aggregation is what the server does per update: validate + deserialize + add.
FLARE's default is TenSEAL `CKKSVector` at N=8192, coeff bits [60, 40, 40], scale 2^40, one
vector per 4096 values (faster here than one vector per layer). Pollen decrypts through
`decrypt_aggregate`, so its time and max abs error include the noise flooding every decryption
carries (FLARE's decryption has none). Writes bench/results/crypto.json.
"""

from __future__ import annotations

import os
import time
from typing import Any, Protocol

import numpy as np
import tenseal as ts

from bench.common import print_table, write_result
from crypto import (
    Accumulator,
    BuyerKeys,
    EnvelopeBinding,
    PublicContext,
    decrypt_aggregate,
    encrypt_update,
    validate_envelope,
)

P = int(os.environ.get("POLLEN_BENCH_P", 1_000_000))
PROVIDERS = int(os.environ.get("POLLEN_BENCH_PROVIDERS", 10))
FLARE_SLOTS = 4096  # N/2 for poly modulus 8192


class Pipeline(Protocol):
    def encrypt(self, index: int, update: np.ndarray) -> Any: ...
    def aggregate(self, index: int, blob: Any) -> None: ...
    def decrypt(self) -> np.ndarray: ...
    def size(self, blob: Any) -> int: ...


class Pollen:
    def __init__(self) -> None:
        self.keys = BuyerKeys.generate()
        # The server and the providers hold only the public bytes.
        self.public = PublicContext.from_bytes(self.keys.public_context().to_bytes())
        self.acc = Accumulator.empty(
            self.public, job_id="bench-job", round=1, param_count=P, summands=PROVIDERS
        )

    def _binding(self, index: int) -> EnvelopeBinding:
        return EnvelopeBinding("bench-job", 1, f"provider-{index}", P, PROVIDERS)

    def encrypt(self, index: int, update: np.ndarray) -> bytes:
        return encrypt_update(
            self.public, update, binding=self._binding(index), weight=1.0, samples=100
        )

    def aggregate(self, index: int, blob: bytes) -> None:
        self.acc.add(validate_envelope(blob, self.public, self._binding(index)))

    def decrypt(self) -> np.ndarray:
        return decrypt_aggregate(self.keys, self.acc.to_bytes()).total

    def size(self, blob: bytes) -> int:
        return len(blob)


class FlareDefault:
    def __init__(self) -> None:
        self.secret = ts.context(ts.SCHEME_TYPE.CKKS, 8192, coeff_mod_bit_sizes=[60, 40, 40])
        self.secret.global_scale = 2**40
        self.public = ts.context_from(self.secret.serialize(save_secret_key=False))
        self.total: list[Any] | None = None

    def encrypt(self, index: int, update: np.ndarray) -> list[bytes]:
        return [
            ts.ckks_vector(self.public, update[i : i + FLARE_SLOTS].tolist()).serialize()
            for i in range(0, P, FLARE_SLOTS)
        ]

    def aggregate(self, index: int, blob: list[bytes]) -> None:
        vectors = [ts.ckks_vector_from(self.public, b) for b in blob]
        if self.total is None:
            self.total = vectors
            return
        for t, v in zip(self.total, vectors, strict=True):
            t += v

    def decrypt(self) -> np.ndarray:
        assert self.total is not None
        sums = [ts.ckks_vector_from(self.secret, v.serialize()) for v in self.total]
        return np.concatenate([np.array(v.decrypt()) for v in sums])

    def size(self, blob: list[bytes]) -> int:
        return sum(len(b) for b in blob)


class Plaintext:
    def __init__(self) -> None:
        self.total = np.zeros(P, dtype=np.float32)

    def encrypt(self, index: int, update: np.ndarray) -> bytes:
        return update.astype(np.float32).tobytes()

    def aggregate(self, index: int, blob: bytes) -> None:
        self.total += np.frombuffer(blob, dtype=np.float32)

    def decrypt(self) -> np.ndarray:
        return self.total.copy()

    def size(self, blob: bytes) -> int:
        return len(blob)


def _clock(times: dict[str, float], name: str, fn: Any, *args: Any) -> Any:
    start = time.perf_counter()
    out = fn(*args)
    times[name] += time.perf_counter() - start
    return out


def _configs(updates: list[np.ndarray]) -> dict[str, dict[str, float]]:
    """Each pipeline's bytes per parameter, throughputs and error on the sum of `updates`."""
    expected = np.sum(np.stack(updates).astype(np.float64), axis=0)
    pipes: dict[str, Pipeline] = {
        "pollen": Pollen(),
        "nvflare_default": FlareDefault(),
        "plaintext": Plaintext(),
    }
    enc = dict.fromkeys(pipes, 0.0)
    agg = dict.fromkeys(pipes, 0.0)
    dec = dict.fromkeys(pipes, 0.0)
    sizes: dict[str, int] = {}
    for i, update in enumerate(updates):
        for name, pipe in pipes.items():
            blob = _clock(enc, name, pipe.encrypt, i, update)
            sizes[name] = pipe.size(blob)
            _clock(agg, name, pipe.aggregate, i, blob)
    configs: dict[str, dict[str, float]] = {}
    for name, pipe in pipes.items():
        total = _clock(dec, name, pipe.decrypt)
        configs[name] = {
            "bytes_per_param": sizes[name] / P,
            "encrypt_params_per_s": P * PROVIDERS / max(enc[name], 1e-9),
            "aggregate_params_per_s": P * PROVIDERS / max(agg[name], 1e-9),
            "decrypt_params_per_s": P / max(dec[name], 1e-9),
            "max_abs_error": float(np.max(np.abs(np.asarray(total, np.float64) - expected))),
        }
    return configs


def main() -> None:
    rng = np.random.default_rng(2026)
    updates = [rng.normal(0.0, 0.01, P).astype(np.float32) for _ in range(PROVIDERS)]
    configs = _configs(updates)
    rows = [
        [
            name,
            f"{c['bytes_per_param']:.2f}",
            f"{c['encrypt_params_per_s'] / 1e6:.2f}M",
            f"{c['aggregate_params_per_s'] / 1e6:.2f}M",
            f"{c['decrypt_params_per_s'] / 1e6:.2f}M",
            f"{c['max_abs_error']:.2e}",
        ]
        for name, c in configs.items()
    ]
    print_table(
        f"CKKS aggregation, P={P:,}, {PROVIDERS} providers",
        ["config", "bytes/param", "encrypt/s", "aggregate/s", "decrypt/s", "max abs err"],
        rows,
    )
    pollen, flare = configs["pollen"], configs["nvflare_default"]
    ratios = {
        k: pollen[k] / flare[k]
        for k in ("encrypt_params_per_s", "aggregate_params_per_s", "decrypt_params_per_s")
    }
    ratios["bytes_saved"] = flare["bytes_per_param"] / pollen["bytes_per_param"]
    print("pollen vs nvflare_default: " + ", ".join(f"{k} x{v:.2f}" for k, v in ratios.items()))
    write_result(
        "crypto",
        {"P": P, "providers": PROVIDERS, "configs": configs, "pollen_vs_nvflare": ratios},
    )


if __name__ == "__main__":
    main()
