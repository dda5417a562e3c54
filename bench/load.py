"""`python -m bench load`: 100 provider agents upload encrypted updates into one round at once.

For each backend (a SQLite file; PostgreSQL from a throwaway cluster) the marketplace runs as
a real uvicorn process on loopback. A buyer posts a job for an MLP of about 100,000
parameters with 100 providers; 100 provider accounts publish listings and accept their offers,
so round 1 is collecting. 100 real CKKS envelopes (each bound to its provider and the round)
are encrypted beforehand: encryption is not what is measured. Then 100 concurrent submitters,
one HTTP connection each, are released at once and every submit is timed.

Configurations: `sqlite`, `postgresql`, and `postgresql-4-workers` (`--workers 4`: four
server processes on one database, every upload on its own connection so they spread).
Measured: accepted (updates the buyer finds inside the decrypted sum, not merely answered
201), lost (a 2xx the sum does not hold, or no answer at all; must be 0), p50 / p99 submit
latency, and the server's peak resident memory (VmHWM, summed over its processes), beside its
baseline before the burst, the envelope size and the model size, so "O(model), not
O(providers × model)" can be judged. Afterwards the round must be closed with exactly the
accepted submissions, and the buyer decrypts the aggregate to check every accepted update is
in the sum once. Writes bench/results/load.json: {"sqlite": {...}, "postgresql": {...},
"postgresql-4-workers": {...}}.

`POLLEN_BENCH_LOAD_AGENTS` (default 100), `POLLEN_BENCH_LOAD_HIDDEN` (the hidden width,
default 1330) and `POLLEN_BENCH_LOAD_BACKENDS` (default all three) change the run,
e.g. to see how memory scales with agents or with the model; `POLLEN_BENCH_LOAD_NAME` names
the result file.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import statistics
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from agents.buyer import post_job
from agents.client import PollenClient
from agents.processes import free_port, start_server, stop, wait_ready
from bench.common import console, print_table, write_result
from bench.procfs import RssSampler
from bench.uploads import Party, burst
from crypto import BuyerKeys, EnvelopeBinding, decrypt_aggregate, encrypt_update

AGENTS = int(os.environ.get("POLLEN_BENCH_LOAD_AGENTS", 100))
BACKENDS = tuple(
    os.environ.get("POLLEN_BENCH_LOAD_BACKENDS", "sqlite,postgresql,postgresql-4-workers").split(
        ","
    )
)
NAME = os.environ.get("POLLEN_BENCH_LOAD_NAME", "load")
# 64·1330 + 1330 + 1330·10 + 10 = 99,760 parameters
HIDDEN = [int(os.environ.get("POLLEN_BENCH_LOAD_HIDDEN", 1330))]
FEATURES = 64
CLASSES = 10
SAMPLES = 200
MB = 1024 * 1024


def _schema() -> dict[str, Any]:
    return {
        "features": [{"name": f"px{i}", "type": "int"} for i in range(FEATURES)],
        "label": {"name": "label", "classes": list(range(CLASSES))},
    }


def _value(index: int) -> float:
    """Provider `index`'s update is this constant everywhere, so the sum can be checked."""
    return 0.001 * (1 + index % 7)


@contextmanager
def _database(backend: str) -> Iterator[str | None]:
    """None for the embedded SQLite file; a fresh database in a throwaway cluster otherwise."""
    if backend == "sqlite":
        yield None
        return
    from bench import postgres  # a throwaway cluster, from the machine's binaries

    with postgres.throwaway_cluster() as server_url:
        yield postgres.create_database(server_url, "pollen_load")


def setup_round(
    url: str,
    admin_key: str,
    keys: BuyerKeys,
    *,
    agents: int = AGENTS,
    hidden: int = HIDDEN[0],
    quorum: int | None = None,
    deadline_s: int = 900,
) -> tuple[Party, list[Party], str, int]:
    """A buyer, `agents` providers with listings, a funded job they all accepted: round 1."""
    anon = PollenClient(url, None)
    created = anon.register(role="buyer", name="load-buyer")
    buyer = Party(PollenClient(url, created.api_key), created.id, created.api_key)

    def provider(i: int) -> Party:
        acct = anon.register(role="provider", name=f"load-provider-{i}")
        PollenClient(url, admin_key).approve_provider(acct.id)  # the operator vouches
        client = PollenClient(url, acct.api_key)
        client.create_listing({
            "name": f"load-{i}", "schema": _schema(), "samples": SAMPLES,
            "ask_cents": 100, "currency": "usd", "capacity": 1,
        })  # fmt: skip
        return Party(client, acct.id, acct.api_key)

    with ThreadPoolExecutor(max_workers=8) as pool:
        providers = list(pool.map(provider, range(agents)))
    spec = {
        "title": "load bench", "model": {"arch": "mlp", "hidden": [hidden]}, "rounds": 1,
        "schema": _schema(), "min_providers": agents, "max_providers": agents,
        "quorum": quorum or agents, "min_samples": 1, "sample_cap": 5000,
        "budget_cents": 10 * 100 * agents, "currency": "usd", "price_cap_cents": 500,
        "round_deadline_s": deadline_s, "offer_ttl_s": 900,
    }  # fmt: skip
    job = post_job(buyer.client, keys, spec)
    PollenClient(url, admin_key).credit_job(job.id, spec["budget_cents"])

    def accept(p: Party) -> None:
        (offer,) = [o for o in p.client.list_offers() if o.job_id == job.id]
        p.client.accept_offer(offer.id)

    # The last acceptance starts the job; it goes alone, after the others.
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(accept, providers[:-1]))
    accept(providers[-1])
    status = buyer.client.get_job(job.id)
    if status.state != "running":
        raise RuntimeError(f"the job is {status.state}, not running, after every acceptance")
    return buyer, providers, job.id, int(status.param_count)


