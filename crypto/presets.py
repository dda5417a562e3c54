"""Named, versioned CKKS parameter presets.

A preset fixes everything both ends must agree on: ring degree, coefficient modulus, scale,
how many real numbers a ciphertext carries, and how many updates may be summed before the
sum could leave the representable range.

`ckks-add-2048-v1` is the default, chosen by measurement (`python -m bench crypto`): the
server only ever adds, so one 40-bit data prime suffices; a 14-bit special prime lets SEAL
encrypt at the key level and divide the fresh noise away; each complex slot carries two
reals. Ciphertexts are stored 5 bytes per coefficient, 10 bytes per parameter.

A preset also names its scheme, and holds that scheme's codec (`Preset.codec`, crypto/codec/):
the sizes, bounds and security checks below that differ between schemes are the codec's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import tenseal.sealapi as seal

from crypto.codec import Codec, codec_for
from crypto.codec.ckks import RLWE_ERROR_STD
from crypto.errors import PresetError


@dataclass(frozen=True)
class Preset:
    """One CKKS parameter set; `id` is versioned and never reused for other numbers."""

    id: str
    poly_modulus_degree: int
    coeff_mod_bit_sizes: tuple[int, ...]
    scale_bits: int
    # How many updates a sum may hold when the job does not say; each job binds its own
    # count (its max providers), which sets how large one update may be.
    default_summands: int
    # Headroom kept between the worst-case sum and q/2, for noise and rounding.
    safety: float = 0.9
    # "ckks", or "plain" for the benchmark-only preset that sends float32 in the clear (the
    # server refuses such jobs unless started with POLLEN_ALLOW_PLAINTEXT_JOBS).
    scheme: str = "ckks"
    # Noise added to every decryption, as an rms per plaintext coefficient: at least
    # MIN_FLOOD_FACTOR × the RLWE error (crypto/codec/ckks.py), so a published sum does not
    # give away the key.
    flood_coeff_rms: float = 10 * RLWE_ERROR_STD

    # The scheme's codec, chosen once from `scheme`: every scheme-specific step goes through it.
    codec: Codec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The codec refuses numbers its scheme cannot use safely (e.g. too little flooding).
        object.__setattr__(self, "codec", codec_for(self))

    @property
    def is_plain(self) -> bool:
        """Values travel in the clear: the policy checks outside crypto/ refuse or skip it."""
        return self.scheme == "plain"

    @property
    def scale(self) -> float:
        return float(2**self.scale_bits)

    @property
    def reals_per_chunk(self) -> int:
        """Reals per ciphertext: N/2 complex slots, each carrying two reals."""
        return self.poly_modulus_degree

    @property
    def flood_sigma(self) -> float:
        """Std of the noise on each decrypted real."""
        return self.codec.flood_sigma

    @cached_property
    def all_moduli(self) -> tuple[int, ...]:
        mods = seal.CoeffModulus.Create(self.poly_modulus_degree, list(self.coeff_mod_bit_sizes))
        return tuple(int(m.value()) for m in mods)

    @property
    def data_moduli(self) -> tuple[int, ...]:
        """Primes of the level ciphertexts live at (all but the special prime)."""
        mods = self.all_moduli
        return mods[:-1] if len(mods) > 1 else mods

    @property
    def coeff_bytes(self) -> tuple[int, ...]:
        """Bytes used to store one coefficient modulo each data prime."""
        return tuple((q.bit_length() + 7) // 8 for q in self.data_moduli)

    @property
    def chunk_payload_bytes(self) -> int:
        """Stored size of one two-polynomial ciphertext."""
        return 2 * self.poly_modulus_degree * sum(self.coeff_bytes)

    def max_update_abs(self, summands: int | None = None) -> float:
        """Largest |entry| one weighted update may hold if `summands` of them are added."""
        return self.codec.max_update_abs(summands or self.default_summands)

    @property
    def max_summands(self) -> int:
        """Most updates one sum may ever hold."""
        return self.codec.max_summands

    def chunks_for(self, param_count: int) -> int:
        return self.codec.chunks_for(param_count)

    def payload_bytes(self, param_count: int) -> int:
        return self.codec.payload_bytes(param_count)

    def check_security(self) -> None:
        self.codec.check_security()


PLAIN_PRESET_ID = "plain-f32-v1"

PRESETS: dict[str, Preset] = {
    p.id: p
    for p in (
        Preset(
            id="ckks-add-2048-v1",
            poly_modulus_degree=2048,
            coeff_mod_bit_sizes=(40, 14),
            scale_bits=31,
            default_summands=16,
        ),
        # Float32 in the clear, through the same envelopes and accumulators: the baseline
        # `python -m bench round` compares against. Never accepted by a default server.
        Preset(
            id=PLAIN_PRESET_ID,
            poly_modulus_degree=0,
            coeff_mod_bit_sizes=(),
            scale_bits=0,
            default_summands=16,
            scheme="plain",
        ),
        # A wider range for large updates or many providers, at 2x the bytes.
        Preset(
            id="ckks-add-4096-v1",
            poly_modulus_degree=4096,
            coeff_mod_bit_sizes=(40, 40, 20),
            scale_bits=36,
            default_summands=256,
        ),
    )
}

DEFAULT_PRESET_ID = "ckks-add-2048-v1"


def get_preset(preset_id: str) -> Preset:
    try:
        return PRESETS[preset_id]
    except KeyError:
        known = ", ".join(sorted(PRESETS))
        raise PresetError(f"unknown CKKS preset {preset_id!r}; known presets: {known}") from None
