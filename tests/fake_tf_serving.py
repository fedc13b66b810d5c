"""TEST-ONLY stand-in for TF Serving's request surface, backed by one SavedModel version.

The TF Serving binary (``tensorflow_model_server``) cannot be installed on these machines, so the
tests drive the exported SavedModel through this fake instead. It reproduces what TF Serving does
with a request, not how it is built:

* **gRPC** (`serve_grpc`): ``PredictionService.Predict`` / ``GetModelMetadata`` and
  ``ModelService.GetModelStatus`` with TF Serving's own messages (``tensorflow-serving-api``).
  A request's ``model_spec`` is resolved like TF Serving (unknown name or version -> ``NOT_FOUND
  Servable not found for request: Latest(name)``; empty ``signature_name`` -> ``serving_default``;
  unknown signature -> ``FAILED_PRECONDITION``), inputs are matched to the SignatureDef's input
  keys (missing/extra -> ``INVALID_ARGUMENT``), their dtype must equal the SignatureDef's, the
  signature runs with inputs by input key and returns outputs by output key (``output_filter``
  honoured), and TensorFlow errors keep their canonical code (an assertion in the graph ->
  ``INVALID_ARGUMENT``). Metadata is the ``SignatureDefMap`` of the MetaGraphDef tagged ``serve``
  read from ``saved_model.pb`` (``__saved_model_init_op`` included, as TF Serving has it).
* **REST predict** (`rest_response`): TF Serving's JSON decoding (``"inputs"`` columnar or
  ``"instances"`` rows; JSON numbers converted to the SignatureDef dtype: int32 inputs must be
  JSON integers, float32 inputs any number) and encoding (``{"outputs": ...}`` /
  ``{"predictions": [...]}``, ``{"error": ...}`` with TF Serving's HTTP status for the code).

Run as a program (``python fake_tf_serving.py --rest-stdio VERSION_DIR --name NAME``) it answers
one JSON request per stdin line ``{"method", "path", "body"}`` with one JSON line
``{"status", "body"}``, in a process where ``tfinv``, TensorFlow Probability and Keras cannot be
imported (set to ``None`` in ``sys.modules`` before TensorFlow is imported).

Not a server for real use: one model, one version, no batching, no config reload.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":  # before TensorFlow: the served SavedModel must not need these
    for _blocked in ("tfinv", "tensorflow_probability", "keras", "tf_keras"):
        sys.modules[_blocked] = None

import argparse  # noqa: E402
import contextlib  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import re  # noqa: E402
from concurrent import futures  # noqa: E402
from typing import Any, Iterator, Mapping, Sequence  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import saved_model_pb2  # noqa: E402

# TF Serving's HTTP status per canonical error code (model_servers/http_server.cc).
HTTP_STATUS = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "NOT_FOUND": 404, "UNIMPLEMENTED": 501,
               "INTERNAL": 500, "UNKNOWN": 500, "OUT_OF_RANGE": 400, "RESOURCE_EXHAUSTED": 429}
_CODE_NAMES = {0: "OK", 1: "CANCELLED", 2: "UNKNOWN", 3: "INVALID_ARGUMENT", 4: "DEADLINE_EXCEEDED",
               5: "NOT_FOUND", 6: "ALREADY_EXISTS", 7: "PERMISSION_DENIED", 8: "RESOURCE_EXHAUSTED",
               9: "FAILED_PRECONDITION", 10: "ABORTED", 11: "OUT_OF_RANGE", 12: "UNIMPLEMENTED", 13: "INTERNAL",
               14: "UNAVAILABLE", 15: "DATA_LOSS", 16: "UNAUTHENTICATED"}


class ServingFailure(Exception):
    """An error TF Serving would return: a canonical code name and its message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class SavedModelServable:
    """One loaded SavedModel version, run the way TF Serving runs a Predict request."""

    def __init__(self, version_dir: str | os.PathLike, name: str):
        version_dir = pathlib.Path(version_dir)
        if not version_dir.name.isdigit():
            raise ValueError(f"{version_dir} is not a TF Serving version directory (<digits>)")
        self.name, self.version = name, int(version_dir.name)
        self.loaded = tf.saved_model.load(str(version_dir))
        saved_model = saved_model_pb2.SavedModel()
        saved_model.ParseFromString((version_dir / "saved_model.pb").read_bytes())
        meta_graph = next(m for m in saved_model.meta_graphs if "serve" in m.meta_info_def.tags)
        self.signature_defs = dict(meta_graph.signature_def)

    # ------------------------------------------------------------ request resolution
    def check_model(self, name: str, version: int | None) -> None:
        if name != self.name or (version is not None and version != self.version):
            request = f"Latest({name})" if version is None else f"Specific({name}, {version})"
            raise ServingFailure("NOT_FOUND", f"Servable not found for request: {request}")

    def signature(self, signature_name: str) -> tuple[str, Any]:
        key = signature_name or "serving_default"
        if key not in self.signature_defs or key.startswith("__"):
            raise ServingFailure("FAILED_PRECONDITION", f'Serving signature key "{key}" not found.')
        return key, self.signature_defs[key]

    def input_dtypes(self, signature_name: str) -> dict[str, tf.DType]:
        _, sig = self.signature(signature_name)
        return {key: tf.dtypes.as_dtype(info.dtype) for key, info in sig.inputs.items()}

    def run(self, signature_name: str, inputs: Mapping[str, np.ndarray],
            output_filter: Sequence[str] = ()) -> tuple[str, dict[str, np.ndarray]]:
        """Runs a signature: inputs by SignatureDef input key, outputs by output key."""
        key, sig = self.signature(signature_name)
        expected = set(sig.inputs)
        if set(inputs) != expected:
            raise ServingFailure(
                "INVALID_ARGUMENT",
                f"input size does not match signature: {len(inputs)}!={len(expected)} "
                f"len({{{','.join(sorted(inputs))}}}) != len({{{','.join(sorted(expected))}}}). "
                f"Sent extra: {{{','.join(sorted(set(inputs) - expected))}}}. "
                f"Missing but required: {{{','.join(sorted(expected - set(inputs)))}}}.")
        feeds = {}
        for position, name in enumerate(sorted(sig.inputs)):
            info, value = sig.inputs[name], np.asarray(inputs[name])
            want = tf.dtypes.as_dtype(info.dtype)
            if value.dtype != want.as_numpy_dtype:
                raise ServingFailure("INVALID_ARGUMENT", f"Expects arg[{position}] to be {want.name} but "
                                     f"{tf.dtypes.as_dtype(value.dtype).name} is provided")
            shape = None if info.tensor_shape.unknown_rank else [d.size for d in info.tensor_shape.dim]
            if shape is not None and (value.ndim != len(shape) or any(
                    s >= 0 and s != v for s, v in zip(shape, value.shape))):
                raise ServingFailure("INVALID_ARGUMENT", f"input '{name}' has shape {list(value.shape)}, "
                                     f"incompatible with the signature's {shape}")
            feeds[name] = tf.constant(value)
        unknown = [o for o in output_filter if o not in sig.outputs]
        if unknown:
            raise ServingFailure("INVALID_ARGUMENT", f"output tensor alias not found in signature: {unknown[0]} "
                                 f"Outputs expected to be in the set {{{','.join(sorted(sig.outputs))}}}.")
        try:
            result = self.loaded.signatures[key](**feeds)
        except tf.errors.OpError as err:
            raise ServingFailure(_CODE_NAMES.get(err.error_code, "UNKNOWN"), err.message) from None
        wanted = list(output_filter) or list(sig.outputs)
        return key, {name: result[name].numpy() for name in wanted}


