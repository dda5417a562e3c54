"""Tests for provider-side differential privacy (agents.privacy)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from opacus.accountants import RDPAccountant

from agents.privacy import DPConfig, clip_update, epsilon_spent, privatize


def test_clipping_bounds_the_norm_and_keeps_direction() -> None:
    """A large update is scaled down to norm C in the same direction; a small one is unchanged."""
    big = np.array([3.0, 4.0], dtype=np.float32)  # norm 5
    clipped = clip_update(big, 1.0)
    assert np.linalg.norm(clipped) == pytest.approx(1.0, rel=1e-6)
    assert np.allclose(clipped, big / 5)
    small = np.array([0.1, -0.2], dtype=np.float32)
    assert np.array_equal(clip_update(small, 1.0), small)
    assert np.array_equal(clip_update(np.zeros(3), 1.0), np.zeros(3))


def test_noise_has_the_configured_scale() -> None:
    """privatize adds zero-mean Gaussian noise with std noise_multiplier * clip per coordinate."""
    cfg = DPConfig(clip=0.5, noise_multiplier=1.2)
    out = privatize(np.zeros(200_000, dtype=np.float32), cfg, np.random.default_rng(0))
    assert out.dtype == np.float32
    assert out.std() == pytest.approx(0.6, rel=0.01)
    assert abs(out.mean()) < 0.01


def test_privatize_is_reproducible_and_clips_before_noise() -> None:
    """Same RNG seed gives the same release; the release sits within noise of the clipped update."""
    cfg = DPConfig(clip=1.0, noise_multiplier=0.01)
    delta = np.full(10_000, 10.0, dtype=np.float32)
    a = privatize(delta, cfg, np.random.default_rng(7))
    b = privatize(delta, cfg, np.random.default_rng(7))
    assert np.array_equal(a, b)
    assert np.linalg.norm(a - clip_update(delta, 1.0)) < 5 * 0.01 * math.sqrt(delta.size)


def test_epsilon_grows_with_rounds_and_shrinks_with_noise() -> None:
    """ε increases with every round participated in and decreases with more noise."""
    cfg = DPConfig(clip=1.0, noise_multiplier=1.0, delta=1e-5)
    eps = [epsilon_spent(cfg, r) for r in range(0, 21)]
    assert eps[0] == 0.0
    assert all(b > a for a, b in itertools.pairwise(eps))
    noisier = DPConfig(clip=1.0, noise_multiplier=2.0, delta=1e-5)
    assert epsilon_spent(noisier, 10) < epsilon_spent(cfg, 10)
    assert epsilon_spent(cfg, 10, sample_rate=0.1) < epsilon_spent(cfg, 10)
    assert epsilon_spent(DPConfig(clip=1.0, noise_multiplier=0.0), 1) == math.inf


def test_epsilon_matches_opacus_accountant() -> None:
    """Our ε equals opacus's RDPAccountant stepped once per round at the same δ."""
    cfg = DPConfig(clip=1.0, noise_multiplier=1.1, delta=1e-6)
    accountant = RDPAccountant()
    for _ in range(7):
        accountant.step(noise_multiplier=1.1, sample_rate=1.0)
    assert epsilon_spent(cfg, 7) == pytest.approx(accountant.get_epsilon(delta=1e-6), rel=1e-9)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clip": 0.0, "noise_multiplier": 1.0}, "clip"),
        ({"clip": 1.0, "noise_multiplier": -1.0}, "noise_multiplier"),
        ({"clip": 1.0, "noise_multiplier": 1.0, "delta": 1.0}, "delta"),
    ],
)
def test_invalid_config_is_refused(kwargs: dict[str, float], message: str) -> None:
    """A DP configuration that would give no guarantee is rejected up front."""
    with pytest.raises(ValueError, match=message):
        DPConfig(**kwargs)
