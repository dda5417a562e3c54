"""CKKS, the scheme Pollen runs on: the payload is ciphertexts, sums are modular additions.

An update is cut into chunks of `Preset.reals_per_chunk` reals, each encoded two reals per
complex slot and encrypted as a fresh public-key encryption of zero plus the encoded chunk,
which is exactly how SEAL encrypts (crypto/zeropool.py). The payload stores, per data prime,
every chunk's two polynomials in NTT form, packed `Preset.coeff_bytes` bytes per coefficient
(crypto/sealio.py). Adding ciphertexts is coefficient-wise addition modulo each data prime,
what SEAL's `Evaluator.add` computes; decryption is SEAL's, followed by flooding.
"""

from __future__ import annotations

import math
import time
from functools import cached_property
from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np
import tenseal.sealapi as seal

from crypto.codec.base import PIECE_BYTES, Codec, Piece
from crypto.errors import AggregateError, CiphertextParameterError, CryptoError, PresetError
from crypto.flooding import flood
from crypto.sealio import (
    array_to_ciphertext,
    ciphertext_to_array,
    pack_coefficients,
    plaintext_to_array,
    unpack_coefficients,
)

if TYPE_CHECKING:
    from crypto.keys import BuyerKeys, PublicContext
    from crypto.presets import Preset
    from crypto.zeropool import ZeroPool

# SEAL's table of the largest total coefficient-modulus size that is 128-bit secure.
_MAX_BITS_128 = {1024: 27, 2048: 54, 4096: 109, 8192: 218, 16384: 438, 32768: 881}
# SEAL's RLWE error (util/globals.h `noise_standard_deviation`), and how many times wider the
# flooding noise on every decryption must be, per coefficient (see crypto/flooding.py).
RLWE_ERROR_STD = 3.2
MIN_FLOOD_FACTOR = 8
# Ciphertexts produced and written at a time (each 32 KiB of coefficients at N = 2048).
_BATCH = 64


def _hash_written(out: BinaryIO, base: int, total: int, digest: Any) -> None:
    """Feed the `total` bytes written from `base` on to `digest`, reading them back."""
    out.seek(base)
    remaining = total
    while remaining:
        piece = out.read(min(remaining, 1 << 22))
        if not piece:
            raise CryptoError("envelope output is not readable back")
        digest.update(piece)
        remaining -= len(piece)


