"""``manifest.json``: what an ONNX export holds, written by `tfinv.export` and read by the server.

Imports neither TensorFlow nor NumPy (the lean ONNX server reads manifests with it).

The manifest records the model's name, the tfinv version and manifest `FORMAT` that wrote it,
the event shapes (``data_shape``, ``latent_shape``; ``context_shape`` for a conditional model),
the deployment contract (``signatures``, from `tfinv.export.signatures`), and per ONNX graph its
file, input and output names and the parity measured at export. A manifest whose ``format`` is
newer than this tfinv reads is refused (`read_manifest`) with both tfinv versions named.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from typing import Any

from tfinv.export.signatures import BASE_GRAPHS, GRAPHS, Signature, graph_signatures, signatures

__all__ = ["FORMAT", "Manifest", "ManifestError", "read_manifest"]

#: The newest manifest format this tfinv reads. Bump it when a change would make an older server
#: misread an export. Format 1: an unconditional flow with the standard normal base (two graphs);
#: format 2 adds the ``context`` input and the base graphs (written only for exports that use
#: them, so plain exports stay readable by format-1 servers).
FORMAT = 2


class ManifestError(ValueError):
    """A manifest that is missing, unreadable, inconsistent or too new for this tfinv."""


def _tfinv_version() -> str:
    import tfinv  # light: tfinv's package root imports TensorFlow lazily

    return tfinv.__version__


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A validated ``manifest.json``.

    Attributes:
        path: the file read.
        name: the exported model name.
        data_shape, latent_shape: event shapes (no batch axis).
        context_shape: the conditioning input's event shape, ``None`` for an unconditional model.
        graphs: ``{direction: {"path", "inputs", "outputs", ...}}`` for ``forward`` and ``inverse``,
            and ``sample``/``log_prob`` for a base other than the standard normal.
        noise_shape: the base's noise shape when it has its own graphs (``None``: standard normal).
        tfinv_version: the tfinv that wrote it.
        format: its manifest format.
        saved_model: the SavedModel version directory relative to the export, if one was written.
        raw: the whole JSON document.
    """

    path: pathlib.Path
    name: str
    data_shape: tuple[int, ...]
    latent_shape: tuple[int, ...]
    context_shape: tuple[int, ...] | None
    graphs: dict[str, dict[str, Any]]
    noise_shape: tuple[int, ...] | None
    tfinv_version: str
    format: int
    saved_model: str | None
    raw: dict[str, Any]

    @property
    def signatures(self) -> dict[str, Signature]:
        """The deployment contract for this model's shapes."""
        return signatures(self.data_shape, self.latent_shape, self.context_shape)

    @property
    def num_levels(self) -> int | None:
        """The pixel levels of the model's data (``num_levels``, from the manifest or, for
        manifests written before that key, the model config), ``None`` if it records none."""
        for value in (self.raw.get("num_levels"), (self.raw.get("model_config") or {}).get("num_levels")):
            if type(value) is int and value > 1:
                return value
        return None

    def graph_path(self, direction: str) -> pathlib.Path:
        """The ONNX file of ``direction`` (beside the manifest; the recorded name only)."""
        return self.path.parent / pathlib.PurePath(str(self.graphs[direction].get("path", f"{direction}.onnx"))).name


def graph_io(direction: str, context: bool) -> tuple[list[str], list[str]]:
    """``(input names, output names)`` of an ONNX graph, in the contract's order."""
    sig = graph_signatures((1,), (1,), (1,) if context else None)[direction]
    return list(sig.input_names), list(sig.output_names)


