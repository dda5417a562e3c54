"""The project's exception tree, rooted here because `crypto/` is the lowest layer.

    PollenError                      every error Pollen raises on purpose
    └── CryptoError                  anything about keys, presets, envelopes, aggregates
        ├── PresetError              unknown or unusable CKKS parameter preset
        ├── ContextError             a public context that is garbage, secret or unknown
        ├── KeyFileError             a secret-key file that is missing, exposed or damaged
        ├── ValueRangeError          a plaintext the preset cannot represent
        ├── EnvelopeError            an untrusted update envelope was refused
        │   ├── MalformedEnvelopeError      truncated bytes, garbage, bad header
        │   ├── UnsupportedVersionError     a format version this build does not read
        │   ├── FingerprintMismatchError    encrypted under another buyer's key
        │   ├── BindingMismatchError        made for another job, round or provider
        │   ├── ShapeMismatchError          wrong parameter or chunk count
        │   ├── CiphertextParameterError    wrong level, scale, parameters or coefficients
        │   ├── PayloadHashError            payload does not match its declared SHA-256
        │   └── EnvelopeTooLargeError       larger than any valid envelope could be
        └── AggregateError           an accumulator refused an add, or an aggregate is bad

Other packages hang their branches under `PollenError` too: `market/errors.py` (the
service's errors, the ledger's accounting rules) and `agents/` (`DataError`,
`ModelIOError`). Every class carries a stable `code` slug; the service maps the whole tree to
HTTP in one place (`market/problems.py`).
"""

from __future__ import annotations


class PollenError(Exception):
    """Root of every error Pollen raises deliberately."""

    code = "pollen-error"
    title = "Pollen error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class CryptoError(PollenError):
    code = "crypto-error"
    title = "Cryptography error"


class PresetError(CryptoError):
    code = "unknown-preset"
    title = "Unknown or unusable CKKS preset"


class ContextError(CryptoError):
    code = "invalid-context"
    title = "Invalid public context"


class KeyFileError(CryptoError):
    code = "key-file"
    title = "Secret key file problem"


class ValueRangeError(CryptoError):
    code = "value-out-of-range"
    title = "Value not representable by the preset"


class EnvelopeError(CryptoError):
    code = "invalid-envelope"
    title = "Invalid update envelope"


class MalformedEnvelopeError(EnvelopeError):
    code = "malformed-envelope"
    title = "Malformed update envelope"


class UnsupportedVersionError(EnvelopeError):
    code = "unsupported-envelope-version"
    title = "Unsupported envelope format version"


class FingerprintMismatchError(EnvelopeError):
    code = "fingerprint-mismatch"
    title = "Envelope encrypted under another key"


class BindingMismatchError(EnvelopeError):
    code = "binding-mismatch"
    title = "Envelope bound to another job, round or provider"


class ShapeMismatchError(EnvelopeError):
    code = "shape-mismatch"
    title = "Envelope has the wrong parameter or chunk count"


class CiphertextParameterError(EnvelopeError):
    code = "ciphertext-parameters"
    title = "Ciphertext at the wrong level, scale or parameters"


class PayloadHashError(EnvelopeError):
    code = "payload-hash-mismatch"
    title = "Envelope payload does not match its hash"


class EnvelopeTooLargeError(EnvelopeError):
    code = "envelope-too-large"
    title = "Envelope too large"


class AggregateError(CryptoError):
    code = "aggregate-error"
    title = "Aggregate refused"
