"""`python -m bench fairness`: who is paid what when some providers cheat.

The digits set split over 9 providers (Dirichlet α = 5); a real marketplace (uvicorn on loopback,
SQLite), real CKKS, real torch training, the buyer's real `BuyerRun` (group scoring and
group-level robust aggregation), 10 rounds. Six providers are honest; three cheat:

- `freeloader`: sends an update of zeros with an honest sample claim;
- `inflater`: trains honestly but claims ten times its rows (listing and envelopes);
- `noise`: sends uniform random values within the job's per-update bound.

The same run is repeated with the three behaving honestly. Written to
`bench/results/fairness.json`: each one's share of the paid pool (`shares`, name →
fraction), `honest_median_share`, `final_accuracy`, and `shares_all_honest`,
`final_accuracy_all_honest` from the honest run. Targets: freeloader and noise each at
most 0.25 × the honest median; inflater at most 1.5 × its share when honest; final accuracy
at least the all-honest one − 0.02. DP is off here (`privacy: "off"`, agents opted out) so
that what is measured is the contribution scoring, not DP noise.
"""

from __future__ import annotations

import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from agents.buyer import BuyerRun, buyer_identity, post_job
from agents.client import PollenClient
from agents.demo import job_spec
from agents.experiment import load_digits_split
from agents.privacy import PrivacyPolicy
from agents.processes import free_port, start_server, stop, wait_ready
from agents.provider import ProviderAgent
from bench.common import console, print_table, write_result
from crypto import BuyerKeys, EnvelopeBinding, encrypt_update, get_preset
from dataspec.views import JobPublic, RoundPublic

ROUNDS = 10
HONEST = 6
# Mildly non-IID: what the cheaters' own rows would have added to the model is lost either
# way (they never train on them); a strongly skewed split would measure that, not cheating.
ALPHA = 5.0
CHEATERS = ("freeloader", "inflater", "noise")
SEED = 11


def _envelope(
    agent: ProviderAgent, job: JobPublic, rnd: RoundPublic, me: str, vector: np.ndarray
) -> bytes:
    """A valid envelope of `vector` with an honest sample claim, in place of training."""
    n = int(job.param_count or 0)
    binding = EnvelopeBinding(job.id, rnd.round, me, n, rnd.summands)
    ctx = agent._context(job.id).for_preset(job.spec.preset)
    return encrypt_update(ctx, vector, binding=binding, weight=1.0, samples=len(agent.data))


class Freeloader(ProviderAgent):
    """Submits an update of zeros with an honest sample claim, in place of training."""

    def _write_envelope(
        self, job: JobPublic, rnd: RoundPublic, me: str, out: BinaryIO
    ) -> dict[str, float]:
        zeros = np.zeros(int(job.param_count or 0), dtype=np.float32)
        out.write(_envelope(self, job, rnd, me, zeros))
        return {}


class NoiseSubmitter(ProviderAgent):
    """Submits uniform noise as large as the preset allows, in place of training."""

    def _write_envelope(
        self, job: JobPublic, rnd: RoundPublic, me: str, out: BinaryIO
    ) -> dict[str, float]:
        bound = get_preset(job.spec.preset).max_update_abs(rnd.summands)
        rng = np.random.default_rng()
        noise = rng.uniform(-0.5 * bound, 0.5 * bound, int(job.param_count or 0))
        out.write(_envelope(self, job, rnd, me, noise.astype(np.float32)))
        return {}


class Inflater(ProviderAgent):
    def claimed_samples(self, rows: int) -> int:
        return 10 * rows


def _providers(
    url: str, admin_key: str, root: Path, names: list[str], split: Any, cheat: bool
) -> tuple[list[ProviderAgent], dict[str, str]]:
    """Each provider's account, vouched for by the operator, and its agent (a cheater's own
    kind when `cheat`) with its listing; and the name of each provider id."""
    anon = PollenClient(url, None)
    agents, ids = [], {}
    for i, (name, data) in enumerate(zip(names, split.providers, strict=True)):
        acct = anon.register(role="provider", name=name)
        PollenClient(url, admin_key).approve_provider(acct.id)  # the operator vouches
        ids[acct.id] = name
        kind = {"freeloader": Freeloader, "inflater": Inflater, "noise": NoiseSubmitter}
        cls = kind.get(name, ProviderAgent) if cheat else ProviderAgent
        agent = cls(
            PollenClient(url, acct.api_key), data, state_dir=root / name,
            listing_name=name, ask_cents=100, seed=i,
            privacy=PrivacyPolicy(max_epsilon=None), notify=lambda _m: None,
        )  # fmt: skip
        agent.ensure_listing(classes=list(range(10)))
        agents.append(agent)
    return agents, ids


def _funded_job(
    url: str, admin_key: str, root: Path, split: Any, providers: int
) -> tuple[PollenClient, BuyerKeys, str]:
    """The buyer's client and keys, and its job for every provider, funded."""
    keys = BuyerKeys.generate()
    acct = PollenClient(url, None).register(role="buyer", name="fairness-buyer")
    buyer = PollenClient(url, acct.api_key)
    spec = job_spec(ROUNDS, providers, split.schema.model_dump())
    spec.update(privacy="off", budget_cents=100_000, round_deadline_s=120)
    job = post_job(buyer, keys, spec, identity=buyer_identity(root / "buyer"))
    PollenClient(url, admin_key).credit_job(job.id, spec["budget_cents"])
    return buyer, keys, job.id


