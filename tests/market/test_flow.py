"""The whole happy path through the API: from accounts to a completed job."""

from __future__ import annotations

import numpy as np
from fastapi.testclient import TestClient

from crypto import BuyerKeys, decrypt_aggregate
from tests.utils.clock import FakeClock
from tests.utils.factories import model_file
from tests.utils.scenario import PARAMS, running_job


def test_two_round_job_end_to_end(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Three providers train two rounds; the buyer decrypts each round's weighted sum."""
    scn = running_job(client, clock, buyer_keys, rounds=2)
    buyer = scn.buyer
    for number in (1, 2):
        for i, p in enumerate(scn.providers):
            rnd = scn.round(number, p)
            assert rnd["state"] == "collecting" and rnd["param_count"] == PARAMS
            model = client.get(f"/v1/jobs/{scn.job_id}/rounds/{number}/model", headers=p.headers)
            assert model.status_code == 200
            env = scn.envelope(p, number, value=0.1 * (i + 1))
            r = scn.submit(p, number, env)
            assert r.status_code == 201, r.text
            assert r.json()["round"] == number
        assert scn.round(number)["state"] == "closed"
        agg = client.get(f"/v1/jobs/{scn.job_id}/rounds/{number}/aggregate", headers=buyer.headers)
        assert agg.status_code == 200
        dec = decrypt_aggregate(scn.keys, agg.content)
        assert dec.count == 3
        np.testing.assert_allclose(dec.total, np.full(PARAMS, 0.6), atol=1e-3)
        r = client.post(
            f"/v1/jobs/{scn.job_id}/rounds/{number}/metrics",
            json={"loss": 0.4, "accuracy": 0.9},
            headers=buyer.headers,
        )
        assert r.status_code == 200, r.text
        if number == 1:
            r = client.put(
                f"/v1/jobs/{scn.job_id}/rounds/2/model",
                content=model_file(seed=1),
                headers=buyer.headers,
            )
            assert r.status_code == 201, r.text
    r = client.post(f"/v1/jobs/{scn.job_id}/complete", headers=buyer.headers)
    assert r.status_code == 200, r.text
    job = scn.job()
    assert job["state"] == "completed"
    assert [rd["state"] for rd in job["rounds"]] == ["published", "closed"]
    assert job["rounds"][0]["metrics"] == {"loss": 0.4, "accuracy": 0.9}
    assert sorted(job["rounds"][1]["included"]) == sorted(p.id for p in scn.providers)


def test_openapi_docs_are_served(client: TestClient) -> None:
    """/docs and the OpenAPI document are public."""
    assert client.get("/docs").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "/v1/jobs/{job_id}/rounds/{number}/submission" in spec["paths"]
