"""The dataset schema: the one definition the marketplace server and the agents both import.

Dependency-light on purpose (pydantic only): a provider's agent, the buyer's client and the
server validate a schema with the very same classes, so a schema one side accepts the other
cannot refuse. See :mod:`dataspec.schema` for the rules and :mod:`dataspec.compat` for when a
listing can serve a job.
"""

from dataspec.compat import incompatibility, input_names, input_width
from dataspec.schema import (
    MAX_CATEGORIES,
    MAX_CLASSES,
    MAX_FEATURES,
    OTHER,
    ClassName,
    DatasetSchema,
    FeatureSpec,
    FeatureType,
    JobDatasetSchema,
    JobFeatureSpec,
    JobLabelSpec,
    LabelSpec,
    Name,
    Strict,
    Task,
    canonical_class,
)

__all__ = [
    "MAX_CATEGORIES",
    "MAX_CLASSES",
    "MAX_FEATURES",
    "OTHER",
    "ClassName",
    "DatasetSchema",
    "FeatureSpec",
    "FeatureType",
    "JobDatasetSchema",
    "JobFeatureSpec",
    "JobLabelSpec",
    "LabelSpec",
    "Name",
    "Strict",
    "Task",
    "canonical_class",
    "incompatibility",
    "input_names",
    "input_width",
]
