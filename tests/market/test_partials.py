"""Partial sums per server process: checkpoints, the merge at close, and what is left after."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from crypto import BuyerKeys, decrypt_aggregate
from market.app import create_app
from market.config import Settings
from market.models import LogLeaf, Round, RoundGroup, RoundPartial, Submission
from market.services import locks, merging, partials
from tests.conftest import ADMIN_KEY
from tests.utils.clock import FakeClock
from tests.utils.scenario import Scenario, running_job

PROVIDERS = 5


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    """A checkpoint every 2 updates, none by time (the tests drive it)."""
    return Settings(
        data_dir=tmp_path / "data", database_url=db_url, admin_api_key=ADMIN_KEY,
        deadline_tick_s=0, min_round_deadline_s=1, checkpoint_updates=2,
        checkpoint_seconds=3600,
    )  # fmt: skip


@pytest.fixture
def client(settings: Settings, clock: FakeClock) -> Iterator[TestClient]:
    app = create_app(settings)
    app.state.clock = clock
    with TestClient(app) as test_client:
        yield test_client


@pytest.fixture(autouse=True)
def _no_partials_of_other_tests() -> Iterator[None]:
    partials._partials.clear()
    yield
    partials._partials.clear()


@pytest.fixture
def scn(client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys) -> Scenario:
    return running_job(
        client, clock, buyer_keys, providers=PROVIDERS, min_providers=PROVIDERS,
        max_providers=PROVIDERS, quorum=2,
        round_deadline_s=60,
    )  # fmt: skip


def _value(i: int) -> float:
    return 0.01 * (i + 1)


def _submit(scn: Scenario, i: int) -> None:
    p = scn.providers[i]
    body = scn.envelope(p, 1, value=_value(i), summands=PROVIDERS)
    r = scn.submit(p, 1, body)
    assert r.status_code == 201, r.text


def _by_group(scn: Scenario) -> list[int]:
    """Provider indexes, the larger group's members first (5 providers, groups of 3 and 2)."""
    app: Any = scn.client.app
    with Session(app.state.engine) as s:
        rnd = s.exec(select(Round).where(Round.job_id == scn.job_id)).one()
        rows = s.exec(select(RoundGroup).where(RoundGroup.round_id == rnd.id)).all()
    index = {p.id: i for i, p in enumerate(scn.providers)}
    members = sorted((sorted(index[m] for m in g.members) for g in rows), key=len, reverse=True)
    assert [len(m) for m in members] == [3, 2]
    return [i for group in members for i in group]


def _round_dir(scn: Scenario) -> Path:
    app: Any = scn.client.app
    return Path(app.state.blobs.root) / "jobs" / scn.job_id / "rounds" / "0001"


def _rows(scn: Scenario) -> tuple[Round, list[RoundPartial], list[Submission]]:
    app: Any = scn.client.app
    with Session(app.state.engine) as s:
        rnd = s.exec(select(Round).where(Round.job_id == scn.job_id)).one()
        cps = list(s.exec(select(RoundPartial).where(RoundPartial.round_id == rnd.id)))
        subs = list(s.exec(select(Submission).where(Submission.round_id == rnd.id)))
    return rnd, cps, subs


def _closes_at_the_deadline_with_exactly(scn: Scenario, indexes: list[int]) -> None:
    """Past the deadline the round closes holding the updates of these providers, once each
    (the decrypted total is exact)."""
    scn.clock.advance(61)
    scn.tick()
    rnd, _, _ = _rows(scn)
    assert rnd.state == "closed" and rnd.acc_count == len(indexes)
    agg = scn.client.get(f"/v1/jobs/{scn.job_id}/rounds/1/aggregate", headers=scn.buyer.headers)
    total = decrypt_aggregate(scn.keys, agg.content)
    assert sorted(total.provider_ids) == sorted(scn.providers[i].id for i in indexes)
    np.testing.assert_allclose(total.total, sum(_value(i) for i in indexes), atol=1e-4)


