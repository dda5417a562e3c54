"""The web dashboard through the real app: pages, sessions, visibility rules, charts, money.

The pages are read as a browser would get them (TestClient, cookies kept between requests);
the browser itself is driven in `tests/e2e/test_dashboard.py`.
"""

from __future__ import annotations

import itertools
import re
import stat
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from crypto import BuyerKeys
from market.ui import charts
from market.ui import session as ui_session
from market.ui.format import money
from tests.utils.clock import FakeClock
from tests.utils.factories import Actor, model_file, register
from tests.utils.scenario import PARAMS, Scenario, running_job

METRICS = [{"loss": 0.61, "accuracy": 0.8125}, {"loss": 0.42, "accuracy": 0.9}]


@dataclass
class Done:
    scn: Scenario
    client: TestClient

    @property
    def job_id(self) -> str:
        return self.scn.job_id


@pytest.fixture
def done(client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys) -> Done:
    """A completed 2-round job with metrics (3 providers, then 2), paid out in a batch."""
    scn = running_job(client, clock, buyer_keys, budget_cents=10_000, round_deadline_s=5)
    for p in scn.providers:
        assert scn.submit(p, 1).status_code == 201
    base = f"/v1/jobs/{scn.job_id}/rounds"
    r = client.post(f"{base}/1/metrics", json=METRICS[0], headers=scn.buyer.headers)
    assert r.status_code == 200, r.text
    r = client.put(f"{base}/2/model", content=model_file(PARAMS), headers=scn.buyer.headers)
    assert r.status_code == 201, r.text
    for p in scn.providers[:2]:
        assert scn.submit(p, 2).status_code == 201
    clock.advance(6)
    scn.tick()
    r = client.post(f"{base}/2/metrics", json=METRICS[1], headers=scn.buyer.headers)
    assert r.status_code == 200, r.text
    r = client.post(f"/v1/jobs/{scn.job_id}/complete", headers=scn.buyer.headers)
    assert r.status_code == 200, r.text
    batch = client.post("/v1/admin/payouts/run", headers=scn.admin.headers).json()["batch"]
    r = client.post(f"/v1/admin/payouts/{batch['id']}/mark-paid", headers=scn.admin.headers)
    assert r.status_code == 200, r.text
    return Done(scn, client)


def sign_in(client: TestClient, actor: Actor, next_path: str = "/ui/account") -> None:
    client.cookies.clear()
    r = client.post(
        "/ui/login", data={"api_key": actor.api_key, "next": next_path}, follow_redirects=False
    )
    assert r.status_code == 303, r.text
    assert r.headers["location"] == next_path


def svg(html: str, chart_id: str) -> str:
    match = re.search(rf'<svg[^>]*data-chart="{chart_id}".*?</svg>', html, re.S)
    assert match is not None, f"no chart {chart_id}"
    return match.group(0)


# ---------------------------------------------------------------- public pages, refusals


def test_public_pages_load_without_signing_in(done: Done) -> None:
    """Marketplace, a provider's reputation and the ledger check are open to anyone."""
    c = done.client
    page = c.get("/ui")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "Providers by reputation" in page.text
    assert all(f"/ui/providers/{p.id}" in page.text for p in done.scn.providers)
    # An anonymous visitor is not shown jobs (the API lists none to it either).
    assert f"/ui/jobs/{done.job_id}" not in page.text and "diabetes risk" not in page.text
    ledger = c.get("/ui/ledger")
    assert ledger.status_code == 200 and "Chain intact" in ledger.text
    assert "Platform totals" not in ledger.text and "provider:" not in ledger.text
    rep = c.get(f"/ui/providers/{done.scn.providers[0].id}")
    assert rep.status_code == 200 and "Reputation over time" in rep.text
    assert "Earnings and payouts" not in rep.text


def test_private_pages_redirect_to_the_login_form(done: Done) -> None:
    """Without a session, account, job and payouts pages send the visitor to sign in."""
    for path in ("/ui/account", f"/ui/jobs/{done.job_id}",
                 f"/ui/providers/{done.scn.providers[0].id}/payouts"):  # fmt: skip
        r = done.client.get(path, follow_redirects=False)
        assert r.status_code == 303, path
        assert r.headers["location"] == f"/ui/login?next={path}"


