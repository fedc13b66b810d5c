"""TF Serving's REST protocol for the flow signatures, shared by the ONNX server and the client.

Request/response formats follow TF Serving: the row format ``{"instances": [...]}`` (a list of
values, or of ``{name: value}`` objects; answered with ``{"predictions": [...]}``, a list of
``{output: value}`` objects per instance when the signature has several outputs) and the columnar
format ``{"inputs": {...}}`` or ``{"inputs": value}`` (answered with ``{"outputs": ...}``, a bare
value for a single output). Errors are `ServingError` with TF Serving's messages where it has
one (``Servable not found for request: ...``, ``Serving signature key "..." not found``, ...).

The signatures (names, dtypes, shapes) come from the deployment contract,
`tfinv.export.signatures`. Only NumPy and the standard library are imported here.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Mapping, Sequence

import numpy as np

from tfinv.export.signatures import DT_NAMES, Signature, TensorSpec
from tfinv.serving.errors import ServingError

__all__ = [
    "MODEL_PATH",
    "decode_predict",
    "encode_predict",
    "jsonable",
    "metadata_document",
    "model_not_found",
    "parse_predict",
    "render_predict",
    "signature_def",
    "status_document",
]

INT32 = (-(2**31), 2**31 - 1)

#: ``/v1/models/<rest>``: ``<name>[/versions/<v>][/metadata | :<verb>]``.
MODEL_PATH = re.compile(
    r"^(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]{1,18}))?(?:(?P<metadata>/metadata)|:(?P<verb>[A-Za-z]+))?$"
)


# --------------------------------------------------------------------------- documents
def model_not_found(name: str, version: str | int | None) -> ServingError:
    """TF Serving's 404 for a model (or version) that is not served."""
    request = f"Latest({name})" if version is None else f"Specific({name}, {int(version)})"
    return ServingError(f"Servable not found for request: {request}", 404)


def tensor_info(spec: TensorSpec, signature: str, role: str) -> dict[str, Any]:
    """TF Serving's JSON ``TensorInfo`` (int64 sizes as strings, as protobuf JSON has them)."""
    return {
        "dtype": DT_NAMES[spec.dtype],
        "tensor_shape": {"dim": [{"size": str(s), "name": ""} for s in spec.shape], "unknown_rank": False},
        "name": f"{signature}_{spec.name}:0" if role == "input" else f"{signature}/{spec.name}:0",
    }


def signature_def(sig: Signature) -> dict[str, Any]:
    return {
        "inputs": {s.name: tensor_info(s, sig.name, "input") for s in sig.inputs},
        "outputs": {s.name: tensor_info(s, sig.name, "output") for s in sig.outputs},
        "method_name": "tensorflow/serving/predict",
    }


def status_document(version: int) -> dict[str, Any]:
    """The body of ``GET /v1/models/<name>``."""
    return {"model_version_status": [{
        "version": str(version), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""},
    }]}


