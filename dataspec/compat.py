"""When a listing can serve a job, and the model inputs a job's schema defines.

:func:`incompatibility` is the single rule: the server's matching uses it to choose whom to
offer a job (and to explain why a listing was left out), an agent uses it with the schema of
its actual data to decline an offer it cannot serve. ``None`` means compatible; otherwise the
reason, in words a provider can act on.

:func:`input_names` is the model's input layout, in order: for each feature in schema order,
one input for a numeric column (``name``) or one per category plus the "other" slot
(``name=category``, ``name=__other__``) for a categorical one, then, when the job declares a
``fill`` for the column, its missing indicator (``name__missing``).
"""

from __future__ import annotations

from dataspec.schema import OTHER, DatasetSchema, JobDatasetSchema, canonical_class

# Which kinds of data column each kind of job feature accepts: an integer column satisfies
# a float feature (widening) and can be read as categories; text only as categories.
_ACCEPTS = {
    "float": {"float", "int"},
    "int": {"int"},
    "categorical": {"categorical", "int"},
}


def incompatibility(job: JobDatasetSchema, offered: DatasetSchema) -> str | None:
    """Why data described by ``offered`` cannot train a model for ``job`` (None: it can)."""
    if offered.label.name != job.label.name:
        return f"label column is {offered.label.name!r}, the job's is {job.label.name!r}"
    have = {f.name: f for f in offered.features}
    for spec in job.features:
        if spec.name not in have:
            return f"missing column {spec.name!r}"
    wanted = {f.name for f in job.features}
    extra = [f.name for f in offered.features if f.name not in wanted]
    if extra:
        return f"extra column {extra[0]!r} (not in the job's schema)"
    for spec in job.features:
        col = have[spec.name]
        if col.type not in _ACCEPTS[spec.type]:
            return f"column {spec.name!r} is {col.type}, the job needs {spec.type}"
        if col.missing and spec.fill is None:
            return f"column {spec.name!r} has missing values and the job declares no fill"
    classes = offered.label.classes
    if job.label.classes is None:
        if classes is not None and any(isinstance(c, str) for c in classes):
            return f"label {job.label.name!r} holds text classes, the job is a regression"
        return None
    if classes is None:
        return f"label {job.label.name!r} is a numeric target, the job is a classification"
    known = {canonical_class(c) for c in job.label.classes}
    unknown = [c for c in classes if canonical_class(c) not in known]
    if unknown:
        return f"label class {unknown[0]!r} is not one of the job's classes"
    return None


def input_names(schema: JobDatasetSchema) -> list[str]:
    """The model's inputs, in order (see the module docstring)."""
    names: list[str] = []
    for f in schema.features:
        if f.categories is not None:
            names.extend(f"{f.name}={c}" for c in f.categories)
            names.append(f"{f.name}={OTHER}")
        else:
            names.append(f.name)
        if f.fill is not None:
            names.append(f"{f.name}__missing")
    return names


def input_width(schema: JobDatasetSchema) -> int:
    """Number of model inputs."""
    return schema.n_features
