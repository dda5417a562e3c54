"""Hostile uploads are refused with a 4xx and change nothing: oversized, garbage, another
buyer's key, replays into another job or round, someone else's envelope, duplicates, late."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from crypto import Accumulator, BuyerKeys, decrypt_aggregate
from market import Settings, create_app
from market.models import Round, Submission
from tests.utils.clock import FakeClock
from tests.utils.scenario import Scenario, draft_job, fund, running_job
from tests.utils.snapshot import snapshot


@pytest.fixture
def scn(client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys) -> Scenario:
    return running_job(client, clock, buyer_keys, round_deadline_s=60)


def _refused(scn: Scenario, data: bytes, status: int, code: str | None = None) -> None:
    before = snapshot(scn.client)
    r = scn.submit(scn.providers[0], 1, data)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    if code is not None:
        assert r.json()["code"] == code
    assert snapshot(scn.client) == before
    assert scn.round(1)["submitted"] == 0


def test_oversized_upload_is_413(scn: Scenario) -> None:
    """An upload larger than any valid envelope for the job is cut off with 413."""
    good = scn.envelope(scn.providers[0], 1)
    _refused(scn, good + b"\0" * 2_000_000, 413)


def test_oversized_streamed_upload_is_413(scn: Scenario) -> None:
    """Without a Content-Length the limit still holds while streaming."""

    def chunks() -> Iterator[bytes]:
        for _ in range(64):
            yield b"\0" * 65536

    before = snapshot(scn.client)
    p = scn.providers[0]
    r = scn.client.put(
        f"/v1/jobs/{scn.job_id}/rounds/1/submission", content=chunks(), headers=p.headers
    )
    assert r.status_code == 413
    assert snapshot(scn.client) == before


def test_garbage_envelope_is_422(scn: Scenario) -> None:
    """Random bytes are refused as a malformed envelope."""
    _refused(scn, b"PLN-garbage" * 100, 422)
    _refused(scn, b"", 422)


def test_truncated_envelope_is_422(scn: Scenario) -> None:
    """A genuine envelope cut short is refused."""
    good = scn.envelope(scn.providers[0], 1)
    _refused(scn, good[: len(good) // 2], 422)


def test_another_buyers_key_is_422(scn: Scenario, other_buyer_keys: BuyerKeys) -> None:
    """An update encrypted under another buyer's context is refused (fingerprint mismatch)."""
    data = scn.envelope(scn.providers[0], 1, keys=other_buyer_keys)
    _refused(scn, data, 422, "fingerprint-mismatch")


def test_envelope_for_another_round_is_422(scn: Scenario) -> None:
    """An envelope bound to round 2 cannot be added to round 1."""
    _refused(scn, scn.envelope(scn.providers[0], 2), 422, "binding-mismatch")


def test_someone_elses_envelope_is_422(scn: Scenario) -> None:
    """A provider cannot upload an envelope made by (and bound to) another provider."""
    _refused(scn, scn.envelope(scn.providers[1], 1), 422, "binding-mismatch")


def test_replay_into_another_job_is_422(scn: Scenario) -> None:
    """An envelope accepted in one job, replayed into another job of the same buyer and key,
    is refused: the binding names the job."""
    client, p = scn.client, scn.providers[0]
    other = draft_job(client, scn.keys, scn.buyer, max_providers=3)
    fund(client, other, scn.buyer, scn.admin, 10_000)
    other_scn = Scenario(client, scn.clock, scn.keys, scn.buyer, scn.admin, scn.providers, other)
    for provider in scn.providers:
        assert other_scn.accept(provider).status_code == 200
    accepted = scn.envelope(p, 1)
    assert other_scn.submit(p, 1, accepted).status_code == 422
    assert scn.submit(p, 1, accepted).status_code == 201
    before = snapshot(client)
    assert other_scn.submit(p, 1, accepted).status_code == 422
    assert snapshot(client) == before


def test_second_submission_is_409_with_the_first_result(scn: Scenario) -> None:
    """A retry returns 409 carrying the first receipt and leaves the sum untouched."""
    p = scn.providers[0]
    first = scn.submit(p, 1)
    assert first.status_code == 201
    before = snapshot(scn.client)
    again = scn.submit(p, 1, scn.envelope(p, 1, value=0.9))
    assert again.status_code == 409
    body = again.json()
    assert body["code"] == "duplicate-submission"
    assert body["first"] == first.json()
    assert snapshot(scn.client) == before
    assert scn.round(1)["submitted"] == 1


