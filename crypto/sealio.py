"""Move SEAL ciphertexts between SEAL's objects and numpy coefficient arrays.

TenSEAL's `sealapi` only saves and loads through file paths, so this module goes through a
private scratch file (on /dev/shm when present): one per thread, unlinked as soon as it is
made and reached through `/proc/self/fd`, so no ciphertext, plaintext or zero is ever
readable under a name and the file goes with the process, kill -9 included. The layout of
a saved ciphertext is SEAL's own: a 16-byte SEAL header, then the ciphertext members, then
a `DynArray` of uint64 coefficients in RNS form, `size x coeff_modulus_size x N`.
"""

from __future__ import annotations

import functools
import os
import struct
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import tenseal.sealapi as seal
import zstandard

from crypto.errors import CryptoError

_SEAL_MAGIC = 0xA15E
_HEADER = struct.Struct("<HBBBBHQ")  # magic, header size, major, minor, compr mode, reserved, size
# parms_id, is_ntt_form, size, poly_modulus_degree, coeff_modulus_size, scale, correction_factor
_MEMBERS = struct.Struct("<4QBQQQdQ")
_COMPR_NONE, _COMPR_ZLIB, _COMPR_ZSTD = 0, 1, 2
_SCRATCH_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None


class _Scratch:
    """A thread's scratch file: created 0600, unlinked at once, closed with the thread."""

    def __init__(self) -> None:
        fd, path = tempfile.mkstemp(prefix="pollen-ct-", dir=_SCRATCH_DIR)
        os.unlink(path)
        self.pid = os.getpid()
        self.fd = fd
        self.path = f"/proc/self/fd/{fd}"
        self.zstd = zstandard.ZstdDecompressor()

    def __del__(self) -> None:
        os.close(self.fd)  # in a forked child, only the child's copy

    def write(self, data: bytes) -> None:
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, data, 0)

    def read(self) -> bytes:
        return os.pread(self.fd, os.fstat(self.fd).st_size, 0)


_HAS_PROC_FD = os.path.isdir("/proc/self/fd")
_local = threading.local()


def _scratch() -> _Scratch | None:
    """This thread's scratch file; None where an unlinked file cannot be reopened by path."""
    if not _HAS_PROC_FD:
        return None
    scratch: _Scratch | None = getattr(_local, "scratch", None)
    # A forked child shares its parent's open file: it makes its own.
    if scratch is None or scratch.pid != os.getpid():
        scratch = _local.scratch = _Scratch()
    return scratch


@contextmanager
def _scratch_path() -> Iterator[str]:
    """A named scratch file for one save or load (where `/proc/self/fd` is missing)."""
    fd, path = tempfile.mkstemp(prefix="pollen-ct-", dir=_SCRATCH_DIR)
    os.close(fd)
    try:
        yield path
    finally:
        os.unlink(path)


def _decompress(mode: int, body: bytes) -> bytes:
    if mode == _COMPR_NONE:
        return body
    if mode == _COMPR_ZSTD:
        scratch = _scratch()
        zstd = scratch.zstd if scratch is not None else zstandard.ZstdDecompressor()
        return zstd.decompress(body, max_output_size=1 << 31)
    if mode == _COMPR_ZLIB:
        import zlib

        return zlib.decompress(body)
    raise CryptoError(f"SEAL stream uses unknown compression mode {mode}")


def _saved(obj: seal.Ciphertext | seal.Plaintext) -> bytes:
    scratch = _scratch()
    if scratch is not None:
        obj.save(scratch.path)
        return scratch.read()
    with _scratch_path() as path:
        obj.save(path)
        with open(path, "rb") as f:
            return f.read()


def _load(obj: seal.Ciphertext, context: seal.SEALContext, data: bytes) -> None:
    scratch = _scratch()
    if scratch is not None:
        scratch.write(data)
        obj.load(context, scratch.path)
        return
    with _scratch_path() as path:
        with open(path, "wb") as f:
            f.write(data)
        obj.load(context, path)


@functools.cache
def _seal_version() -> tuple[int, int]:
    """The SEAL serialization version of the linked library, read off a real save."""
    _, _, major, minor, _, _, _ = _HEADER.unpack_from(_saved(seal.Ciphertext()))
    return major, minor


