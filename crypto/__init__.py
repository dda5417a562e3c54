"""CKKS for Pollen: buyer keys, encrypted update envelopes, aggregation without decryption.

Pure: bytes in, bytes out, numpy arrays. No HTTP, no database, no torch.
"""

from crypto.aggregate import (
    Accumulator,
    DecryptedAggregate,
    decrypt_aggregate,
    decrypt_aggregate_file,
)
from crypto.envelope import (
    EnvelopeBinding,
    EnvelopeHeader,
    ValidatedEnvelope,
    encrypt_update,
    envelope_size,
    read_header,
    validate_envelope,
)
from crypto.errors import (
    AggregateError,
    BindingMismatchError,
    CiphertextParameterError,
    ContextError,
    CryptoError,
    EnvelopeError,
    EnvelopeTooLargeError,
    FingerprintMismatchError,
    KeyFileError,
    MalformedEnvelopeError,
    PayloadHashError,
    PollenError,
    PresetError,
    ShapeMismatchError,
    UnsupportedVersionError,
    ValueRangeError,
)
from crypto.keys import BuyerKeys, PublicContext
from crypto.presets import DEFAULT_PRESET_ID, PLAIN_PRESET_ID, PRESETS, Preset, get_preset
from crypto.streaming import CheckedEnvelope, StreamedEnvelope, check_envelope_file, stream_envelope
from crypto.sumfile import CheckedSum
from crypto.weights import update_weight, weight_norm

__all__ = [
    "DEFAULT_PRESET_ID",
    "PLAIN_PRESET_ID",
    "PRESETS",
    "Accumulator",
    "AggregateError",
    "BindingMismatchError",
    "BuyerKeys",
    "CheckedEnvelope",
    "CheckedSum",
    "CiphertextParameterError",
    "ContextError",
    "CryptoError",
    "DecryptedAggregate",
    "EnvelopeBinding",
    "EnvelopeError",
    "EnvelopeHeader",
    "EnvelopeTooLargeError",
    "FingerprintMismatchError",
    "KeyFileError",
    "MalformedEnvelopeError",
    "PayloadHashError",
    "PollenError",
    "Preset",
    "PresetError",
    "PublicContext",
    "ShapeMismatchError",
    "StreamedEnvelope",
    "UnsupportedVersionError",
    "ValidatedEnvelope",
    "ValueRangeError",
    "check_envelope_file",
    "decrypt_aggregate",
    "decrypt_aggregate_file",
    "encrypt_update",
    "envelope_size",
    "get_preset",
    "read_header",
    "stream_envelope",
    "update_weight",
    "validate_envelope",
    "weight_norm",
]
