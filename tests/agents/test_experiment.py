"""Tests for the demo splits and plaintext baselines (agents.experiment)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits

from agents.data import Dataset, check_schema, load_dataset
from agents.experiment import (
    FederatedSplit,
    centralized,
    dirichlet_partition,
    fedavg_plaintext,
    load_breast_cancer_split,
    load_digits_split,
    prepared,
    write_csv,
)
from agents.models import LogRegSpec
from agents.optim import FedAdam
from agents.privacy import DPConfig
from agents.training import DEFAULT_EPOCHS

ROUNDS = 10


@pytest.fixture(scope="module")
def digits() -> FederatedSplit:
    return load_digits_split(4, alpha=0.5, seed=0)


@pytest.fixture(scope="module")
def digits_ready(digits: FederatedSplit) -> tuple[list[Dataset], Dataset]:
    return prepared(digits)


def _label_shares(ds: Dataset) -> np.ndarray:
    counts = np.bincount(ds.y, minlength=10).astype(np.float64)
    shares: np.ndarray = counts / counts.sum()
    return shares


def test_digits_split_is_disjoint_and_covers_the_data(digits: FederatedSplit) -> None:
    """Providers and the buyer's test set partition all 1797 digits, none shared."""

    def rows(X: np.ndarray, y: np.ndarray) -> list[tuple[float, ...]]:
        return sorted((*r, float(t)) for r, t in zip(X.tolist(), y.tolist(), strict=True))

    parts = [*digits.providers, digits.test]
    got = rows(np.concatenate([d.X for d in parts]), np.concatenate([d.y for d in parts]))
    raw = load_digits()
    # digits holds a few duplicate images, so compare sorted multisets of rows, not sets.
    assert got == rows(raw.data, raw.target)
    assert len(digits.test) == pytest.approx(0.2 * 1797, abs=10)
    assert min(len(ds) for ds in digits.providers) >= 20


def test_digits_split_is_non_iid_with_balanced_test(digits: FederatedSplit) -> None:
    """With alpha=0.5 each provider's label mix is skewed, while the test set stays balanced."""
    test_shares = _label_shares(digits.test)
    assert np.abs(test_shares - 0.1).max() < 0.01
    for ds in digits.providers:
        total_variation = 0.5 * np.abs(_label_shares(ds) - test_shares).sum()
        assert total_variation > 0.2
    iid = load_digits_split(4, alpha=1000.0, seed=0)
    for ds in iid.providers:
        assert 0.5 * np.abs(_label_shares(ds) - test_shares).sum() < 0.1


def test_partition_is_reproducible_and_refuses_impossible_minimums() -> None:
    """The same seed gives the same split; an unsatisfiable minimum is an error, not a hang."""
    y = np.repeat(np.arange(5), 40)
    a = dirichlet_partition(y, 3, alpha=0.5, seed=9)
    b = dirichlet_partition(y, 3, alpha=0.5, seed=9)
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert np.array_equal(np.sort(np.concatenate(a)), np.arange(200))
    with pytest.raises(ValueError, match="cannot give"):
        dirichlet_partition(y, 3, alpha=0.5, seed=0, min_samples=100)


def test_provider_csv_matches_the_job_schema(digits: FederatedSplit, tmp_path: Path) -> None:
    """A provider's digits written to CSV load back and satisfy the job's schema."""
    path = tmp_path / "provider0.csv"
    write_csv(digits.providers[0], path)
    loaded = load_dataset(path)
    checked = check_schema(loaded, digits.schema)
    assert np.array_equal(checked.X, digits.providers[0].X)
    assert checked.feature_types == ["int"] * 64


def test_fedavg_reaches_centralized_accuracy(digits_ready: tuple[list[Dataset], Dataset]) -> None:
    """10 rounds of plaintext FedAvg on non-IID digits come within 3 points of centralized."""
    providers, test = digits_ready
    spec = LogRegSpec(arch="logreg")
    started = time.perf_counter()
    curve = fedavg_plaintext(spec, providers, test, rounds=ROUNDS, seed=0, n_classes=10)
    elapsed = time.perf_counter() - started
    central = centralized(
        spec, providers, test, epochs=ROUNDS * DEFAULT_EPOCHS, seed=0, n_classes=10
    )
    assert len(curve) == ROUNDS
    assert curve[-1] > 0.93
    assert curve[-1] >= central - 0.03
    assert curve[-1] > curve[0]
    assert elapsed < 10.0


def test_fedadam_and_dp_runs_still_learn(digits_ready: tuple[list[Dataset], Dataset]) -> None:
    """The same loop with a FedAdam server and with DP-noised updates still learns digits."""
    providers, test = digits_ready
    spec = LogRegSpec(arch="logreg")
    adam = fedavg_plaintext(
        spec, providers, test, rounds=5, seed=0, server_optimizer=FedAdam(lr=0.3), n_classes=10
    )
    assert adam[-1] > 0.85
    dp = DPConfig(clip=2.0, noise_multiplier=0.01)
    noisy = fedavg_plaintext(spec, providers, test, rounds=5, seed=0, dp=dp, n_classes=10)
    assert noisy[-1] > 0.85


def test_breast_cancer_federation_learns() -> None:
    """On breast-cancer split over 3 providers, FedAvg matches centralized within 3 points."""
    split = load_breast_cancer_split(3, alpha=0.5, seed=0)
    assert split.schema.features[0].scale != 1.0  # standardized by the buyer's test set
    providers, test = prepared(split)
    spec = LogRegSpec(arch="logreg")
    curve = fedavg_plaintext(spec, providers, test, rounds=ROUNDS, seed=0, n_classes=2)
    central = centralized(
        spec, providers, test, epochs=ROUNDS * DEFAULT_EPOCHS, seed=0, n_classes=2
    )
    assert curve[-1] > 0.93
    assert curve[-1] >= central - 0.03
