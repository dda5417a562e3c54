"""The dataset schema a listing declares and a job requires.

Defined once, in the dependency-light :mod:`dataspec` package that the agents import too, so
the server and every agent validate a schema with the very same rules; re-exported here for
the server's models.
"""

from __future__ import annotations

from dataspec.schema import (
    MAX_CLASSES,
    MAX_FEATURES,
    DatasetSchema,
    FeatureSpec,
    JobDatasetSchema,
    JobFeatureSpec,
    JobLabelSpec,
    LabelSpec,
    Name,
    Strict,
)

__all__ = [
    "MAX_CLASSES",
    "MAX_FEATURES",
    "DatasetSchema",
    "FeatureSpec",
    "JobDatasetSchema",
    "JobFeatureSpec",
    "JobLabelSpec",
    "LabelSpec",
    "Name",
    "Strict",
]
