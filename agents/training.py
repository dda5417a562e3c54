"""Local training and evaluation, the code every provider agent runs each round.

One round for a provider is: load the global weights ``w_r`` into a model, call
:func:`train_local`, flatten the result ``w_local`` and send ``delta = w_local - w_r`` (see
:func:`compute_update`). The plaintext FedAvg baseline in :mod:`agents.experiment` runs the very
same functions, so its accuracy is what the encrypted pipeline should reproduce.

Defaults (``DEFAULT_*``) are plain SGD with no momentum and no weight decay: with those, a
provider's update is a deterministic function of ``(w_r, data, seed)`` and the server-side
average of updates is ordinary FedAvg, with no optimizer state hiding between rounds.
"""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from agents.data import Dataset

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_EPOCHS",
    "DEFAULT_LR",
    "EpochInfo",
    "EvalResult",
    "OptimizerName",
    "ProgressCallback",
    "RecordDP",
    "RegressionResult",
    "TrainResult",
    "compute_update",
    "evaluate",
    "evaluate_regression",
    "predict_values",
    "train_local",
]

logger = logging.getLogger(__name__)

# Chosen by a sweep so that 10 rounds of plaintext FedAvg on digits split over 4 non-IID
# providers (Dirichlet alpha=0.5) land within 3 accuracy points of centralized training with
# the same number of passes over the data, for logreg and a 64-unit MLP, over several seeds
# (worst gap seen: 2.2 points), in about half a second on one core. Inputs are expected to be
# scaled to roughly unit range (the schema's transform), hence the fairly large step size.
# See tests/agents/test_experiment.py.
DEFAULT_EPOCHS = 5
DEFAULT_LR = 0.5
DEFAULT_BATCH_SIZE = 16

OptimizerName = Literal["sgd", "adam"]
FloatVector = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EpochInfo:
    """What a progress callback receives after each local epoch."""

    epoch: int  # 1-based
    epochs: int
    loss: float  # mean training loss over the epoch
    samples: int


ProgressCallback = Callable[[EpochInfo], None]


@dataclass(frozen=True)
class TrainResult:
    """Outcome of one local training run: last-epoch mean loss, the sample count, and with
    DP-SGD the noisy steps taken (what the provider's privacy accountant charges)."""

    loss: float
    samples: int
    dp_steps: int = 0


@dataclass(frozen=True)
class RecordDP:
    """DP-SGD for one local run: opacus clips every example's gradient to ``max_grad_norm``,
    adds N(0, (noise_multiplier·max_grad_norm)²) to each summed batch gradient and draws
    batches by Poisson sampling (rate batch_size / n). ``seed`` makes the noise reproducible
    and exists for benchmarks and the plaintext baseline only; a provider leaves it None and
    the noise is seeded from ``os.urandom``, so nobody can predict and subtract it."""

    noise_multiplier: float
    max_grad_norm: float
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (np.isfinite(self.noise_multiplier) and self.noise_multiplier >= 0):
            raise ValueError(f"noise_multiplier must be ≥ 0, got {self.noise_multiplier}")
        if not (np.isfinite(self.max_grad_norm) and self.max_grad_norm > 0):
            raise ValueError(f"max_grad_norm must be > 0, got {self.max_grad_norm}")


class EvalResult(NamedTuple):
    """Mean cross-entropy loss and accuracy (fraction in [0, 1])."""

    loss: float
    accuracy: float