def round_envelopes(
    keys: BuyerKeys, job_id: str, providers: list[Party], params: int
) -> list[bytes]:
    """Round 1's real envelopes, provider `i` sending `_value(i)` everywhere (checkable)."""
    ctx = keys.public_context()
    return [
        encrypt_update(
            ctx,
            np.full(params, _value(i), dtype=np.float32),
            binding=EnvelopeBinding(job_id, 1, p.id, params, len(providers)),
            weight=1.0,
            samples=SAMPLES,
        )
        for i, p in enumerate(providers)
    ]


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _config(name: str) -> tuple[str, int]:
    """`sqlite`, `postgresql` or `postgresql-N-workers` → (backend, server processes)."""
    match = re.fullmatch(r"(sqlite|postgresql)(?:-(\d+)-workers)?", name)
    if match is None:
        raise SystemExit(f"unknown load configuration {name!r}")
    return match.group(1), int(match.group(2) or 1)


def _burst_into(
    url: str, admin_key: str, backend: str, server: subprocess.Popen[bytes], workers: int
) -> dict[str, Any]:
    """Round 1 on the running server, every submitter released at once and the sum checked:
    the figures `load.json` holds, but for what the server log says."""
    wait_ready(url, server)
    keys = BuyerKeys.generate()
    started = time.perf_counter()
    buyer, providers, job_id, params = setup_round(url, admin_key, keys)
    console.print(
        f"  {backend}: {AGENTS} providers accepted job {job_id} ({params:,} parameters) "
        f"in {time.perf_counter() - started:.1f}s"
    )
    envelopes = round_envelopes(keys, job_id, providers, params)
    sampler = RssSampler(server.pid, children=workers > 1)
    baseline_kb = sampler.status_kb("VmRSS")
    hwm_before_kb = sampler.status_kb("VmHWM")
    with sampler:
        outcomes, burst_s = asyncio.run(burst(url, job_id, providers, envelopes))
    hwm_kb = sampler.status_kb("VmHWM")
    verdict = verify(buyer, keys, job_id, providers, outcomes)
    errors = Counter(str(s) if s is not None else detail for s, _, detail in outcomes)
    del errors["201"]
    latencies = [seconds * 1000 for status, seconds, _ in outcomes if status is not None]
    return {
        "agents": AGENTS,
        "accepted": verdict["accepted"],
        "lost": verdict["lost"],
        "p50_ms": round(_percentile(latencies, 50), 1),
        "p99_ms": round(_percentile(latencies, 99), 1),
        "server_peak_rss_mb": round(hwm_kb / 1024, 1),
        "max_ms": round(max(latencies, default=float("nan")), 1),
        "mean_ms": round(statistics.fmean(latencies), 1) if latencies else None,
        "burst_s": round(burst_s, 2),
        "refused": dict(errors),
        "round_state": verdict["round_state"],
        "round_submitted": verdict["submitted"],
        "aggregate_count": verdict["aggregate_count"],
        "aggregate_sum_ok": verdict["sum_ok"],
        "server_baseline_rss_mb": round(baseline_kb / 1024, 1),
        "server_peak_rss_during_burst_mb": round(sampler.max_rss_kb / 1024, 1),
        "server_hwm_before_burst_mb": round(hwm_before_kb / 1024, 1),
        "server_peak_minus_baseline_mb": round((hwm_kb - baseline_kb) / 1024, 1),
        "param_count": params,
        "model_mb": round(params * 4 / MB, 2),
        "envelope_bytes": len(envelopes[0]),
        "envelope_mb": round(len(envelopes[0]) / MB, 2),
        "all_envelopes_mb": round(sum(map(len, envelopes)) / MB, 1),
    }


