"""Schemas described from tables: a provider's listing, and the buyer's job schema fitted on
its own data.

:func:`listing_schema` describes a provider's data (feature names, kinds, the classes it
holds) for its listing. :func:`derive_job_schema` fits a job schema on the buyer's table: the
preprocessing (column order, standardization, categories, fills) every party then applies
with :func:`agents.tabular.encode`, and the label's task and classes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np

from agents.data import DataError
from agents.tabular import AUTO_CLASSES_MAX, Column, Table
from dataspec import (
    MAX_CATEGORIES,
    MAX_CLASSES,
    DatasetSchema,
    FeatureSpec,
    JobDatasetSchema,
    JobFeatureSpec,
    JobLabelSpec,
    LabelSpec,
    Task,
)

__all__ = ["derive_job_schema", "listing_schema"]


def _class_list(values: Iterable[str]) -> list[int] | list[str]:
    distinct = sorted(set(values))
    try:
        ints = sorted(int(v) for v in distinct)
    except ValueError:
        return distinct
    if all(0 <= v <= 65535 for v in ints):
        return ints
    return distinct


def listing_schema(
    table: Table, label: str, *, classes: Sequence[int] | None = None
) -> DatasetSchema:
    """What a provider publishes about ``table``: column kinds, missing values, label classes.

    The label's classes are the values present (or ``classes``, for a provider whose data
    does not show every class); a numeric label with fractions or too many values is
    published as a target without classes.
    """
    if label not in table.columns:
        raise DataError(f"{table.source}: no label column {label!r}; columns are {table.names}")
    features = [
        FeatureSpec(name=c.name, type=c.kind, missing=bool(c.missing.any()))
        for c in table.columns.values()
        if c.name != label
    ]
    col = table.columns[label]
    present = [t for t in col.text() if t is not None]
    found: list[int] | list[str] | None
    if classes:
        found = list(classes)
    elif col.kind == "float" or len(set(present)) > MAX_CLASSES:
        found = None
    else:
        found = _class_list(present)
    return DatasetSchema(features=features, label=LabelSpec(name=label, classes=found))


def _numeric_spec(col: Column, standardize: bool, fill: bool) -> JobFeatureSpec:
    vals = col.values[~np.isnan(col.values)]
    if vals.size == 0:
        raise DataError(f"column {col.name!r} holds no values at all")
    mean, std = float(vals.mean()), float(vals.std())
    return JobFeatureSpec(
        name=col.name,
        type="int" if col.kind == "int" else "float",
        offset=mean if standardize else 0.0,
        scale=(1.0 / std if std > 0 else 1.0) if standardize else 1.0,
        fill=mean if fill else None,
    )


def _categorical_spec(col: Column, fill: bool) -> JobFeatureSpec:
    cells = [t for t in col.text() if t is not None]
    if not cells:
        raise DataError(f"column {col.name!r} holds no values at all")
    counts: dict[str, int] = {}
    for t in cells:
        counts[t] = counts.get(t, 0) + 1
    if len(counts) > MAX_CATEGORIES:
        raise DataError(
            f"column {col.name!r} has {len(counts)} distinct texts, more than the "
            f"{MAX_CATEGORIES} categories a column may have (an id or free text? drop it)"
        )
    if any(len(c) > 64 for c in counts):
        raise DataError(f"column {col.name!r} has texts longer than 64 characters")
    most = max(sorted(counts), key=lambda c: counts[c])
    return JobFeatureSpec(
        name=col.name, type="categorical", categories=sorted(counts), fill=most if fill else None
    )


def derive_job_schema(
    table: Table,
    *,
    label: str,
    task: Task | None = None,
    classes: Sequence[int | str] | None = None,
    standardize: bool = True,
    fill: Sequence[str] | Literal["all"] = (),
    categorical: Sequence[str] = (),
) -> JobDatasetSchema:
    """A job schema fitted on the buyer's ``table``.

    Numeric columns are standardized on the buyer's data (``standardize``); text columns, and
    those named in ``categorical``, become categorical with the values present as vocabulary.
    A column with missing cells, or named in ``fill`` (``"all"``: every column), gets a fill
    value — the mean, or the most frequent category — and a missing indicator. The label is
    classified by its values (text: classes) unless ``task`` says; a numeric label with more
    than :data:`AUTO_CLASSES_MAX` distinct values, or fractions, needs ``task`` explicitly.
    """
    if label not in table.columns:
        raise DataError(f"{table.source}: no label column {label!r}; columns are {table.names}")
    for name in [*categorical, *([] if fill == "all" else fill)]:
        if name not in table.columns or name == label:
            raise DataError(f"{table.source}: no feature column {name!r}")
    features: list[JobFeatureSpec] = []
    for col in table.columns.values():
        if col.name == label:
            continue
        wants_fill = fill == "all" or col.name in fill or bool(col.missing.any())
        if col.kind == "categorical" or col.name in categorical:
            features.append(_categorical_spec(col, wants_fill))
        else:
            features.append(_numeric_spec(col, standardize, wants_fill))
    if not features:
        raise DataError(f"{table.source}: no feature columns besides the label {label!r}")
    return JobDatasetSchema(features=features, label=_label_spec(table, label, task, classes))


def _label_spec(
    table: Table, label: str, task: Task | None, classes: Sequence[int | str] | None
) -> JobLabelSpec:
    col = table.columns[label]
    present = [t for t in col.text() if t is not None]
    numbers = col.values[~np.isnan(col.values)] if col.kind != "categorical" else None
    integral = numbers is not None and bool(np.all(numbers == np.round(numbers)))
    if task is None:
        if (
            classes
            or col.kind == "categorical"
            or (integral and len(set(present)) <= AUTO_CLASSES_MAX)
        ):
            task = "classification"
        else:
            what = f"{len(set(present))} distinct" if integral else "fractional"
            raise DataError(
                f"label {label!r} holds {what} numeric values: say `task: regression` to "
                "predict the number, or `task: classification` to treat each value as a class"
            )
    if task == "classification":
        if numbers is not None and not integral and not classes:
            raise DataError(
                f"label {label!r} holds fractional values: it cannot be a classification "
                "label (use `task: regression`)"
            )
        found = list(classes) if classes else _class_list(present)
        if len(found) < 2:
            raise DataError(f"label {label!r} holds one class only: {found}")
        return JobLabelSpec(name=label, classes=found)
    if col.kind == "categorical":
        raise DataError(f"label {label!r} holds text: a regression needs a numeric target")
    vals = col.values[~np.isnan(col.values)]
    mean, std = float(vals.mean()), float(vals.std())
    return JobLabelSpec(name=label, offset=mean, scale=1.0 / std if std > 0 else 1.0)
