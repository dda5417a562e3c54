"""The dashboard in a real browser, on a marketplace holding a real finished job.

Once per module: the server under uvicorn (SQLite), three provider agents as subprocesses,
a buyer running a 3-round encrypted job on the digits set, then a payout batch marked paid.
Then Debian's Chromium, driven by Playwright, reads the pages as the buyer, as two providers
and as an anonymous visitor. Full-page screenshots (desktop and a 375 px phone) are saved
under tests/artifacts/dashboard/.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from agents.buyer import BuyerRun, post_job
from agents.client import PollenClient
from agents.data import write_csv
from agents.demo import job_spec
from agents.experiment import load_digits_split
from agents.processes import free_port, start_agent, start_server, stop, wait_ready
from agents.state import StateFile
from crypto import BuyerKeys
from crypto.identity import IdentityKey
from tests.utils.browser import DESKTOP, PHONE, launch, overflows, require_browser, screenshot

# The buyer's identity key: it signs every job's manifest and every round's model.
BUYER_IDENTITY = IdentityKey.generate()

pytestmark = pytest.mark.e2e
ROUNDS = 3
PROVIDERS = 3


@dataclass
class Provider:
    id: str
    name: str
    api_key: str


@dataclass
class FinishedRun:
    url: str
    job_id: str
    buyer_key: str
    buyer_name: str
    providers: list[Provider]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with launch() as b:
        yield b


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FinishedRun]:
    """A live server holding one completed 3-round job by 3 agents, paid out."""
    require_browser()  # no point in training a model for pages nobody can open
    root = tmp_path_factory.mktemp("dashboard")
    data_dir = root / "server"
    data_dir.mkdir()
    port, admin_key = free_port(), secrets.token_urlsafe(16)
    url = f"http://127.0.0.1:{port}"
    server = start_server(data_dir, port, admin_key, extra_env={"POLLEN_DEADLINE_TICK_S": "0.5"})
    try:
        wait_ready(url, server)
        split = load_digits_split(PROVIDERS, alpha=0.5, seed=3)
        keys = BuyerKeys.generate()
        anon = PollenClient(url, None)
        buyer_key = anon.register(role="buyer", name="Digits Lab").api_key
        buyer = PollenClient(url, buyer_key)
        spec = job_spec(ROUNDS, PROVIDERS, split.schema.model_dump())
        spec["round_deadline_s"] = 120
        job = post_job(buyer, keys, spec, identity=BUYER_IDENTITY)
        admin = PollenClient(url, admin_key)
        admin.credit_job(job.id, spec["budget_cents"])
        procs = []
        for i, ds in enumerate(split.providers):
            csv = root / f"p{i}.csv"
            write_csv(ds, csv)
            procs.append(start_agent(url, csv, root / f"agent{i}", i, root / f"agent{i}.log",
                                     operator=admin))  # fmt: skip
        try:
            outcome = BuyerRun(buyer, keys, job.id, split.test, identity=BUYER_IDENTITY,
                               out_dir=root / "buyer", poll_s=0.2).run()  # fmt: skip
            codes = [p.wait(timeout=120) for p in procs]
        finally:
            for p in procs:
                stop(p)
        assert outcome.state == "completed" and codes == [0] * PROVIDERS
        batch = admin.run_payouts().batch
        admin.mark_payout_batch_paid(batch.id)
        providers = []
        for i in range(PROVIDERS):
            state = StateFile(root / f"agent{i}" / "agent-state.json")
            providers.append(
                Provider(state.get("account_id"), f"provider-{i}", state.get("api_key"))
            )
        yield FinishedRun(url, job.id, buyer_key, "Digits Lab", providers)
    finally:
        stop(server)


def sign_in(context: BrowserContext, url: str, api_key: str) -> Page:
    page = context.new_page()
    page.goto(f"{url}/ui/login")
    page.get_by_label("API key").fill(api_key)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/account")
    return page


def test_buyer_job_page_charts_one_point_per_round(browser: Browser, run: FinishedRun) -> None:
    """Signed in as the buyer, the job page plots accuracy and loss with one point per round,
    names the providers in each round, and shows the money with its currency."""
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport)
        page = sign_in(context, run.url, run.buyer_key)
        expect(page.get_by_role("heading", name="My account")).to_be_visible()
        assert overflows(page) == 0, f"account page wider than a {viewport['width']} px screen"
        screenshot(page, f"{label}-account-buyer")
        response = page.goto(f"{run.url}/ui/jobs/{run.job_id}")
        assert response is not None and response.status == 200
        expect(page.locator('svg[data-chart="accuracy"] circle')).to_have_count(ROUNDS)
        expect(page.locator('svg[data-chart="loss"] circle')).to_have_count(ROUNDS)
        rows = page.locator("table.rounds tbody tr")
        expect(rows).to_have_count(ROUNDS)
        for i in range(ROUNDS):
            expect(rows.nth(i).locator('a[href^="/ui/providers/"]')).to_have_count(PROVIDERS)
        expect(page.get_by_text("Adds up", exact=False)).to_be_visible()
        expect(page.locator(".stat-value").first).to_have_text("USD 200.00")
        assert overflows(page) == 0, f"job page wider than a {viewport['width']} px screen"
        screenshot(page, f"{label}-job-buyer")
        context.close()


def test_buyer_downloads_the_final_model_by_its_link(browser: Browser, run: FinishedRun) -> None:
    """The buyer's job page links the final model; clicking it downloads the very file the
    API serves, on the session cookie alone. A provider's page has no such link."""
    context = browser.new_context(viewport=DESKTOP, accept_downloads=True)
    page = sign_in(context, run.url, run.buyer_key)
    page.goto(f"{run.url}/ui/jobs/{run.job_id}")
    link = page.get_by_role("link", name="Download the final model")
    expect(link).to_be_visible()
    with page.expect_download() as info:
        link.click()
    download = info.value
    assert download.suggested_filename == f"{run.job_id}.model.safetensors"
    served = PollenClient(run.url, run.buyer_key).get_final_model(run.job_id)
    assert Path(download.path()).read_bytes() == served
    context.close()
    context = browser.new_context(viewport=DESKTOP)
    page = sign_in(context, run.url, run.providers[0].api_key)
    page.goto(f"{run.url}/ui/jobs/{run.job_id}")
    expect(page.get_by_role("link", name="Download the final model")).to_have_count(0)
    context.close()