def _log_findings(log: str) -> dict[str, Any]:
    """How many tracebacks the server log holds, and what the 5xx were: the exception on the
    last line of each traceback."""
    exceptions = Counter(
        line.split(":", 1)[0]
        for line in log.splitlines()
        if re.match(r"^[A-Za-z_][\w.]*(Error|Exception)\b", line)
    )
    return {
        "server_log_tracebacks": log.count("Traceback"),
        "server_log_exceptions": dict(exceptions),
    }


def run_backend(name: str) -> dict[str, Any]:
    backend, workers = _config(name)
    with (
        tempfile.TemporaryDirectory(prefix=f"pollen-bench-load-{name}-") as tmp,
        _database(backend) as database_url,
    ):
        data_dir = Path(tmp) / "server"
        data_dir.mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        admin_key = secrets.token_urlsafe(16)
        env = {"POLLEN_DEADLINE_TICK_S": "0.5"}
        if database_url:
            env["POLLEN_DATABASE_URL"] = database_url
        server = start_server(data_dir, port, admin_key, extra_env=env, workers=workers)
        try:
            result = _burst_into(url, admin_key, backend, server, workers)
        except BaseException:
            tail = (data_dir / "server.log").read_text(errors="replace").splitlines()[-60:]
            console.print("\n".join(tail), markup=False, highlight=False)
            raise
        finally:
            stop(server)
            log = (data_dir / "server.log").read_text(errors="replace")
    return {**result, **_log_findings(log)}


def verify(
    buyer: Party,
    keys: BuyerKeys,
    job_id: str,
    providers: list[Party],
    outcomes: list[tuple[int | None, float, str]],
) -> dict[str, Any]:
    """What the server really holds: the round's submitters and the decrypted sum."""
    # With every update in, the last submission closes the round (all-in); allow a moment.
    all_in = all(s == 201 for s, _, _ in outcomes)
    deadline = time.monotonic() + (10 if all_in else 0)
    rnd = buyer.client.get_round(job_id, 1)
    while rnd.state == "collecting" and time.monotonic() < deadline:
        time.sleep(0.2)
        rnd = buyer.client.get_round(job_id, 1)
    ok = [p for p, (s, _, _) in zip(providers, outcomes, strict=True) if s and s // 100 == 2]
    if rnd.state == "closed":
        included = set(rnd.included)
    else:  # the buyer sees who is in only once the round closed; each provider sees itself
        included = {p.id for p in ok if p.client.get_round(job_id, 1).you_submitted}
    unanswered = sum(1 for s, _, _ in outcomes if s is None)
    lost = sum(1 for p in ok if p.id not in included) + unanswered
    count, sum_ok, found = None, False, set()
    if rnd.state == "closed":
        agg = decrypt_aggregate(keys, buyer.client.get_aggregate(job_id, 1))
        found = set(agg.provider_ids)
        count = agg.count
        want = sum(_value(i) for i, p in enumerate(providers) if p.id in included)
        sum_ok = set(agg.provider_ids) == included and bool(np.allclose(agg.total, want, atol=1e-3))
    return {
        # Only what the buyer finds inside the decrypted sum counts, not the 201s.
        "accepted": sum(1 for p in ok if p.id in found),
        "answered_201": sum(1 for s, _, _ in outcomes if s == 201),
        "lost": lost,
        "round_state": rnd.state,
        "submitted": rnd.submitted,
        "aggregate_count": count,
        "sum_ok": sum_ok,
    }


def main() -> None:
    console.print(f"{AGENTS} concurrent provider agents, MLP 64→{HIDDEN}→10, one round")
    results: dict[str, dict[str, Any]] = {}
    for backend in BACKENDS:
        started = time.perf_counter()
        results[backend] = run_backend(backend)
        console.print(f"  {backend}: done in {time.perf_counter() - started:.1f}s")
        console.print(f"  {results[backend]}", markup=False, highlight=False)
    print_table(
        f"{AGENTS} concurrent submissions into one round "
        f"({next(iter(results.values()))['param_count']:,} parameters)",
        ["backend", "accepted", "lost", "p50 ms", "p99 ms", "peak RSS MB", "baseline MB",
         "envelope MB", "round", "refused"],
        [
            [name, str(r["accepted"]), str(r["lost"]), f"{r['p50_ms']:.0f}",
             f"{r['p99_ms']:.0f}", f"{r['server_peak_rss_mb']:.0f}",
             f"{r['server_baseline_rss_mb']:.0f}", f"{r['envelope_mb']:.2f}",
             f"{r['round_state']} ({r['round_submitted']})",
             ", ".join(f"{k}×{v}" for k, v in r["refused"].items()) or "-"]
            for name, r in results.items()
        ],
    )  # fmt: skip
    write_result(NAME, results)
    bad = [n for n, r in results.items() if r["lost"] or r["accepted"] != AGENTS]
    if bad:
        console.print(f"[red]lost or refused submissions on {', '.join(bad)}[/red]")


if __name__ == "__main__":
    main()