def test_late_submission_is_409(scn: Scenario) -> None:
    """After the round closed, an upload is refused and the closed sum stays as it was."""
    for p in scn.providers[:2]:
        assert scn.submit(p, 1).status_code == 201
    scn.clock.advance(61)
    scn.tick()
    before = snapshot(scn.client)
    late = scn.submit(scn.providers[2], 1)
    assert late.status_code == 409 and late.json()["code"] == "round-not-collecting"
    assert snapshot(scn.client) == before


def test_submission_to_unknown_round_is_404(scn: Scenario) -> None:
    """Round numbers that do not exist yet are not found."""
    p = scn.providers[0]
    r = scn.client.put(
        f"/v1/jobs/{scn.job_id}/rounds/2/submission", content=b"x", headers=p.headers
    )
    assert r.status_code == 404


def test_concurrent_submissions_all_land_in_the_sum(scn: Scenario) -> None:
    """Uploads racing on one round are serialized: none is lost from the encrypted sum."""
    envelopes = {p.id: scn.envelope(p, 1, value=0.1 * (i + 1)) for i, p in enumerate(scn.providers)}
    with ThreadPoolExecutor(max_workers=3) as pool:
        codes = list(
            pool.map(lambda p: scn.submit(p, 1, envelopes[p.id]).status_code, scn.providers)
        )
    assert codes == [201, 201, 201]
    assert scn.round(1)["state"] == "closed"
    agg = scn.client.get(f"/v1/jobs/{scn.job_id}/rounds/1/aggregate", headers=scn.buyer.headers)
    total = decrypt_aggregate(scn.keys, agg.content)
    assert total.count == 3
    np.testing.assert_allclose(total.total, np.full(scn.param_count, 0.6), atol=1e-3)


def _temp_uploads(scn: Scenario) -> list[str]:
    app: Any = scn.client.app
    return sorted(p.name for p in (app.state.blobs.root / ".tmp").glob("*"))


def test_refused_uploads_leave_no_temp_file(scn: Scenario) -> None:
    """Uploads refused with 413 (declared too large, or streamed past the limit without a
    Content-Length), 422 or 409 leave no partial file in the blob store, and neither does an
    accepted one (its update lives on only inside the round's sum)."""
    p = scn.providers[0]
    url = f"/v1/jobs/{scn.job_id}/rounds/1/submission"
    good = scn.envelope(p, 1)
    oversize = good + b"\0" * 2_000_000
    assert scn.submit(p, 1, oversize).status_code == 413
    assert _temp_uploads(scn) == []
    streamed = (oversize[i : i + 65536] for i in range(0, len(oversize), 65536))
    r = scn.client.put(url, content=streamed, headers=p.headers)
    assert r.status_code == 413 and "content-length" not in r.request.headers
    assert _temp_uploads(scn) == []
    assert scn.submit(p, 1, good[:-10]).status_code == 422
    assert _temp_uploads(scn) == []
    assert scn.submit(p, 1, good).status_code == 201
    assert scn.submit(p, 1, good).status_code == 409
    assert _temp_uploads(scn) == []
    assert scn.round(1)["submitted"] == 1


def test_round_keeps_its_envelopes_until_one_sum_holds_them(scn: Scenario) -> None:
    """While the round collects, each accepted update is one stored envelope and no running
    sum is rewritten per update (bytes written per update: one envelope); once it closes,
    one sum remains, the envelopes are gone, and the sum decrypts to the total."""
    app: Any = scn.client.app
    round_dir = app.state.blobs.root / "jobs" / scn.job_id / "rounds" / "0001"
    for i, p in enumerate(scn.providers):
        assert scn.submit(p, 1, scn.envelope(p, 1, value=0.1 * (i + 1))).status_code == 201
        if i + 1 < len(scn.providers):
            assert len(list(round_dir.glob("env-*.bin"))) == i + 1
            assert list(round_dir.glob("sum-*.bin")) == []
    assert list(round_dir.glob("env-*.bin")) == []
    assert list(round_dir.glob("partial-*.bin")) == []
    assert len(list(round_dir.glob("sum-*.bin"))) == 1
    agg = scn.client.get(f"/v1/jobs/{scn.job_id}/rounds/1/aggregate", headers=scn.buyer.headers)
    assert agg.status_code == 200
    total = decrypt_aggregate(scn.keys, agg.content)
    np.testing.assert_allclose(total.total, np.full(scn.param_count, 0.6), atol=1e-3)


