"""An ONNX export of a flow as TF Serving-style signatures on onnxruntime (no web framework, no
TensorFlow).

Signatures are the deployment contract (`tfinv.export.signatures`) for the manifest's shapes:

* ``forward``: ``x`` -> ``z``, ``log_det`` (``forward.onnx``);
* ``inverse``: ``z`` -> ``x``, ``log_det`` (``inverse.onnx``);
* ``sample``: scalars ``n``, ``seed``, ``temperature`` -> ``x``, ``z``;
* ``log_prob`` and ``serving_default``: ``x`` -> ``log_prob`` (standard normal log density of
  ``z = forward(x)`` summed over the latent dimensions, plus ``log_det``; a model with another
  base distribution ships a ``log_prob.onnx``, run instead).

A conditional model's signatures take ``context`` too (``sample``: one row per sample).

**Sampling noise.** ``sample`` draws ``z = temperature * eps`` with ``eps`` from
`tfinv.serving.rng.stateless_normal`, a NumPy replica of
``tf.random.stateless_normal([n, *latent_shape], seed=[seed, 0])``, and feeds it to
``inverse.onnx``: for a given ``seed`` the ONNX server returns the samples of the TF Serving
SavedModel and of ``model.sample(n, temperature, seed)`` (to ONNX-vs-TF parity). With another
base distribution the noise has the base's ``noise_shape`` and ``sample.onnx`` maps it (through
the base, then the inverse flow) to ``x, z``.
"""

from __future__ import annotations

import math
import os
from typing import Any, Callable

import numpy as np

from tfinv.export.manifest import read_manifest
from tfinv.export.runtime import inference_session
from tfinv.export.signatures import BASE_GRAPHS, GRAPHS, Signature, check_model_name, graph_signatures
from tfinv.serving import protocol
from tfinv.serving.errors import ServingError
from tfinv.serving.options import positive_int
from tfinv.serving.rng import stateless_normal

__all__ = ["DEFAULT_MAX_BATCH", "DEFAULT_MAX_N", "OnnxFlowServable"]

