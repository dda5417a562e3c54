"""Optional provider-side differential privacy for model updates.

Encryption keeps a provider's update hidden from the server, but a server that colludes with
the buyer could decrypt it (see the threat model in DESIGN.md). Differential privacy bounds what
such a coalition learns: before encrypting, the provider's agent

1. clips its update ``delta`` to L2 norm at most ``clip`` (C), and
2. adds independent Gaussian noise N(0, (sigma*C)²) to every coordinate
   (sigma = ``noise_multiplier``).

**What the ε means (assumptions).**

- *Update-level DP, per round.* The protected unit is the provider's whole contribution in a
  round: two neighbouring inputs are "this provider's clipped update" and "no update" (a zero
  vector), whose L2 distance is at most C. This is the add/remove notion used by DP-FedAvg
  (McMahan et al., 2018). If you want "any two datasets of this provider" (replace-one), the
  sensitivity is 2C and the reported ε corresponds to half the noise multiplier; pass
  ``noise_multiplier / 2`` to :func:`epsilon_spent` to get that figure.
- *Composition over rounds.* ε is accounted with the Rényi DP accountant from opacus over the
  number of rounds the provider has participated in; the agent counts those rounds itself.
- *No amplification by default.* ``sample_rate`` is the probability that the provider takes
  part in a round. Only pass a value below 1 if participation is truly random and secret;
  marketplace matching is neither, so the agent uses 1.0.
- It is *not* record-level DP (that would need per-example clipping, DP-SGD, inside
  :func:`agents.training.train_local`), and it says nothing about the global model the provider
  receives.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from opacus.accountants import RDPAccountant
from opacus.accountants.analysis import rdp as rdp_analysis

__all__ = ["DEFAULT_DELTA", "DPConfig", "clip_update", "epsilon_spent", "privatize"]

logger = logging.getLogger(__name__)

DEFAULT_DELTA = 1e-5
FloatVector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class DPConfig:
    """Clip norm C, noise multiplier sigma (noise std sigma*C), and δ for reporting ε."""

    clip: float
    noise_multiplier: float
    delta: float = DEFAULT_DELTA

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a positive number, got {self.clip}")
        if not (math.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ValueError(f"noise_multiplier must be ≥ 0, got {self.noise_multiplier}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")

    @property
    def noise_std(self) -> float:
        """Standard deviation of the Gaussian noise added to each coordinate."""
        return self.noise_multiplier * self.clip


def clip_update(delta: npt.ArrayLike, clip: float) -> FloatVector:
    """``delta`` scaled down (never up) so its L2 norm is at most ``clip``."""
    d = np.asarray(delta, dtype=np.float64)
    if d.ndim != 1:
        raise ValueError(f"expected a 1-D update, got shape {d.shape}")
    if not np.all(np.isfinite(d)):
        raise ValueError("update holds NaN or infinite values")
    norm = float(np.linalg.norm(d))
    factor = min(1.0, clip / norm) if norm > 0 else 1.0
    return (d * factor).astype(np.float32)


def privatize(delta: npt.ArrayLike, cfg: DPConfig, rng: np.random.Generator) -> FloatVector:
    """Clip ``delta`` to ``cfg.clip`` and add Gaussian noise of std ``cfg.noise_std``."""
    clipped = clip_update(delta, cfg.clip).astype(np.float64)
    noise = rng.normal(0.0, cfg.noise_std, size=clipped.shape) if cfg.noise_std > 0 else 0.0
    return (clipped + noise).astype(np.float32)


def epsilon_spent(cfg: DPConfig, rounds: int, sample_rate: float = 1.0) -> float:
    """ε at ``cfg.delta`` after ``rounds`` noisy updates (RDP accountant, see module doc).

    Returns 0.0 for zero rounds and ``inf`` when no noise is added.
    """
    if rounds < 0:
        raise ValueError(f"rounds must be ≥ 0, got {rounds}")
    if not 0 < sample_rate <= 1:
        raise ValueError(f"sample_rate must be in (0, 1], got {sample_rate}")
    if rounds == 0:
        return 0.0
    if cfg.noise_multiplier == 0:
        return math.inf
    orders = list(RDPAccountant.DEFAULT_ALPHAS)
    rdp = rdp_analysis.compute_rdp(
        q=sample_rate, noise_multiplier=cfg.noise_multiplier, steps=rounds, orders=orders
    )
    eps, best_order = rdp_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=cfg.delta)
    logger.debug("ε=%.4f after %d rounds (order %s)", eps, rounds, best_order)
    return float(eps)
