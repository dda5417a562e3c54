"""Tests for local training and evaluation (agents.training)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from agents.data import Dataset, derive_schema, prepare, standardized_schema
from agents.modelio import flatten, unflatten_into
from agents.models import LogRegSpec, MLPSpec, build_model
from agents.training import EpochInfo, compute_update, evaluate, train_local


@pytest.fixture(scope="module")
def cancer() -> Dataset:
    raw = load_breast_cancer()
    ds = Dataset(raw.data, raw.target, [f"f{i}" for i in range(raw.data.shape[1])])
    return prepare(ds, standardized_schema(derive_schema(ds), ds))


def test_training_improves_accuracy(cancer: Dataset) -> None:
    """A few local epochs take a random logreg from guessing to a useful classifier."""
    model = build_model(LogRegSpec(arch="logreg"), cancer.n_features, 2, seed=0)
    before = evaluate(model, cancer)
    result = train_local(model, cancer, epochs=3, seed=0)
    after = evaluate(model, cancer)
    assert result.samples == len(cancer)
    assert after.accuracy > 0.95 > before.accuracy
    assert after.loss < before.loss
    assert result.loss == pytest.approx(after.loss, rel=0.5)


def test_training_is_deterministic_given_the_seed(cancer: Dataset) -> None:
    """Same start, data and seed give bit-identical weights; another seed does not."""
    spec = MLPSpec(arch="mlp", hidden=[8])

    def run(seed: int) -> np.ndarray:
        model = build_model(spec, cancer.n_features, 2, seed=0)
        train_local(model, cancer, epochs=1, seed=seed)
        return flatten(model)

    assert run(5).tobytes() == run(5).tobytes()
    assert run(5).tobytes() != run(6).tobytes()


def test_progress_callback_sees_every_epoch(cancer: Dataset) -> None:
    """The progress hook is called once per epoch, in order, with the epoch's loss."""
    seen: list[EpochInfo] = []
    model = build_model(LogRegSpec(arch="logreg"), cancer.n_features, 2, seed=0)
    result = train_local(model, cancer, epochs=3, seed=0, progress=seen.append)
    expected = [(i, 3, len(cancer)) for i in (1, 2, 3)]
    assert [(e.epoch, e.epochs, e.samples) for e in seen] == expected
    assert seen[-1].loss == result.loss


def test_adam_option_trains_too(cancer: Dataset) -> None:
    """The Adam local optimizer is selectable and also learns."""
    model = build_model(LogRegSpec(arch="logreg"), cancer.n_features, 2, seed=0)
    train_local(model, cancer, epochs=2, lr=0.01, seed=0, optimizer="adam")
    assert evaluate(model, cancer).accuracy > 0.95


def test_update_is_local_minus_global(cancer: Dataset) -> None:
    """compute_update returns exactly the weights a provider moved, so global + delta = local."""
    model = build_model(LogRegSpec(arch="logreg"), cancer.n_features, 2, seed=0)
    global_vec = flatten(model)
    train_local(model, cancer, epochs=1, seed=0)
    local_vec = flatten(model)
    delta = compute_update(global_vec, local_vec)
    assert delta.dtype == np.float32
    assert np.allclose(global_vec + delta, local_vec, atol=1e-6)
    unflatten_into(model, global_vec)
    assert np.array_equal(flatten(model), global_vec)
    with pytest.raises(ValueError, match="equal length"):
        compute_update(global_vec, local_vec[:-1])


def test_raw_labels_out_of_range_are_refused() -> None:
    """Training on labels that are not class indices fails with a hint to prepare the data."""
    ds = Dataset(np.zeros((4, 2)), np.array([0, 1, 5, 1]), ["a", "b"])
    model = build_model(LogRegSpec(arch="logreg"), 2, 2, seed=0)
    with pytest.raises(ValueError, match="prepare"):
        train_local(model, ds, epochs=1, seed=0)
    with pytest.raises(ValueError, match="prepare"):
        evaluate(model, ds)


def test_evaluate_is_a_loss_accuracy_pair(cancer: Dataset) -> None:
    """evaluate unpacks as (loss, accuracy) with accuracy as a fraction."""
    model = build_model(LogRegSpec(arch="logreg"), cancer.n_features, 2, seed=0)
    loss, accuracy = evaluate(model, cancer)
    assert loss > 0
    assert 0.0 <= accuracy <= 1.0