def warm_up() -> None:
    """Pay torch's one-off start-up cost now rather than inside the first round's deadline:
    the first optimizer built in a process imports torch's compiler stack, which takes
    seconds on a busy machine."""
    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def _tensors(model: nn.Module, dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """The dataset as tensors, after checking labels fit the model's output units.

    A regression (``dataset.continuous``) gives targets of shape (n, 1) for one output.
    """
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    X, y = torch.from_numpy(dataset.X), torch.from_numpy(dataset.y)
    with torch.no_grad():
        n_classes = int(model(X[:1]).shape[1])
    if dataset.continuous:
        if n_classes != 1:
            raise ValueError(f"a regression needs a model with one output, not {n_classes}")
        return X, y.reshape(-1, 1)
    if dataset.y.min() < 0 or dataset.y.max() >= n_classes:
        # The model's labels are class *indices*; raw labels must go through data.prepare.
        raise ValueError(
            f"labels must be class indices in [0, {n_classes}); got range "
            f"[{int(dataset.y.min())}, {int(dataset.y.max())}] (run agents.data.prepare first)"
        )
    return X, y


def train_local(
    model: nn.Module,
    dataset: Dataset,
    *,
    epochs: int = DEFAULT_EPOCHS,
    lr: float = DEFAULT_LR,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int,
    optimizer: OptimizerName = "sgd",
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    progress: ProgressCallback | None = None,
    dp: RecordDP | None = None,
) -> TrainResult:
    """Train ``model`` in place on ``dataset`` (labels already class indices).

    Mini-batch order comes from a torch generator seeded with ``seed``, so the same inputs give
    the same weights. ``progress`` is called after every epoch (e.g. to draw a progress bar).
    With ``dp`` the run is DP-SGD through opacus instead (see :class:`RecordDP`).
    """
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError("epochs and batch_size must be ≥ 1 and lr > 0")
    X, y = _tensors(model, dataset)
    opt = _optimizer(model, optimizer, lr=lr, momentum=momentum, weight_decay=weight_decay)
    # Regression trains on the job's standardized target, so MSE is on the unit scale.
    loss_fn: nn.Module = nn.MSELoss() if dataset.continuous else nn.CrossEntropyLoss()
    if dp is not None:
        return _train_dp(
            model,
            X,
            y,
            opt,
            loss_fn,
            epochs=epochs,
            batch_size=batch_size,
            dp=dp,
            progress=progress,
        )
    gen = torch.Generator().manual_seed(seed)
    n = len(dataset)
    model.train()
    epoch_loss = float("nan")
    for epoch in range(1, epochs + 1):
        perm = torch.randperm(n, generator=gen)
        epoch_loss = _epoch(model, X, y, opt, loss_fn, perm, batch_size)
        _check_finite(epoch, epoch_loss)
        logger.debug("epoch %d/%d loss %.4f", epoch, epochs, epoch_loss)
        if progress is not None:
            progress(EpochInfo(epoch=epoch, epochs=epochs, loss=epoch_loss, samples=n))
    return TrainResult(loss=epoch_loss, samples=n)


def _optimizer(
    model: nn.Module, name: OptimizerName, *, lr: float, momentum: float, weight_decay: float
) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    if name == "adam":
        return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {name!r}; use 'sgd' or 'adam'")


def _epoch(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    opt: torch.optim.Optimizer,
    loss_fn: nn.Module,
    perm: torch.Tensor,
    batch_size: int,
) -> float:
    """One pass over the rows in `perm` order; the mean loss."""
    # Manual batching instead of a DataLoader: the data is already one in-memory tensor,
    # and DataLoader's per-batch overhead dominates on models this small.
    total = 0.0
    for start in range(0, len(perm), batch_size):
        idx = perm[start : start + batch_size]
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(X[idx]), y[idx])
        loss.backward()
        opt.step()
        total += float(loss.detach()) * len(idx)
    return total / len(perm)


def _check_finite(epoch: int, epoch_loss: float) -> None:
    if not np.isfinite(epoch_loss):
        raise FloatingPointError(f"training diverged at epoch {epoch} (loss {epoch_loss})")


def _train_dp(
    model: nn.Module,
    X: torch.Tensor,
    y: torch.Tensor,
    opt: torch.optim.Optimizer,
    loss_fn: nn.Module,
    *,
    epochs: int,
    batch_size: int,
    dp: RecordDP,
    progress: ProgressCallback | None,
) -> TrainResult:
    """DP-SGD with opacus's PrivacyEngine; the model's own parameters are trained in place."""
    from opacus import PrivacyEngine
    from torch.utils.data import DataLoader, TensorDataset

    n = len(y)
    seed = dp.seed if dp.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
    noise = torch.Generator().manual_seed(seed)
    epoch_loss = float("nan")
    steps = 0
    # Poisson sampling draws from torch's global RNG: fork it so that it is seeded like the
    # noise and the caller's stream is left as it was.
    with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
        torch.manual_seed(seed ^ 0x5DEECE66D)
        # opacus warns that secure_mode (torchcsprng) is off; the seed above comes from the
        # OS's CSPRNG instead, and warnings are errors under pytest.
        warnings.simplefilter("ignore")
        engine = PrivacyEngine(accountant="rdp")
        loader = DataLoader(TensorDataset(X, y), batch_size=min(batch_size, n))
        module, dp_opt, dp_loader = engine.make_private(
            module=model,
            optimizer=opt,
            data_loader=loader,
            noise_multiplier=dp.noise_multiplier,
            max_grad_norm=dp.max_grad_norm,
            poisson_sampling=True,
            noise_generator=noise,
        )
        try:
            model.train()
            for epoch in range(1, epochs + 1):
                epoch_loss = _dp_epoch(module, dp_opt, dp_loader, loss_fn)
                _check_finite(epoch, epoch_loss)
                if progress is not None:
                    progress(EpochInfo(epoch=epoch, epochs=epochs, loss=epoch_loss, samples=n))
        finally:
            module._close()
        steps = sum(int(h[2]) for h in engine.accountant.history)
    return TrainResult(loss=epoch_loss, samples=n, dp_steps=steps)