# --------------------------------------------------------------------------- gRPC
def _grpc_servicers(servable: SavedModelServable):
    import grpc
    from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                         predict_pb2, prediction_service_pb2_grpc)

    def spec_version(spec) -> int | None:
        return spec.version.value if spec.HasField("version") else None

    def abort(context, failure: ServingFailure):
        context.abort(getattr(grpc.StatusCode, failure.code), failure.message)

    class Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            try:
                servable.check_model(request.model_spec.name, spec_version(request.model_spec))
                inputs = {key: tf.make_ndarray(proto) for key, proto in request.inputs.items()}
                key, outputs = servable.run(request.model_spec.signature_name, inputs, list(request.output_filter))
            except ServingFailure as failure:
                abort(context, failure)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            response.model_spec.signature_name = key
            for name, value in outputs.items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value))
            return response

        def GetModelMetadata(self, request, context):
            try:
                servable.check_model(request.model_spec.name, spec_version(request.model_spec))
                if not request.metadata_field:
                    raise ServingFailure("INVALID_ARGUMENT",
                                         "GetModelMetadataRequest must specify at least one metadata_field")
                for field in request.metadata_field:
                    if field != "signature_def":
                        raise ServingFailure("INVALID_ARGUMENT", f"Metadata field {field} is not supported")
            except ServingFailure as failure:
                abort(context, failure)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = servable.name
            response.model_spec.version.value = servable.version
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, signature_def in servable.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(signature_def)
            response.metadata["signature_def"].Pack(signature_map)
            return response

    class Models(model_service_pb2_grpc.ModelServiceServicer):
        def GetModelStatus(self, request, context):
            name, version = request.model_spec.name, spec_version(request.model_spec)
            if name != servable.name:
                abort(context, ServingFailure("NOT_FOUND", f"Could not find any versions of model {name}"))
            if version is not None and version != servable.version:
                abort(context, ServingFailure("NOT_FOUND", f"Could not find version {version} of model {name}"))
            response = get_model_status_pb2.GetModelStatusResponse()
            status = response.model_version_status.add()
            status.version = servable.version
            status.state = get_model_status_pb2.ModelVersionStatus.AVAILABLE
            status.status.SetInParent()  # error_code OK, error_message "" (TF Serving always sets it)
            return response

    return Prediction(), Models(), prediction_service_pb2_grpc, model_service_pb2_grpc