def build(*, name: str, model_class: str, model_config: dict[str, Any], data_shape, latent_shape,
          context_shape, opset: int, graphs: dict[str, dict[str, Any]],
          saved_model: str | None = None, base: dict[str, Any] | None = None,
          num_levels: int | None = None) -> dict[str, Any]:
    """The manifest document of an export (``graphs``: per direction, what `OnnxExport.as_dict` gives;
    ``num_levels``: the data's pixel levels, recorded when the model has them)."""
    contract = signatures(data_shape, latent_shape, context_shape)
    manifest: dict[str, Any] = {
        "format": 1 if context_shape is None and base is None else 2,
        "name": name,
        "tfinv_version": _tfinv_version(),
        "model_class": model_class,
        "model_config": model_config,
        "data_shape": list(data_shape),
        "latent_shape": list(latent_shape),
    }
    if context_shape is not None:
        manifest["context_shape"] = list(context_shape)
    if base is not None:  # a base other than the standard normal: {"class", "noise_shape"}
        manifest["base"] = base
    manifest.update({
        "dtype": "float32",
        "opset": opset,
        "signatures": {key: sig.as_dict() for key, sig in contract.items()},
        "graphs": graphs,
    })
    if saved_model is not None:
        manifest["saved_model"] = saved_model
    if num_levels is not None:
        manifest["num_levels"] = int(num_levels)
    return manifest


def dumps(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2) + "\n").encode()


def _shape(path, manifest, key, required=True):
    value = manifest.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, list) or not value or not all(type(v) is int and v > 0 for v in value):
        raise ManifestError(f"{path}: '{key}' must be a non-empty list of positive ints, got {value!r}")
    return tuple(value)


def read_manifest(export_dir: str | os.PathLike) -> Manifest:
    """Reads and validates ``export_dir/manifest.json`` (or the file itself, if given).

    Raises:
        FileNotFoundError: no manifest, or a graph it lists is missing.
        ManifestError: unreadable JSON, a missing key, graph inputs/outputs other than the
            contract's, or a manifest ``format`` newer than this tfinv reads (the message names the
            tfinv that wrote it and this one).
    """
    path = pathlib.Path(export_dir)
    if path.is_dir() or not path.name.endswith(".json"):
        path = path / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: pass the directory `tfinv export` (tfinv.export.export_flow) wrote")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise ManifestError(f"cannot read {path}: {err}") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{path} is not a tfinv export manifest (a JSON object)")
    writer = str(manifest.get("tfinv_version", "unknown"))
    fmt = manifest.get("format", 1)  # manifests before the format field are format 1
    if type(fmt) is not int or fmt < 1:
        raise ManifestError(f"{path}: 'format' must be a positive int, got {fmt!r}")
    if fmt > FORMAT:
        raise ManifestError(
            f"{path} was written by tfinv {writer} (manifest format {fmt}); this is tfinv {_tfinv_version()}, "
            f"which reads manifest formats up to {FORMAT}: upgrade tfinv where the export is served")
    data_shape = _shape(path, manifest, "data_shape")
    latent_shape = _shape(path, manifest, "latent_shape")
    context_shape = _shape(path, manifest, "context_shape", required=False)
    graphs = manifest.get("graphs")
    base = manifest.get("base")
    expected = GRAPHS + (BASE_GRAPHS if base is not None else ())
    if not isinstance(graphs, dict) or any(not isinstance(graphs.get(d), dict) for d in expected):
        raise ManifestError(f"{path}: 'graphs' must describe the graphs {list(expected)}")
    noise_shape = None
    if base is not None:
        noise_shape = _shape(path, base if isinstance(base, dict) else {}, "noise_shape")
    for direction in expected:
        info = graphs[direction]
        want_in, want_out = graph_io(direction, context_shape is not None)
        got_in = info.get("inputs", [info.get("input_name")])
        got_out = list(info.get("outputs", {}))
        if list(got_in) != want_in or sorted(got_out) != sorted(want_out):
            raise ManifestError(f"{path}: the {direction} graph must have inputs {want_in} and outputs {want_out}, "
                                f"the manifest lists {got_in} and {got_out}")
    name = manifest.get("name")
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{path}: 'name' must be a non-empty string, got {name!r}")
    saved_model = manifest.get("saved_model")
    result = Manifest(path=path, name=name, data_shape=data_shape, latent_shape=latent_shape,
                      context_shape=context_shape, graphs=graphs, noise_shape=noise_shape,
                      tfinv_version=writer, format=fmt,
                      saved_model=saved_model if isinstance(saved_model, str) else None, raw=manifest)
    for direction in expected:
        if not result.graph_path(direction).is_file():
            raise FileNotFoundError(f"{result.graph_path(direction)} not found (listed in {path})")
    return result
