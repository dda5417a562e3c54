"""The buyer's view of a round's random groups: score each group, and step robustly.

Every round the marketplace keeps, beside the total, the encrypted sum of each random group
of at least `group_size` (≥ quorum) providers (`market.services.groups`). The buyer decrypts
each group's sum and reports its value: how well the group's average update lines up with
the step the other groups make (`alignment`, about 1 for a group that pulls its weight, ½
for a group of two where one sends zeros), −1 for a group left out of the step; beside it
the held-out loss of the step with every group and without this one. The marketplace turns
the values into each provider's contribution score.

**Group-level robust aggregation** (the rule, recorded with its reason): the group whose
removal lowers the held-out loss the most is left out of the model step if removing it
lowers that loss by more than `EXCLUDE_MARGIN` (25%: clearly worse, not merely a different
step); then the remaining groups are tested again, leaving out at most half the groups.
With nothing excluded the step is exactly the average of
the round's total, so an honest run is ordinary FedAvg. A noisy or poisoned update spoils
its own group's sum, not the round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from torch import nn

from agents.data import Dataset
from agents.modelio import unflatten_into
from agents.training import evaluate, evaluate_regression
from crypto import DecryptedAggregate

EXCLUDE_MARGIN = 0.25
FloatVector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class GroupScore:
    """What the buyer reports of one released group."""

    index: int
    value: float
    loss_without: float
    loss_with: float
    excluded: bool
    reason: str | None

    def as_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "value": self.value,
            "loss_without": self.loss_without,
            "loss_with": self.loss_with,
            "excluded": self.excluded,
            "reason": self.reason,
        }


def alignment(update: FloatVector, direction: FloatVector | None) -> float:
    """<update, direction> / |direction|², clipped to [−1, 2] (1 with nothing to compare)."""
    if direction is None:
        return 1.0
    d = direction.astype(np.float64)
    norm = float(np.dot(d, d))
    if norm <= 0:
        return 1.0
    value = float(np.dot(update.astype(np.float64), d)) / norm
    return max(-1.0, min(2.0, value)) if np.isfinite(value) else -1.0


def _average(sums: list[DecryptedAggregate]) -> FloatVector | None:
    if not sums:
        return None
    total: npt.NDArray[np.float64] = np.sum([agg.total.astype(np.float64) for agg in sums], axis=0)
    return (total / sum(agg.weight_sum for agg in sums)).astype(np.float32)


class _Loss:
    """Held-out loss of `weights` + an average update (None: no step at all)."""

    def __init__(self, model: nn.Module, weights: FloatVector, test: Dataset) -> None:
        self.model, self.weights, self.test = model, weights, test

    def __call__(self, update: FloatVector | None) -> float:
        step = self.weights if update is None else self.weights + update
        unflatten_into(self.model, step.astype(np.float32))
        if self.test.continuous:  # a regression: mean squared error on the scaled target
            result = evaluate_regression(self.model, self.test, offset=0.0, scale=1.0)
            loss = float(result.loss)
        else:
            loss = float(evaluate(self.model, self.test).loss)
        return loss if np.isfinite(loss) else 1e9


def score_groups(
    model: nn.Module,
    weights: FloatVector,
    sums: dict[int, DecryptedAggregate],
    test: Dataset,
) -> list[GroupScore]:
    """Each group's value and leave-one-out losses, and which groups the step leaves out."""
    loss = _Loss(model, weights, test)
    indices = sorted(sums)
    with_all = loss(_average([sums[i] for i in indices]))
    without = {i: loss(_average([sums[j] for j in indices if j != i])) for i in indices}
    excluded: dict[int, str] = {}
    kept = list(indices)
    current = with_all
    while len(kept) >= 2 and len(excluded) < len(indices) // 2:
        trial = {i: loss(_average([sums[j] for j in kept if j != i])) for i in kept}
        worst = min(trial, key=lambda i: (trial[i], i))
        if trial[worst] >= current * (1 - EXCLUDE_MARGIN):
            break
        excluded[worst] = (
            f"held-out loss {current:.4f} with it, {trial[worst]:.4f} without: more than "
            f"{EXCLUDE_MARGIN:.0%} better without, left out of the model step"
        )
        kept.remove(worst)
        current = trial[worst]
    unflatten_into(model, weights)
    scores = []
    for i in indices:
        others = _average([sums[j] for j in kept if j != i])
        value = -1.0 if i in excluded else alignment(sums[i].average, others)
        scores.append(GroupScore(i, value, without[i], with_all, i in excluded, excluded.get(i)))
    return scores


def robust_average(
    total: DecryptedAggregate, sums: dict[int, DecryptedAggregate], scores: list[GroupScore]
) -> FloatVector:
    """The update the buyer steps with: the total's average, or that of the kept groups."""
    kept = [sums[s.index] for s in scores if not s.excluded]
    if len(kept) == len(sums) or not kept:
        return total.average
    average = _average(kept)
    assert average is not None
    return average
