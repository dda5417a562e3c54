"""Model registry shared by the provider agent and the buyer.

A job names its model with a :data:`dataspec.jobs.ModelSpec` (it travels inside the job spec
as JSON; the server checks it with the same classes, so a spec the server accepts is one
every agent can build), and both sides call :func:`build_model` with the dataset schema's
feature and class counts. Given the same spec, shapes and seed, every machine builds a
bit-identical model, so the buyer's round-0 weights can be reproduced anywhere and parameter
vectors line up element for element.

Architectures:

- ``logreg`` — multinomial logistic regression: one ``Linear(n_features, n_classes)``; the
  softmax lives in the loss.
- ``mlp`` — ``Linear → ReLU`` for each size in ``hidden``, then a ``Linear`` to the classes
  (or to one output, for a regression).
- ``linear`` — linear regression: one ``Linear(n_features, 1)``.
- ``cnn`` — for image-shaped inputs: the features are read as an image of ``input_shape``
  (channels, height, width); for each entry of ``channels`` a 3×3 ``Conv2d`` (padding 1),
  ``ReLU`` and 2×2 ``AvgPool2d``; then ``Linear → ReLU`` for each size in ``hidden`` and a
  ``Linear`` to the outputs.

All are ``torch.nn.Sequential`` without buffers, so ``state_dict()`` holds exactly the
trainable parameters (see :mod:`agents.modelio` for how they are flattened).
"""

from __future__ import annotations

import itertools
import logging
from typing import Literal

import torch
from torch import nn

from dataspec.jobs import CNNSpec, LinearSpec, LogRegSpec, MLPSpec, ModelSpec, model_spec

__all__ = [
    "Arch",
    "CNNSpec",
    "LinearSpec",
    "LogRegSpec",
    "MLPSpec",
    "ModelSpec",
    "build_model",
    "model_spec",
]

logger = logging.getLogger(__name__)

Arch = Literal["logreg", "mlp", "linear", "cnn"]


def build_model(spec: ModelSpec, n_features: int, n_classes: int, *, seed: int) -> nn.Module:
    """Build the model named by ``spec`` with a deterministic initialisation from ``seed``.

    ``n_classes`` is the number of outputs: the classes, or 1 for a regression. The global
    torch RNG is left untouched (initialisation runs in a forked RNG state), so building a
    model never perturbs the caller's own random stream.
    """
    if n_features <= 0:
        raise ValueError(f"n_features must be positive, got {n_features}")
    if n_classes < 1 or (spec.arch == "logreg" and n_classes < 2):
        raise ValueError(f"{spec.arch} needs more outputs than {n_classes}")
    if spec.arch == "linear" and n_classes != 1:
        raise ValueError("arch 'linear' is a regression (one output); use 'logreg' for classes")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers: list[nn.Module] = []
        if isinstance(spec, CNNSpec):
            layers, n_features = _conv_layers(spec, n_features)
        sizes = [n_features, *spec.hidden, n_classes]
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(fan_in, fan_out))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
        # float32 regardless of torch's default dtype: the wire format (safetensors, CKKS
        # vectors) is float32 everywhere.
        model = nn.Sequential(*layers).to(torch.float32)
    logger.debug("built %s model %s with seed %d", spec.arch, sizes, seed)
    return model


def _conv_layers(spec: CNNSpec, n_features: int) -> tuple[list[nn.Module], int]:
    """The convolutional front of a ``cnn`` and the width of what it hands the dense layers."""
    c, h, w = spec.input_shape
    if c * h * w != n_features:
        raise ValueError(
            f"cnn input_shape {spec.input_shape} holds {c * h * w} values, the data has "
            f"{n_features} inputs"
        )
    layers: list[nn.Module] = [nn.Unflatten(1, (c, h, w))]
    for out in spec.channels:
        if h < 2 or w < 2:
            raise ValueError(f"cnn: image {spec.input_shape} too small for the pooling layers")
        layers += [nn.Conv2d(c, out, kernel_size=3, padding=1), nn.ReLU(), nn.AvgPool2d(2)]
        c, h, w = out, h // 2, w // 2
    layers.append(nn.Flatten())
    return layers, c * h * w
