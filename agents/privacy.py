"""Provider-side differential privacy: record-level DP-SGD (the default) and update-level DP.

**Record-level DP (DP-SGD, on by default).** The buyer chooses the global weights every round,
so it can plant an imprint layer (Fowl et al., "Robbing the Fed", ICLR 2022) and read
training rows straight out of the decrypted *sum* of updates; encryption does not help. So
every provider's agent trains with DP-SGD through opacus (:class:`agents.training.RecordDP`):
per-example gradients clipped to ``clip``, Gaussian noise σ·clip on every batch gradient,
Poisson-sampled batches. The protected unit is one training row (add/remove). The agent plans
the job's whole run up front (:func:`plan_record_dp`): from the job's rounds, local epochs,
batch size and its own row count it derives the noise multiplier σ that makes the job cost
exactly the target ε at δ (opacus ``get_noise_multiplier``, RDP accountant), then charges each
round's noisy steps and never trains a round that would take it past that ε (a retried round
costs steps too). The target comes from :class:`PrivacyPolicy`: the job's requirement if it
states one and the provider allows it, else the provider's own ``max_epsilon``
(:data:`DEFAULT_MAX_EPSILON`). ε composes across jobs on the same data; each job's is reported
separately.

**Update-level DP (opt-in second mode).** Encryption keeps a provider's update hidden from the
server, but a server that colludes with the buyer could decrypt it (see the threat model in
DESIGN.md). Differential privacy bounds what such a coalition learns: before encrypting, the
provider's agent

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
- It is *not* record-level DP, and it says nothing about the global model the provider
  receives.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = [
    "DEFAULT_CLIP",
    "DEFAULT_DELTA",
    "DEFAULT_MAX_EPSILON",
    "DPConfig",
    "DPPlan",
    "PrivacyDeclinedError",
    "PrivacyPolicy",
    "PrivacyTarget",
    "clip_update",
    "epsilon_spent",
    "plan_record_dp",
    "privatize",
    "record_epsilon",
]

logger = logging.getLogger(__name__)

DEFAULT_DELTA = 1e-5
# Chosen by measurement (`python -m bench privacy`): at ε = 8 the imprint attack recovers no
# training row, and the digits demo loses a few accuracy points against no DP.
DEFAULT_MAX_EPSILON = 8.0
DEFAULT_CLIP = 1.0
FloatVector = npt.NDArray[np.float32]
# opacus's default Rényi orders, copied so that importing this module stays cheap (opacus
# itself is imported only when ε is computed).
_ORDERS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))


@contextmanager
def _quiet_accountant() -> Iterator[None]:
    # opacus warns when the best Rényi order is the largest one tried: the bound is then a
    # little loose (ε reported slightly high), which is the safe side for a provider.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        yield


class PrivacyDeclinedError(ValueError):
    """A job's privacy requirement is one this provider's policy does not accept."""


@dataclass(frozen=True)
class PrivacyTarget:
    """Record-level DP one job is trained under: total ε at δ, per-example clip norm."""

    epsilon: float
    delta: float
    clip: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.epsilon) and self.epsilon > 0):
            raise ValueError(f"epsilon must be a positive finite number, got {self.epsilon}")
        if not 0 < self.delta < 1:
            raise ValueError(f"delta must be in (0, 1), got {self.delta}")
        if not (math.isfinite(self.clip) and self.clip > 0):
            raise ValueError(f"clip must be a positive number, got {self.clip}")


@dataclass(frozen=True)
class PrivacyPolicy:
    """What record-level DP a provider insists on. ``max_epsilon=None`` is the explicit
    opt-out (``pollen agent run --no-dp``): no DP unless the job itself asks for it."""

    max_epsilon: float | None = DEFAULT_MAX_EPSILON
    delta: float = DEFAULT_DELTA
    clip: float = DEFAULT_CLIP

    def __post_init__(self) -> None:
        if self.max_epsilon is not None:
            PrivacyTarget(self.max_epsilon, self.delta, self.clip)  # validates

    def target_for(self, requirement: Mapping[str, Any] | str | None) -> PrivacyTarget | None:
        """The DP a job is trained under, or :class:`PrivacyDeclinedError`.

        ``requirement`` is the job spec's ``privacy``: a mapping (ε, δ, clip), ``"off"``
        (the buyer asks for updates without DP) or None (no requirement: the provider's own).
        """
        if requirement == "off":
            if self.max_epsilon is not None:
                raise PrivacyDeclinedError("the job asks for no DP and this provider requires it")
            return None
        if isinstance(requirement, Mapping):
            target = PrivacyTarget(
                float(requirement["epsilon"]),
                float(requirement["delta"]),
                float(requirement["clip"]),
            )
            if self.max_epsilon is not None and target.epsilon > self.max_epsilon:
                raise PrivacyDeclinedError(
                    f"the job asks for ε = {target.epsilon:g}; this provider allows at most "
                    f"{self.max_epsilon:g}"
                )
            return target
        if requirement is not None:
            raise PrivacyDeclinedError(f"unreadable privacy requirement {requirement!r}")
        if self.max_epsilon is None:
            return None
        return PrivacyTarget(self.max_epsilon, self.delta, self.clip)


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """Batches per epoch of opacus's Poisson loader (the length of the plain DataLoader)."""
    if samples < 1 or batch_size < 1:
        raise ValueError("samples and batch_size must be ≥ 1")
    return -(-samples // min(batch_size, samples))


def record_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """ε at ``delta`` after ``steps`` DP-SGD steps (opacus's RDP analysis)."""
    if steps == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    from opacus.accountants.analysis import rdp as rdp_analysis

    rdp = rdp_analysis.compute_rdp(
        q=sample_rate, noise_multiplier=noise_multiplier, steps=steps, orders=_ORDERS
    )
    with _quiet_accountant():
        eps, _ = rdp_analysis.get_privacy_spent(orders=_ORDERS, rdp=rdp, delta=delta)
    return float(eps)


@dataclass(frozen=True)
class DPPlan:
    """One job's DP-SGD run, fixed when the agent first trains for it (kept in its state)."""

    epsilon: float  # the target: the job never spends more
    delta: float
    clip: float
    noise_multiplier: float
    sample_rate: float
    steps_per_round: int

    def epsilon_after(self, steps: int) -> float:
        return record_epsilon(self.noise_multiplier, self.sample_rate, steps, self.delta)

    def allows(self, steps_done: int) -> bool:
        """Whether one more round keeps the job's ε within its target."""
        # get_noise_multiplier lands within its tolerance below the target; the slack only
        # absorbs float noise in the accountant, it never lets a whole extra round in.
        return self.epsilon_after(steps_done + self.steps_per_round) <= self.epsilon * 1.001

    def to_dict(self) -> dict[str, float | int]:
        return {
            "epsilon": self.epsilon,
            "delta": self.delta,
            "clip": self.clip,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps_per_round": self.steps_per_round,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DPPlan:
        return cls(
            float(data["epsilon"]),
            float(data["delta"]),
            float(data["clip"]),
            float(data["noise_multiplier"]),
            float(data["sample_rate"]),
            int(data["steps_per_round"]),
        )


def plan_record_dp(
    target: PrivacyTarget, *, samples: int, batch_size: int, epochs: int, rounds: int
) -> DPPlan:
    """The noise multiplier that makes ``rounds`` rounds of local DP-SGD cost ``target.epsilon``."""
    from opacus.accountants.utils import get_noise_multiplier

    per_epoch = steps_per_epoch(samples, batch_size)
    sample_rate = 1.0 / per_epoch
    steps_per_round = epochs * per_epoch
    with _quiet_accountant():
        sigma = get_noise_multiplier(
            target_epsilon=target.epsilon,
            target_delta=target.delta,
            sample_rate=sample_rate,
            steps=steps_per_round * rounds,
            accountant="rdp",
        )
    return DPPlan(
        target.epsilon, target.delta, target.clip, float(sigma), sample_rate, steps_per_round
    )


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
    from opacus.accountants.analysis import rdp as rdp_analysis

    orders = _ORDERS
    rdp = rdp_analysis.compute_rdp(
        q=sample_rate, noise_multiplier=cfg.noise_multiplier, steps=rounds, orders=orders
    )
    with _quiet_accountant():
        eps, best_order = rdp_analysis.get_privacy_spent(orders=orders, rdp=rdp, delta=cfg.delta)
    logger.debug("ε=%.4f after %d rounds (order %s)", eps, rounds, best_order)
    return float(eps)
