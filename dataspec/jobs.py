"""The job spec a buyer posts: the model to train, the privacy it asks for, the money and the
rounds, defined once for the buyer's client, the providers' agents and the server.

A job names its model with a :data:`ModelSpec`, one of :class:`LogRegSpec`,
:class:`MLPSpec`, :class:`LinearSpec` or :class:`CNNSpec` told apart by ``arch``; the agents
build the same architectures in torch (``agents.models.build_model``). Every size is bounded
so a spec can neither carry data nor ask a provider for a model it cannot hold.

:class:`JobCreate` is the whole spec; its checks across fields (quorum against the provider
counts, the task against the schema's label and the architecture, a CNN's image against the
schema's inputs) run wherever the spec is read, so a spec the buyer's client accepts is one
the server accepts, and a provider reading a job sees the very spec the server checked.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, StringConstraints, TypeAdapter, model_validator

from dataspec.compat import input_width
from dataspec.schema import JobDatasetSchema, Strict, Task

__all__ = [
    "DEFAULT_PRESET_ID",
    "MAX_HIDDEN",
    "CNNSpec",
    "Cents",
    "Currency",
    "JobCreate",
    "LinearSpec",
    "LogRegSpec",
    "MLPSpec",
    "ModelSpec",
    "PrivacySpec",
    "model_spec",
]

# The CKKS preset a job uses unless it names another: `crypto.DEFAULT_PRESET_ID`, spelled
# here so reading a spec never loads the crypto library (a test keeps the two equal).
DEFAULT_PRESET_ID = "ckks-add-2048-v1"
# The widest hidden layer a job may ask for.
MAX_HIDDEN = 4096

Currency = Annotated[str, StringConstraints(pattern=r"^[a-z]{3}$")]
Cents = Annotated[int, Field(ge=0, le=10**12)]
Width = Annotated[int, Field(ge=1, le=MAX_HIDDEN)]


def _no_hidden(arch: str, data: Any) -> Any:
    # Said in words rather than as an unknown key: a spec carrying hidden sizes for a model
    # without hidden layers is almost certainly the buyer's mistake.
    if isinstance(data, dict) and data.get("hidden"):
        raise ValueError(f"arch {arch!r} takes no hidden layers; use arch 'mlp'")
    return data


class LogRegSpec(Strict):
    """Multinomial logistic regression: no hidden layer."""

    arch: Literal["logreg"]

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        return _no_hidden("logreg", data)

    @property
    def hidden(self) -> list[int]:
        return []


class MLPSpec(Strict):
    """A ReLU multilayer perceptron with the given hidden widths."""

    arch: Literal["mlp"]
    hidden: Annotated[list[Width], Field(min_length=1, max_length=8)]


class LinearSpec(Strict):
    """Linear regression: one output, no hidden layer (regression jobs only)."""

    arch: Literal["linear"]

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data: Any) -> Any:
        return _no_hidden("linear", data)

    @property
    def hidden(self) -> list[int]:
        return []


class CNNSpec(Strict):
    """A small convolutional network for image-shaped inputs: the features, in schema order,
    are read as an image of `input_shape` (channels, height, width), then 3x3 convolutions
    with ReLU and 2x2 average pooling, one per entry of `channels`, and ReLU layers of
    `hidden` widths before the output."""

    arch: Literal["cnn"]
    input_shape: Annotated[
        list[Annotated[int, Field(ge=1, le=512)]], Field(min_length=3, max_length=3)
    ]
    channels: Annotated[
        list[Annotated[int, Field(ge=1, le=256)]], Field(min_length=1, max_length=4)
    ] = [8]
    hidden: Annotated[list[Width], Field(min_length=0, max_length=8)] = []


# The registry of architectures a job may ask for; agents build the same ones in torch.
ModelSpec = Annotated[LogRegSpec | MLPSpec | LinearSpec | CNNSpec, Field(discriminator="arch")]
_MODEL_SPEC: TypeAdapter[LogRegSpec | MLPSpec | LinearSpec | CNNSpec] = TypeAdapter(ModelSpec)


def model_spec(data: Any) -> LogRegSpec | MLPSpec | LinearSpec | CNNSpec:
    """A model spec read from its JSON form (``{"arch": "mlp", "hidden": [64]}``)."""
    return _MODEL_SPEC.validate_python(data)


class PrivacySpec(Strict):
    """Record-level differential privacy the buyer asks every provider to train under.

    Providers run DP-SGD (per-example clip ``clip``, Gaussian noise) so that the whole job
    costs each of them at most ``epsilon`` at ``delta``. A provider whose own limit is lower
    declines the offer. Left out, each provider applies its own (default ε = 8); ``"off"``
    asks for updates without DP, which only providers that opted out accept.
    """

    epsilon: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)]
    delta: Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)] = 1e-5
    clip: Annotated[float, Field(gt=0, le=1e6, allow_inf_nan=False)] = 1.0


class JobCreate(Strict):
    model_config = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    title: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    # Must agree with the schema's label: classes for classification, none for regression.
    task: Task = "classification"
    model: ModelSpec
    rounds: Annotated[int, Field(ge=1, le=1000)]
    local_epochs: Annotated[int, Field(ge=1, le=100)] = 1
    learning_rate: Annotated[float, Field(gt=0, le=10)] = 0.1
    batch_size: Annotated[int, Field(ge=1, le=65536)] = 32
    dataset_schema: JobDatasetSchema = Field(alias="schema")
    # Seeds the initial model and every provider's local training: runs are reproducible.
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    min_providers: Annotated[int, Field(ge=2, le=1000)] = 2
    max_providers: Annotated[int, Field(ge=2, le=1000)] = 10
    quorum: Annotated[int, Field(ge=2, le=1000)] = 2
    min_samples: Annotated[int, Field(ge=1, le=10**9)] = 1
    sample_cap: Annotated[int, Field(ge=1, le=10**9)] = 5000
    min_reputation: Annotated[float, Field(ge=0, le=1)] = 0.0
    budget_cents: Annotated[int, Field(ge=1, le=10**12)]
    currency: Currency = "usd"
    price_cap_cents: Cents
    round_deadline_s: Annotated[int, Field(ge=1, le=7 * 86400)] = 3600
    offer_ttl_s: Annotated[int, Field(ge=1, le=7 * 86400)] = 3600
    preset: Annotated[str, StringConstraints(min_length=1, max_length=64)] = DEFAULT_PRESET_ID
    privacy: PrivacySpec | Literal["off"] | None = None
    # A provider that sends nothing in a round is not waited for in the rounds after it.
    drop_missed: bool = True
    # Providers per random group whose sum the buyer scores (≥ quorum; None: the quorum).
    group_size: Annotated[int, Field(ge=2, le=1000)] | None = None
    # After a round closes the buyer has this long to publish the next model (or complete
    # the job); past it the job ends as failed by the buyer, at no cost to providers.
    publish_deadline_s: Annotated[int, Field(ge=60, le=30 * 86400)] = 86400

    @model_validator(mode="after")
    def _coherent(self) -> JobCreate:
        if self.quorum > self.min_providers:
            raise ValueError("quorum cannot exceed min_providers")
        if self.group_size is not None and not self.quorum <= self.group_size:
            raise ValueError("group_size cannot be below the quorum")
        if self.min_providers > self.max_providers:
            raise ValueError("min_providers cannot exceed max_providers")
        if self.dataset_schema.task != self.task:
            raise ValueError(
                f"task is {self.task} but the schema's label "
                + ("lists classes" if self.task == "regression" else "lists no classes")
            )
        arch = self.model.arch
        if arch == "logreg" and self.task == "regression":
            raise ValueError("arch 'logreg' is for classification; use 'linear' or 'mlp'")
        if arch == "linear" and self.task == "classification":
            raise ValueError("arch 'linear' is for regression; use 'logreg' or 'mlp'")
        if isinstance(self.model, CNNSpec):
            c, h, w = self.model.input_shape
            if c * h * w != input_width(self.dataset_schema):
                raise ValueError(
                    f"cnn input_shape {self.model.input_shape} holds {c * h * w} values but "
                    f"the schema gives {input_width(self.dataset_schema)} inputs"
                )
            if min(h, w) < 2 ** len(self.model.channels):
                raise ValueError("cnn: the image is too small for that many pooling layers")
        return self
