"""Matching benchmark: 10,000 listings x 100 open jobs through `market.matching.match`.

Listings draw their schema from 40 variants over a pool of 24 features (so compatibility is
not trivial), with varied sample counts, asks, reputations and capacities; jobs require
feature subsets, caps and budgets. The figure is the median wall time of `match` over
5 runs (the pure function a DB-backed pass calls once); the target is under 1 s.
"""

from __future__ import annotations

import random
import statistics
import time

from bench.common import print_table, write_result
from market.matching import Demand, SchemaShape, Supply, match

LISTINGS = 10_000
JOBS = 100
RUNS = 5


def _schema(rng: random.Random, features: list[str], k: int, classes: list[int]) -> SchemaShape:
    chosen = sorted(rng.sample(features, k))
    return SchemaShape.from_schema(
        {
            "features": [{"name": f, "type": "float"} for f in chosen],
            "label": {"name": "label", "classes": classes},
        }
    )


def generate(seed: int = 7) -> tuple[list[Demand], list[Supply]]:
    rng = random.Random(seed)
    pool = [f"f{i:02d}" for i in range(24)]
    variants = [_schema(rng, pool, rng.randint(12, 24), [0, 1]) for _ in range(40)]
    supplies = [
        Supply(
            listing_id=f"lst_{i:05d}",
            provider_id=f"prv_{i % 7000:05d}",  # some providers hold several listings
            schema=rng.choice(variants),
            samples=rng.randint(50, 20_000),
            ask_cents=rng.randint(10, 1_000),
            currency="usd" if rng.random() < 0.95 else "eur",
            free_capacity=rng.randint(1, 4),
            reputation=rng.uniform(0.2, 0.95),
        )
        for i in range(LISTINGS)
    ]
    demands = [
        Demand(
            job_id=f"job_{j:03d}",
            schema=_schema(rng, pool, rng.randint(4, 10), [0, 1]),
            min_samples=rng.choice([10, 100, 1000]),
            sample_cap=rng.choice([1000, 5000, 10_000]),
            min_reputation=rng.choice([0.0, 0.3, 0.5]),
            price_cap_cents=rng.randint(200, 1_000),
            currency="usd",
            rounds=rng.randint(1, 20),
            slots=rng.randint(2, 50),
            budget_left_cents=rng.randint(10_000, 1_000_000),
        )
        for j in range(JOBS)
    ]
    return demands, supplies


def main() -> None:
    demands, supplies = generate()
    timings = []
    offers = 0
    for _ in range(RUNS):
        start = time.perf_counter()
        proposals = match(demands, supplies)
        timings.append(time.perf_counter() - start)
        offers = len(proposals)
    seconds = statistics.median(timings)
    print_table(
        "matching (pure function)",
        ["listings", "jobs", "offers", "median s", "best s", "target"],
        [
            [
                f"{LISTINGS:,}",
                str(JOBS),
                f"{offers:,}",
                f"{seconds:.3f}",
                f"{min(timings):.3f}",
                "< 1 s",
            ]
        ],
    )
    write_result(
        "matching",
        {
            "listings": LISTINGS,
            "jobs": JOBS,
            "offers": offers,
            "seconds": round(seconds, 4),
            "best_seconds": round(min(timings), 4),
            "runs": RUNS,
            "target_seconds": 1.0,
        },
    )


if __name__ == "__main__":
    main()
