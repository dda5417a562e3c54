"""Tests for the model registry (agents.models) and model I/O (agents.modelio)."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import safetensors.numpy
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agents.modelio import (
    ModelIOError,
    flatten,
    load_safetensors,
    param_count,
    param_count_from_safetensors,
    state_keys,
    to_safetensors,
    unflatten_into,
    vector_from_safetensors,
)
from agents.models import LogRegSpec, MLPSpec, build_model, model_spec

# Five hidden layers give Sequential indices 0..10, so "10.weight" sorts before "2.weight":
# the case where sorted order and state_dict order differ.
DEEP = MLPSpec(arch="mlp", hidden=[5, 4, 3, 4, 5])


def test_logreg_is_one_linear_layer() -> None:
    """A logreg model has exactly d*k weights plus k biases."""
    model = build_model(LogRegSpec(arch="logreg"), 64, 10, seed=0)
    assert param_count(model) == 64 * 10 + 10
    assert state_keys(model) == ["0.bias", "0.weight"]


def test_mlp_hidden_sizes_are_respected() -> None:
    """An MLP's layers follow the hidden sizes given in the spec."""
    model = build_model(MLPSpec(arch="mlp", hidden=[32, 16]), 8, 3, seed=0)
    assert param_count(model) == (8 * 32 + 32) + (32 * 16 + 16) + (16 * 3 + 3)
    assert model(torch.zeros(2, 8)).shape == (2, 3)


def test_same_seed_same_model_and_global_rng_untouched() -> None:
    """Same spec and seed give bit-identical weights, and building leaves torch's RNG alone."""
    torch.manual_seed(123)
    before = torch.rand(3)
    torch.manual_seed(123)
    a = flatten(build_model(DEEP, 7, 3, seed=42))
    after = torch.rand(3)
    b = flatten(build_model(DEEP, 7, 3, seed=42))
    c = flatten(build_model(DEEP, 7, 3, seed=43))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    assert torch.equal(before, after)


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"arch": "logreg", "hidden": [8]}, "takes no hidden layers"),
        ({"arch": "mlp"}, r"hidden\n  Field required"),
        ({"arch": "mlp", "hidden": [0]}, "greater than or equal to 1"),
        ({"arch": "mlp", "hidden": [5000]}, "less than or equal to 4096"),
        ({"arch": "cnn"}, r"input_shape\n  Field required"),
    ],
)
def test_invalid_specs_are_refused(payload: dict[str, object], fragment: str) -> None:
    """A model spec that cannot be built is rejected with a message saying why."""
    with pytest.raises(ValidationError, match=fragment):
        model_spec(payload)


def test_spec_round_trips_through_json() -> None:
    """A spec survives the job spec's JSON encoding unchanged."""
    spec = MLPSpec(arch="mlp", hidden=[64])
    assert model_spec(json.loads(spec.model_dump_json())) == spec


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(min_value=0, max_value=2**31 - 1))
def test_unflatten_then_flatten_is_exact(seed: int) -> None:
    """Any float32 vector written into a model reads back bit for bit."""
    model = build_model(DEEP, 7, 3, seed=0)
    vec = np.random.default_rng(seed).standard_normal(param_count(model)).astype(np.float32)
    unflatten_into(model, vec)
    assert flatten(model).tobytes() == vec.tobytes()


def test_flat_order_is_sorted_safetensors_key_order() -> None:
    """The flat vector is the file's tensors concatenated in sorted-key order (server recipe)."""
    model = build_model(DEEP, 7, 3, seed=1)
    data = to_safetensors(model)
    tensors = safetensors.numpy.load(data)
    expected = np.concatenate([tensors[k].ravel() for k in sorted(tensors)])
    assert np.array_equal(flatten(model), expected)
    assert np.array_equal(vector_from_safetensors(data), expected)
    assert param_count_from_safetensors(data) == param_count(model)
    # And sorted-key order is the physical layout of the file's data section.
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    by_offset = sorted((v["data_offsets"][0], k) for k, v in header.items() if k != "__metadata__")
    assert [k for _, k in by_offset] == sorted(tensors) == state_keys(model)
    assert state_keys(model) != list(model.state_dict())  # "10.*" sorts before "2.*"


def test_safetensors_round_trip_reproduces_the_model() -> None:
    """A model saved to safetensors and loaded into a fresh one predicts identically."""
    src = build_model(DEEP, 7, 3, seed=1)
    dst = build_model(DEEP, 7, 3, seed=2)
    load_safetensors(dst, to_safetensors(src))
    x = torch.randn(4, 7)
    assert torch.equal(src(x), dst(x))
    assert flatten(src).tobytes() == flatten(dst).tobytes()


def test_load_safetensors_refuses_a_mismatched_file() -> None:
    """Loading a file of another shape names the offending tensor and leaves the model as is."""
    model = build_model(LogRegSpec(arch="logreg"), 8, 3, seed=0)
    before = flatten(model)
    other = to_safetensors(build_model(LogRegSpec(arch="logreg"), 9, 3, seed=0))
    with pytest.raises(ModelIOError, match=r"'0.weight' has shape \(3, 9\)"):
        load_safetensors(model, other)
    with pytest.raises(ModelIOError, match="missing"):
        load_safetensors(model, to_safetensors(build_model(DEEP, 8, 3, seed=0)))
    with pytest.raises(ModelIOError, match="not a valid safetensors file"):
        load_safetensors(model, b"\x00garbage, maybe a pickle")
    assert np.array_equal(flatten(model), before)


def test_unflatten_rejects_wrong_length_and_nan() -> None:
    """A vector of the wrong length or with NaN is refused with a clear message."""
    model = build_model(LogRegSpec(arch="logreg"), 4, 2, seed=0)
    with pytest.raises(ModelIOError, match="has 9 values, model has 10 parameters"):
        unflatten_into(model, np.zeros(9, dtype=np.float32))
    bad = np.zeros(10, dtype=np.float32)
    bad[3] = np.nan
    with pytest.raises(ModelIOError, match="NaN"):
        unflatten_into(model, bad)
