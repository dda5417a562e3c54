"""Reading never changes state: every GET endpoint of the API and the dashboard, called by
every party of a job whose collecting round is past its deadline, leaves every row and blob
as it was (the deadline is the background task's to apply, or the next write's)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from crypto import BuyerKeys
from tests.utils.clock import FakeClock
from tests.utils.scenario import running_job
from tests.utils.snapshot import snapshot


def test_every_get_leaves_the_database_unchanged_past_a_deadline(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    scn = running_job(client, clock, buyer_keys, providers=3, quorum=2, max_providers=3)
    for p in scn.providers[:2]:
        assert scn.submit(p, 1).status_code == 201
    clock.advance(2 * 86400)  # round 1 is overdue: a GET that applied it would close it
    provider = scn.providers[0]
    ids = {
        "job_id": scn.job_id,
        "number": "1",
        "round_number": "1",
        "provider_id": provider.id,
        "account_id": provider.id,
        "listing_id": scn.listings[provider.id],
        "index": "0",
        "group_index": "0",
    }
    spec = client.get("/openapi.json").json()
    gets = sorted(p for p, ops in spec["paths"].items() if "get" in ops)
    pages = ["/ui", "/ui/login", f"/ui/jobs/{scn.job_id}", f"/ui/jobs/{scn.job_id}/model",
             "/ui/ledger", "/ui/account", f"/ui/providers/{provider.id}",
             f"/ui/providers/{provider.id}/payouts"]  # fmt: skip
    before = snapshot(client)
    answered = 0
    for path in gets:
        url = path.format(**{k: ids.get(k, "0") for k in _fields(path)})
        if "consistency" in url:
            url += "?first=1&second=1"
        elif "inclusion" in url:
            url += "?index=0&size=1"
        for who in (scn.buyer, provider, scn.admin):
            r = client.get(url, headers=who.headers)
            assert r.status_code < 500, f"GET {url}: {r.status_code} {r.text[:200]}"
            answered += r.status_code == 200
            assert snapshot(client) == before, f"GET {url} as {who.role} changed state"
    for who in (scn.buyer, provider, scn.admin):
        browser = TestClient(client.app, base_url="http://testserver")
        r = browser.post("/ui/login", data={"api_key": who.api_key}, follow_redirects=False)
        assert r.status_code == 303, r.text
        before = snapshot(client)  # signing in writes nothing either, but compare from here
        for page in pages:
            r = browser.get(page)
            assert r.status_code in (200, 403, 404), f"GET {page}: {r.status_code}"
            answered += r.status_code == 200
            assert snapshot(client) == before, f"GET {page} as {who.role} changed state"
    assert answered >= 2 * len(gets) + len(pages)  # the reads really ran, not only refusals
    assert scn.round(1)["state"] == "collecting"
    scn.tick()  # the deadline task does apply it
    assert scn.round(1)["state"] == "closed"


def _fields(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]
