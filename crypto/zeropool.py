"""Public-key encryptions of zero made ahead of time, so a round only encodes and adds.

SEAL's CKKS `Encryptor.encrypt(plain)` is `encrypt_zero(plain.parms_id)` followed by adding
the plaintext's coefficients to the first polynomial, modulo each prime, and setting the
scale. Computing the zero earlier changes nothing in the result or its distribution: the
zero is the same fresh encryption (ternary u, Gaussian e₀, e₁, computed at the key level
and divided by the special prime), only made while the agent waits for its next round.

Security rests on each zero being used once: two ciphertexts sharing a zero would share c1
and differ by exactly the difference of their plaintexts. So a zero leaves the pool exactly
once (`ZeroPool.take` removes it; the `Zeros` it hands out can be consumed once), the pool
lives in the process's memory only (never serialized, never written to disk), and a pool
is bound to one public key. Nothing here touches the noise flooding the buyer applies on
decryption (crypto/flooding.py) or any noise an agent adds before encrypting.

The zeros themselves are made by the preset's codec (`CkksCodec.encrypt_zeros`,
crypto/codec/ckks.py), the same function an envelope calls when it has no pool.
"""

from __future__ import annotations

import threading
from collections import deque

import numpy as np

from crypto.errors import CryptoError
from crypto.keys import PublicContext


class Zeros:
    """A batch of zeros taken from a pool, (count, 2, k, N) uint64; usable exactly once."""

    def __init__(self, fingerprint: str, coefficients: np.ndarray, fresh: int) -> None:
        self.fingerprint = fingerprint
        self._coefficients: np.ndarray | None = coefficients
        self.count = int(coefficients.shape[0])
        # How many of them had to be encrypted on the spot (the pool ran short).
        self.fresh = fresh

    def consume(self) -> np.ndarray:
        """The coefficients, handed over for the caller to add its plaintexts into."""
        coefficients = self._coefficients
        if coefficients is None:
            raise CryptoError("these encryptions of zero were already used; each is used once")
        self._coefficients = None
        return coefficients


class ZeroPool:
    """Up to `capacity` encryptions of zero under `ctx`, filled ahead, each taken once.

    `start_filling()` fills it in a background thread; `take()` stops that thread first, so
    the pool and the round never encrypt at the same time (they share the CPU). Memory is
    bounded by `capacity` zeros: one envelope's worth when sized with `chunks_for`.
    """

    def __init__(self, ctx: PublicContext, capacity: int) -> None:
        if not ctx.preset.codec.encrypts:
            raise CryptoError(f"preset {ctx.preset.id} does not encrypt; it needs no zeros")
        if capacity < 0:
            raise ValueError("a pool's capacity cannot be negative")
        self.ctx = ctx
        self.capacity = capacity
        self.fingerprint = ctx.fingerprint
        # An encryptor of the pool's own, so the filling thread shares no SEAL object.
        self._encryptor = ctx.new_encryptor()
        self._zeros: deque[np.ndarray] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._zeros)

    def fill(self, count: int | None = None) -> int:
        """Add up to `count` zeros (default: until full); returns how many were added."""
        want = self.capacity if count is None else count
        added = 0
        while added < want and not self._stop.is_set():
            with self._lock:
                if len(self._zeros) >= self.capacity:
                    break
            zero = self.ctx.preset.codec.encrypt_zeros(self.ctx, self._encryptor, 1)[0]
            with self._lock:
                if len(self._zeros) >= self.capacity:
                    break
                self._zeros.append(zero)
            added += 1
        return added

    def start_filling(self) -> None:
        """Fill the pool in a daemon thread until it is full or `take`/`stop` is called."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            if len(self._zeros) >= self.capacity:
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self.fill, name="pollen-zero-pool", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Stop the filling thread (it finishes the zero under way) and wait for it."""
        self._stop.set()
        thread = self._thread
        if thread is not None:
            thread.join()
        self._thread = None

    def take(self, count: int) -> Zeros:
        """`count` zeros, removed from the pool; any shortfall is encrypted on the spot."""
        self.stop()
        with self._lock:
            have = min(count, len(self._zeros))
            taken = [self._zeros.popleft() for _ in range(have)]
        fresh = count - have
        preset = self.ctx.preset
        out = np.empty((count, 2, len(preset.data_moduli), preset.poly_modulus_degree), np.uint64)
        for i, zero in enumerate(taken):
            out[i] = zero
        taken.clear()
        if fresh:
            out[have:] = preset.codec.encrypt_zeros(self.ctx, self._encryptor, fresh)
        return Zeros(self.fingerprint, out, fresh)