def test_refusals_are_html_pages_with_their_status(done: Done) -> None:
    """Unknown pages and other buyers' jobs answer 404 as a page, not JSON or a traceback."""
    c = done.client
    missing = c.get("/ui/no-such-page")
    assert missing.status_code == 404 and "<h1>Not found</h1>" in missing.text
    assert c.get("/ui/", follow_redirects=False).headers["location"] == "/ui"
    stranger = register(c, "buyer", "stranger")
    sign_in(c, stranger)
    hidden = c.get(f"/ui/jobs/{done.job_id}")
    assert hidden.status_code == 404 and hidden.headers["content-type"].startswith("text/html")
    assert "Traceback" not in hidden.text and "diabetes risk" not in hidden.text
    assert c.get("/ui/providers/prv_nobody").status_code == 404


def test_dashboard_is_outside_the_openapi_schema(client: TestClient) -> None:
    """The schema the API's fuzzers read lists no /ui page."""
    paths = client.get("/openapi.json").json()["paths"]
    assert paths and not [p for p in paths if p.startswith("/ui")]


def test_pages_forbid_scripts_and_framing(client: TestClient) -> None:
    """Every page is served with a CSP that allows no script and no other origin."""
    r = client.get("/ui")
    csp = r.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "<script" not in r.text
    assert client.get("/ui/static/style.css").status_code == 200


# ---------------------------------------------------------------- sessions


