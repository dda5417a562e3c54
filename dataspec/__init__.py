"""The wire contract: the one definition of what travels between the agents and the server.

The dataset schema (:mod:`dataspec.schema`, :mod:`dataspec.compat`), the job spec and its
model and privacy specs (:mod:`dataspec.jobs`), the answers the server sends
(:mod:`dataspec.views`; about money and reputation :mod:`dataspec.money`; about identities
and the transparency log :mod:`dataspec.records`) and the names of every state
(:mod:`dataspec.states`).

Dependency-light on purpose (pydantic only; no web framework, database or torch): a provider's
agent, the buyer's client and the server validate with the very same classes, so what one side
accepts the other cannot refuse. See :mod:`dataspec.schema` for the schema's rules and
:mod:`dataspec.compat` for when a listing can serve a job.
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
