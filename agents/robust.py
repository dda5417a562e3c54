"""The buyer's view of a round's random groups: score each group, and step robustly.

Every round the marketplace keeps, beside the total, the encrypted sum of each random group
of at least `group_size` (≥ quorum) providers (`market.services.groups`). The buyer decrypts
each group's sum, applies the group's average update to the round's model on its held-out
data, and reports the loss before and after; the marketplace turns those values into each
provider's contribution score, which splits later rounds' pools.

**Group-level robust aggregation** (the rule, recorded with its reason): a group whose
average update raises the held-out loss by more than `EXCLUDE_MARGIN` (5%) over the loss
before the step is left out of the model step, unless every group is; the step then uses the
remaining groups' sums. With nothing excluded the step is exactly the plain average of the
round's total, so an honest run is ordinary FedAvg. A single noisy or poisoned update can
spoil its own group, not the round.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from torch import nn

from agents.data import Dataset
from agents.modelio import unflatten_into
from agents.training import evaluate
from crypto import DecryptedAggregate

EXCLUDE_MARGIN = 0.05
FloatVector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class GroupScore:
    """What the buyer reports of one released group."""

    index: int
    loss_before: float
    loss_after: float
    excluded: bool
    reason: str | None

    def as_json(self) -> dict[str, object]:
        return {
            "index": self.index,
            "loss_before": self.loss_before,
            "loss_after": self.loss_after,
            "excluded": self.excluded,
            "reason": self.reason,
        }


def score_groups(
    model: nn.Module,
    weights: FloatVector,
    sums: dict[int, DecryptedAggregate],
    test: Dataset,
) -> list[GroupScore]:
    """Each group's loss after applying its average update to `weights`, and the verdict."""
    unflatten_into(model, weights)
    before = float(evaluate(model, test).loss)
    after = {}
    for index, agg in sorted(sums.items()):
        unflatten_into(model, (weights + agg.average).astype(np.float32))
        after[index] = float(evaluate(model, test).loss)
    unflatten_into(model, weights)
    limit = before * (1 + EXCLUDE_MARGIN)
    worse = {i for i, loss in after.items() if not np.isfinite(loss) or loss > limit}
    if worse == set(after):
        worse = set()  # no group stands out: nothing to leave out
    return [
        GroupScore(
            index=i,
            loss_before=before,
            loss_after=loss if np.isfinite(loss) else 1e9,
            excluded=i in worse,
            reason=(
                f"held-out loss {before:.4f} → {loss:.4f}, more than "
                f"{EXCLUDE_MARGIN:.0%} worse: left out of the model step"
                if i in worse
                else None
            ),
        )
        for i, loss in sorted(after.items())
    ]


def robust_average(
    total: DecryptedAggregate, sums: dict[int, DecryptedAggregate], scores: list[GroupScore]
) -> FloatVector:
    """The update the buyer steps with: the total's average, or that of the kept groups."""
    kept = [sums[s.index] for s in scores if not s.excluded]
    if len(kept) == len(sums) or not kept:
        return total.average
    summed = np.sum([agg.total.astype(np.float64) for agg in kept], axis=0)
    return (summed / sum(agg.weight_sum for agg in kept)).astype(np.float32)
