"""Tests for the buyer's server-side optimizers (agents.optim)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from agents.optim import FedAdam, FedAvg, make_server_optimizer

finite = st.floats(min_value=-10, max_value=10, width=32, allow_subnormal=False)


def test_fedavg_adds_the_average_update() -> None:
    """FedAvg with server_lr 1 gives w + avg_delta; server_lr scales the step; inputs untouched."""
    w = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    d = np.array([0.5, -1.0, 0.0], dtype=np.float32)
    assert FedAvg().step(w, d).tolist() == [1.5, 1.0, 3.0]
    assert FedAvg(server_lr=0.5).step(w, d).tolist() == [1.25, 1.5, 3.0]
    assert w.tolist() == [1.0, 2.0, 3.0]


@settings(max_examples=50, deadline=None)
@given(d=arrays(np.float32, 6, elements=finite))
def test_fedadam_first_step_follows_the_update_sign(d: np.ndarray) -> None:
    """FedAdam's first step moves every weight in the direction of its averaged update."""
    w = np.zeros(6, dtype=np.float32)
    moved = FedAdam(lr=0.1).step(w, d)
    assert np.array_equal(np.sign(moved), np.sign(d))
    assert np.all(np.abs(moved) <= 0.1 * (1 - 0.9) / np.sqrt(1 - 0.99) + 1e-6)


def test_fedadam_reaches_the_point_updates_point_to() -> None:
    """Fed updates pointing at a target, FedAdam converges there (where FedAvg would too)."""
    target = np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32)
    opt = FedAdam(lr=0.05)
    w = np.zeros(4, dtype=np.float32)
    for _ in range(400):
        w = opt.step(w, 0.5 * (target - w))
    assert np.allclose(w, target, atol=0.05)


def test_fedadam_state_survives_a_json_round_trip() -> None:
    """A restored FedAdam (state saved as JSON) takes exactly the step the original would."""
    rng = np.random.default_rng(0)
    a = FedAdam()
    w = rng.standard_normal(5).astype(np.float32)
    for _ in range(3):
        w = a.step(w, rng.standard_normal(5).astype(np.float32))
    b = FedAdam()
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    d = rng.standard_normal(5).astype(np.float32)
    assert a.step(w, d).tobytes() == b.step(w, d).tobytes()


def test_bad_inputs_are_refused() -> None:
    """Mismatched lengths and non-finite aggregates are refused instead of corrupting weights."""
    with pytest.raises(ValueError, match="same length"):
        FedAvg().step(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        FedAdam().step(np.zeros(2), np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match="beta"):
        FedAdam(beta1=1.0)


def test_optimizers_are_built_by_name() -> None:
    """A job's optimizer name selects the class and passes its parameters through."""
    assert isinstance(make_server_optimizer("fedavg"), FedAvg)
    adam = make_server_optimizer("fedadam", lr=0.2, tau=0.01)
    assert isinstance(adam, FedAdam) and adam.lr == 0.2 and adam.tau == 0.01
    with pytest.raises(ValueError, match="unknown server optimizer"):
        make_server_optimizer("sgd")  # type: ignore[arg-type]
