"""Global-model files: safetensors only, so no pickle ever crosses the API."""

from __future__ import annotations

import numpy as np
from safetensors.numpy import load

from market.errors import InvalidInputError

_FLOAT_KINDS = {"f"}


def param_count(data: bytes) -> int:
    """Total number of elements of a safetensors file's tensors; refuses anything else."""
    try:
        tensors: dict[str, np.ndarray] = load(data)
    except Exception as exc:  # the parser raises its own, untyped errors on garbage
        raise InvalidInputError(f"not a safetensors file: {exc}") from None
    if not tensors:
        raise InvalidInputError("the model holds no tensors")
    for name, array in tensors.items():
        if array.dtype.kind not in _FLOAT_KINDS:
            raise InvalidInputError(f"tensor {name!r} is {array.dtype}, not floating point")
    return int(sum(int(a.size) for a in tensors.values()))
