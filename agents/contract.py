"""A trained model that carries its contract, and predictions on new raw rows.

The buyer writes every model file it computes with a **contract** in the safetensors header
(metadata key ``pollen.contract``, a JSON object), so the file alone is enough to use the
model: the job id and title, the task, the architecture, the job's schema with all of its
preprocessing (column order, transforms, categories, fills), the model's input names, and
the class names (classification) or the target transform (regression). Weights and contract
travel in one file, signed and published like any round's model; no pickle, no sidecar to
lose.

:func:`predict` reads rows as the user has them (:func:`agents.tabular.read_table`), applies
the contract's preprocessing with the very function providers trained with, and returns the
predicted class with every class's probability, or the predicted value in the target's units.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agents.data import DataError, DatasetSchema
from agents.modelio import ModelIOError, load_safetensors, safetensors_metadata, to_safetensors
from agents.models import ModelSpec, build_model, model_spec
from agents.tabular import Table, encode
from agents.training import predict_values
from dataspec import input_names
from dataspec.jobs import JobCreate

__all__ = ["CONTRACT_KEY", "Contract", "load_model", "model_bytes", "predict", "write_predictions"]

CONTRACT_KEY = "pollen.contract"
FORMAT = "pollen-model-v1"


@dataclass(frozen=True)
class Contract:
    """What a model file promises about its inputs and outputs."""

    job_id: str
    title: str
    model: ModelSpec
    schema: DatasetSchema

    @property
    def task(self) -> str:
        return self.schema.task

    def to_json(self) -> str:
        label = self.schema.label
        body = {
            "format": FORMAT,
            "job_id": self.job_id,
            "title": self.title,
            "task": self.task,
            "model": self.model.model_dump(exclude_none=True),
            "schema": self.schema.model_dump(exclude_none=True),
            "inputs": input_names(self.schema),
            "classes": label.classes,
            "target": None
            if label.classes is not None
            else {"name": label.name, "offset": label.offset, "scale": label.scale},
        }
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_spec(cls, job_id: str, spec: JobCreate) -> Contract:
        return cls(job_id=job_id, title=spec.title, model=spec.model, schema=spec.dataset_schema)

    @classmethod
    def from_bytes(cls, data: bytes) -> Contract:
        meta = safetensors_metadata(data)
        if CONTRACT_KEY not in meta:
            raise ModelIOError(
                "this model file carries no contract (schema, preprocessing, classes): "
                "download the job's final model with `pollen job model JOB --out FILE`"
            )
        try:
            body = json.loads(meta[CONTRACT_KEY])
            if body.get("format") != FORMAT:
                raise ValueError(f"unknown contract format {body.get('format')!r}")
            return cls(
                job_id=str(body["job_id"]),
                title=str(body.get("title", "")),
                # Contracts written before the one wire ModelSpec say `"hidden": []` for
                # models without hidden layers; the spec now leaves it out.
                model=model_spec(
                    {k: v for k, v in body["model"].items() if not (k == "hidden" and v == [])}
                ),
                schema=DatasetSchema.model_validate(body["schema"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ModelIOError(f"the model's contract is not valid: {exc}") from exc


def model_bytes(model: nn.Module, contract: Contract) -> bytes:
    """The model's safetensors bytes with its contract in the header."""
    return to_safetensors(model, {CONTRACT_KEY: contract.to_json()})


def load_model(data: bytes) -> tuple[nn.Module, Contract]:
    """The model a contract-carrying file describes, with its weights loaded."""
    contract = Contract.from_bytes(data)
    model = build_model(
        contract.model, contract.schema.n_features, contract.schema.n_classes, seed=0
    )
    load_safetensors(model, data)
    return model, contract


def predict(data: bytes, rows: Table) -> tuple[Contract, list[dict[str, Any]]]:
    """Predictions for ``rows`` (raw, label column optional, extra columns ignored)."""
    model, contract = load_model(data)
    prepared = encode(rows, contract.schema, need_label=False, exact_columns=False)
    out = predict_values(model, prepared.X)
    label = contract.schema.label
    results: list[dict[str, Any]] = []
    if label.classes is None:
        values = out[:, 0].astype(np.float64) / label.scale + label.offset
        results = [{"prediction": float(v)} for v in values]
    else:
        probs = torch.softmax(torch.from_numpy(out), dim=1).numpy()
        names = contract.schema.class_names
        for p in probs:
            row: dict[str, Any] = {"prediction": label.classes[int(p.argmax())]}
            row.update({f"p_{n}": float(q) for n, q in zip(names, p, strict=True)})
            results.append(row)
    return contract, results


def write_predictions(results: list[dict[str, Any]], path: Path) -> None:
    """Write predictions as CSV: ``row``, ``prediction`` and (classes) ``p_<class>``."""
    if not results:
        raise DataError("nothing to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        keys = list(results[0])
        writer.writerow(["row", *keys])
        for i, r in enumerate(results):
            writer.writerow(
                [i, *(f"{r[k]:.6g}" if isinstance(r[k], float) else r[k] for k in keys)]
            )
