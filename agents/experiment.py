"""Demo datasets and plaintext baselines for Pollen's federated training.

Used by the demo, the benchmarks and the tests to answer "does the encrypted pipeline learn as
well as it should?":

- :func:`load_digits_split` / :func:`load_breast_cancer_split` split a scikit-learn dataset
  (shipped with the library, never downloaded) into a buyer's stratified held-out test set and
  ``n_providers`` non-IID provider datasets whose label mix follows Dirichlet(alpha) per class
  (Hsu et al., 2019). Smaller alpha means more skew.
- :func:`fedavg_plaintext` runs sample-weighted FedAvg with *the same* training code the
  provider agents run (:mod:`agents.training`), minus encryption: the encrypted pipeline should
  match it up to CKKS rounding error.
- :func:`centralized` trains one model on the union of the providers' data, the upper bound
  federated training is compared with.

The datasets returned are *raw* (as a provider would store them on disk); pass them through
``prepare(ds, split.schema)`` before training, as the agents do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from sklearn.datasets import load_breast_cancer, load_digits

from agents.data import (
    Dataset,
    DatasetSchema,
    FeatureSpec,
    LabelSpec,
    concat,
    derive_schema,
    prepare,
    standardized_schema,
    write_csv,
)
from agents.modelio import flatten, unflatten_into
from agents.models import ModelSpec, build_model
from agents.optim import FedAvg, ServerOptimizer
from agents.privacy import DPConfig, DPPlan, PrivacyTarget, plan_record_dp, privatize
from agents.training import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    DEFAULT_LR,
    RecordDP,
    compute_update,
    evaluate,
    train_local,
)
from crypto import weight_norm

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_MIN_SAMPLES",
    "FederatedSplit",
    "centralized",
    "dirichlet_partition",
    "fedavg_plaintext",
    "load_breast_cancer_split",
    "load_digits_split",
    "prepared",
    "write_csv",
]

logger = logging.getLogger(__name__)

DEFAULT_ALPHA = 0.5
DEFAULT_MIN_SAMPLES = 20
_MAX_PARTITION_ATTEMPTS = 1000


@dataclass(frozen=True)
class FederatedSplit:
    """Raw provider datasets, the buyer's raw test set, and the job schema to prepare them."""

    providers: list[Dataset]
    test: Dataset
    schema: DatasetSchema


def dirichlet_partition(
    y: npt.ArrayLike,
    n_parts: int,
    *,
    alpha: float,
    seed: int,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> list[npt.NDArray[np.int64]]:
    """Disjoint index sets covering ``y``; per class, shares ~ Dirichlet(alpha) over parts.

    Draws are repeated until every part holds at least ``min_samples`` indices (the usual
    rejection scheme), so very small alpha with many parts may be impossible: ``ValueError``.
    """
    labels = np.asarray(y)
    if n_parts < 1 or alpha <= 0:
        raise ValueError("n_parts must be ≥ 1 and alpha > 0")
    if n_parts * min_samples > labels.size:
        raise ValueError(f"{labels.size} samples cannot give {n_parts} parts ≥ {min_samples}")
    rng = np.random.default_rng(seed)
    for _ in range(_MAX_PARTITION_ATTEMPTS):
        parts: list[list[int]] = [[] for _ in range(n_parts)]
        for cls in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == cls))
            shares = rng.dirichlet(np.full(n_parts, alpha))
            cuts = (np.cumsum(shares)[:-1] * idx.size).astype(np.int64)
            for part, chunk in zip(parts, np.split(idx, cuts), strict=True):
                part.extend(int(i) for i in chunk)
        if min(len(p) for p in parts) >= min_samples:
            return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]
    raise ValueError(f"no Dirichlet({alpha}) split gives every part ≥ {min_samples} samples")