def test_checkpoint_every_k_updates_names_the_updates_it_holds(scn: Scenario) -> None:
    """Every 2 accepted updates this process writes its partial sum once and records whose
    updates it holds; the envelopes stay until the round's sum holds them, and no running
    sum is rewritten per update."""
    order = _by_group(scn)
    order = [order[0], order[1], order[3]]  # no group complete: two of three, one of two
    for i in order:
        _submit(scn, i)
    rnd, cps, subs = _rows(scn)
    totals = [c for c in cps if c.group_index is None]
    assert [sorted(c.providers) for c in totals] == sorted(
        [sorted(scn.providers[i].id for i in order[:2])]
    )
    assert partials.held() == {rnd.id: 1}
    assert rnd.acc_key is None and rnd.acc_count == 3
    # Every recorded part has its blob (the total's and the group's), nothing else does.
    blobs = [*_round_dir(scn).glob("partial-*.bin"), *_round_dir(scn).glob("group-*.bin")]
    assert len(blobs) == len(cps)
    # No group is complete yet: no group sum, so every envelope stays.
    assert [c for c in cps if c.group_index is not None] == []
    assert len(list(_round_dir(scn).glob("env-*.bin"))) == 3
    assert all(s.envelope_key is not None for s in subs)


def test_complete_group_is_summed_and_its_envelopes_deleted_before_close(scn: Scenario) -> None:
    """Once every member of a group is in and a checkpoint holds them, the group's sum is
    recorded and their envelopes are deleted while the round still collects: the close
    then reads sums, not every envelope of the round."""
    order = _by_group(scn)
    small = order[3:]  # the group of 2
    for i in small:
        _submit(scn, i)
    rnd, cps, subs = _rows(scn)
    assert rnd.state == "collecting"
    ids = sorted(scn.providers[i].id for i in small)
    assert sorted((c.group_index is None, sorted(c.providers)) for c in cps) == [
        (False, ids),
        (True, ids),
    ]
    assert all(s.envelope_key is None for s in subs)
    assert list(_round_dir(scn).glob("env-*.bin")) == []
    for i in order[:3]:
        _submit(scn, i)
    agg = scn.client.get(f"/v1/jobs/{scn.job_id}/rounds/1/aggregate", headers=scn.buyer.headers)
    total = decrypt_aggregate(scn.keys, agg.content)
    assert total.count == PROVIDERS
    np.testing.assert_allclose(total.total, sum(_value(i) for i in range(PROVIDERS)), atol=1e-4)


