"""Global-model files: safetensors only, so no pickle ever crosses the API."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from safetensors import safe_open
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


# The safetensors dtypes numpy reads as floating point (what `param_count` accepts).
_FLOAT_DTYPES = {"F16", "F32", "F64"}


def param_count_file(path: Path) -> int:
    """`param_count` of a safetensors file on disk, reading its header only.

    The parser checks the header against the file (every tensor inside it, the file fully
    covered), so this refuses what `param_count` refuses without loading a byte of weights:
    a 256 MiB model costs kilobytes of memory, not twice its size.
    """
    try:
        with safe_open(str(path), framework="numpy") as f:
            names: list[str] = list(f.keys())
            shapes = {}
            for name in names:
                tensor = f.get_slice(name)
                shapes[name] = (str(tensor.get_dtype()), list(tensor.get_shape()))
    except Exception as exc:  # the parser raises its own, untyped errors on garbage
        raise InvalidInputError(f"not a safetensors file: {exc}") from None
    if not shapes:
        raise InvalidInputError("the model holds no tensors")
    total = 0
    for name, (dtype, shape) in shapes.items():
        if dtype not in _FLOAT_DTYPES:
            raise InvalidInputError(f"tensor {name!r} is {dtype}, not floating point")
        total += math.prod(int(d) for d in shape)
    return total
