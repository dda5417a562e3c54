"""What a scheme must do for envelopes, sums and decryption: the `Codec` every preset holds.

A preset names its scheme once (`Preset.scheme`) and gets one codec for it (`Preset.codec`);
the envelope (crypto/envelope.py), the running sum (crypto/aggregate.py) and the zero pool
(crypto/zeropool.py) are written once, against this interface, and never ask which scheme
they are handling. Two schemes exist: CKKS, the product (crypto/codec/ckks.py), and float32 in
the clear, the benchmark baseline (crypto/codec/plain.py).

A codec owns the payload's bytes: what follows an envelope's header, and what follows an
aggregate's. The headers around them are the same for every scheme. It also cuts a payload
into `Piece`s of about `PIECE_BYTES`, in file order, so that envelopes and sums read from a
file are checked, added and decrypted a piece at a time (crypto/streaming.py): memory is then
one piece beyond the running sum, whatever the model's size.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, ClassVar

import numpy as np

if TYPE_CHECKING:
    import tenseal.sealapi as seal

    from crypto.keys import BuyerKeys, PublicContext
    from crypto.presets import Preset
    from crypto.zeropool import ZeroPool

# About how many bytes of a payload one piece holds (about a hundred ciphertexts for CKKS).
PIECE_BYTES = 1 << 20


@dataclass(frozen=True)
class Piece:
    """`size` bytes of a payload at `offset` from its start, whose values are the running
    sum's `total[index]`; `index` starts with the slice of the sum's rows it covers."""

    offset: int
    size: int
    index: tuple[slice | int, ...]

    @property
    def rows(self) -> slice:
        first = self.index[0]
        assert isinstance(first, slice)
        return first


class Codec(ABC):
    """One scheme's operations, bound to one preset's numbers.

    The constructor refuses a preset whose numbers the scheme cannot use safely (PresetError).
    """

    scheme: ClassVar[str]
    # False when values travel in the clear: no key is needed, any buyer's public context can
    # stand for the preset (`PublicContext.for_preset`) and nothing encrypts zeros ahead.
    encrypts: ClassVar[bool]

    def __init__(self, preset: Preset) -> None:
        self.preset = preset

    # -- the preset's numbers ------------------------------------------------------------

    @property
    @abstractmethod
    def flood_sigma(self) -> float:
        """Std of the noise added to each decrypted value (0 when nothing is decrypted)."""

    @abstractmethod
    def max_update_abs(self, summands: int) -> float:
        """Largest |entry| one weighted update may hold if `summands` of them are added."""

    @property
    @abstractmethod
    def max_summands(self) -> int:
        """Most updates one sum may ever hold."""

    @abstractmethod
    def chunks_for(self, param_count: int) -> int:
        """How many chunks (ciphertexts) an update of `param_count` values takes."""

    @abstractmethod
    def payload_bytes(self, param_count: int) -> int:
        """Exact size of an envelope's payload."""

    @abstractmethod
    def sum_bytes(self, param_count: int) -> int:
        """Exact size of an aggregate's payload."""

    @abstractmethod
    def check_security(self) -> None:
        """Raise PresetError unless the preset is fit to protect a buyer's updates."""

    # -- envelopes -----------------------------------------------------------------------

    @abstractmethod
    def parms_id(self, ctx: PublicContext) -> list[int]:
        """The four words an envelope's header carries to name the ciphertexts' level."""

    @abstractmethod
    def write_payload(
        self,
        out: BinaryIO,
        ctx: PublicContext,
        weighted: np.ndarray,
        zeros: ZeroPool | None,
        digest: Any,
        timings: dict[str, float] | None,
    ) -> int:
        """Append the payload of the float64 `weighted` update to `out`, feed every byte to
        `digest` in order, and return the payload's length."""

    @abstractmethod
    def read_payload(self, payload: memoryview, param_count: int) -> np.ndarray:
        """The addends of a payload whose size and hash were checked; raise
        CiphertextParameterError if a value is one no honest encryption makes."""

    @abstractmethod
    def payload_pieces(self, param_count: int) -> list[Piece]:
        """An envelope's payload as pieces in file order, together covering all of it."""

    @abstractmethod
    def read_payload_piece(self, piece: Piece, raw: bytes) -> np.ndarray:
        """The addends `raw` (one piece, its size checked) holds for `total[piece.index]`;
        raises CiphertextParameterError as `read_payload` does."""

    # -- sums ----------------------------------------------------------------------------

    @abstractmethod
    def sum_rows(self, param_count: int) -> int:
        """Length of the running sum's first axis (what `Piece.rows` slices)."""

    @property
    @abstractmethod
    def row_values(self) -> int:
        """Decrypted values per row of the running sum."""

    @property
    @abstractmethod
    def row_shape(self) -> tuple[int, ...]:
        """Shape of one row of the running sum."""

    @property
    @abstractmethod
    def sum_dtype(self) -> type[np.generic]:
        """The running sum's dtype."""

    @abstractmethod
    def sum_pieces(self, param_count: int, first: int, count: int) -> list[Piece]:
        """The pieces, in file order, of an aggregate's payload that hold rows `first` to
        `first + count`."""

    @abstractmethod
    def read_sum_piece(self, piece: Piece, raw: bytes) -> np.ndarray:
        """`total[piece.index]` from one piece of an aggregate's payload."""

    @abstractmethod
    def pack_piece(self, total: np.ndarray, piece: Piece) -> bytes:
        """The bytes of `piece` in the aggregate's payload of `total` (`pack_sum`'s)."""

    @abstractmethod
    def add_piece(self, total: np.ndarray, piece: Piece, addend: np.ndarray) -> None:
        """`total[piece.index] += addend` in place, as `add_into` adds."""

    def rows_per_block(self) -> int:
        """Rows of the sum decrypted at a time: about `PIECE_BYTES` of its payload."""
        return max(1, PIECE_BYTES // self.sum_bytes(self.row_values))

    @abstractmethod
    def zero_sum(self, param_count: int) -> np.ndarray:
        """The running sum before any update is added."""

    @abstractmethod
    def add_into(self, total: np.ndarray, addend: np.ndarray) -> None:
        """`total += addend` in place, as the scheme adds."""

    @abstractmethod
    def pack_sum(self, total: np.ndarray) -> bytes:
        """An aggregate's payload."""

    @abstractmethod
    def unpack_sum(self, payload: bytes, param_count: int) -> np.ndarray:
        """The running sum from an aggregate's payload of the right size."""

    # -- decryption ----------------------------------------------------------------------

    @abstractmethod
    def decrypt_exact(self, keys: BuyerKeys, total: np.ndarray, param_count: int) -> np.ndarray:
        """The sum exactly as the secret key decrypts it (float64, `param_count` values).

        Never publish this: an exact CKKS decryption reveals the secret key (crypto/flooding.py).
        """

    @abstractmethod
    def flood(self, exact: np.ndarray) -> np.ndarray:
        """What the buyer may see of an exact decryption."""

    # -- encryptions of zero -------------------------------------------------------------

    @abstractmethod
    def encrypt_zeros(
        self, ctx: PublicContext, encryptor: seal.Encryptor, count: int
    ) -> np.ndarray:
        """`count` fresh public-key encryptions of zero, as the payload's coefficients."""