@contextlib.contextmanager
def serve_grpc(version_dir: str | os.PathLike, name: str, max_workers: int = 2) -> Iterator[str]:
    """Serves ``version_dir`` as model ``name`` on a free loopback port; yields ``host:port``."""
    import grpc

    servable = SavedModelServable(version_dir, name)
    prediction, models, prediction_grpc, model_grpc = _grpc_servicers(servable)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers),
                         options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)])
    prediction_grpc.add_PredictionServiceServicer_to_server(prediction, server)
    model_grpc.add_ModelServiceServicer_to_server(models, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait()


# --------------------------------------------------------------------------- REST
_PATH = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>\d+))?(?P<rest>/metadata|:predict)?$")


def _decode(value: Any, dtype: tf.DType, where: str) -> np.ndarray:
    """A JSON value -> a tensor of the SignatureDef dtype, as TF Serving's JSON decoding does."""
    def leaves(v):
        if isinstance(v, list):
            for item in v:
                yield from leaves(item)
        else:
            yield v

    for leaf in leaves(value):
        if isinstance(leaf, bool) or not isinstance(leaf, (int, float)):
            raise ServingFailure("INVALID_ARGUMENT", f"{where}: not a number: {json.dumps(leaf)[:40]}")
        if dtype.is_integer and not isinstance(leaf, int):
            raise ServingFailure("INVALID_ARGUMENT", f"{where}: {leaf} cannot be converted to {dtype.name}")
    try:
        array = np.asarray(value, dtype=np.float64 if dtype.is_floating else np.int64)
    except ValueError:
        raise ServingFailure("INVALID_ARGUMENT", f"{where}: ragged array") from None
    if dtype.is_integer and array.size and (array.min() < dtype.min or array.max() > dtype.max):
        raise ServingFailure("INVALID_ARGUMENT", f"{where}: value out of range for {dtype.name}")
    return array.astype(dtype.as_numpy_dtype)


