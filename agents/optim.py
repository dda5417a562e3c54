"""Server-side optimizers the buyer applies to each round's decrypted average update.

The buyer decrypts only the weighted *average* of the providers' updates, ``avg_delta`` (see
``crypto.DecryptedAggregate.average``), and turns it into the next global model with a
:class:`ServerOptimizer`. The average delta is treated as a pseudo-gradient pointing *downhill*
(it is ``w_local - w``), so every optimizer here **adds** it.

- :class:`FedAvg` — ``w + server_lr * avg_delta``; with ``server_lr = 1`` this is McMahan et
  al.'s FedAvg exactly (the new model is the sample-weighted mean of the local models).
- :class:`FedAdam` — Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2::

      m = beta1 * m + (1 - beta1) * delta
      v = beta2 * v + (1 - beta2) * delta**2
      w = w + lr * m / (sqrt(v) + tau)

  without bias correction, as in the paper; ``tau`` bounds the adaptivity.

Pure numpy, no torch. Optimizers keep their state between rounds; :meth:`state_dict` (JSON-
serializable: arrays as base64 float64) and :meth:`load_state_dict` let the buyer's resumable
round loop save and restore it exactly.
"""

from __future__ import annotations

import base64
import logging
from abc import ABC, abstractmethod
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["FedAdam", "FedAvg", "ServerOptimizer", "ServerOptimizerName", "make_server_optimizer"]

logger = logging.getLogger(__name__)

FloatVector = npt.NDArray[np.float32]
ServerOptimizerName = Literal["fedavg", "fedadam"]


def _check(weights: npt.ArrayLike, avg_delta: npt.ArrayLike) -> tuple[FloatVector, FloatVector]:
    w = np.asarray(weights, dtype=np.float32)
    d = np.asarray(avg_delta, dtype=np.float32)
    if w.ndim != 1 or w.shape != d.shape:
        raise ValueError(f"weights and avg_delta must be 1-D, same length: {w.shape}, {d.shape}")
    if not np.all(np.isfinite(d)):
        # A non-finite aggregate means a broken round; stepping would corrupt the model forever.
        raise ValueError("avg_delta holds NaN or infinite values")
    return w, d


class ServerOptimizer(ABC):
    """Turns the current global weights and a round's average update into new weights."""

    @abstractmethod
    def step(self, weights: npt.ArrayLike, avg_delta: npt.ArrayLike) -> FloatVector:
        """Return the next global weights (a new array; inputs are not modified)."""

    def state_dict(self) -> dict[str, Any]:
        """Optimizer state to persist between rounds (empty if stateless)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Restore state saved by :meth:`state_dict`."""


class FedAvg(ServerOptimizer):
    """``w + server_lr * avg_delta`` (plain FedAvg when ``server_lr`` is 1)."""

    def __init__(self, *, server_lr: float = 1.0) -> None:
        if not server_lr > 0:
            raise ValueError(f"server_lr must be positive, got {server_lr}")
        self.server_lr = server_lr

    def step(self, weights: npt.ArrayLike, avg_delta: npt.ArrayLike) -> FloatVector:
        w, d = _check(weights, avg_delta)
        return (w + np.float32(self.server_lr) * d).astype(np.float32)


class FedAdam(ServerOptimizer):
    """Adaptive server optimizer of Reddi et al. (2021).

    Each coordinate moves by about ``lr`` per round early on (Adam's steps are sign-like), so
    ``lr`` should be of the order of a round's typical weight change. The paper's grid often
    picks 0.01, which is too timid for 10-round jobs here: on the digits demo (logreg) 0.01
    reaches 74% after 10 rounds, 0.1 reaches 91% and 0.3 reaches 94%. β and τ follow the paper.
    """

    def __init__(
        self,
        *,
        lr: float = 0.1,
        beta1: float = 0.9,
        beta2: float = 0.99,
        tau: float = 1e-3,
    ) -> None:
        if not lr > 0 or not tau > 0:
            raise ValueError("lr and tau must be positive")
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError("beta1 and beta2 must be in [0, 1)")
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau
        # Moments kept in float64: v accumulates squares of small numbers over many rounds.
        self.m: npt.NDArray[np.float64] | None = None
        self.v: npt.NDArray[np.float64] | None = None

    def step(self, weights: npt.ArrayLike, avg_delta: npt.ArrayLike) -> FloatVector:
        w, d32 = _check(weights, avg_delta)
        d = d32.astype(np.float64)
        if self.m is None or self.v is None or self.m.shape != d.shape:
            # The paper initialises v to tau**2 so the first steps are not wildly large.
            self.m = np.zeros_like(d)
            self.v = np.full_like(d, self.tau**2)
        self.m = self.beta1 * self.m + (1.0 - self.beta1) * d
        self.v = self.beta2 * self.v + (1.0 - self.beta2) * d * d
        new = w.astype(np.float64) + self.lr * self.m / (np.sqrt(self.v) + self.tau)
        return new.astype(np.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"m": _encode(self.m), "v": _encode(self.v)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m = _decode(state.get("m"))
        self.v = _decode(state.get("v"))


def _encode(arr: npt.NDArray[np.float64] | None) -> str | None:
    # base64 of little-endian float64: exact, JSON-safe and about half the size of a list of floats.
    return None if arr is None else base64.b64encode(arr.astype("<f8").tobytes()).decode("ascii")


def _decode(value: object) -> npt.NDArray[np.float64] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return np.frombuffer(base64.b64decode(value), dtype="<f8").astype(np.float64)
    return np.array(value, dtype=np.float64)


def make_server_optimizer(name: ServerOptimizerName, **kwargs: float) -> ServerOptimizer:
    """Build a server optimizer by name (what a job spec or CLI flag carries)."""
    if name == "fedavg":
        return FedAvg(**kwargs)
    if name == "fedadam":
        return FedAdam(**kwargs)
    raise ValueError(f"unknown server optimizer {name!r}; use 'fedavg' or 'fedadam'")
