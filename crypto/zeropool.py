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

import contextlib
import logging
import os
import subprocess
import sys
import threading
import weakref
from collections import deque
from pathlib import Path

import numpy as np

from crypto.errors import CryptoError
from crypto.keys import PublicContext

log = logging.getLogger(__name__)

_CHILD = (
    "import os, runpy; os.nice({nice}); runpy.run_module('crypto.zeromaker', run_name='__main__')"
)
# The background child's niceness: the lowest priority, CPU nobody else wants
# (`POLLEN_ZEROS_NICE` sets another, e.g. 0 where a busy test machine leaves nothing idle).
IDLE_NICE = 19


def _default_nice() -> int:
    raw = os.environ.get("POLLEN_ZEROS_NICE", str(IDLE_NICE))
    if not raw.isdigit() or int(raw) > 19:
        raise ValueError(f"POLLEN_ZEROS_NICE must be a niceness from 0 to 19, not {raw!r}")
    return int(raw)


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


class _Maker:
    """A `python -m crypto.zeromaker` child at nice 19 and the thread that moves its zeros
    into the pool while the pool has room and filling is wanted."""

    def __init__(self, ctx: PublicContext, pool: deque[np.ndarray],
                 room: threading.Condition, capacity: int, nice: int) -> None:  # fmt: skip
        from crypto.zeromaker import pack_request  # not at import: the child runs that module

        preset = ctx.preset
        self._shape = (2, len(preset.data_moduli), preset.poly_modulus_degree)
        self._size = 8 * int(np.prod(self._shape))
        self._pool, self._capacity = pool, capacity
        # Guards the pool; notified when zeros are taken, filling is wanted or it ends.
        self.room = room
        self.wanted = self.closed = False
        root = str(Path(__file__).resolve().parent.parent)
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.process = subprocess.Popen(
            # Lowered before anything is imported: the child's start-up is work too.
            [sys.executable, "-c", _CHILD.format(nice=int(nice))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
        )  # fmt: skip
        assert self.process.stdin is not None and self.process.stdout is not None
        self._out = self.process.stdout
        try:
            self.process.stdin.write(pack_request(ctx.to_bytes(), preset.id))
            self.process.stdin.flush()
        except OSError:
            log.warning("the zero maker did not start; zeros are made on the spot")
        self._thread = threading.Thread(target=self._move, name="pollen-zero-pool", daemon=True)
        self._thread.start()

    def _move(self) -> None:
        while True:
            with self.room:
                self.room.wait_for(
                    lambda: self.closed or (self.wanted and len(self._pool) < self._capacity)
                )
                if self.closed:
                    return
            raw = self._out.read(self._size)
            if len(raw) != self._size:
                if not self.closed:
                    log.warning("the zero maker exited; zeros are made on the spot")
                return
            zero = np.frombuffer(raw, dtype="<u8").astype(np.uint64).reshape(self._shape)
            with self.room:
                if len(self._pool) < self._capacity:
                    self._pool.append(zero)

    def want(self, wanted: bool) -> None:
        with self.room:
            self.wanted = wanted
            self.room.notify_all()

    def close(self) -> None:
        """End the child; the zeros still in its pipe are never read."""
        with self.room:
            self.closed = True
            self.room.notify_all()
        if self.process.poll() is None:
            self.process.terminate()
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.process.wait()


class ZeroPool:
    """Up to `capacity` encryptions of zero under `ctx`, filled ahead, each taken once.

    `start_filling()` keeps it full from a child process at the lowest CPU priority
    (crypto/zeromaker.py), so zeros are made only with CPU the agent and everyone else on
    the machine leave idle; `stop()` pauses that, `close()` (or the pool's collection)
    ends the child. Memory is bounded by `capacity` zeros: one envelope's worth when sized
    with `chunks_for`.
    """

    def __init__(self, ctx: PublicContext, capacity: int, *, nice: int | None = None) -> None:
        if not ctx.preset.codec.encrypts:
            raise CryptoError(f"preset {ctx.preset.id} does not encrypt; it needs no zeros")
        if capacity < 0:
            raise ValueError("a pool's capacity cannot be negative")
        self.ctx = ctx
        self.capacity = capacity
        self.fingerprint = ctx.fingerprint
        # An encryptor of the pool's own, for `fill` and for a shortfall at `take`.
        self._encryptor = ctx.new_encryptor()
        self._zeros: deque[np.ndarray] = deque()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._maker: _Maker | None = None
        self._nice = _default_nice() if nice is None else nice

    def __len__(self) -> int:
        with self._lock:
            return len(self._zeros)

    def fill(self, count: int | None = None) -> int:
        """Add up to `count` zeros here and now (default: until full); returns how many."""
        want = self.capacity if count is None else count
        added = 0
        while added < want:
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
        """Keep the pool full in the background, from the child process, until `stop`."""
        if self._maker is None:
            self._maker = _Maker(self.ctx, self._zeros, self._room, self.capacity, self._nice)
            weakref.finalize(self, self._maker.close)
        self._maker.want(True)

    @property
    def filling(self) -> bool:
        return self._maker is not None and self._maker.wanted

    def stop(self) -> None:
        """Pause the background filling (the child blocks once its pipe is full)."""
        if self._maker is not None:
            self._maker.want(False)

    def close(self) -> None:
        """End the background child; the pool keeps the zeros it holds."""
        maker, self._maker = self._maker, None
        if maker is not None:
            maker.close()

    def take(self, count: int) -> Zeros:
        """`count` zeros, removed from the pool; any shortfall is encrypted on the spot.
        Background filling goes on (at its low priority) for the next envelope."""
        with self._lock:
            have = min(count, len(self._zeros))
            taken = [self._zeros.popleft() for _ in range(have)]
            self._room.notify_all()
        fresh = count - have
        preset = self.ctx.preset
        out = np.empty((count, 2, len(preset.data_moduli), preset.poly_modulus_degree), np.uint64)
        for i, zero in enumerate(taken):
            out[i] = zero
        taken.clear()
        if fresh:
            out[have:] = preset.codec.encrypt_zeros(self.ctx, self._encryptor, fresh)
        return Zeros(self.fingerprint, out, fresh)
