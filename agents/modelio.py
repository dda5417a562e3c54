"""A model's parameters as one flat float32 vector, and as safetensors bytes.

Everything that crosses a process boundary uses these two forms: the global model the buyer
publishes is safetensors bytes (never pickle, so loading an untrusted file cannot run code), and
the update a provider encrypts is a flat float32 vector.

**Canonical order.** The flat vector is the concatenation, in **sorted key order** (Python
``sorted`` on the ``state_dict`` names, i.e. byte-wise order for ASCII names), of each tensor
flattened row-major (C order). This is the order in which safetensors lays the tensors out in
the file (for a single dtype it sorts by name), so anyone holding only the file can rebuild the
vector without torch::

    tensors = safetensors.numpy.load(data)
    vec = np.concatenate([tensors[k].ravel() for k in sorted(tensors)])

Note that ``safetensors.numpy.load`` returns a dict whose iteration order is *not* sorted, so
the ``sorted(...)`` is required. Also note that sorted order is not ``state_dict`` order:
``"10.weight"`` sorts before ``"2.weight"``. :func:`vector_from_safetensors` implements exactly
the recipe above and is what a server should use.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np
import numpy.typing as npt
import safetensors.numpy
import safetensors.torch
import torch
from torch import nn

from crypto.errors import PollenError

__all__ = [
    "ModelIOError",
    "flatten",
    "load_safetensors",
    "param_count",
    "param_count_from_safetensors",
    "safetensors_metadata",
    "state_keys",
    "to_safetensors",
    "unflatten_into",
    "vector_from_safetensors",
]

logger = logging.getLogger(__name__)

FloatVector = npt.NDArray[np.float32]


class ModelIOError(PollenError, ValueError):
    """Bytes or a vector do not fit the model (wrong keys, shapes, length or dtype)."""

    code = "model-io-error"
    title = "Model file or vector does not fit the model"


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    for name, tensor in state.items():
        # Only float32 travels: mixing dtypes would make safetensors reorder tensors by dtype
        # and break the "sorted key order" promise.
        if tensor.dtype != torch.float32:
            raise ModelIOError(f"tensor {name!r} is {tensor.dtype}; only float32 is supported")
    return state


def state_keys(model: nn.Module) -> list[str]:
    """The model's tensor names in canonical (sorted) order."""
    return sorted(model.state_dict())


def param_count(model: nn.Module) -> int:
    """Number of scalars in the flat vector (all ``state_dict`` tensors)."""
    return sum(t.numel() for t in _state(model).values())


def flatten(model: nn.Module) -> FloatVector:
    """The model's tensors as one new float32 vector, in canonical (sorted key) order."""
    state = _state(model)
    if not state:
        return np.zeros(0, dtype=np.float32)
    parts = [state[k].detach().cpu().reshape(-1).numpy() for k in sorted(state)]
    return np.concatenate(parts).astype(np.float32, copy=False)


def unflatten_into(model: nn.Module, vec: npt.ArrayLike) -> None:
    """Overwrite the model's tensors from a flat vector in canonical order.

    Raises :class:`ModelIOError` if the vector is not 1-D, has the wrong length, or holds a
    non-finite value (a NaN would silently poison every later round).
    """
    arr = np.asarray(vec)
    if arr.ndim != 1:
        raise ModelIOError(f"expected a 1-D vector, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ModelIOError(f"expected a float vector, got dtype {arr.dtype}")
    state = _state(model)
    expected = sum(t.numel() for t in state.values())
    if arr.size != expected:
        raise ModelIOError(f"vector has {arr.size} values, model has {expected} parameters")
    if not np.all(np.isfinite(arr)):
        raise ModelIOError("vector holds NaN or infinite values")
    arr32 = arr.astype(np.float32, copy=False)
    offset = 0
    with torch.no_grad():
        for key in sorted(state):
            target = state[key]
            n = target.numel()
            chunk = torch.from_numpy(arr32[offset : offset + n].copy()).reshape(target.shape)
            target.copy_(chunk)
            offset += n


def to_safetensors(model: nn.Module, metadata: Mapping[str, str] | None = None) -> bytes:
    """Serialise the model's tensors to safetensors bytes (no pickle), with optional
    string ``metadata`` in the file's header (see :mod:`agents.contract`)."""
    state = {k: v.detach().cpu().contiguous() for k, v in _state(model).items()}
    data: bytes = safetensors.torch.save(state, metadata=dict(metadata) if metadata else None)
    return data


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The ``__metadata__`` strings of a safetensors file's header (empty if none)."""
    import json

    if len(data) < 8:
        raise ModelIOError("not a valid safetensors file: too short")
    size = int.from_bytes(data[:8], "little")
    if size > len(data) - 8 or size > 100_000_000:
        raise ModelIOError("not a valid safetensors file: header length out of range")
    try:
        header = json.loads(data[8 : 8 + size])
    except ValueError as exc:
        raise ModelIOError(f"not a valid safetensors file: {exc}") from exc
    meta = header.get("__metadata__") or {} if isinstance(header, dict) else {}
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise ModelIOError("safetensors metadata must map strings to strings")
    return {str(k): v for k, v in meta.items()}


def load_safetensors(model: nn.Module, data: bytes) -> None:
    """Load safetensors bytes into ``model``; keys and shapes must match exactly."""
    try:
        loaded: dict[str, torch.Tensor] = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own untyped errors on garbage input
        raise ModelIOError(f"not a valid safetensors file: {exc}") from exc
    state = _state(model)
    missing = sorted(set(state) - set(loaded))
    extra = sorted(set(loaded) - set(state))
    if missing or extra:
        raise ModelIOError(
            f"safetensors keys do not match the model: missing {missing}, unexpected {extra}"
        )
    for key in sorted(state):
        if tuple(loaded[key].shape) != tuple(state[key].shape):
            raise ModelIOError(
                f"tensor {key!r} has shape {tuple(loaded[key].shape)}, "
                f"model expects {tuple(state[key].shape)}"
            )
        if loaded[key].dtype != torch.float32:
            raise ModelIOError(f"tensor {key!r} is {loaded[key].dtype}; expected float32")
    model.load_state_dict(loaded, strict=True)


def _flatten_arrays(tensors: Mapping[str, npt.NDArray[np.generic]]) -> FloatVector:
    if not tensors:
        return np.zeros(0, dtype=np.float32)
    for key, arr in tensors.items():
        if arr.dtype != np.float32:
            raise ModelIOError(f"tensor {key!r} is {arr.dtype}; expected float32")
    return np.concatenate([tensors[k].reshape(-1) for k in sorted(tensors)]).astype(np.float32)


def vector_from_safetensors(data: bytes) -> FloatVector:
    """Flat vector of a safetensors file without torch (the server-side recipe)."""
    try:
        tensors = safetensors.numpy.load(data)
    except Exception as exc:  # see load_safetensors
        raise ModelIOError(f"not a valid safetensors file: {exc}") from exc
    return _flatten_arrays(tensors)


def param_count_from_safetensors(data: bytes) -> int:
    """Number of scalars in a safetensors file, i.e. the length of its flat vector."""
    return int(vector_from_safetensors(data).size)
