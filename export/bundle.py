"""A whole export of a flow: ``forward.onnx``, ``inverse.onnx``, ``manifest.json`` and optionally the
TF Serving SavedModel ``saved_model/<name>/<version>/`` (what ``tfinv export`` writes).

Order of work: validate every argument and the destination (nothing converted yet) -> convert and
check both ONNX graphs in memory -> write every part into a staging folder beside the target ->
rename into place, the manifest last. A failure at any step leaves the destination as it was.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from tfinv.core import FlowModel
from tfinv.export import manifest as manifest_module
from tfinv.export.errors import ExportError
from tfinv.export.files import Staging, check_destination
from tfinv.export.onnx import SUPPORTED_OPSETS, prepare, prepare_base_graph
from tfinv.export.signatures import BASE_GRAPHS, GRAPHS, check_model_name, check_version

__all__ = ["export_flow"]


def export_flow(
    model: FlowModel,
    out_dir: str | os.PathLike,
    name: str | None = None,
    opset: int = 17,
    tolerance: float = 1e-4,
    overwrite: bool = False,
    *,
    saved_model: bool = False,
    version: int = 1,
    max_batch: int | None = None,
) -> dict[str, Any]:
    """Writes ``forward.onnx``, ``inverse.onnx`` and ``manifest.json`` for a flow model, and with
    ``saved_model=True`` the SavedModel ``saved_model/<name>/<version>/``.

    A model whose base distribution is not the standard normal also gets ``sample.onnx`` and
    ``log_prob.onnx`` (`tfinv.export.signatures.BASE_GRAPHS`). Every graph is converted and checked (standard ONNX, parity with TF within ``tolerance``)
    before anything is written; every file appears at once or not at all, with the permissions
    the umask gives. The manifest (`tfinv.export.manifest`) records shapes, the deployment
    contract, opset, the tfinv version, the parity measured at export and the provider.

    Args:
        model: a built `FlowModel`.
        out_dir: the export folder (created if missing).
        name: the served model name (default: the model's); letters, digits, ``.``, ``_``, ``-``.
        opset: 17 or 18.
        tolerance: largest accepted ONNX-vs-TF relative error.
        overwrite: replace existing files (and an existing SavedModel version).
        saved_model: also write the TF Serving SavedModel.
        version: the SavedModel version directory (a positive int).
        max_batch: see `tfinv.export.to_saved_model`.

    Returns:
        The manifest (as written).

    Raises:
        ExportError: the model cannot be exported (nothing is written).
        ValueError, TypeError: a bad name, version, opset or tolerance.
        FileExistsError, NotADirectoryError, IsADirectoryError, PermissionError: the destination
            cannot take the export (checked before any work).
    """
    if not isinstance(model, FlowModel):
        raise ExportError(f"export_flow exports a tfinv FlowModel, got {type(model).__name__}")
    name = check_model_name(model.name if name is None else name)
    check_version(version)
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"opset {opset} is not supported: tf2onnx 1.17 converts opsets <= 18 and the standard DFT "
                          f"op needs >= 17; use one of {SUPPORTED_OPSETS}")
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not tolerance >= 0:
        raise ValueError(f"tolerance must be a number >= 0, got {tolerance!r}")
    if not all(part is None or part.built for part in (model, getattr(model, "base", None),
                                                       getattr(model, "flow", None))):
        raise ExportError(f"{type(model).__name__} '{model.name}' is not built: build or call it before exporting")
    out = pathlib.Path(out_dir)
    saved_model_dir = f"saved_model/{name}/{version}"
    files = [f"{d}.onnx" for d in GRAPHS] + ["manifest.json"]
    check_destination(out, files + ([f"{saved_model_dir}/"] if saved_model else []), overwrite)
    if saved_model:
        from tfinv.export.saved_model import _check_arguments, write_archive

        _check_arguments(model, name, version, max_batch)

    prepared = {}
    for direction in GRAPHS:
        proto, info = prepare(model, direction, opset=opset, tolerance=tolerance)
        prepared[direction] = (proto, info.as_dict())
    base = getattr(model, "base", None)
    standard_base = base is None or type(base).__name__ == "StandardNormal"
    if not standard_base:  # the server cannot compute this base's sampling and density itself
        for kind in BASE_GRAPHS:
            prepared[kind] = prepare_base_graph(model, kind, opset=opset, tolerance=tolerance)
    graphs = {}
    with Staging(out) as staging:
        for direction, (proto, info) in prepared.items():
            with open(staging.path(f"{direction}.onnx"), "xb") as f:
                f.write(proto.SerializeToString())
            graphs[direction] = {**info, "path": f"{direction}.onnx"}
        if saved_model:
            directory = staging.path(saved_model_dir)
            os.mkdir(directory)
            write_archive(model, directory, max_batch)
        manifest = manifest_module.build(
            name=name, model_class=type(model).__name__, model_config=model.get_config(),
            data_shape=model.data_shape, latent_shape=model.latent_shape,
            context_shape=getattr(model, "context_shape", None), opset=opset, graphs=graphs,
            saved_model=saved_model_dir if saved_model else None,
            num_levels=getattr(model, "num_levels", None),
            base=None if standard_base else {"class": type(base).__name__, "noise_shape": list(base.noise_shape)})
        with open(staging.path("manifest.json"), "xb") as f:
            f.write(manifest_module.dumps(manifest))
        staging.commit(overwrite, last=["manifest.json"])
    return manifest
