"""The child process that makes encryptions of zero, at the lowest CPU priority (its parent
lowers it before importing this module), and hands each to its parent over a pipe
(crypto/zeropool.py).

Run as its own process rather than a thread of the agent: SEAL's `encrypt_zero` holds the
interpreter lock, so a thread making zeros slows the agent's own training whenever the two
overlap, and a thread cannot be given a lower priority safely (a descheduled thread holding
the lock stalls the others). A process at nice 19 only takes CPU nobody else wants, so the
zeros really are made off the critical path.

The parent writes the public context (length-prefixed, then the preset id, likewise) on
stdin; the child then writes zeros to stdout, one after another, each
`2 · k · N` little-endian uint64 coefficients. It never writes them anywhere else. The
pipe's back-pressure paces it: when the parent stops reading, the child blocks on its next
write. It exits when the parent closes the pipe or dies (a write then fails).
"""

from __future__ import annotations

import struct
import sys
from typing import BinaryIO

_LENGTH = struct.Struct("<Q")


def _read_field(stream: BinaryIO) -> bytes:
    head = stream.read(_LENGTH.size)
    if len(head) != _LENGTH.size:
        raise EOFError("the parent closed the pipe before sending the context")
    (size,) = _LENGTH.unpack(head)
    data = stream.read(size)
    if len(data) != size:
        raise EOFError("the parent closed the pipe while sending the context")
    return data


def pack_request(context: bytes, preset_id: str) -> bytes:
    """What the parent writes first: the public context and the preset id."""
    name = preset_id.encode()
    return _LENGTH.pack(len(context)) + context + _LENGTH.pack(len(name)) + name


def main() -> int:
    from crypto.keys import PublicContext

    source, sink = sys.stdin.buffer, sys.stdout.buffer
    try:
        context = _read_field(source)
        preset_id = _read_field(source).decode()
    except EOFError:
        return 0
    ctx = PublicContext.from_bytes(context).for_preset(preset_id)
    encryptor, codec = ctx.new_encryptor(), ctx.preset.codec
    while True:
        zero = codec.encrypt_zeros(ctx, encryptor, 1)[0]
        try:
            sink.write(zero.astype("<u8", copy=False).tobytes())
            sink.flush()
        except (BrokenPipeError, OSError):
            return 0


if __name__ == "__main__":
    sys.exit(main())