DEFAULT_MAX_BATCH = 256
DEFAULT_MAX_N = 256
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class OnnxFlowServable:
    """An exported flow (``manifest.json``, ``forward.onnx``, ``inverse.onnx``) as signatures,
    with request validation. Thread-safe (onnxruntime sessions are).

    Args:
        export_dir: the directory `tfinv.export.export_flow` wrote.
        name: the served model name; defaults to the manifest's ``name``.
        version: the (only) served version number.
        max_batch: largest accepted batch of a batched signature.
        max_n: largest accepted ``n`` of ``sample``.
        threads: onnxruntime intra-op threads per session (``None``: one per core).

    Raises:
        FileNotFoundError: a file of the export is missing.
        ValueError: a bad argument, or a manifest that is invalid or too new
            (`tfinv.export.manifest.ManifestError`).
    """

    def __init__(self, export_dir: str | os.PathLike, name: str | None = None, version: int = 1,
                 max_batch: int = DEFAULT_MAX_BATCH, max_n: int = DEFAULT_MAX_N, threads: int | None = None):
        self.version = positive_int("version", version)
        self.max_batch = positive_int("max_batch", max_batch)
        self.max_n = positive_int("max_n", max_n)
        self.manifest = read_manifest(export_dir)
        self.export_dir = self.manifest.path.parent
        self.name = check_model_name(name or self.manifest.name)
        self.data_shape, self.latent_shape = self.manifest.data_shape, self.manifest.latent_shape
        self.context_shape = self.manifest.context_shape
        self.noise_shape = self.manifest.noise_shape  # None: the standard normal base
        graphs = GRAPHS + (BASE_GRAPHS if self.noise_shape is not None else ())
        self._graphs = graph_signatures(self.data_shape, self.latent_shape, self.context_shape, self.noise_shape)
        self._sessions = {}
        for direction in graphs:
            self._sessions[direction], self.provider = inference_session(
                str(self.manifest.graph_path(direction)), threads=threads)
        self.signatures: dict[str, Signature] = self.manifest.signatures
        self._run: dict[str, Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]] = {
            "forward": self._forward, "inverse": self._inverse, "sample": self._sample,
            "log_prob": self._log_prob, "serving_default": self._log_prob,
        }

    # ------------------------------------------------------------ computation
    def _graph(self, direction: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sig = self._graphs[direction]
        values = self._sessions[direction].run(list(sig.output_names), {n: inputs[n] for n in sig.input_names})
        return dict(zip(sig.output_names, values))

    def _forward(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._graph("forward", inputs)

    def _inverse(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._graph("inverse", inputs)

    def _log_prob(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if "log_prob" in self._sessions:  # the base's own density, exported as a graph
            return self._graph("log_prob", inputs)
        out = self._forward(inputs)
        z = out["z"].astype(np.float64).reshape(len(out["z"]), -1)
        base = np.sum(-0.5 * np.square(z) - _LOG_SQRT_2PI, axis=1)
        return {"log_prob": (base + out["log_det"]).astype(np.float32)}

    def _sample(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n, seed = int(inputs["n"]), int(inputs["seed"])
        if "sample" in self._sessions:  # base graph: standard noise -> base -> inverse flow
            eps = stateless_normal((n, *self.noise_shape), (seed, 0))
            feeds = {"eps": eps, "temperature": np.asarray(inputs["temperature"], np.float32)}
            if "context" in inputs:
                feeds["context"] = inputs["context"]
            out = self._graph("sample", feeds)
            if not np.all(np.isfinite(out["z"])):
                raise ServingError(f"input 'temperature' of signature 'sample' is too large: the latents are not "
                                   f"finite (got {float(inputs['temperature']):g})", 400)
            return out
        eps = stateless_normal((n, *self.latent_shape), (seed, 0))
        with np.errstate(over="ignore", invalid="ignore"):
            z = eps * np.float32(inputs["temperature"])
        if not np.all(np.isfinite(z)):
            raise ServingError(f"input 'temperature' of signature 'sample' is too large: temperature * noise "
                               f"overflows float32, z is not finite (got {float(inputs['temperature']):g})", 400)
        graph_inputs = {"z": z}
        if "context" in inputs:
            graph_inputs["context"] = inputs["context"]
        return {"x": self._inverse(graph_inputs)["x"], "z": z}

    # ------------------------------------------------------------ requests
    def parse(self, payload: Any, check_bools: bool = True) -> tuple[Signature, dict[str, np.ndarray], bool]:
        """Validates a predict body against the signatures and this server's limits:
        ``(signature, inputs, row_format)`` or a 4xx `ServingError`."""
        sig, inputs, row_format = protocol.parse_predict(payload, self.signatures, self.max_batch, check_bools)
        if sig.name == "sample":
            where = "input '{}' of signature 'sample'"
            n = int(inputs["n"])
            if not 1 <= n <= self.max_n:
                raise ServingError(f"{where.format('n')} must be in [1, {self.max_n}] (this server's max_n), "
                                   f"got {n}", 400)
            if not float(inputs["temperature"]) > 0:
                raise ServingError(f"{where.format('temperature')} must be > 0, got {float(inputs['temperature'])}",
                                   400)
            if "context" in inputs and len(inputs["context"]) != n:
                raise ServingError(f"{where.format('context')} must have one row per sample (n = {n}), "
                                   f"got {len(inputs['context'])}", 400)
        return sig, inputs, row_format

    def run(self, sig: Signature, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Computes ``sig`` on validated inputs (`parse`)."""
        return self._run[sig.name](inputs)

    def check_model(self, name: str, version: str | None) -> None:
        """Raises TF Serving's 404 unless ``name`` (and ``version``, if given) is served."""
        if name != self.name or (version is not None and int(version) != self.version):
            raise protocol.model_not_found(name, version)

    def status(self) -> dict[str, Any]:
        return protocol.status_document(self.version)

    def metadata(self) -> dict[str, Any]:
        levels = self.manifest.num_levels
        return protocol.metadata_document(self.name, self.version, self.signatures,
                                          None if levels is None else {"num_levels": levels})
