"""How much each update weighs in a round's sum: one rule for server, agents and baselines.

A provider encrypts `weight · delta` with weight = min(n, norm) / norm (in (0, 1], as
`encrypt_update` requires), and the buyer divides the decrypted sum by Σ weight. The round's
`norm` is the **median** of the providers' (capped) sample counts, never one provider's
claim: a provider that claims ten times its rows weighs as much as the median provider, not
ten times the others, and cannot shrink everyone else's updates towards zero (a sum scaled
by one inflated claim loses both the model step and CKKS precision).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable


def weight_norm(samples: Iterable[int]) -> int:
    """The round's weight scale: the (lower) median of the capped sample counts, at least 1."""
    counts = [max(int(n), 1) for n in samples]
    return int(statistics.median_low(counts)) if counts else 1


def update_weight(samples: int, norm: int) -> float:
    """One update's weight: min(samples, norm) / norm, in (0, 1]."""
    if samples < 1 or norm < 1:
        raise ValueError("samples and the round's norm must be at least 1")
    return min(samples, norm) / norm
