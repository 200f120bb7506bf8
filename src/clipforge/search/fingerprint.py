"""The id an index stores for the model that embedded it, so that vectors from another model are
never compared with its own.

An ONNX export has the id of the PyTorch weights it was exported from (recorded in its
clipforge_onnx.json, and trusted while its files are as exported): its features equal theirs within
1e-4, so an index built under one runtime is searched under the other. An export whose files changed
(a graph quantized in place, say) gets an id of its own.

A model run at bf16 or int8 (`clipforge.models.inference.for_inference`) has the id of the float
weights it came from with its precision after a dash ("…-int8"): its features differ slightly, so an
index never mixes precisions, and a search knows which one the index was built at."""

from __future__ import annotations

import torch

from clipforge.checkpoints.onnx_runtime import OnnxCLIP
from clipforge.models.fingerprint import weights_fingerprint
from clipforge.models.inference import inference_precision

SAMPLED_VALUES = 65536  # per tensor; smaller tensors are hashed whole (as `onnx_export.FINGERPRINT_VALUES`)


def model_fingerprint(model: torch.nn.Module | OnnxCLIP) -> str:
    """16 hex digits of the weights' fingerprint over up to `SAMPLED_VALUES` values per tensor."""
    if isinstance(model, OnnxCLIP):
        return model.weights_fingerprint(SAMPLED_VALUES)[:16]
    if inference_precision(model) != "fp32":  # `source_fingerprint` samples `inference.FINGERPRINT_VALUES`, as we do
        return f"{model.source_fingerprint[:16]}-{inference_precision(model)}"
    return weights_fingerprint(model, max_values=SAMPLED_VALUES)[:16]


def precision_of(model_id: str) -> str:
    """The precision an index's model id records ("int8" for "…-int8"); fp32 when it names none."""
    return model_id.partition("-")[2] or "fp32"


def same_weights(model_id: str, other: str) -> bool:
    """Whether two ids name the same weights, whatever precision each ran at."""
    return model_id.partition("-")[0] == other.partition("-")[0]