def test_login_sets_a_signed_httponly_strict_cookie_without_the_key(done: Done) -> None:
    """Signing in sets an HttpOnly, SameSite=Strict session for /ui that does not hold the key."""
    c, buyer = done.client, done.scn.buyer
    r = c.post("/ui/login", data={"api_key": buyer.api_key}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ui/account"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith(f"{ui_session.COOKIE}=")
    assert "HttpOnly" in cookie and "samesite=strict" in cookie.lower() and "Path=/ui" in cookie
    assert buyer.api_key not in cookie and buyer.api_key[3:20] not in cookie
    me = c.get("/ui/account")
    assert me.status_code == 200 and buyer.id in me.text and "My jobs" in me.text


def test_wrong_key_shows_the_form_again_with_401(client: TestClient) -> None:
    """A wrong key gets the form back with an error message, and no cookie."""
    r = client.post("/ui/login", data={"api_key": "pk_wrong"}, follow_redirects=False)
    assert r.status_code == 401
    assert "not valid" in r.text and 'id="api_key"' in r.text and 'aria-invalid="true"' in r.text
    assert "set-cookie" not in r.headers


def test_repeated_wrong_keys_are_rate_limited(client: TestClient) -> None:
    """The login form shares the API's failed-key limit: past it, 429 with Retry-After."""
    limit = client.app.state.settings.auth_fail_limit  # type: ignore[attr-defined]
    for _ in range(limit):
        assert client.post("/ui/login", data={"api_key": "pk_guess"}).status_code == 401
    r = client.post("/ui/login", data={"api_key": "pk_guess"})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1
    assert "Too many failed sign-ins" in r.text


def test_tampered_cookie_is_no_session(done: Done) -> None:
    """A cookie whose account or expiry was edited is refused (back to the login form)."""
    c = done.client
    sign_in(c, done.scn.buyer)
    account_id, expires, sig = c.cookies[ui_session.COOKIE].split(".")
    forged = [
        f"{done.scn.admin.id}.{expires}.{sig}",
        f"{account_id}.{int(expires) + 86400}.{sig}",
        f"{account_id}.{expires}.{sig[:-2]}AA",
        "garbage",
    ]
    for value in forged:
        c.cookies.clear()
        c.cookies.set(ui_session.COOKIE, value, path="/ui")
        r = c.get("/ui/account", follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/ui/login"), value


def test_expired_session_is_refused(done: Done, clock: FakeClock) -> None:
    """A session past its time to live no longer signs the visitor in."""
    c = done.client
    sign_in(c, done.scn.buyer)
    assert c.get("/ui/account", follow_redirects=False).status_code == 200
    clock.advance(c.app.state.settings.ui_session_ttl_s + 1)  # type: ignore[attr-defined]
    assert c.get("/ui/account", follow_redirects=False).status_code == 303


def test_logout_ends_the_session(done: Done) -> None:
    """Signing out clears the cookie: private pages ask to sign in again."""
    c = done.client
    sign_in(c, done.scn.buyer)
    r = c.post("/ui/logout", follow_redirects=False)
    assert r.status_code == 303 and ui_session.COOKIE in r.headers["set-cookie"]
    assert c.get("/ui/account", follow_redirects=False).status_code == 303


def test_login_never_redirects_off_the_dashboard(client: TestClient, done: Done) -> None:
    """A `next` pointing at another site lands on the account page instead."""
    for target in ("https://evil.example/", "//evil.example/ui", "/v1/accounts/me"):
        r = client.post(
            "/ui/login",
            data={"api_key": done.scn.buyer.api_key, "next": target},
            follow_redirects=False,
        )
        assert r.headers["location"] == "/ui/account", target


def test_session_secret_is_generated_once_with_mode_0600(client: TestClient) -> None:
    """Without a configured secret, one is written to the data folder, readable by us only."""
    settings = client.app.state.settings  # type: ignore[attr-defined]
    first = ui_session.load_secret(settings)
    path = settings.data_dir / ui_session.SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ui_session.load_secret(settings) == first and len(first) >= 32


# ---------------------------------------------------------------- who sees what


def test_job_chart_has_one_point_per_round(done: Done) -> None:
    """The buyer's job page plots accuracy and loss with exactly one point per round."""
    c = done.client
    sign_in(c, done.scn.buyer)
    html = c.get(f"/ui/jobs/{done.job_id}").text
    accuracy, loss = svg(html, "accuracy"), svg(html, "loss")
    assert accuracy.count("<circle") == len(METRICS) == loss.count("<circle")
    assert "Round 1: accuracy 0.8125" in accuracy and "Round 2: loss 0.4200" in loss
    assert "<title" in accuracy and ">Round</text>" in accuracy


def test_buyer_sees_the_money_and_every_provider(done: Done) -> None:
    """The buyer's job page shows funded / spent / escrow with currency and who was in."""
    c = done.client
    sign_in(c, done.scn.buyer)
    html = c.get(f"/ui/jobs/{done.job_id}").text
    assert "Funded" in html and "USD 100.00" in html and "In escrow" in html
    assert "USD 5.00 fees" in html
    assert all(f"/ui/providers/{p.id}" in html for p in done.scn.providers)


def test_provider_sees_only_itself_on_the_job(done: Done) -> None:
    """A provider's job page names no other provider and shows only its own money."""
    c = done.client
    me, *others = done.scn.providers
    sign_in(c, me)
    html = c.get(f"/ui/jobs/{done.job_id}").text
    assert "Your earnings on this job" in html and "Funded" not in html
    assert all(o.id not in html for o in others)


def test_provider_cannot_open_another_providers_payouts(done: Done) -> None:
    """Provider A sees its payouts; B's payouts page is refused with 403 and shows no money."""
    c = done.client
    a, b, _ = done.scn.providers
    sign_in(c, a)
    mine = c.get(f"/ui/providers/{a.id}/payouts")
    assert mine.status_code == 200
    assert 'class="payout-row"' in mine.text and "USD " in mine.text
    theirs = c.get(f"/ui/providers/{b.id}/payouts")
    assert theirs.status_code == 403 and "Not allowed" in theirs.text
    assert "USD" not in theirs.text and "payout-row" not in theirs.text


def test_admin_opens_any_providers_payouts(done: Done) -> None:
    """Operators see every provider's payouts and the ledger's totals."""
    c = done.client
    sign_in(c, done.scn.admin)
    for p in done.scn.providers:
        assert c.get(f"/ui/providers/{p.id}/payouts").status_code == 200
    ledger = c.get("/ui/ledger").text
    assert "Platform totals" in ledger and "Every entry" in ledger


def test_provider_ledger_hides_other_parties_legs(done: Done) -> None:
    """A provider's journal lists its own legs; others' accounts are counted, not named."""
    c = done.client
    me, *others = done.scn.providers
    sign_in(c, me)
    html = c.get("/ui/ledger").text
    assert f"provider:{me.id}:payable" in html and "hidden" in html
    assert all(o.id not in html for o in others)
    assert "escrow" not in html.split("Journal entries")[1]


# ---------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    ("cents", "currency", "text"),
    [
        (5400, "usd", "USD 54.00"),
        (123456789, "eur", "EUR 1,234,567.89"),
        (7, "usd", "USD 0.07"),
        (-250, "usd", "−USD 2.50"),
        (5400, "jpy", "JPY 5,400"),
        (1234, "kwd", "KWD 1.234"),
    ],
)
def test_amounts_are_written_with_their_currency(cents: int, currency: str, text: str) -> None:
    """Minor units become the currency code and the right number of decimals, exactly."""
    assert money(cents, currency) == text


def test_chart_draws_one_labelled_point_per_value() -> None:
    """The SVG has one circle with a tooltip per point, a title, and both axis labels."""
    pts = [charts.Point(i, 0.5 + i / 10, f"Round {i}") for i in range(1, 6)]
    out = str(charts.line_chart([charts.Series("acc", pts)], chart_id="c", title="Accuracy",
                                description="d", x_label="Round", y_label="Accuracy"))  # fmt: skip
    assert out.count("<circle") == 5 and out.count("<title>Round ") == 5
    assert '<title id="c-title">Accuracy</title>' in out and 'role="img"' in out
    assert ">Round</text>" in out and ">Accuracy</text>" in out
    assert "<polyline" in out


def test_empty_chart_says_so() -> None:
    """A chart without data draws its axes and a message, no points."""
    chart = charts.line_chart(
        [charts.Series("acc", [])], chart_id="e", title="t", description="d",
        x_label="x", y_label="y", empty_text="Nothing",
    )  # fmt: skip
    out = str(chart)
    assert "<circle" not in out and "Nothing" in out


def test_chart_text_is_escaped() -> None:
    """Labels are text, never markup: a name with tags cannot inject into the page."""
    pts = [charts.Point(1, 1, "<script>x</script>")]
    out = str(charts.line_chart([charts.Series("<b>", pts)], chart_id="x", title="<i>",
                                description="d", x_label="x", y_label="y"))  # fmt: skip
    assert "<script>" not in out and "&lt;script&gt;" in out and "<i>" not in out


def test_nice_ticks_cover_the_range_with_round_steps() -> None:
    """Axis ticks are round numbers spanning the data."""
    ticks = charts.nice_ticks(0.83, 0.97)
    assert ticks[0] <= 0.83 and ticks[-1] >= 0.97
    steps = {round(b - a, 9) for a, b in itertools.pairwise(ticks)}
    assert len(steps) == 1 and steps.pop() in (0.02, 0.05)


# ---------------------------------------------------------------- issue 11: hostile inputs


def test_a_huge_loss_is_refused_and_never_breaks_the_job_page(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """Metrics must be finite and of sane magnitude (422); the page renders for everyone.

    Issue 11: a buyer posting loss 1.7e308 made `nice_ticks` overflow, and the job page
    answered 500 to every visitor from then on.
    """
    scn = running_job(client, clock, buyer_keys)
    for p in scn.providers:
        assert scn.submit(p, 1).status_code == 201
    url = f"/v1/jobs/{scn.job_id}/rounds/1/metrics"
    for loss in (1.7e308, 1e300, -1e300):
        r = client.post(url, json={"loss": loss, "accuracy": 0.5}, headers=scn.buyer.headers)
        assert r.status_code == 422, r.text
        assert r.headers["content-type"] == "application/problem+json"
    assert client.get(f"/ui/jobs/{scn.job_id}").status_code == 200
    r = client.post(url, json={"loss": 1e6, "accuracy": 0.5}, headers=scn.buyer.headers)
    assert r.status_code == 200, r.text
    assert client.get(f"/ui/jobs/{scn.job_id}").status_code == 200


@pytest.mark.parametrize(
    ("lo", "hi"), [(0.0, 1.7e308), (-1.7e308, 1.7e308), (0.0, float("inf")), (float("nan"), 1.0)]
)
def test_charts_survive_any_range(lo: float, hi: float) -> None:
    """Ticks and charts over extreme or non-finite values never raise."""
    ticks = charts.nice_ticks(lo, hi)
    assert 2 <= len(ticks) <= 20 and all(map(lambda t: t == t and abs(t) < 1e300, ticks))
    series = [charts.Series("loss", [charts.Point(1, lo, "a"), charts.Point(2, hi, "b")])]
    chart = charts.line_chart(
        series, chart_id="c", title="t", description="d", x_label="x", y_label="y"
    )
    assert "nan" not in chart.lower() and "inf" not in chart.lower()


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site", "Origin": "https://sub.testserver"},
    ],
)
def test_cross_site_login_and_logout_are_refused(done: Done, headers: dict[str, str]) -> None:
    """A form on another site can neither sign a visitor in (login CSRF) nor out (403).

    Issue 11: /ui/login and /ui/logout accepted cross-site POSTs, so any page could sign a
    visitor into an attacker's account or sign them out.
    """
    c, buyer = done.client, done.scn.buyer
    c.cookies.clear()
    r = c.post(
        "/ui/login", data={"api_key": buyer.api_key}, headers=headers, follow_redirects=False
    )
    assert r.status_code == 403 and "set-cookie" not in r.headers
    sign_in(c, buyer)
    r = c.post("/ui/logout", headers=headers, follow_redirects=False)
    assert r.status_code == 403 and "set-cookie" not in r.headers
    assert c.get("/ui/account", follow_redirects=False).status_code == 200