def ciphertext_to_array(ct: seal.Ciphertext) -> np.ndarray:
    """Coefficients of `ct` as uint64 with shape (size, coeff_modulus_size, N)."""
    blob = _saved(ct)
    magic, _, _, _, mode, _, _ = _HEADER.unpack_from(blob)
    if magic != _SEAL_MAGIC:
        raise CryptoError("SEAL wrote a stream without its magic number")
    raw = _decompress(mode, blob[_HEADER.size :])
    members = _MEMBERS.unpack_from(raw)
    size, n, k = members[5], members[6], members[7]
    # The coefficient DynArray follows with its own SEAL header and a uint64 count.
    offset = _MEMBERS.size + _HEADER.size + 8
    count = size * k * n
    data = np.frombuffer(raw, dtype="<u8", count=count, offset=offset)
    return data.reshape(size, k, n)


# A saved plaintext: parms_id, coeff_count, scale, then its DynArray (own header, count).
_PLAIN_MEMBERS = struct.Struct("<4QQd")


def plaintext_to_array(pt: seal.Plaintext, k: int, n: int) -> np.ndarray:
    """Coefficients of an NTT-form CKKS plaintext as uint64 with shape (k, N)."""
    blob = _saved(pt)
    magic, _, _, _, mode, _, _ = _HEADER.unpack_from(blob)
    if magic != _SEAL_MAGIC:
        raise CryptoError("SEAL wrote a stream without its magic number")
    raw = _decompress(mode, blob[_HEADER.size :])
    count = _PLAIN_MEMBERS.unpack_from(raw)[4]
    if count != k * n:
        raise CryptoError(f"plaintext holds {count} coefficients, expected {k * n}")
    offset = _PLAIN_MEMBERS.size + _HEADER.size + 8
    return np.frombuffer(raw, dtype="<u8", count=count, offset=offset).reshape(k, n)


def array_to_ciphertext(
    coeffs: np.ndarray,
    context: seal.SEALContext,
    *,
    parms_id: list[int],
    scale: float,
) -> seal.Ciphertext:
    """Build a SEAL ciphertext from coefficients; SEAL re-validates it on load."""
    size, k, n = coeffs.shape
    dyn_body = struct.pack("<Q", coeffs.size) + np.ascontiguousarray(coeffs, dtype="<u8").tobytes()
    dyn = (
        _HEADER.pack(
            _SEAL_MAGIC,
            _HEADER.size,
            *_seal_version(),
            _COMPR_NONE,
            0,
            _HEADER.size + len(dyn_body),
        )
        + dyn_body
    )
    members = _MEMBERS.pack(*parms_id, 1, size, n, k, scale, 1)
    total = _HEADER.size + len(members) + len(dyn)
    blob = _HEADER.pack(_SEAL_MAGIC, _HEADER.size, *_seal_version(), _COMPR_NONE, 0, total)
    ct = seal.Ciphertext()
    try:
        _load(ct, context, blob + members + dyn)
    except Exception as exc:  # SEAL raises plain RuntimeError/ValueError on bad data
        raise CryptoError(f"SEAL refused the ciphertext: {exc}") from exc
    return ct


def pack_coefficients(coeffs: np.ndarray, widths: tuple[int, ...]) -> bytes:
    """Store coefficients (…, k, N) in `widths[j]` little-endian bytes per prime j."""
    parts = []
    for j, width in enumerate(widths):
        column = np.ascontiguousarray(coeffs[..., j, :], dtype="<u8").reshape(-1)
        # Each coefficient's low `width` bytes as one opaque item 8 bytes apart: copied a
        # word at a time, an order of magnitude faster than slicing a (-1, 8) byte array.
        low = np.ndarray(column.shape, dtype=np.dtype((np.void, width)), buffer=column,
                         strides=(8,))  # fmt: skip
        parts.append(low.tobytes())
    return b"".join(parts)


def unpack_coefficients(
    payload: bytes | memoryview, shape: tuple[int, ...], widths: tuple[int, ...]
) -> np.ndarray:
    """Inverse of `pack_coefficients`; `shape` is (…, k, N)."""
    *lead, _, n = shape
    per_prime = int(np.prod(lead)) * n
    out = np.empty(shape, dtype=np.uint64)
    offset = 0
    for j, width in enumerate(widths):
        size = per_prime * width
        # Read each coefficient as an unaligned 8-byte word `width` bytes apart, then mask
        # off the neighbour's bytes: one pass, no per-byte copies.
        buf = np.zeros(size + 8 - width, dtype=np.uint8)
        buf[:size] = np.frombuffer(payload, dtype=np.uint8, count=size, offset=offset)
        words = np.ndarray((per_prime,), dtype="<u8", buffer=buf, strides=(width,))
        mask = np.uint64((1 << (8 * width)) - 1) if width < 8 else np.uint64(2**64 - 1)
        out[..., j, :] = (words & mask).reshape(*lead, n)
        offset += size
    return out