class CkksCodec(Codec):
    scheme = "ckks"
    encrypts = True

    def __init__(self, preset: Preset) -> None:
        super().__init__(preset)
        if not preset.flood_coeff_rms >= MIN_FLOOD_FACTOR * RLWE_ERROR_STD:
            raise PresetError(
                f"preset {preset.id} floods decryptions with rms {preset.flood_coeff_rms} per "
                f"coefficient; at least {MIN_FLOOD_FACTOR * RLWE_ERROR_STD:g} is required"
            )

    @cached_property
    def _moduli(self) -> np.ndarray:
        """The data primes, shaped to broadcast over (chunks, 2, k, N)."""
        return np.array(self.preset.data_moduli, dtype=np.uint64).reshape(1, 1, -1, 1)

    def _shape(self, chunks: int) -> tuple[int, int, int, int]:
        preset = self.preset
        return (chunks, 2, len(preset.data_moduli), preset.poly_modulus_degree)

    @property
    def _q_total(self) -> int:
        return math.prod(self.preset.data_moduli)

    @property
    def flood_sigma(self) -> float:
        """Coefficient std = σ·Δ / sqrt(N/2)."""
        p = self.preset
        return p.flood_coeff_rms * math.sqrt(p.poly_modulus_degree / 2) / p.scale

    def max_update_abs(self, summands: int) -> float:
        """A coefficient of the encoded plaintext is at most sqrt(2)·max|x|·scale (two reals
        per slot), so `summands` such updates stay below Q/2 with `safety` headroom."""
        p = self.preset
        return p.safety * (self._q_total / 2) / (math.sqrt(2) * p.scale * summands)

    @property
    def max_summands(self) -> int:
        """Beyond it an update's bound falls below 1e-3."""
        p = self.preset
        return int(p.safety * (self._q_total / 2) / (math.sqrt(2) * p.scale * 1e-3))

    def chunks_for(self, param_count: int) -> int:
        return max(1, -(-param_count // self.preset.reals_per_chunk))

    def payload_bytes(self, param_count: int) -> int:
        return self.chunks_for(param_count) * self.preset.chunk_payload_bytes

    def sum_bytes(self, param_count: int) -> int:
        return self.payload_bytes(param_count)

    def check_security(self) -> None:
        p = self.preset
        limit = _MAX_BITS_128.get(p.poly_modulus_degree)
        if limit is None or sum(p.coeff_mod_bit_sizes) > limit:
            raise PresetError(f"preset {p.id} is not 128-bit secure")

    def parms_id(self, ctx: PublicContext) -> list[int]:
        return ctx.data_parms_id

    def write_payload(
        self,
        out: BinaryIO,
        ctx: PublicContext,
        weighted: np.ndarray,
        zeros: ZeroPool | None,
        digest: Any,
        timings: dict[str, float] | None,
    ) -> int:
        """Per data prime, every chunk's two polynomials, packed; `_BATCH` chunks at a time,
        so memory stays a few batches beyond the update whatever the model's size.

        `timings`, when given, accumulates seconds under "encode" and "encrypt", and under
        "fresh_zeros" how many encryptions of zero had to be made on the spot."""
        preset = self.preset
        chunks = self.chunks_for(weighted.size)
        n, k, widths = preset.poly_modulus_degree, len(preset.data_moduli), preset.coeff_bytes
        moduli = self._moduli.reshape(1, -1, 1)
        base = out.tell()
        # Where prime j's coefficients of chunk i start: the payload is prime-major.
        region = [base + chunks * 2 * n * sum(widths[:j]) for j in range(k)]
        total = chunks * 2 * n * sum(widths)
        plain = seal.Plaintext()
        encode_s = encrypt_s = 0.0
        fresh = 0
        for first in range(0, chunks, _BATCH):
            count = min(_BATCH, chunks - first)
            tick = time.perf_counter()
            encoded = self._encode_batch(ctx, weighted, first, count, plain)
            tock = time.perf_counter()
            encode_s += tock - tick
            coeffs, made = self._zeros(ctx, zeros, count)
            fresh += made
            # c0 + m mod q: both below q < 2^63, so the sum cannot wrap.
            coeffs[:, 0] += encoded
            np.subtract(coeffs[:, 0], moduli, out=coeffs[:, 0], where=coeffs[:, 0] >= moduli)
            for j, width in enumerate(widths):
                packed = pack_coefficients(coeffs[:, :, j : j + 1, :], (width,))
                out.seek(region[j] + first * 2 * n * width)
                out.write(packed)
                if k == 1:
                    digest.update(packed)
            encrypt_s += time.perf_counter() - tock
        out.seek(base + total)
        if k > 1:  # prime-major: hash the regions in order once they are all written
            _hash_written(out, base, total, digest)
        if timings is not None:
            timings["encode"] = timings.get("encode", 0.0) + encode_s
            timings["encrypt"] = timings.get("encrypt", 0.0) + encrypt_s
            timings["fresh_zeros"] = timings.get("fresh_zeros", 0.0) + fresh
        return total

    def _encode_batch(
        self,
        ctx: PublicContext,
        weighted: np.ndarray,
        first: int,
        count: int,
        plain: seal.Plaintext,
    ) -> np.ndarray:
        """Chunks `first` to `first + count` encoded as plaintexts: (count, primes, n)."""
        preset = self.preset
        n, k, reals = preset.poly_modulus_degree, len(preset.data_moduli), preset.reals_per_chunk
        block = np.zeros(count * reals, dtype=np.float64)
        part = weighted[first * reals : (first + count) * reals]
        block[: part.size] = part
        slots = (block[0::2] + 1j * block[1::2]).reshape(count, -1)
        encoded = np.empty((count, k, n), dtype=np.uint64)
        for i in range(count):
            ctx.encoder.encode(slots[i].tolist(), preset.scale, plain)
            encoded[i] = plaintext_to_array(plain, k, n)
        return encoded

    def _zeros(
        self, ctx: PublicContext, zeros: ZeroPool | None, count: int
    ) -> tuple[np.ndarray, int]:
        """`count` encryptions of zero, from the pool when there is one, and how many of them
        had to be made on the spot."""
        if zeros is not None:
            taken = zeros.take(count)
            return taken.consume(), taken.fresh
        return self.encrypt_zeros(ctx, ctx.encryptor, count), count

    def read_payload(self, payload: memoryview, param_count: int) -> np.ndarray:
        shape = self._shape(self.chunks_for(param_count))
        coeffs = unpack_coefficients(payload, shape, self.preset.coeff_bytes)
        if np.any(coeffs >= self._moduli):
            raise CiphertextParameterError("a ciphertext coefficient lies outside its modulus")
        return coeffs

    def _pieces(self, chunks: int, first: int, count: int) -> list[Piece]:
        """Rows `first`..`first + count` of a payload of `chunks` ciphertexts, prime by prime
        (the payload is prime-major), about `PIECE_BYTES` a piece."""
        n, widths = self.preset.poly_modulus_degree, self.preset.coeff_bytes
        out, region = [], 0
        for j, width in enumerate(widths):
            row = 2 * n * width
            step = max(1, PIECE_BYTES // row)
            for a in range(first, first + count, step):
                b = min(a + step, first + count)
                index = (slice(a, b), slice(None), j, slice(None))
                out.append(Piece(region + a * row, (b - a) * row, index))
            region += chunks * row
        return out

    def payload_pieces(self, param_count: int) -> list[Piece]:
        chunks = self.chunks_for(param_count)
        return self._pieces(chunks, 0, chunks)

    @staticmethod
    def _prime(piece: Piece) -> int:
        j = piece.index[2]
        assert isinstance(j, int)
        return j

    def read_payload_piece(self, piece: Piece, raw: bytes) -> np.ndarray:
        coeffs = self.read_sum_piece(piece, raw)
        if np.any(coeffs >= np.uint64(self.preset.data_moduli[self._prime(piece)])):
            raise CiphertextParameterError("a ciphertext coefficient lies outside its modulus")
        return coeffs

    def sum_rows(self, param_count: int) -> int:
        return self.chunks_for(param_count)

    @property
    def row_values(self) -> int:
        return self.preset.reals_per_chunk

    @property
    def row_shape(self) -> tuple[int, ...]:
        return self._shape(1)[1:]

    @property
    def sum_dtype(self) -> type[np.generic]:
        return np.uint64

    def sum_pieces(self, param_count: int, first: int, count: int) -> list[Piece]:
        return self._pieces(self.chunks_for(param_count), first, count)

    def read_sum_piece(self, piece: Piece, raw: bytes) -> np.ndarray:
        j = self._prime(piece)
        rows, n = piece.rows.stop - piece.rows.start, self.preset.poly_modulus_degree
        width = self.preset.coeff_bytes[j]
        return unpack_coefficients(raw, (rows, 2, 1, n), (width,)).reshape(rows, 2, n)

    def pack_piece(self, total: np.ndarray, piece: Piece) -> bytes:
        j, rows = self._prime(piece), piece.rows
        return pack_coefficients(total[rows, :, j : j + 1, :], (self.preset.coeff_bytes[j],))

    def add_piece(self, total: np.ndarray, piece: Piece, addend: np.ndarray) -> None:
        j = self._prime(piece)
        part = total[piece.index]  # a view: the additions land in `total`
        np.add(part, addend, out=part)
        np.minimum(part, part - np.uint64(self.preset.data_moduli[j]), out=part)

    def zero_sum(self, param_count: int) -> np.ndarray:
        return np.zeros(self._shape(self.chunks_for(param_count)), dtype=np.uint64)

    def add_into(self, total: np.ndarray, addend: np.ndarray) -> None:
        np.add(total, addend, out=total)
        # Reduce mod q without a mask: when total < q, total - q wraps around to a huge value
        # and the minimum keeps total.
        np.minimum(total, total - self._moduli, out=total)

    def pack_sum(self, total: np.ndarray) -> bytes:
        return pack_coefficients(total, self.preset.coeff_bytes)

    def unpack_sum(self, payload: bytes, param_count: int) -> np.ndarray:
        shape = self._shape(self.chunks_for(param_count))
        return unpack_coefficients(payload, shape, self.preset.coeff_bytes)

    def decrypt_exact(self, keys: BuyerKeys, total: np.ndarray, param_count: int) -> np.ndarray:
        preset = self.preset
        if preset != keys.preset:
            # The flooding noise is calibrated by the aggregate's preset: it must be the key's.
            raise AggregateError(
                f"aggregate claims preset {preset.id}; the key is {keys.preset.id}"
            )
        parms_id = list(keys.seal_context.first_parms_id())
        reals = preset.reals_per_chunk
        out = np.empty(total.shape[0] * reals, dtype=np.float64)
        plain = seal.Plaintext()
        for i, chunk in enumerate(total):
            cipher = array_to_ciphertext(
                chunk, keys.seal_context, parms_id=parms_id, scale=preset.scale
            )
            try:
                keys._decryptor.decrypt(cipher, plain)
            except Exception as exc:
                raise CryptoError(f"decryption failed: {exc}") from exc
            slots = np.asarray(keys.encoder.decode_complex(plain), dtype=np.complex128)
            block = out[i * reals : (i + 1) * reals]
            block[0::2], block[1::2] = slots.real, slots.imag
        return out[:param_count]

    def flood(self, exact: np.ndarray) -> np.ndarray:
        return flood(exact, self.preset)

    def encrypt_zeros(
        self, ctx: PublicContext, encryptor: seal.Encryptor, count: int
    ) -> np.ndarray:
        out = np.empty(self._shape(count), np.uint64)
        cipher = seal.Ciphertext()
        for i in range(count):
            encryptor.encrypt_zero(ctx.data_parms_id, cipher)
            out[i] = ciphertext_to_array(cipher)
        return out
