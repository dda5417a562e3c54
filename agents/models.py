"""Model registry shared by the provider agent and the buyer.

A job names its model with a :class:`ModelSpec` (it travels inside the job spec as JSON), and
both sides call :func:`build_model` with the dataset schema's feature and class counts. Given
the same spec, shapes and seed, every machine builds a bit-identical model, so the buyer's
round-0 weights can be reproduced anywhere and parameter vectors line up element for element.

Architectures:

- ``logreg`` — multinomial logistic regression: one ``Linear(n_features, n_classes)``; the
  softmax lives in the loss.
- ``mlp`` — ``Linear → ReLU`` for each size in ``hidden``, then a ``Linear`` to the classes.

Both are ``torch.nn.Sequential`` without buffers, so ``state_dict()`` holds exactly the
trainable parameters (see :mod:`agents.modelio` for how they are flattened).
"""

from __future__ import annotations

import itertools
import logging
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

__all__ = ["Arch", "ModelSpec", "build_model"]

logger = logging.getLogger(__name__)

Arch = Literal["logreg", "mlp"]


class ModelSpec(BaseModel):
    """What model a job trains; part of the job spec, so it is strict and JSON-friendly."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    arch: Arch = "logreg"
    hidden: list[int] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_hidden(self) -> ModelSpec:
        # Reject rather than ignore: a logreg spec carrying hidden sizes is almost certainly a
        # mistake by the buyer, and silently training a different model would waste the job.
        if self.arch == "logreg" and self.hidden:
            raise ValueError("arch 'logreg' takes no hidden layers; use arch 'mlp'")
        if self.arch == "mlp" and not self.hidden:
            raise ValueError("arch 'mlp' needs at least one hidden layer size")
        if any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden layer sizes must be positive, got {self.hidden}")
        return self


def build_model(spec: ModelSpec, n_features: int, n_classes: int, *, seed: int) -> nn.Module:
    """Build the model named by ``spec`` with a deterministic initialisation from ``seed``.

    The global torch RNG is left untouched (initialisation runs in a forked RNG state), so
    building a model never perturbs the caller's own random stream.
    """
    if n_features <= 0:
        raise ValueError(f"n_features must be positive, got {n_features}")
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    sizes = [n_features, *spec.hidden, n_classes]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        # float32 regardless of torch's default dtype: the wire format (safetensors, CKKS
        # vectors) is float32 everywhere.
        model = nn.Sequential(*layers).to(torch.float32)
    logger.debug("built %s model %s with seed %d", spec.arch, sizes, seed)
    return model
