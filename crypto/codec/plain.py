"""Float32 in the clear: the benchmark baseline (`plain-f32-v1`, `python -m bench round`).

It runs through the same envelopes and accumulators as CKKS so that a benchmark measures
encryption alone. The payload is the weighted update as little-endian float32; the running
sum is float64 and is stored as such; "decryption" reads it back, with nothing to flood
since nothing was hidden. The server refuses such jobs unless told to allow them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, BinaryIO

import numpy as np

from crypto.codec.base import PIECE_BYTES, Codec, Piece
from crypto.errors import CiphertextParameterError, CryptoError, PresetError

if TYPE_CHECKING:
    import tenseal.sealapi as seal

    from crypto.keys import BuyerKeys, PublicContext
    from crypto.zeropool import ZeroPool

# The header's parms_id words for a payload that is not ciphertexts.
_NO_PARMS_ID = [0, 0, 0, 0]


class PlainCodec(Codec):
    scheme = "plain"
    encrypts = False

    @property
    def flood_sigma(self) -> float:
        return 0.0

    def max_update_abs(self, summands: int) -> float:
        return 1e30 / summands

    @property
    def max_summands(self) -> int:
        return 1_000_000

    def chunks_for(self, param_count: int) -> int:
        return 1

    def payload_bytes(self, param_count: int) -> int:
        return 4 * param_count

    def sum_bytes(self, param_count: int) -> int:
        return 8 * param_count

    def check_security(self) -> None:
        raise PresetError(f"preset {self.preset.id} does not encrypt; it exists for benchmarks")

    def parms_id(self, ctx: PublicContext) -> list[int]:
        return list(_NO_PARMS_ID)

    def write_payload(
        self,
        out: BinaryIO,
        ctx: PublicContext,
        weighted: np.ndarray,
        zeros: ZeroPool | None,
        digest: Any,
        timings: dict[str, float] | None,
    ) -> int:
        payload = weighted.astype("<f4").tobytes()
        digest.update(payload)
        out.write(payload)
        return len(payload)

    def read_payload(self, payload: memoryview, param_count: int) -> np.ndarray:
        floats = np.frombuffer(payload, dtype="<f4")
        # Checked before widening: casting a signalling NaN raises an FP "invalid" warning.
        if not np.all(np.isfinite(floats)):
            raise CiphertextParameterError("plaintext update holds NaN or infinite values")
        return floats.astype(np.float64)

    @staticmethod
    def _pieces(first: int, count: int, width: int, per: int) -> list[Piece]:
        return [
            Piece(a * width, (min(a + per, first + count) - a) * width,
                  (slice(a, min(a + per, first + count)),))
            for a in range(first, first + count, per)
        ]  # fmt: skip

    def payload_pieces(self, param_count: int) -> list[Piece]:
        return self._pieces(0, param_count, 4, PIECE_BYTES // 4)

    def read_payload_piece(self, piece: Piece, raw: bytes) -> np.ndarray:
        return self.read_payload(memoryview(raw), piece.size // 4)

    def sum_rows(self, param_count: int) -> int:
        return param_count

    @property
    def row_values(self) -> int:
        return 1

    @property
    def row_shape(self) -> tuple[int, ...]:
        return ()

    @property
    def sum_dtype(self) -> type[np.generic]:
        return np.float64

    def sum_pieces(self, param_count: int, first: int, count: int) -> list[Piece]:
        return self._pieces(first, count, 8, PIECE_BYTES // 8)

    def read_sum_piece(self, piece: Piece, raw: bytes) -> np.ndarray:
        return self.unpack_sum(raw, piece.size // 8)

    def pack_piece(self, total: np.ndarray, piece: Piece) -> bytes:
        return self.pack_sum(total[piece.index])

    def add_piece(self, total: np.ndarray, piece: Piece, addend: np.ndarray) -> None:
        part = total[piece.index]
        np.add(part, addend, out=part)

    def zero_sum(self, param_count: int) -> np.ndarray:
        return np.zeros(param_count, dtype=np.float64)

    def add_into(self, total: np.ndarray, addend: np.ndarray) -> None:
        np.add(total, addend, out=total)

    def pack_sum(self, total: np.ndarray) -> bytes:
        return total.astype("<f8").tobytes()

    def unpack_sum(self, payload: bytes, param_count: int) -> np.ndarray:
        return np.frombuffer(payload, dtype="<f8").copy()

    def decrypt_exact(self, keys: BuyerKeys, total: np.ndarray, param_count: int) -> np.ndarray:
        # In the clear, any key reads it: the preset is not the key's.
        return total.astype(np.float64)

    def flood(self, exact: np.ndarray) -> np.ndarray:
        return exact

    def encrypt_zeros(
        self, ctx: PublicContext, encryptor: seal.Encryptor, count: int
    ) -> np.ndarray:
        raise CryptoError(f"preset {self.preset.id} does not encrypt; it needs no zeros")