def _split(
    full: Dataset,
    schema: DatasetSchema,
    n_providers: int,
    *,
    alpha: float,
    seed: int,
    test_fraction: float,
    min_samples: int,
) -> FederatedSplit:
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rng = np.random.default_rng(seed)
    # Stratified test split so the buyer's accuracy is measured on a balanced view of the task.
    test_idx: list[int] = []
    for cls in np.unique(full.y):
        idx = rng.permutation(np.flatnonzero(full.y == cls))
        test_idx.extend(int(i) for i in idx[: round(idx.size * test_fraction)])
    is_test = np.zeros(len(full), dtype=bool)
    is_test[test_idx] = True
    pool = np.flatnonzero(~is_test)
    parts = dirichlet_partition(
        full.y[pool], n_providers, alpha=alpha, seed=seed + 1, min_samples=min_samples
    )
    providers = [full.take(pool[p]) for p in parts]
    logger.info(
        "split %d samples: test %d, providers %s",
        len(full),
        int(is_test.sum()),
        [len(p) for p in providers],
    )
    return FederatedSplit(providers, full.take(np.flatnonzero(is_test)), schema)


def load_digits_split(
    n_providers: int,
    *,
    alpha: float = DEFAULT_ALPHA,
    seed: int,
    test_fraction: float = 0.2,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> FederatedSplit:
    """scikit-learn's 8x8 digits (1797 samples, 64 int features 0..16, 10 classes), split.

    The schema declares the fixed transform ``x / 16`` so every party scales the same way.
    """
    raw = load_digits()
    names = [f"px{i}" for i in range(raw.data.shape[1])]
    full = Dataset(raw.data, raw.target, names, "label", ["int"] * len(names))
    schema = DatasetSchema(
        features=[FeatureSpec(name=n, type="int", scale=1.0 / 16.0) for n in names],
        label=LabelSpec(name="label", classes=list(range(10))),
    )
    return _split(
        full,
        schema,
        n_providers,
        alpha=alpha,
        seed=seed,
        test_fraction=test_fraction,
        min_samples=min_samples,
    )


def load_breast_cancer_split(
    n_providers: int,
    *,
    alpha: float = DEFAULT_ALPHA,
    seed: int,
    test_fraction: float = 0.2,
    min_samples: int = DEFAULT_MIN_SAMPLES,
) -> FederatedSplit:
    """scikit-learn's breast-cancer data (569 samples, 30 float features, 2 classes), split.

    Features span very different ranges, so the schema standardizes them with the mean and std
    of the *buyer's* test set: a fixed, published transform that needs no provider's data.
    """
    raw = load_breast_cancer()
    names = [str(n).replace(" ", "_") for n in raw.feature_names]
    full = Dataset(raw.data, raw.target, names, "label", ["float"] * len(names))
    base = derive_schema(full, classes=[0, 1])
    split = _split(
        full,
        base,
        n_providers,
        alpha=alpha,
        seed=seed,
        test_fraction=test_fraction,
        min_samples=min_samples,
    )
    schema = standardized_schema(base, split.test)
    return FederatedSplit(split.providers, split.test, schema)


def _set_threads() -> None:
    # Many agents may train side by side on a small machine; one intra-op thread each avoids
    # oversubscription, and the models are too small to benefit from more.
    torch.set_num_threads(1)


def fedavg_plaintext(
    spec: ModelSpec,
    provider_datasets: Sequence[Dataset],
    test: Dataset,
    *,
    rounds: int,
    local_epochs: int = DEFAULT_EPOCHS,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int,
    server_optimizer: ServerOptimizer | None = None,
    dp: DPConfig | None = None,
    record_dp: PrivacyTarget | None = None,
    n_classes: int | None = None,
) -> list[float]:
    """Test accuracy after each of ``rounds`` rounds of sample-weighted FedAvg (no encryption).

    Datasets must be prepared (transformed, labels as class indices). Each round every provider
    starts from the global weights, trains ``local_epochs`` and sends ``delta``; the server
    averages deltas weighted by min(samples, median samples), as the marketplace weighs them,
    and applies ``server_optimizer`` (FedAvg, lr 1).
    With ``dp`` each delta is clipped and noised first, as a DP-enabled agent would. With
    ``record_dp`` each provider trains with DP-SGD planned as an agent plans it (the whole run
    costs it ``record_dp.epsilon``), but with *seeded* noise: a baseline, not a release.
    ``n_classes`` defaults to the largest label seen plus one; pass the schema's to be safe.
    """
    _set_threads()
    if not provider_datasets:
        raise ValueError("need at least one provider dataset")
    if n_classes is None:
        n_classes = max(int(ds.y.max()) for ds in [*provider_datasets, test]) + 1
    n_features = test.n_features
    opt = server_optimizer if server_optimizer is not None else FedAvg()
    global_model = build_model(spec, n_features, n_classes, seed=seed)
    weights = flatten(global_model)
    local = build_model(spec, n_features, n_classes, seed=seed)
    rng = np.random.default_rng(seed)
    plans = [
        _record_dp_plan(record_dp, len(ds), batch_size, local_epochs, rounds)
        for ds in provider_datasets
    ]
    accuracies: list[float] = []
    started = time.perf_counter()
    for r in range(rounds):
        step = _average_update(
            local, weights, provider_datasets, plans, r,
            local_epochs=local_epochs, lr=lr, batch_size=batch_size, seed=seed, dp=dp, rng=rng,
        )  # fmt: skip
        weights = opt.step(weights, step)
        unflatten_into(global_model, weights)
        accuracies.append(evaluate(global_model, test).accuracy)
        logger.info("round %d/%d accuracy %.4f", r + 1, rounds, accuracies[-1])
    logger.info("fedavg_plaintext: %d rounds in %.2fs", rounds, time.perf_counter() - started)
    return accuracies


def _record_dp_plan(
    target: PrivacyTarget | None, samples: int, batch_size: int, epochs: int, rounds: int
) -> DPPlan | None:
    """One provider's DP-SGD plan for the whole run, made as an agent makes it."""
    if target is None:
        return None
    return plan_record_dp(
        target, samples=samples, batch_size=batch_size, epochs=epochs, rounds=rounds
    )


def _average_update(
    local: torch.nn.Module,
    weights: npt.NDArray[np.float32],
    provider_datasets: Sequence[Dataset],
    plans: Sequence[DPPlan | None],
    r: int,
    *,
    local_epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    dp: DPConfig | None,
    rng: np.random.Generator,
) -> npt.NDArray[np.float32]:
    """Round `r` (from 0): every provider trains from `weights`; their weighted mean delta."""
    # The marketplace's weighting (crypto/weights.py): min(n, median n), so this baseline
    # is the very average the buyer decrypts.
    norm = weight_norm(len(ds) for ds in provider_datasets)
    total = np.zeros_like(weights, dtype=np.float64)
    n_total = 0
    for i, ds in enumerate(provider_datasets):
        unflatten_into(local, weights)
        result = train_local(
            local,
            ds,
            epochs=local_epochs,
            lr=lr,
            batch_size=batch_size,
            seed=seed * 1_000_003 + r * 1009 + i,
            dp=None
            if (plan := plans[i]) is None
            else RecordDP(plan.noise_multiplier, plan.clip, seed=seed * 7919 + r * 101 + i),
        )
        delta = compute_update(weights, flatten(local))
        if dp is not None:
            delta = privatize(delta, dp, rng)
        weight = min(result.samples, norm)
        total += weight * delta.astype(np.float64)
        n_total += weight
    return (total / n_total).astype(np.float32)


def centralized(
    spec: ModelSpec,
    union: Dataset | Sequence[Dataset],
    test: Dataset,
    *,
    epochs: int,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int,
    n_classes: int | None = None,
) -> float:
    """Test accuracy of one model trained on all the data (prepared), for comparison."""
    _set_threads()
    data = union if isinstance(union, Dataset) else concat(list(union))
    if n_classes is None:
        n_classes = max(int(data.y.max()), int(test.y.max())) + 1
    model = build_model(spec, data.n_features, n_classes, seed=seed)
    train_local(model, data, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    return evaluate(model, test).accuracy


def prepared(split: FederatedSplit) -> tuple[list[Dataset], Dataset]:
    """The split's provider datasets and test set, prepared with its schema."""
    return [prepare(p, split.schema) for p in split.providers], prepare(split.test, split.schema)
