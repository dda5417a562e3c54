"""`python -m bench privacy`: what record-level DP costs in accuracy and what it buys.

Two measurements at the agents' default ε (:data:`agents.privacy.DEFAULT_MAX_EPSILON`):

- accuracy: the demo's job (digits split non-IID over 4 providers, logistic regression, the
  demo's rounds and local training) as plaintext FedAvg without DP and with every provider
  running DP-SGD planned for the whole job (seeded noise, so the figure is reproducible);
- the imprint attack of Fowl et al., "Robbing the Fed" (ICLR 2022): a buyer's crafted round
  against 2 providers of 300 rows through the agent's code path and real CKKS
  (:func:`agents.imprint.attack_round`), the share of the 600 rows read back to within 1e-3
  per feature, without DP and with the agents' default DP, at 1,024 and 4,096 imprint bins.

Writes bench/results/privacy.json.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from agents.data import Dataset, prepare
from agents.demo import SEED
from agents.experiment import fedavg_plaintext, load_digits_split, prepared
from agents.imprint import attack_round
from agents.models import LogRegSpec
from agents.privacy import (
    DEFAULT_CLIP,
    DEFAULT_DELTA,
    DEFAULT_MAX_EPSILON,
    PrivacyPolicy,
    PrivacyTarget,
)
from agents.training import DEFAULT_BATCH_SIZE, DEFAULT_EPOCHS, DEFAULT_LR
from bench.common import print_table, write_result

PROVIDERS = 4
ROUNDS = 10
BINS = (1024, 4096)


def _accuracy(record_dp: PrivacyTarget | None) -> float:
    split = load_digits_split(PROVIDERS, alpha=0.5, seed=SEED)
    train, test = prepared(split)
    acc = fedavg_plaintext(
        LogRegSpec(arch="logreg"),
        train,
        test,
        rounds=ROUNDS,
        local_epochs=DEFAULT_EPOCHS,
        lr=DEFAULT_LR,
        batch_size=DEFAULT_BATCH_SIZE,
        seed=SEED,
        record_dp=record_dp,
        n_classes=split.schema.n_classes,
    )
    return acc[-1]


def _two_providers() -> tuple[list[Dataset], Any, np.ndarray]:
    split = load_digits_split(2, seed=3)
    rows = np.concatenate([p.X for p in split.providers])
    labels = np.concatenate([p.y for p in split.providers])
    order = np.random.default_rng(0).permutation(len(rows))[:600]
    p0 = split.providers[0]
    both = Dataset(rows[order], labels[order], p0.feature_names, p0.label_name, p0.feature_types)
    providers = [both.take(np.arange(300)), both.take(np.arange(300, 600))]
    return providers, split.schema, prepare(split.test, split.schema).X


def _imprint_by_bins() -> dict[str, dict[str, float]]:
    """Per bin count, the share of the two providers' rows the imprint attack recovers from a
    round without DP and from one with the agents' default DP."""
    providers, schema, reference = _two_providers()
    imprint: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for bins in BINS:
            off = attack_round(
                providers,
                schema,
                reference,
                bins=bins,
                workdir=Path(tmp) / f"off-{bins}",
                agent_options={"privacy": PrivacyPolicy(max_epsilon=None)},
            )
            on = attack_round(
                providers, schema, reference, bins=bins, workdir=Path(tmp) / f"on-{bins}"
            )
            imprint[str(bins)] = {"no_dp": off, "dp": on}
    return imprint


def _print_results(
    accuracy_no_dp: float, accuracy_dp: float, imprint: dict[str, dict[str, float]]
) -> None:
    print_table(
        f"Record-level DP (DP-SGD) at ε = {DEFAULT_MAX_EPSILON:g}, δ = {DEFAULT_DELTA:g}, "
        f"clip {DEFAULT_CLIP:g}",
        ["measure", "no DP", "DP-SGD"],
        [
            [
                f"digits accuracy ({PROVIDERS} providers, {ROUNDS} rounds)",
                f"{accuracy_no_dp:.4f}",
                f"{accuracy_dp:.4f}",
            ],
            *[
                [
                    f"imprint rows recovered ({b} bins, 2×300 rows)",
                    f"{v['no_dp']:.1%}",
                    f"{v['dp']:.1%}",
                ]
                for b, v in imprint.items()
            ],
        ],
    )


def main() -> None:
    started = time.perf_counter()
    target = PrivacyTarget(DEFAULT_MAX_EPSILON, DEFAULT_DELTA, DEFAULT_CLIP)
    accuracy_no_dp = _accuracy(None)
    accuracy_dp = _accuracy(target)
    imprint = _imprint_by_bins()
    main_bins = str(BINS[0])
    _print_results(accuracy_no_dp, accuracy_dp, imprint)
    write_result(
        "privacy",
        {
            "epsilon": DEFAULT_MAX_EPSILON,
            "delta": DEFAULT_DELTA,
            "clip": DEFAULT_CLIP,
            "providers": PROVIDERS,
            "rounds": ROUNDS,
            "accuracy_no_dp": accuracy_no_dp,
            "accuracy_dp": accuracy_dp,
            "imprint_bins": int(main_bins),
            "imprint_recovered_no_dp": imprint[main_bins]["no_dp"],
            "imprint_recovered_dp": imprint[main_bins]["dp"],
            "imprint_by_bins": imprint,
            "seconds": round(time.perf_counter() - started, 1),
        },
    )