def metadata_document(name: str, version: int, signatures: Mapping[str, Signature],
                      model_info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The body of ``GET /v1/models/<name>/metadata`` (TF Serving's layout). ``model_info`` (e.g.
    ``{"num_levels": 256}``) is added as the metadata field ``tfinv``, beside ``signature_def``."""
    metadata: dict[str, Any] = {"signature_def": {"signature_def": {k: signature_def(s) for k, s in signatures.items()}}}
    if model_info:
        metadata["tfinv"] = dict(model_info)
    return {"model_spec": {"name": name, "signature_name": "", "version": str(version)}, "metadata": metadata}


# --------------------------------------------------------------------------- requests (server side)
def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def _has_bool(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is list:
            stack.extend(item)
        elif type(item) is bool:
            return True
    return False


def _check_batch(batch: int, max_batch: int) -> None:
    if batch > max_batch:
        raise ServingError(f"batch size {batch} exceeds this server's limit of {max_batch} "
                           "(max_batch); split the request", 400)


def parse_predict(payload: Any, signatures: Mapping[str, Signature], max_batch: int,
                  check_bools: bool = True) -> tuple[Signature, dict[str, np.ndarray], bool]:
    """Validates a predict body: ``(signature, inputs, row_format)`` or a 400 `ServingError`.

    Batched inputs become float32 arrays of the signature's shape (finite, batch in
    ``[1, max_batch]``, equal batches); scalars become 0-d arrays of their dtype (int32 in range,
    float32 finite after the cast). ``check_bools=False`` skips the search for JSON booleans
    (when the body holds no ``true``/``false``).
    """
    if not isinstance(payload, dict):
        raise ServingError("the request body must be a JSON object with 'instances' or 'inputs'", 400)
    key = payload.get("signature_name", "serving_default")
    if not isinstance(key, str):
        raise ServingError(f"'signature_name' must be a string, got {json.dumps(key)}", 400)
    signature = signatures.get(key)
    if signature is None:
        raise ServingError(f'Serving signature key "{key}" not found. Available: '
                           f"{', '.join(sorted(signatures))}", 400)
    has_rows, has_columns = "instances" in payload, "inputs" in payload
    if has_rows == has_columns:
        raise ServingError("the request must have exactly one of the keys 'instances' (row format) "
                           "and 'inputs' (columnar format)"
                           if has_rows else "Missing 'inputs' or 'instances' key", 400)
    if has_rows:
        return signature, _parse_rows(signature, payload["instances"], max_batch, check_bools), True
    return signature, _parse_columns(signature, payload["inputs"], max_batch, check_bools), False


def _parse_rows(sig: Signature, instances: Any, max_batch: int, check_bools: bool) -> dict[str, np.ndarray]:
    if not sig.batched:
        raise ServingError(f"signature '{sig.name}' takes scalar inputs "
                           f"({', '.join(sig.input_names)}): send them in the columnar "
                           '"inputs" form, e.g. {"signature_name": "sample", "inputs": '
                           '{"n": 4, "seed": 0, "temperature": 1.0}}', 400)
    if not isinstance(instances, list) or not instances:
        raise ServingError("'instances' must be a non-empty list", 400)
    _check_batch(len(instances), max_batch)
    names = list(sig.input_names)
    named = [isinstance(i, dict) for i in instances]
    if all(named):
        columns: dict[str, list] = {n: [] for n in names}
        for i, instance in enumerate(instances):
            if set(instance) != set(names):
                raise ServingError(f"instance {i} of signature '{sig.name}' has inputs {sorted(instance)}, "
                                   f"expected {names}", 400)
            for n in names:
                columns[n].append(instance[n])
    elif any(named):
        raise ServingError("'instances' mixes named ({...}) and unnamed values", 400)
    elif len(names) == 1:
        columns = {names[0]: instances}
    else:
        raise ServingError(f"signature '{sig.name}' has several inputs: each instance must be an object "
                           f"with the keys {names}", 400)
    return {s.name: _array(sig, s, columns[s.name], check_bools) for s in sig.inputs}


def _parse_columns(sig: Signature, inputs: Any, max_batch: int, check_bools: bool) -> dict[str, np.ndarray]:
    names = list(sig.input_names)
    if isinstance(inputs, dict):
        missing = [n for n in names if n not in inputs]
        unknown = sorted(set(inputs) - set(names))
        if missing or unknown:
            raise ServingError(f"signature '{sig.name}' takes the inputs {names}"
                               + (f"; missing {missing}" if missing else "")
                               + (f"; unknown {unknown}" if unknown else ""), 400)
    elif len(names) == 1:
        inputs = {names[0]: inputs}
    else:
        raise ServingError(f"signature '{sig.name}' has several inputs: 'inputs' must be an object "
                           f"with the keys {names}", 400)
    arrays = {}
    for spec in sig.inputs:
        if spec.batched:
            if isinstance(inputs[spec.name], list):
                _check_batch(len(inputs[spec.name]), max_batch)
            arrays[spec.name] = _array(sig, spec, inputs[spec.name], check_bools)
        else:
            arrays[spec.name] = _scalar(sig, spec, inputs[spec.name])
    batches = {len(a) for s, a in zip(sig.inputs, arrays.values()) if s.batched}
    if len(batches) > 1:
        raise ServingError(f"the inputs of signature '{sig.name}' have different batch sizes", 400)
    return arrays


def _array(sig: Signature, spec: TensorSpec, value: Any, check_bools: bool) -> np.ndarray:
    where = f"input '{spec.name}' of signature '{sig.name}'"
    try:
        array = np.asarray(value)
    except ValueError:
        raise ServingError(f"{where} must be a rectangular (not ragged) array of numbers", 400) from None
    if array.dtype.kind not in "iuf" or (check_bools and _has_bool(value)):
        kind = {"b": "booleans", "U": "strings", "O": "non-numbers or ragged lists"}.get(array.dtype.kind, array.dtype)
        raise ServingError(f"{where} must be numbers of dtype {DT_NAMES[spec.dtype]}, got {kind}", 400)
    if array.ndim != len(spec.shape) or array.shape[1:] != spec.shape[1:] or len(array) == 0:
        raise ServingError(f"{where} must have shape {_shape_text(spec.shape)} (-1: batch >= 1), "
                           f"got {_shape_text(array.shape)}", 400)
    with np.errstate(over="ignore", invalid="ignore"):
        array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise ServingError(f"{where} contains NaN or Inf (or values beyond float32 range)", 400)
    return array


def _scalar(sig: Signature, spec: TensorSpec, value: Any) -> np.ndarray:
    where = f"input '{spec.name}' of signature '{sig.name}'"
    if spec.dtype == "int32":
        if type(value) is not int or not INT32[0] <= value <= INT32[1]:
            raise ServingError(f"{where} must be an int32 scalar, got {json.dumps(value)[:80]}", 400)
        return np.asarray(value, np.int32)
    with np.errstate(over="ignore"):
        cast = np.float32(value) if type(value) in (int, float) else None
    if cast is None or not math.isfinite(value) or not np.isfinite(cast):
        raise ServingError(f"{where} must be a finite float32 scalar (|value| < 3.4e38), got "
                           f"{json.dumps(value)[:80]}", 400)
    return np.asarray(cast, np.float32)


# --------------------------------------------------------------------------- responses
def render_predict(sig: Signature, outputs: Mapping[str, np.ndarray], row_format: bool) -> dict[str, Any]:
    """TF Serving's response: ``predictions`` (row format) or ``outputs`` (columnar)."""
    values = {name: np.asarray(outputs[name]).tolist() for name in sig.output_names}
    if row_format:
        if len(values) == 1:
            return {"predictions": next(iter(values.values()))}
        batch = len(next(iter(values.values())))
        return {"predictions": [{k: v[i] for k, v in values.items()} for i in range(batch)]}
    return {"outputs": next(iter(values.values())) if len(values) == 1 else values}


