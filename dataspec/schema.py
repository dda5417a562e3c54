"""The dataset schema a listing declares and a job requires, defined once for every party.

A **listing** (what a provider publishes) names its columns and their kinds — ``float``,
``int`` or ``categorical`` (text) — says which have missing values, and names the label and
the classes it holds (``classes`` left out: a numeric target that is not enumerated).

A **job** (what every provider must apply, exactly) adds the preprocessing, fitted by the
buyer on its own data and fixed for the whole job:

- numeric columns: ``(x - offset) * scale``;
- categorical columns: the vocabulary ``categories``; the model sees one input per category
  plus one "other" slot (:data:`OTHER`) that every unseen value maps to;
- ``fill``: the value that replaces a missing cell (a number, or a category); a column with a
  ``fill`` also gets a missing-indicator input (1.0 where the cell was missing). A column
  without one refuses missing cells;
- the label: ``classes`` (ints or names, in model output order) for classification, or the
  target transform ``(y - offset) * scale`` for regression (``classes`` left out); the task
  follows: :attr:`JobDatasetSchema.task`.

Counts and lengths are bounded and names restricted, so no field can carry data rows.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Name = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
]
# A category or a class name: short printable text (no control characters).
Text = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f\x7f]+$")
]
ClassLabel = Annotated[int, Field(ge=0, le=65535)]
ClassName = ClassLabel | Text
Classes = list[ClassLabel] | list[Text]
Finite = Annotated[float, Field(allow_inf_nan=False)]

FeatureType = Literal["float", "int", "categorical"]
Task = Literal["classification", "regression"]

MAX_FEATURES = 1024
MAX_CLASSES = 1000
MAX_CATEGORIES = 1000
# The name of the input slot every category outside the vocabulary maps to.
OTHER = "__other__"


def canonical_class(value: object) -> str:
    """The text a label value is compared by: ``3``, ``3.0`` and ``"3"`` are the same class."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value == round(value):
            return str(int(value))
        return repr(value)
    return str(value).strip()


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(_holds_nul(v) for v in value)
    return False


class Strict(BaseModel):
    """Base of every request body: unknown fields are refused, not ignored."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        # PostgreSQL cannot store NUL in text or JSON: refuse it here (422), not there (500).
        if _holds_nul(data):
            raise ValueError("text must not contain NUL characters")
        return data


class _Frozen(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _distinct_classes(classes: list[Any] | None, *, least: int) -> None:
    if classes is None:
        return
    keys = [canonical_class(c) for c in classes]
    if len(keys) < least:
        raise ValueError(f"label needs at least {least} distinct classes, got {classes}")
    if len(set(keys)) != len(keys):
        raise ValueError(f"label classes must be distinct, got {classes}")


def _distinct_columns(names: list[str], label: str) -> None:
    if len(set(names)) != len(names):
        raise ValueError("feature names must be distinct")
    if label in names:
        raise ValueError(f"label {label!r} is also a feature")


class FeatureSpec(_Frozen):
    """A column a listing holds: its kind, and whether some of its cells are missing."""

    name: Name
    type: FeatureType = "float"
    missing: bool = False


class LabelSpec(_Frozen):
    """A listing's label column; ``classes`` left out for a numeric, non-enumerated target."""

    name: Name = "label"
    classes: Annotated[Classes, Field(min_length=1, max_length=MAX_CLASSES)] | None = None

    @model_validator(mode="after")
    def _distinct(self) -> LabelSpec:
        _distinct_classes(self.classes, least=1)
        return self


class DatasetSchema(_Frozen):
    """What a provider publishes about its data (no preprocessing: the job declares it)."""

    features: Annotated[list[FeatureSpec], Field(min_length=1, max_length=MAX_FEATURES)]
    label: LabelSpec

    @model_validator(mode="after")
    def _distinct(self) -> DatasetSchema:
        _distinct_columns([f.name for f in self.features], self.label.name)
        return self

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


class JobFeatureSpec(_Frozen):
    """A column a job requires, with the preprocessing every provider applies to it."""

    name: Name
    type: FeatureType = "float"
    offset: Finite = 0.0
    scale: Finite = 1.0
    categories: Annotated[list[Text], Field(min_length=1, max_length=MAX_CATEGORIES)] | None = None
    fill: Finite | Text | None = None

    @model_validator(mode="after")
    def _coherent(self) -> JobFeatureSpec:
        if self.scale == 0:
            raise ValueError(f"feature {self.name!r}: scale must be nonzero")
        if self.type == "categorical":
            if not self.categories:
                raise ValueError(f"categorical feature {self.name!r} needs its categories")
            if len(set(self.categories)) != len(self.categories):
                raise ValueError(f"feature {self.name!r}: categories must be distinct")
            if OTHER in self.categories:
                raise ValueError(f"feature {self.name!r}: {OTHER!r} is reserved")
            if self.offset != 0.0 or self.scale != 1.0:
                raise ValueError(f"categorical feature {self.name!r} takes no offset/scale")
            if self.fill is not None and not isinstance(self.fill, str):
                raise ValueError(f"feature {self.name!r}: fill of a categorical is a category")
        else:
            if self.categories is not None:
                raise ValueError(f"numeric feature {self.name!r} takes no categories")
            if isinstance(self.fill, str):
                raise ValueError(f"numeric feature {self.name!r}: fill must be a number")
        return self

    @property
    def width(self) -> int:
        """Number of model inputs this column becomes."""
        base = len(self.categories) + 1 if self.categories else 1
        return base + (1 if self.fill is not None else 0)


class JobLabelSpec(_Frozen):
    """The label a job trains on: classes (classification) or a target transform (regression)."""

    name: Name = "label"
    classes: Annotated[Classes, Field(min_length=2, max_length=MAX_CLASSES)] | None = None
    offset: Finite = 0.0
    scale: Finite = 1.0

    @model_validator(mode="after")
    def _coherent(self) -> JobLabelSpec:
        _distinct_classes(self.classes, least=2)
        if self.scale == 0:
            raise ValueError("label scale must be nonzero")
        if self.classes is not None and (self.offset != 0.0 or self.scale != 1.0):
            raise ValueError("a classification label takes no offset/scale (regression only)")
        return self


class JobDatasetSchema(_Frozen):
    """The schema a job requires: columns, their preprocessing, and the label."""

    features: Annotated[list[JobFeatureSpec], Field(min_length=1, max_length=MAX_FEATURES)]
    label: JobLabelSpec

    @model_validator(mode="after")
    def _distinct(self) -> JobDatasetSchema:
        _distinct_columns([f.name for f in self.features], self.label.name)
        return self

    @property
    def task(self) -> Task:
        return "classification" if self.label.classes is not None else "regression"

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def n_features(self) -> int:
        """Number of model inputs (a categorical column counts once per slot)."""
        return sum(f.width for f in self.features)

    @property
    def n_classes(self) -> int:
        """Number of model outputs: the classes, or 1 for regression."""
        return len(self.label.classes) if self.label.classes is not None else 1

    @property
    def class_names(self) -> list[str]:
        return [canonical_class(c) for c in self.label.classes or []]