def test_provider_sees_its_payouts_but_not_another_providers(
    browser: Browser, run: FinishedRun
) -> None:
    """Provider A reads its own payouts; opening provider B's payouts URL is refused (403)."""
    a, b = run.providers[0], run.providers[1]
    context = browser.new_context(viewport=DESKTOP)
    page = sign_in(context, run.url, a.api_key)
    response = page.goto(f"{run.url}/ui/providers/{a.id}/payouts")
    assert response is not None and response.status == 200
    expect(page.get_by_role("heading", name="Earnings and payouts")).to_be_visible()
    payouts = page.locator("tr.payout-row")
    expect(payouts).to_have_count(1)
    expect(payouts.first).to_contain_text("USD ")
    expect(payouts.first).to_contain_text("paid")
    # One point per ledger entry that moved its money: 3 settled rounds, then the payout.
    expect(page.locator('svg[data-chart="earnings-usd"] .s0 circle')).to_have_count(ROUNDS + 1)
    screenshot(page, "desktop-payouts-provider")
    response = page.goto(f"{run.url}/ui/providers/{b.id}/payouts")
    assert response is not None and response.status == 403
    expect(page.get_by_role("heading", name="Not allowed")).to_be_visible()
    assert page.locator("tr.payout-row").count() == 0 and "USD" not in page.content()
    screenshot(page, "desktop-payouts-refused")
    response = page.goto(f"{run.url}/ui/jobs/{run.job_id}")
    assert response is not None and response.status == 200
    assert b.id not in page.content()  # a provider sees only itself among the job's providers
    screenshot(page, "desktop-job-provider")
    context.close()


def test_public_pages_load_without_login(browser: Browser, run: FinishedRun) -> None:
    """Anonymous visitors get the marketplace's reputation ranking, a provider's history and
    the ledger's hash-chain check ("chain intact"), on a desktop and on a phone."""
    for label, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        context = browser.new_context(viewport=viewport)
        page = context.new_page()
        response = page.goto(f"{run.url}/ui")
        assert response is not None and response.status == 200
        ranking = page.get_by_role("table").filter(has_text="Latest reason")
        expect(ranking.locator("tbody tr")).to_have_count(PROVIDERS)
        assert overflows(page) == 0
        screenshot(page, f"{label}-marketplace")
        page.get_by_role("link", name=run.providers[0].name).click()
        expect(page.get_by_role("heading", name="Reputation over time")).to_be_visible()
        assert page.locator('svg[data-chart="reputation"] circle').count() >= ROUNDS
        assert overflows(page) == 0
        screenshot(page, f"{label}-provider")
        page.get_by_role("link", name="Ledger").click()
        expect(page.locator('[data-verified="true"]')).to_contain_text("Chain intact")
        assert overflows(page) == 0
        screenshot(page, f"{label}-ledger")
        context.close()


def tab_to(page: Page, element_id: str) -> None:
    """Press Tab until `element_id` has focus, as a keyboard user would."""
    for _ in range(20):
        if page.evaluate("document.activeElement.id") == element_id:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"#{element_id} cannot be reached with the Tab key")


def test_login_by_keyboard_only(browser: Browser, run: FinishedRun) -> None:
    """The skip link is the first tab stop, and the login form is filled and sent with keys."""
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.goto(f"{run.url}/ui")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.url.endswith("#main")
    page.goto(f"{run.url}/ui/login")
    tab_to(page, "api_key")
    page.keyboard.type("pk_not-a-real-key")
    page.keyboard.press("Enter")
    expect(page.get_by_role("alert")).to_contain_text("not valid")
    screenshot(page, "desktop-login-error")
    tab_to(page, "api_key")
    page.keyboard.type(run.buyer_key)
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/account")
    expect(page.get_by_role("heading", name="My account")).to_be_visible()
    expect(page.get_by_text(run.buyer_name).first).to_be_visible()
    context.close()
