"""The in-memory dataset: numeric features and integer labels, checked when it is built.

A :class:`Dataset` is what training reads: features ``X`` as float32, labels ``y`` as int64
(or float32 for a regression target), the column names and each feature's type. Building
one checks shapes, names and labels and raises :class:`DataError` naming the problem.
Loading files, schemas and the job's preprocessing are :mod:`agents.data`, which re-exports
the names defined here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from crypto.errors import PollenError

DEFAULT_LABEL = "label"
FeatureType = Literal["float", "int", "categorical"]
FloatMatrix = npt.NDArray[np.float32]
IntVector = npt.NDArray[np.int64]


class DataError(PollenError, ValueError):
    """Local data cannot be read or does not match a schema; the message names the problem.

    Also a ``ValueError``, so callers that only know the standard library still catch it.
    """

    code = "data-error"
    title = "Local data error"


def is_integral(col: npt.NDArray[Any]) -> bool:
    """Every value finite and a whole number."""
    return bool(np.all(np.isfinite(col)) and np.all(col == np.round(col)))


@dataclass(init=False, eq=False)
class Dataset:
    """Features ``X`` (float32, shape (n, d)), labels ``y`` (int64, shape (n,)) and names.

    The constructor accepts any array-likes and converts them. ``feature_types`` is inferred
    from the values when not given (integral column → ``int``).
    """

    X: FloatMatrix
    y: IntVector
    feature_names: list[str]
    label_name: str
    feature_types: list[FeatureType]
    continuous: bool

    def __init__(
        self,
        X: npt.ArrayLike,
        y: npt.ArrayLike,
        feature_names: Sequence[str],
        label_name: str = DEFAULT_LABEL,
        feature_types: Sequence[FeatureType] | None = None,
        *,
        continuous: bool = False,
    ) -> None:
        self.X = np.ascontiguousarray(X, dtype=np.float32)
        labels = np.asarray(y)
        self.continuous = continuous
        if continuous:
            # A regression target (already scaled by the job's transform), not classes.
            self.y = labels.astype(np.float32)
        else:
            if labels.size and not is_integral(labels.astype(np.float64)):
                raise DataError(f"label column {label_name!r} must hold integers")
            self.y = labels.astype(np.int64)
        self.feature_names = list(feature_names)
        self.label_name = label_name
        if self.X.ndim != 2:
            raise DataError(f"features must be a 2-D array, got shape {self.X.shape}")
        if self.y.shape != (self.X.shape[0],):
            raise DataError(f"{self.X.shape[0]} feature rows but labels have shape {self.y.shape}")
        if len(self.feature_names) != self.X.shape[1]:
            raise DataError(
                f"{self.X.shape[1]} feature columns but {len(self.feature_names)} names"
            )
        if len(set(self.feature_names)) != len(self.feature_names):
            raise DataError(f"duplicate feature names in {self.feature_names}")
        if self.label_name in self.feature_names:
            raise DataError(f"label column {self.label_name!r} is also listed as a feature")
        if feature_types:
            self.feature_types = list(feature_types)
        else:
            self.feature_types = [
                "int" if is_integral(self.X[:, j]) else "float" for j in range(self.X.shape[1])
            ]
        if len(self.feature_types) != self.X.shape[1]:
            raise DataError("feature_types must have one entry per feature")

    def __len__(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])

    def take(self, indices: npt.ArrayLike) -> Dataset:
        """The rows at ``indices`` (a copy), keeping names and declared types."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(
            self.X[idx],
            self.y[idx],
            list(self.feature_names),
            self.label_name,
            list(self.feature_types),
            continuous=self.continuous,
        )


def concat(datasets: Sequence[Dataset]) -> Dataset:
    """Stack datasets with identical columns (e.g. the union for a centralized baseline)."""
    if not datasets:
        raise DataError("nothing to concatenate")
    first = datasets[0]
    for ds in datasets[1:]:
        if ds.feature_names != first.feature_names or ds.label_name != first.label_name:
            raise DataError("datasets to concatenate must have the same columns")
    types: list[FeatureType] = [
        "int" if all(ds.feature_types[j] == "int" for ds in datasets) else "float"
        for j in range(first.n_features)
    ]
    return Dataset(
        np.concatenate([ds.X for ds in datasets]),
        np.concatenate([ds.y for ds in datasets]),
        list(first.feature_names),
        first.label_name,
        types,
        continuous=first.continuous,
    )