# --------------------------------------------------------------------------- client side
def jsonable(value: Any) -> Any:
    """A JSON-encodable form of an array, NumPy scalar or eager tensor (TensorFlow not imported)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if hasattr(value, "numpy"):
        return np.asarray(value).tolist()
    return value


def encode_predict(signature: str, inputs: Mapping[str, Any], row_format: bool) -> dict[str, Any]:
    """The predict body for named inputs (row format: one object per instance, or bare values)."""
    values = {k: jsonable(v) for k, v in inputs.items()}
    if not row_format:
        return {"signature_name": signature, "inputs": values}
    names = list(values)
    batch = len(values[names[0]])
    instances = (values[names[0]] if len(names) == 1 else [{n: values[n][i] for n in names} for i in range(batch)])
    return {"signature_name": signature, "instances": instances}


def decode_predict(payload: Mapping[str, Any], output_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Named float32 arrays from a predict response (either format)."""
    if "predictions" in payload:
        rows = payload["predictions"]
        if rows and isinstance(rows[0], dict):
            result = {k: [row[k] for row in rows] for k in rows[0]}
        else:
            result = {output_names[0] if len(output_names) == 1 else "predictions": rows}
    elif "outputs" in payload:
        out = payload["outputs"]
        result = out if isinstance(out, dict) else {output_names[0] if len(output_names) == 1 else "outputs": out}
    else:
        raise ServingError(f"predict response has neither 'predictions' nor 'outputs': {list(payload)}", 502)
    return {k: np.asarray(v, np.float32) for k, v in result.items()}
