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


def layout_file(path: Path) -> dict[str, list[int]]:
    """Tensor names and shapes of a safetensors file on disk, reading its header only.

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
                shapes[name] = (str(tensor.get_dtype()), [int(d) for d in tensor.get_shape()])
    except Exception as exc:  # the parser raises its own, untyped errors on garbage
        raise InvalidInputError(f"not a safetensors file: {exc}") from None
    if not shapes:
        raise InvalidInputError("the model holds no tensors")
    for name, (dtype, _) in shapes.items():
        if dtype not in _FLOAT_DTYPES:
            raise InvalidInputError(f"tensor {name!r} is {dtype}, not floating point")
    return {name: shape for name, (_, shape) in sorted(shapes.items())}


def param_count_file(path: Path) -> int:
    """`param_count` of a safetensors file on disk, reading its header only."""
    return sum(math.prod(shape) for shape in layout_file(path).values())


def check_layout(path: Path, expected: dict[str, list[int]] | None, param_count: int) -> None:
    """Refuse a model whose tensors are not exactly the job's (names and shapes).

    The same number of parameters in another layout (a transposed layer, renamed tensors)
    would make every agent fail to load it: a buyer could then fail a round on providers.
    Jobs made before layouts were recorded are checked by parameter count only.
    """
    layout = layout_file(path)
    if expected is None:
        if sum(math.prod(s) for s in layout.values()) != param_count:
            raise InvalidInputError(f"the model must have {param_count} parameters")
        return
    if layout != expected:
        problems = [f"{n} missing" for n in sorted(set(expected) - set(layout))]
        problems += [f"{n} not in the job" for n in sorted(set(layout) - set(expected))]
        problems += [
            f"{n} is {layout[n]}, not {expected[n]}"
            for n in sorted(set(layout) & set(expected))
            if layout[n] != expected[n]
        ]
        raise InvalidInputError(
            "the model's tensors are not the job's: " + "; ".join(problems[:4]),
            expected=expected,
        )
