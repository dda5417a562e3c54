"""The dataset schema a listing declares and a job requires.

Only names, types and label classes: counts and lengths are bounded and names are restricted
to identifier characters, so no field can carry data rows.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

Name = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
]
ClassLabel = Annotated[int, Field(ge=0, le=65535)]

MAX_FEATURES = 1024
MAX_CLASSES = 1000


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


class FeatureSpec(Strict):
    name: Name
    type: Literal["float", "int"]


class LabelSpec(Strict):
    name: Name
    classes: Annotated[list[ClassLabel], Field(min_length=2, max_length=MAX_CLASSES)]

    @model_validator(mode="after")
    def _distinct(self) -> LabelSpec:
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("label classes must be distinct")
        return self


class JobFeatureSpec(FeatureSpec):
    """A feature a job requires, with the fixed transform `(x - offset) * scale` every
    provider applies before training (the buyer fits it on its own data)."""

    offset: Annotated[float, Field(allow_inf_nan=False)] = 0.0
    scale: Annotated[float, Field(allow_inf_nan=False)] = 1.0


class DatasetSchema(Strict):
    features: Annotated[list[FeatureSpec], Field(min_length=1, max_length=MAX_FEATURES)]
    label: LabelSpec

    @model_validator(mode="after")
    def _distinct(self) -> DatasetSchema:
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError("feature names must be distinct")
        if self.label.name in names:
            raise ValueError("the label cannot also be a feature")
        return self


class JobDatasetSchema(DatasetSchema):
    """The schema a job requires: a listing's schema plus per-feature transforms."""

    # Narrowing a pydantic field in a subclass is how the model is meant to be extended.
    features: Annotated[  # type: ignore[assignment]
        list[JobFeatureSpec], Field(min_length=1, max_length=MAX_FEATURES)
    ]