def test_same_origin_login_and_logout_work(done: Done) -> None:
    """The dashboard's own forms (same origin, or a client sending neither header) work."""
    c, buyer = done.client, done.scn.buyer
    for same in (
        {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
        {"Origin": "https://testserver"},  # TLS ended by a proxy in front
        {},
    ):
        c.cookies.clear()
        r = c.post(
            "/ui/login", data={"api_key": buyer.api_key}, headers=same, follow_redirects=False
        )
        assert r.status_code == 303
        assert c.post("/ui/logout", headers=same, follow_redirects=False).status_code == 303


# ---------------------------------------------------------------- regression, final model

REGRESSION_SCHEMA = {
    "features": [{"name": "age", "type": "int"}, {"name": "bmi", "type": "float"}],
    "label": {"name": "progression"},
}
REGRESSION_METRICS = [
    {"loss": 0.71, "rmse": 61.25, "mae": 50.5, "r2": 0.31},
    {"loss": 0.52, "rmse": 54.0, "mae": 44.75, "r2": 0.47},
]


def finished_regression(client: TestClient, clock: FakeClock, keys: BuyerKeys) -> Scenario:
    """A completed 2-round regression job (2 providers) with RMSE/MAE/R² and a final model."""
    from tests.utils.factories import admin as make_admin
    from tests.utils.factories import listing_body
    from tests.utils.scenario import draft_job, fund

    operator = make_admin(client)
    providers = [register(client, "provider", f"r{i}") for i in range(2)]
    for p in providers:
        body = listing_body(schema={**REGRESSION_SCHEMA, "label": {"name": "progression"}})
        assert client.post("/v1/listings", json=body, headers=p.headers).status_code == 201
    buyer = register(client, "buyer", "regression buyer")
    spec = {"title": "disease progression", "task": "regression", "model": {"arch": "linear"},
            "schema": REGRESSION_SCHEMA, "max_providers": 2, "round_deadline_s": 5}  # fmt: skip
    job_id = draft_job(client, keys, buyer, **spec)
    fund(client, job_id, buyer, operator, 10_000)
    scn = Scenario(client, clock, keys, buyer, operator, providers, job_id)
    for p in providers:
        assert scn.accept(p).status_code == 200
    base = f"/v1/jobs/{job_id}/rounds"
    for number, metrics in enumerate(REGRESSION_METRICS, start=1):
        if number > 1:
            r = client.put(f"{base}/{number}/model", content=model_file(PARAMS),
                           headers=buyer.headers)  # fmt: skip
            assert r.status_code == 201, r.text
        for p in providers:
            assert scn.submit(p, number, scn.envelope(p, number, summands=2)).status_code == 201
        r = client.post(f"{base}/{number}/metrics", json=metrics, headers=buyer.headers)
        assert r.status_code == 200, r.text
    final = model_file(PARAMS, seed=7)
    r = client.put(f"/v1/jobs/{job_id}/final-model", content=final, headers=buyer.headers)
    assert r.status_code == 200, r.text
    assert client.post(f"/v1/jobs/{job_id}/complete", headers=buyer.headers).status_code == 200
    return scn


def test_regression_job_charts_rmse_mae_and_r2(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """A regression job's page charts RMSE and MAE (target units) and R², one point per
    round, and its timeline lists them; no accuracy chart or column."""
    scn = finished_regression(client, clock, buyer_keys)
    sign_in(client, scn.buyer)
    html = client.get(f"/ui/jobs/{scn.job_id}").text
    errors, r2 = svg(html, "errors"), svg(html, "r2")
    assert 'data-chart="accuracy"' not in html and ">Accuracy<" not in html
    assert errors.count("<circle") == 2 * len(REGRESSION_METRICS)
    assert 'data-series="RMSE"' in errors and 'data-series="MAE"' in errors
    assert "Round 2: RMSE 54" in errors and "Round 1: MAE 50.5" in errors
    assert r2.count("<circle") == len(REGRESSION_METRICS) and "Round 2: R² 0.4700" in r2
    timeline = html.split("Round timeline")[1]
    assert ">RMSE<" in timeline and ">R²<" in timeline and "61.25" in timeline


def test_buyer_downloads_the_final_model_from_the_job_page(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """The buyer's page links the final model; the link serves it as a download with the
    session cookie alone (no API key)."""
    scn = finished_regression(client, clock, buyer_keys)
    sign_in(client, scn.buyer)
    html = client.get(f"/ui/jobs/{scn.job_id}").text
    link = f'href="/ui/jobs/{scn.job_id}/model"'
    assert link in html and "Download the final model" in html
    got = client.get(f"/ui/jobs/{scn.job_id}/model")
    assert got.status_code == 200 and got.content == model_file(PARAMS, seed=7)
    assert got.headers["content-type"] == "application/octet-stream"
    assert got.headers["content-disposition"] == (
        f'attachment; filename="{scn.job_id}.model.safetensors"'
    )
    sign_in(client, scn.admin)
    assert link in client.get(f"/ui/jobs/{scn.job_id}").text
    assert client.get(f"/ui/jobs/{scn.job_id}/model").content == got.content


def test_only_the_buyer_and_admins_get_the_final_model_link(
    client: TestClient, clock: FakeClock, buyer_keys: BuyerKeys
) -> None:
    """A provider sees no link and is refused the file (403); an anonymous visitor is sent
    to sign in; another buyer gets 404; a job without a final model shows no link."""
    scn = finished_regression(client, clock, buyer_keys)
    path = f"/ui/jobs/{scn.job_id}/model"
    sign_in(client, scn.providers[0])
    assert path not in client.get(f"/ui/jobs/{scn.job_id}").text
    refused = client.get(path)
    assert refused.status_code == 403 and refused.headers["content-type"].startswith("text/html")
    assert refused.content != model_file(PARAMS, seed=7)
    client.cookies.clear()
    anon = client.get(path, follow_redirects=False)
    assert anon.status_code == 303 and anon.headers["location"] == f"/ui/login?next={path}"
    sign_in(client, register(client, "buyer", "stranger"))
    assert client.get(path).status_code == 404


def test_no_final_model_no_link(done: Done) -> None:
    """A completed job whose buyer never uploaded a final model shows no download link."""
    c = done.client
    sign_in(c, done.scn.buyer)
    assert f"/ui/jobs/{done.job_id}/model" not in c.get(f"/ui/jobs/{done.job_id}").text
    missing = c.get(f"/ui/jobs/{done.job_id}/model")
    assert missing.status_code == 404 and "no final model" in missing.text