def _predict_body(servable: SavedModelServable, body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ServingFailure("INVALID_ARGUMENT", "JSON Value is not an object")
    signature_name = body.get("signature_name", "")
    dtypes = servable.input_dtypes(signature_name)
    if ("inputs" in body) == ("instances" in body):
        raise ServingFailure("INVALID_ARGUMENT", "Missing 'inputs' or 'instances' key" if "inputs" not in body
                             else "Not formatted correctly expecting only one of 'inputs' or 'instances' keys")
    if "inputs" in body:
        columns = body["inputs"]
        if not isinstance(columns, dict):  # a bare value names the only input
            if len(dtypes) != 1:
                raise ServingFailure("INVALID_ARGUMENT", "'inputs' must be an object keyed by input name")
            columns = {next(iter(dtypes)): columns}
        inputs = {k: _decode(v, dtypes.get(k, tf.float32), f"input '{k}'") for k, v in columns.items()}
    else:
        rows = body["instances"]
        if not isinstance(rows, list) or not rows:
            raise ServingFailure("INVALID_ARGUMENT", "'instances' must be a non-empty list")
        if all(isinstance(r, dict) for r in rows):
            inputs = {k: _decode([r.get(k) for r in rows], dtypes.get(k, tf.float32), f"input '{k}'")
                      for k in rows[0]}
        elif len(dtypes) == 1:
            name = next(iter(dtypes))
            inputs = {name: _decode(rows, dtypes[name], f"input '{name}'")}
        else:
            raise ServingFailure("INVALID_ARGUMENT", "instances must be objects for a multi-input signature")
    _, outputs = servable.run(signature_name, inputs)
    values = {k: v.tolist() for k, v in outputs.items()}
    if "inputs" in body:
        return {"outputs": next(iter(values.values())) if len(values) == 1 else values}
    if len(values) == 1:
        return {"predictions": next(iter(values.values()))}
    batch = len(next(iter(values.values())))
    return {"predictions": [{k: v[i] for k, v in values.items()} for i in range(batch)]}


def rest_response(servable: SavedModelServable, method: str, path: str, body: bytes | str | None) -> tuple[int, Any]:
    """``(HTTP status, JSON body)`` TF Serving's REST API answers for one request."""
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_metadata_pb2

    match = _PATH.match(path)
    try:
        if match is None:
            raise ServingFailure("NOT_FOUND", f"Malformed request: {method} {path}")
        version = int(match["version"]) if match["version"] else None
        servable.check_model(match["name"], version)
        if match["rest"] == ":predict" and method == "POST":
            try:
                payload = json.loads(body or b"")
            except ValueError as err:
                raise ServingFailure("INVALID_ARGUMENT", f"JSON Parse error: {err}") from None
            return 200, _predict_body(servable, payload)
        if match["rest"] == "/metadata" and method == "GET":
            signature_map = get_model_metadata_pb2.SignatureDefMap()
            for key, signature_def in servable.signature_defs.items():
                signature_map.signature_def[key].CopyFrom(signature_def)
            return 200, {"model_spec": {"name": servable.name, "signature_name": "", "version": str(servable.version)},
                         "metadata": {"signature_def": json_format.MessageToDict(
                             signature_map, preserving_proto_field_name=True,
                             always_print_fields_with_no_presence=True)}}
        if match["rest"] is None and method == "GET":
            return 200, {"model_version_status": [{"version": str(servable.version), "state": "AVAILABLE",
                                                   "status": {"error_code": "OK", "error_message": ""}}]}
        raise ServingFailure("NOT_FOUND", f"Malformed request: {method} {path}")
    except ServingFailure as failure:
        return HTTP_STATUS.get(failure.code, 500), {"error": failure.message}


def _rest_stdio(version_dir: str, name: str) -> int:
    servable = SavedModelServable(version_dir, name)
    imported = sorted(m for m in ("tfinv", "tensorflow_probability", "keras", "tf_keras")
                      if sys.modules.get(m) is not None)
    print(json.dumps({"ready": True, "imported": imported}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        status, body = rest_response(servable, request["method"], request["path"], request.get("body"))
        print(json.dumps({"status": status, "body": body}), flush=True)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rest-stdio", required=True, metavar="VERSION_DIR")
    parser.add_argument("--name", required=True)
    cli_args = parser.parse_args()
    sys.exit(_rest_stdio(cli_args.rest_stdio, cli_args.name))
