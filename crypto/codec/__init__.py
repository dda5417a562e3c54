"""One codec per scheme: every scheme-specific step of encrypting, summing and decrypting.

`Preset.codec` is chosen here, once, from `Preset.scheme`; see crypto/codec/base.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from crypto.codec.base import Codec
from crypto.codec.ckks import CkksCodec
from crypto.codec.plain import PlainCodec
from crypto.errors import PresetError

if TYPE_CHECKING:
    from crypto.presets import Preset

CODECS: dict[str, type[Codec]] = {codec.scheme: codec for codec in (CkksCodec, PlainCodec)}


def codec_for(preset: Preset) -> Codec:
    """The codec of `preset`'s scheme; raises PresetError for a scheme nobody implements."""
    try:
        codec = CODECS[preset.scheme]
    except KeyError:
        known = ", ".join(sorted(CODECS))
        raise PresetError(
            f"preset {preset.id} uses scheme {preset.scheme!r}; known schemes: {known}"
        ) from None
    return codec(preset)


__all__ = ["CODECS", "CkksCodec", "Codec", "PlainCodec", "codec_for"]
