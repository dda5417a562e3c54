"""An open job says why it waits: listings that fit it, and why the others are left out."""

from __future__ import annotations

from fastapi.testclient import TestClient

from crypto import BuyerKeys
from tests.utils.clock import FakeClock
from tests.utils.factories import SCHEMA, listing_body, register
from tests.utils.scenario import open_job


def test_matching_status_counts_fitting_listings_and_reasons(
    client: TestClient, clock: FakeClock
) -> None:
    """Extra column, wrong label, a gap without fill, a price above the cap: each counted under
    its reason, without naming the listing's own columns; only the buyer may read it."""
    scn = open_job(client, clock, BuyerKeys.generate(), providers=2, min_providers=3,
                   max_providers=3)  # fmt: skip
    extra = {**SCHEMA, "features": [*SCHEMA["features"], {"name": "zip_code", "type": "int"}]}
    gap = {**SCHEMA, "features": [{"name": "age", "type": "int", "missing": True},
                                  *SCHEMA["features"][1:]]}  # fmt: skip
    other_label = {**SCHEMA, "label": {"name": "outcome", "classes": [0, 1]}}
    for i, body in enumerate([
        listing_body(schema=extra), listing_body(schema=gap),
        listing_body(schema=other_label), listing_body(ask_cents=900),
    ]):  # fmt: skip
        p = register(client, "provider", f"odd{i}")
        assert client.post("/v1/listings", json=body, headers=p.headers).status_code == 201
    r = client.get(f"/v1/jobs/{scn.job_id}/matching", headers=scn.buyer.headers)
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["listings"], report["min_providers"]) == (6, 3)
    assert report["offers"] == {"pending": 2}
    reasons = {e["reason"]: e["listings"] for e in report["excluded"]}
    assert reasons == {
        "already had an offer for this job": 2,
        "schema: the listing has columns the job does not": 1,
        "schema: column 'age' has missing values and the job declares no fill": 1,
        "schema: the listing has another label column": 1,
        "asks more than the price cap of 500 cents a round": 1,
    }
    assert "zip_code" not in r.text and "outcome" not in r.text
    other = register(client, "buyer", "nosy")
    assert client.get(f"/v1/jobs/{scn.job_id}/matching", headers=other.headers).status_code in (
        403,
        404,
    )