def test_no_envelope_outlives_the_sum_that_holds_it(scn: Scenario) -> None:
    """Less to steal: once an update is inside a committed sum, its envelope exists nowhere
    (not in the blob store, not named by any row); the round's folder holds only the sum,
    and the sum's own provider list is who the round pays."""
    app: Any = scn.client.app
    blobs_root = app.state.blobs.root
    for p in scn.providers:
        assert scn.submit(p, 1).status_code == 201
    stored = sorted(str(f.relative_to(blobs_root)) for f in blobs_root.rglob("*") if f.is_file())
    assert not [name for name in stored if "envelope" in name], stored
    # The round's folder: its total sum and the sum of each random group, nothing else.
    in_round = [name for name in stored if "/rounds/" in name]
    assert in_round and all("/sum-" in name or "/group-" in name for name in in_round)
    assert sum("/sum-" in name for name in in_round) == 1
    with Session(app.state.engine) as session:
        subs = session.exec(select(Submission).where(Submission.job_id == scn.job_id)).all()
        assert len(subs) == 3 and all(s.envelope_key is None for s in subs)
        rnd = session.exec(select(Round).where(Round.job_id == scn.job_id)).one()
        acc = Accumulator.from_bytes(app.state.blobs.get_bytes(rnd.acc_key))
    assert sorted(acc.provider_ids) == sorted(rnd.acc_providers) == sorted(scn.round(1)["included"])
    receipt = scn.client.get(f"/v1/jobs/{scn.job_id}/receipt", headers=scn.buyer.headers).json()
    assert set(receipt["rounds"][0]["shares"]) == set(acc.provider_ids)


def test_the_last_update_resent_after_the_job_ended_gets_its_first_receipt(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """The answer to a job's last update is lost on the way back; by the time its agent
    sends the envelope again, that update closed the round and the buyer completed the job. The
    resend is answered 409 `duplicate-submission` with the first receipt, as any resend
    is (409 `invalid-state` before: the agent could never record its round as sent)."""
    scn = running_job(client, clock, buyer_keys, rounds=1, round_deadline_s=60)
    bodies = {p.id: scn.envelope(p, 1) for p in scn.providers}
    answers = [scn.submit(p, 1, bodies[p.id]) for p in scn.providers]
    assert [r.status_code for r in answers] == [201, 201, 201]
    done = scn.client.post(f"/v1/jobs/{scn.job_id}/complete", headers=scn.buyer.headers)
    assert done.status_code == 200 and done.json()["state"] == "completed", done.text
    last = scn.providers[-1]
    before = snapshot(scn.client)
    again = scn.submit(last, 1, bodies[last.id])
    assert again.status_code == 409, again.text
    assert again.json()["code"] == "duplicate-submission"
    first = again.json()["first"]
    assert first["submission_id"] == answers[-1].json()["submission_id"]
    assert first["record"] == answers[-1].json()["record"]
    assert snapshot(scn.client) == before
    # An update for a round the ended job never opened is still told the job is over.
    late = scn.submit(scn.providers[0], 2)
    assert late.status_code == 409 and late.json()["code"] == "invalid-state", late.text


def test_an_acceptance_writes_no_list_that_grows_with_the_round(scn: Scenario) -> None:
    """An accepted update adds one count to its round's row, not the whole list of providers
    accepted so far (rewritten at every acceptance, that cost O(providers²) bytes a round):
    who is in stays in the `Submission` rows until the close lists the sum's own providers."""
    app: Any = scn.client.app
    for p in scn.providers[:2]:
        assert scn.submit(p, 1).status_code == 201
    with Session(app.state.engine) as session:
        rnd = session.exec(select(Round).where(Round.job_id == scn.job_id)).one()
        assert rnd.state == "collecting" and rnd.acc_count == 2
        assert rnd.acc_providers == []
    assert scn.submit(scn.providers[2], 1).status_code == 201
    assert sorted(scn.round(1)["included"]) == sorted(p.id for p in scn.providers)


def test_startup_deletes_envelopes_an_earlier_version_kept(settings: Settings) -> None:
    """Envelopes stored by an earlier version (every one is inside its round's sum) are
    deleted when the server starts; the sums stay."""
    root = settings.blob_root / "jobs" / "job_old" / "rounds" / "0001"
    (root / "envelopes").mkdir(parents=True)
    envelope = root / "envelopes" / "prv_a-sub_b.bin"
    envelope.write_bytes(b"old envelope")
    (root / "acc-0001-sub_b.bin").write_bytes(b"a sum")
    with TestClient(create_app(settings)):
        pass
    assert not envelope.exists()
    assert (root / "acc-0001-sub_b.bin").exists()