def _timeline(buyer: PollenClient, job_id: str, ids: dict[str, str]) -> list[list[dict[str, Any]]]:
    """Per round, each group the close valued: its members by name, value and exclusion."""
    return [
        [
            {"members": sorted(ids[m] for m in g.members),
             "value": g.value, "excluded": g.excluded}
            for g in buyer.get_round(job_id, n).groups
            if g.merged_into is None and g.count > 0
        ]
        for n in range(1, ROUNDS + 1)
    ]  # fmt: skip


def _run(cheat: bool) -> dict[str, Any]:
    split = load_digits_split(HONEST + len(CHEATERS), alpha=ALPHA, seed=SEED)
    names = [f"honest-{i}" for i in range(HONEST)] + list(CHEATERS)
    with tempfile.TemporaryDirectory(prefix="pollen-bench-fairness-") as tmp:
        root = Path(tmp)
        port, admin_key = free_port(), secrets.token_urlsafe(16)
        url = f"http://127.0.0.1:{port}"
        server = start_server(root, port, admin_key, extra_env={"POLLEN_DEADLINE_TICK_S": "0.3"})
        try:
            wait_ready(url, server)
            agents, ids = _providers(url, admin_key, root, names, split, cheat)
            buyer, keys, job_id = _funded_job(url, admin_key, root, split, len(names))
            threads = [
                threading.Thread(
                    target=a.run, kwargs={"poll_s": 0.2, "exit_after_jobs": 1}, daemon=True
                )
                for a in agents
            ]
            for t in threads:
                t.start()
            run = BuyerRun(
                buyer, keys, job_id, split.test, out_dir=root / "buyer", poll_s=0.2,
                notify=lambda _m: None,
            )  # fmt: skip
            outcome = run.run()
            for t in threads:
                t.join(timeout=120)
            receipt = buyer.receipt(job_id)
            timeline = _timeline(buyer, job_id, ids)
            excluded = sum(g["excluded"] for groups in timeline for g in groups)
        finally:
            stop(server)
    earned = {ids[p["provider_id"]]: p["earned_cents"] for p in receipt.providers}
    paid = sum(earned.values())
    shares = {name: earned.get(name, 0) / paid for name in names}
    return {
        "shares": shares,
        "final_accuracy": outcome.reports[-1].accuracy,
        "paid_cents": paid,
        "groups_excluded": excluded,
        "groups": timeline,
        "accuracy_by_round": [round(r.accuracy, 4) for r in outcome.reports],
    }


def main() -> None:
    started = time.perf_counter()
    console.print(f"digits over {HONEST} honest providers + {', '.join(CHEATERS)}, {ROUNDS} rounds")
    cheating = _run(cheat=True)
    honest = _run(cheat=False)
    shares, fair = cheating["shares"], honest["shares"]
    median = statistics.median(shares[f"honest-{i}"] for i in range(HONEST))
    result = {
        "rounds": ROUNDS,
        "shares": {k: round(v, 4) for k, v in shares.items()},
        "honest_median_share": round(median, 4),
        "final_accuracy": round(cheating["final_accuracy"], 4),
        "shares_all_honest": {k: round(v, 4) for k, v in fair.items()},
        "final_accuracy_all_honest": round(honest["final_accuracy"], 4),
        "accuracy_by_round": cheating["accuracy_by_round"],
        "accuracy_by_round_all_honest": honest["accuracy_by_round"],
        "groups": cheating["groups"],
        "groups_excluded": cheating["groups_excluded"],
        "groups_excluded_all_honest": honest["groups_excluded"],
        "targets": {
            "freeloader_vs_median": round(shares["freeloader"] / median, 3),
            "noise_vs_median": round(shares["noise"] / median, 3),
            "inflater_vs_its_honest_share": round(shares["inflater"] / fair["inflater"], 3),
            "accuracy_drop": round(honest["final_accuracy"] - cheating["final_accuracy"], 4),
        },
        "seconds": round(time.perf_counter() - started, 1),
    }
    print_table(
        "share of the paid pool (10 rounds)",
        ["provider", "with cheaters", "all honest"],
        [[n, f"{shares[n]:.3f}", f"{fair[n]:.3f}"] for n in shares],
    )
    t = result["targets"]
    print_table(
        "targets",
        ["measure", "value", "target"],
        [
            ["freeloader / honest median", f"{t['freeloader_vs_median']:.3f}", "≤ 0.25"],
            ["noise / honest median", f"{t['noise_vs_median']:.3f}", "≤ 0.25"],
            ["inflater / its honest share", f"{t['inflater_vs_its_honest_share']:.3f}", "≤ 1.5"],
            ["final accuracy", f"{result['final_accuracy']:.4f}",
             f"≥ {result['final_accuracy_all_honest'] - 0.02:.4f}"],
        ],
    )  # fmt: skip
    write_result("fairness", result)


if __name__ == "__main__":
    main()