def test_checkpoint_after_seconds_on_the_deadline_pass(
    scn: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A partial older than `checkpoint_seconds` is written by the next deadline pass."""
    _submit(scn, 0)
    assert _rows(scn)[1] == []
    monkeypatch.setattr(partials._policy, "every_seconds", 0.001)
    scn.tick()
    rnd, cps, _ = _rows(scn)
    assert [c.providers for c in cps] == [[scn.providers[0].id]]
    assert rnd.id not in partials.held()


def test_close_merges_checkpoints_and_replays_the_rest_exactly(scn: Scenario) -> None:
    """Two checkpoints and one update no checkpoint holds: the closed round's sum holds each
    of the five once (the decrypted total is exact), every released group's sum holds
    exactly its members, and no envelope, checkpoint or partial is left."""
    for i in range(PROVIDERS):
        _submit(scn, i)
    rnd, cps, subs = _rows(scn)
    assert rnd.state == "closed" and cps == []
    assert all(s.envelope_key is None for s in subs)
    assert sorted(rnd.acc_providers) == sorted(p.id for p in scn.providers)
    assert partials.held() == {}
    agg = scn.client.get(f"/v1/jobs/{scn.job_id}/rounds/1/aggregate", headers=scn.buyer.headers)
    total = decrypt_aggregate(scn.keys, agg.content)
    assert total.count == PROVIDERS
    np.testing.assert_allclose(total.total, sum(_value(i) for i in range(PROVIDERS)), atol=1e-4)
    value_of = {p.id: _value(i) for i, p in enumerate(scn.providers)}
    seen: list[str] = []
    for group in scn.round(1)["groups"]:
        if group["merged_into"] is not None or group["count"] == 0:
            continue
        r = scn.client.get(
            f"/v1/jobs/{scn.job_id}/rounds/1/groups/{group['index']}/aggregate",
            headers=scn.buyer.headers,
        )
        gsum = decrypt_aggregate(scn.keys, r.content)
        want = sum(value_of[pid] for pid in gsum.provider_ids)
        np.testing.assert_allclose(gsum.total, want, atol=1e-4)
        seen += gsum.provider_ids
    assert sorted(seen) == sorted(value_of)
    left = sorted(f.name for f in _round_dir(scn).iterdir())
    assert not [n for n in left if n.startswith(("env-", "partial-"))], left


def test_close_replays_updates_whose_partial_died_with_its_process(scn: Scenario) -> None:
    """A partial lost from memory (its process killed) costs nothing: at the deadline the
    close replays those updates from their envelopes, and pays exactly who is in the sum."""
    order = _by_group(scn)
    for i in order[:3]:
        _submit(scn, i)
    rnd, _, _ = _rows(scn)
    assert partials.held() == {rnd.id: 1}
    partials._partials.clear()  # what a kill -9 leaves of this process's memory
    _closes_at_the_deadline_with_exactly(scn, order[:3])
    assert list(_round_dir(scn).glob("env-*.bin")) == []


def test_a_closed_round_takes_no_checkpoint(scn: Scenario) -> None:
    """A partial still in memory when another process closed the round is never recorded:
    the close already replayed those updates, so recording it would count them twice."""
    for i in _by_group(scn)[:3]:
        _submit(scn, i)
    rnd, _, _ = _rows(scn)
    app: Any = scn.client.app
    with Session(app.state.engine) as s:
        row = s.get(Round, rnd.id)
        assert row is not None
        row.state = "closed"  # another process's close, committed
        s.add(row)
        s.commit()
    assert partials.checkpoint(app.state.engine, rnd.id) is False
    _, cps, _ = _rows(scn)
    totals = [c for c in cps if c.group_index is None]
    assert len(totals) == 1  # only the one taken while collecting
    # Every recorded part has its blob (the total's and the group's), nothing else does.
    blobs = [*_round_dir(scn).glob("partial-*.bin"), *_round_dir(scn).glob("group-*.bin")]
    assert len(blobs) == len(cps)


def test_cancelled_round_envelopes_are_deleted(
    scn: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A round that ends without a sum (cancelled) keeps no envelope past the next sweep."""
    monkeypatch.setattr(merging, "_last_sweep", [float("-inf")])
    _submit(scn, 0)
    r = scn.client.post(f"/v1/jobs/{scn.job_id}/cancel", headers=scn.buyer.headers)
    assert r.status_code == 200, r.text
    scn.tick()
    _, _, subs = _rows(scn)
    assert [s.envelope_key for s in subs] == [None]
    assert list(_round_dir(scn).glob("env-*.bin")) == []


def test_each_envelope_is_read_back_once_when_no_checkpoint_holds_it(
    scn: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No checkpoint of the total (all five updates in one process's memory): each group's
    sum is built from its members' envelopes when it completes (the last member from its
    upload), and the close adds every
    group into the total as one merge instead of reading each envelope again; the total is
    exact."""
    monkeypatch.setattr(partials._policy, "every_updates", 1000)
    reads: list[str] = []

    def counting(read_back: Any) -> Any:
        def read(ctx: Any, job: Any, rnd: Any, sub: Submission) -> Any:
            reads.append(sub.provider_id)
            return read_back(ctx, job, rnd, sub)

        return read

    # Either way of reading an envelope back: checked from a file, or in one pass (groups).
    for name in ("replayed", "streamed"):
        monkeypatch.setattr(partials, name, counting(getattr(partials, name)))
    order = _by_group(scn)
    for i in order:
        _submit(scn, i)
    rnd, _, _ = _rows(scn)
    assert rnd.state == "closed"
    # Read back once each, but for the update that completed the group of 3: its group's
    # sum took it from the file it had just been checked in.
    assert sorted(reads) == sorted(p.id for j, p in enumerate(scn.providers) if j != order[2])
    agg = scn.client.get(f"/v1/jobs/{scn.job_id}/rounds/1/aggregate", headers=scn.buyer.headers)
    total = decrypt_aggregate(scn.keys, agg.content)
    assert sorted(total.provider_ids) == sorted(p.id for p in scn.providers)
    np.testing.assert_allclose(total.total, sum(_value(i) for i in range(PROVIDERS)), atol=1e-4)


def test_a_group_sum_recorded_whole_is_served_without_writing_it_again(
    scn: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each group's sum is built once, when its last member is in; the close points the
    group at that recorded sum instead of reading and writing it again, so the close writes
    one sum, the total, and each group serves exactly what was recorded (and decrypts to
    its members' values)."""
    monkeypatch.setattr(partials._policy, "every_updates", 1000)
    for i in _by_group(scn):
        _submit(scn, i)
    rnd, cps, _ = _rows(scn)
    assert rnd.state == "closed" and cps == []
    written = sorted(p.name for p in _round_dir(scn).glob("*.bin"))
    assert [n.split("-")[0] for n in written] == ["group", "group", "sum"], written
    for group in scn.round(1)["groups"]:
        got = scn.client.get(
            f"/v1/jobs/{scn.job_id}/rounds/1/groups/{group['index']}/aggregate",
            headers=scn.buyer.headers,
        )
        assert got.status_code == 200, got.text
        gsum = decrypt_aggregate(scn.keys, got.content)
        members = {p.id: i for i, p in enumerate(scn.providers)}
        assert sorted(gsum.provider_ids) == sorted(group["members"])
        expected = sum(_value(members[pid]) for pid in group["members"])
        np.testing.assert_allclose(gsum.total, expected, atol=1e-4)


def test_a_round_of_one_group_reads_back_only_what_no_partial_holds(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quorum is the whole round, so its one group completes with the update that
    closes it. The close merges the closing process's own partial from memory and reads
    back from the store only the closing update (before: every envelope of the round,
    once more each); the group's sum is the total itself, one blob, and both decrypt to
    the exact sum of all five."""
    monkeypatch.setattr(partials._policy, "every_updates", 1000)
    scn = running_job(
        client, clock, buyer_keys, providers=PROVIDERS, min_providers=PROVIDERS,
        max_providers=PROVIDERS, quorum=PROVIDERS, round_deadline_s=60,
    )  # fmt: skip
    reads: list[str] = []
    replayed = partials.replayed

    def counting(ctx: Any, job: Any, rnd: Any, sub: Submission) -> Any:
        reads.append(sub.provider_id)
        return replayed(ctx, job, rnd, sub)

    monkeypatch.setattr(partials, "replayed", counting)
    for i in range(PROVIDERS):
        _submit(scn, i)
    rnd, cps, _ = _rows(scn)
    assert rnd.state == "closed" and cps == []
    assert reads == [scn.providers[-1].id]
    (group,) = scn.round(1)["groups"]
    assert group["count"] == PROVIDERS
    assert [p.name.split("-")[0] for p in _round_dir(scn).glob("*.bin")] == ["sum"]
    want = sum(_value(i) for i in range(PROVIDERS))
    for path in ("aggregate", f"groups/{group['index']}/aggregate"):
        got = scn.client.get(f"/v1/jobs/{scn.job_id}/rounds/1/{path}", headers=scn.buyer.headers)
        assert got.status_code == 200, got.text
        agg = decrypt_aggregate(scn.keys, got.content)
        assert sorted(agg.provider_ids) == sorted(p.id for p in scn.providers)
        np.testing.assert_allclose(agg.total, want, atol=1e-4)
    assert partials.held() == {}


def _alter_payload(path: Path, *, keep_hash_consistent: bool) -> None:
    """Flip one bit of one coefficient of the sum file at `path`, its header untouched or
    with the payload hash it carries recomputed (crypto/sumfile.py's layout)."""
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    if keep_hash_consistent:
        header_len = int.from_bytes(data[6:10], "little")
        payload_start = 10 + header_len
        data[82:114] = hashlib.sha256(bytes(data[payload_start:])).digest()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("keep_hash_consistent", [False, True], ids=["corrupted", "forged"])
def test_a_checkpoint_altered_in_storage_is_left_out_and_its_updates_replayed(
    scn: Scenario, keep_hash_consistent: bool
) -> None:
    """A checkpoint's ciphertext bytes change in the blob store: a disk corrupts them, or
    someone who can write the bucket but not the database (a leaked bucket key) forges them
    and recomputes the hash the file carries. The close finds the blob is not the one its
    row hashed when it was written, leaves it out and replays the updates it held from their
    envelopes: the buyer's sum is exact, the round closes (it once failed on the corrupted
    file, at every deadline pass, and took the forged one silently)."""
    order = _by_group(scn)
    for i in order[:2]:
        _submit(scn, i)
    _, cps, _ = _rows(scn)
    assert len(cps) == 1 and len(cps[0].providers) == 2
    _alter_payload(
        Path(scn.client.app.state.blobs.root) / cps[0].key,  # type: ignore[attr-defined]
        keep_hash_consistent=keep_hash_consistent,
    )
    partials._partials.clear()  # only the checkpoint holds them now
    _closes_at_the_deadline_with_exactly(scn, order[:2])


def _group_sums_served_and_signed(scn: Scenario) -> list[tuple[str, str, list[str]]]:
    """Each released group of round 1: the sha256 of the bytes the buyer downloads, the one
    the signed round-closed record carries, and the providers the sum itself lists."""
    app: Any = scn.client.app
    with Session(app.state.engine) as s:
        leaf = s.exec(
            select(LogLeaf).where(LogLeaf.job_id == scn.job_id, LogLeaf.kind == "round-closed")
        ).one()
    out = []
    for group in json.loads(leaf.payload)["body"]["groups"]:
        url = f"/v1/jobs/{scn.job_id}/rounds/1/groups/{group['index']}/aggregate"
        served = scn.client.get(url, headers=scn.buyer.headers)
        assert served.status_code == 200, served.text
        listed = decrypt_aggregate(scn.keys, served.content).provider_ids
        out.append((hashlib.sha256(served.content).hexdigest(), group["sum_sha256"], listed))
    return out


@pytest.mark.parametrize("keep_hash_consistent", [False, True], ids=["corrupted", "forged"])
def test_a_group_sum_altered_in_storage_is_never_released_short(
    scn: Scenario, keep_hash_consistent: bool
) -> None:
    """The same attack on a group's sum, recorded once all 3 members were in (and their
    envelopes released, since the round's checkpoint holds them too). The close takes a
    group sum as it stands only when its blob hashes to what its row recorded at write
    time; this one does not, and the envelopes that could rebuild it are gone. The
    round's total is still exact, and the group's sum is withheld: rebuilt from what is
    left it held 1 update, one provider's own, which the buyer could decrypt (the close
    once released it so)."""
    order = _by_group(scn)
    for i in order[:3]:  # the larger group, complete: its sum is built and recorded
        _submit(scn, i)
    _, cps, subs = _rows(scn)
    (built,) = [c for c in cps if c.group_index is not None]
    assert sum(s.envelope_key is None for s in subs) == 2  # released: total and group hold them
    _alter_payload(
        Path(scn.client.app.state.blobs.root) / built.key,  # type: ignore[attr-defined]
        keep_hash_consistent=keep_hash_consistent,
    )
    _closes_at_the_deadline_with_exactly(scn, order[:3])
    assert _group_sums_served_and_signed(scn) == []
    r = scn.client.get(
        f"/v1/jobs/{scn.job_id}/rounds/1/groups/0/aggregate", headers=scn.buyer.headers
    )
    assert r.status_code == 409 and r.headers["content-type"].startswith("application/problem")


def test_a_damaged_group_sum_never_lets_the_total_isolate_one_update(
    scn: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The difference attack after damage: a, d are checkpointed into the total; b, c
    complete group {a, b, c}, whose sum is recorded, so a's envelope is released (both
    parts hold it). The group's sum is then forged in storage. The close rebuilds it from
    b's and c's envelopes and merges d's one-member group into it: {b, c, d}, which alone
    would be fine, but the total holds a, b, c, d, so total − {b, c, d} is a's update by
    itself. Every group sum of the round is withheld instead; the total stays exact (the
    close once released {b, c, d})."""
    order = _by_group(scn)
    a, b, c, d = order[0], order[1], order[2], order[3]
    _submit(scn, a)
    _submit(scn, d)  # the second update: a checkpoint of the total holds a and d
    monkeypatch.setattr(partials._policy, "every_updates", 1000)
    _submit(scn, b)
    _submit(scn, c)  # completes the larger group: its sum is built and recorded
    _, cps, subs = _rows(scn)
    (built,) = [cp for cp in cps if cp.group_index is not None]
    released = {sb.provider_id for sb in subs if sb.envelope_key is None}
    assert released == {scn.providers[a].id}
    _alter_payload(
        Path(scn.client.app.state.blobs.root) / built.key,  # type: ignore[attr-defined]
        keep_hash_consistent=True,
    )
    _closes_at_the_deadline_with_exactly(scn, [a, b, c, d])
    assert _group_sums_served_and_signed(scn) == []
    rnd = scn.round(1)
    assert all(g["count"] == 0 for g in rnd["groups"]), rnd["groups"]


@pytest.mark.parametrize("keep_hash_consistent", [False, True], ids=["corrupted", "forged"])
def test_a_group_sum_altered_before_its_envelopes_go_is_rebuilt_and_signed_as_served(
    scn: Scenario, keep_hash_consistent: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same, while the members' envelopes are still stored (no checkpoint of the total
    holds them yet, so none was released): the close rebuilds the group's sum from them,
    the buyer's sum holds exactly its members and the signed record carries the hash of the
    bytes served."""
    monkeypatch.setattr(partials._policy, "every_updates", 1000)
    order = _by_group(scn)
    for i in order[:3]:
        _submit(scn, i)
    _, cps, subs = _rows(scn)
    (built,) = cps
    assert built.group_index is not None and all(s.envelope_key for s in subs)
    _alter_payload(
        Path(scn.client.app.state.blobs.root) / built.key,  # type: ignore[attr-defined]
        keep_hash_consistent=keep_hash_consistent,
    )
    _closes_at_the_deadline_with_exactly(scn, order[:3])
    ((served, signed, listed),) = _group_sums_served_and_signed(scn)
    assert served == signed
    assert sorted(listed) == sorted(scn.providers[i].id for i in order[:3])


def test_the_close_reads_a_group_sum_once_to_check_it_and_signs_its_recorded_hash(
    scn: Scenario, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group sum recorded whole is checked at close by streaming it once through SHA-256
    (against the hash its row recorded when it was written); it is neither parsed into a
    sum nor read again to hash it for the signed record, and a group sum the close writes
    is not read back to hash it (3 reads here before, about 200 at 1,000 providers, under
    the job's lock)."""
    order = _by_group(scn)
    app: Any = scn.client.app
    reads: list[str] = []
    store = app.state.blobs
    for name in ("open_read", "open_file"):
        real = getattr(store, name)

        def counting(key: str, _real: Any = real) -> Any:
            reads.append(key)
            return _real(key)

        monkeypatch.setattr(store, name, counting)
    for i in order:
        _submit(scn, i)  # both groups complete; the last update closes the round
    rnd, _, _ = _rows(scn)
    assert rnd.state == "closed"
    # The first group was built when its last member came in, and is read once; the last
    # update closed the round, so the close built the second from its envelopes and wrote
    # it (not read back).
    group_reads = [k for k in reads if "/group-" in k]
    assert len(group_reads) == 1, group_reads
    sums = _group_sums_served_and_signed(scn)
    assert len(sums) == 2 and all(served == signed for served, signed, _ in sums)


@contextmanager
def _job_held_elsewhere(settings: Settings, engine: Any, job_id: str) -> Iterator[None]:
    """The job held, for 10 s at most, as a long close holds it: by another connection's
    row lock on PostgreSQL (another process), by another thread of this process on SQLite
    (one process serves it)."""
    taken, done = threading.Event(), threading.Event()

    def hold() -> None:
        if settings.database_url.startswith("postgres"):
            with psycopg.connect(settings.database_url) as other:
                other.execute("SELECT id FROM job WHERE id = %s FOR UPDATE", (job_id,))
                taken.set()
                done.wait(10)
                other.rollback()
            return
        with Session(engine) as s, locks.locked_job(s, job_id):
            taken.set()
            done.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert taken.wait(10)
    try:
        yield
    finally:
        done.set()
        holder.join()


def test_a_checkpoint_does_not_wait_for_a_close_under_way(
    scn: Scenario, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint falls due while a close holds the job for seconds: it gives up after
    `RECORD_WAIT_S` (so the upload that made it due is answered without waiting for the
    close, as uploads once waited 6 s at 1,000 providers) and loses nothing: the update is
    still in its envelope and the round's sum holds it."""
    monkeypatch.setattr(partials, "RECORD_WAIT_S", 0.3)
    order = _by_group(scn)
    _submit(scn, order[0])
    app: Any = scn.client.app
    rnd, _, _ = _rows(scn)
    with _job_held_elsewhere(settings, app.state.engine, scn.job_id):
        started = time.monotonic()
        recorded = partials.checkpoint(app.state.engine, rnd.id)
        waited = time.monotonic() - started
    assert (recorded, waited < 2.0) == (False, True), waited
    _, cps, subs = _rows(scn)
    assert cps == [] and all(s.envelope_key is not None for s in subs)
    _submit(scn, order[1])  # the quorum (2), into a new partial
    _closes_at_the_deadline_with_exactly(scn, order[:2])
