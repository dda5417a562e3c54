"""The identity key file: made once, private, the same key for processes racing to make it."""

from __future__ import annotations

import multiprocessing as mp
import os
from pathlib import Path

import pytest

from crypto.identity import IdentityKey, SignatureError


def _load(path: str, start: object, out: object) -> None:
    start.wait()  # type: ignore[attr-defined]
    out.put(IdentityKey.load_or_create(path).fingerprint)  # type: ignore[attr-defined]


def test_processes_starting_together_share_one_whole_key(tmp_path: Path) -> None:
    """Several server workers on one data dir: none reads a half-written key, all sign alike."""
    ctx = mp.get_context("fork")
    for attempt in range(5):
        path = str(tmp_path / f"signing-{attempt}.key")
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_load, args=(path, start, out)) for _ in range(8)]
        for p in procs:
            p.start()
        start.set()
        for p in procs:
            p.join(timeout=30)
        assert [p.exitcode for p in procs] == [0] * 8
        prints = {out.get(timeout=5) for _ in procs}
        assert prints == {IdentityKey.load_or_create(path).fingerprint}
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert sorted(os.listdir(tmp_path)) == sorted(
            f"signing-{i}.key" for i in range(attempt + 1)
        )


def test_a_key_others_can_read_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    IdentityKey.load_or_create(path)
    path.chmod(0o644)
    with pytest.raises(SignatureError, match="readable by others"):
        IdentityKey.load_or_create(path)