def _dp_epoch(
    module: nn.Module,
    dp_opt: torch.optim.Optimizer,
    dp_loader: Iterable[tuple[torch.Tensor, torch.Tensor]],
    loss_fn: nn.Module,
) -> float:
    """One pass over opacus's Poisson batches; the mean loss over the rows drawn."""
    total, seen = 0.0, 0
    for xb, yb in dp_loader:
        dp_opt.zero_grad(set_to_none=True)
        if len(xb) == 0:
            # An empty Poisson batch still takes a (pure-noise) step: skipping it
            # would make the batch count depend on the data.
            module(xb).sum().backward()
            dp_opt.step()
            continue
        loss = loss_fn(module(xb), yb)
        loss.backward()
        dp_opt.step()
        total += float(loss.detach()) * len(xb)
        seen += len(xb)
    return total / max(seen, 1)


def compute_update(global_vec: npt.ArrayLike, local_vec: npt.ArrayLike) -> FloatVector:
    """The update a provider sends: ``local - global`` as float32."""
    g = np.asarray(global_vec, dtype=np.float32)
    loc = np.asarray(local_vec, dtype=np.float32)
    if g.shape != loc.shape or g.ndim != 1:
        raise ValueError(f"vectors must be 1-D and equal length, got {g.shape} and {loc.shape}")
    return loc - g


class RegressionResult(NamedTuple):
    """Mean squared error on the standardized target (the training loss) and RMSE, MAE and
    R² in the target's own units."""

    loss: float
    rmse: float
    mae: float
    r2: float


def predict_values(model: nn.Module, X: npt.ArrayLike, *, batch_size: int = 4096) -> FloatVector:
    """The model's raw outputs for inputs ``X`` (n, d) as a float32 array (n, outputs)."""
    Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    model.eval()
    with torch.no_grad():
        out = [model(Xt[i : i + batch_size]) for i in range(0, len(Xt), batch_size)]
    return torch.cat(out).numpy().astype(np.float32)


def evaluate_regression(
    model: nn.Module, dataset: Dataset, *, offset: float, scale: float
) -> RegressionResult:
    """Regression metrics of ``model`` on ``dataset`` whose targets went through the job's
    transform ``(y - offset) * scale``; RMSE, MAE and R² are reported back in raw units."""
    _tensors(model, dataset)
    pred = predict_values(model, dataset.X)[:, 0].astype(np.float64)
    target = dataset.y.astype(np.float64)
    loss = float(np.mean((pred - target) ** 2))
    raw_pred, raw = pred / scale + offset, target / scale + offset
    err = raw_pred - raw
    var = float(np.sum((raw - raw.mean()) ** 2))
    r2 = 1.0 - float(np.sum(err**2)) / var if var > 0 else 0.0
    return RegressionResult(
        loss=loss,
        rmse=float(np.sqrt(np.mean(err**2))),
        mae=float(np.mean(np.abs(err))),
        r2=r2,
    )


def evaluate(model: nn.Module, dataset: Dataset, *, batch_size: int = 4096) -> EvalResult:
    """Mean cross-entropy and accuracy of ``model`` on ``dataset`` (labels = class indices)."""
    if dataset.continuous:
        raise ValueError("a regression has no accuracy: use evaluate_regression")
    X, y = _tensors(model, dataset)
    model.eval()
    loss_sum = 0.0
    correct = 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            logits = model(X[start : start + batch_size])
            target = y[start : start + batch_size]
            loss_sum += float(nn.functional.cross_entropy(logits, target, reduction="sum"))
            correct += int((logits.argmax(dim=1) == target).sum())
    n = len(dataset)
    return EvalResult(loss=loss_sum / n, accuracy=correct / n)
