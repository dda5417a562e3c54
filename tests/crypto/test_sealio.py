"""SEAL objects moved through a per-thread scratch file: safe across threads and forks."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import tenseal.sealapi as seal

from crypto import PublicContext
from crypto.sealio import array_to_ciphertext, ciphertext_to_array

_ctx: PublicContext | None = None


def _zero_roundtrip(_: int) -> bool:
    """Encrypt a zero, read it out, load it back and read it again: the same coefficients."""
    assert _ctx is not None
    cipher = seal.Ciphertext()
    _ctx.new_encryptor().encrypt_zero(_ctx.data_parms_id, cipher)
    coeffs = ciphertext_to_array(cipher).copy()
    again = array_to_ciphertext(coeffs, _ctx.seal_context, parms_id=_ctx.data_parms_id, scale=1.0)
    return bool(np.array_equal(ciphertext_to_array(again), coeffs))


def test_forked_children_and_threads_never_share_a_scratch_file(public: PublicContext) -> None:
    """The parent used its scratch file before forking: children that inherited it would
    write over each other's ciphertexts and read back garbage."""
    global _ctx
    _ctx = public
    assert _zero_roundtrip(0)  # the parent's scratch file exists now
    fork = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(4, mp_context=fork) as pool:
        assert all(pool.map(_zero_roundtrip, range(400), chunksize=4))
    with ThreadPoolExecutor(4) as threads:
        assert all(threads.map(_zero_roundtrip, range(200)))
