"""What the official TF Serving server needs to serve an exported flow (`tfinv serve-config`).

`write_serving_config` writes, into one directory beside the export:

===================================  ===========================================================
``models.config``                    ``tensorflow.serving.ModelServerConfig`` (text format): the
                                     model's name, its base path *inside the container*
                                     (``/models/<name>``), platform ``tensorflow`` and the
                                     version policy (``latest``, ``all`` or ``specific``)
``batching_parameters.txt``          ``tensorflow.serving.BatchingParameters`` (text format)
``docker-compose.yml``               one service on the official ``tensorflow/serving`` image:
                                     REST on 8501, gRPC on 8500, the SavedModel base mounted
                                     read-only at ``/models``, this directory at ``/config``
``docker-run.sh``                    the same server as one ``docker run`` (runs from anywhere)
``SERVING.md``                       how to start it and call it (REST, gRPC, `Client`)
``Dockerfile.onnx``,                 the lean ONNX server (``tfinv-serve`` on onnxruntime, no
``requirements-onnx.txt``,           TensorFlow) for the same model, to compare both
``docker-compose.onnx.yml``          deployments; the export folder is mounted at ``/export``
===================================  ===========================================================

The file texts are templates shipped as package data (``tfinv/serving/templates/``).

The SavedModel base is the directory holding ``<name>/<version>/`` (what
`tfinv.export.to_saved_model` writes, ``OUT/saved_model`` after ``tfinv export``). Paths in the
compose file and the script are relative to this directory, so export and config move together.

**Batching is off by default, on purpose.** TF Serving's ``--enable_batching`` wraps *every*
signature of every model in its batching session, which concatenates requests along dimension 0
and rejects a rank-0 input (``INVALID_ARGUMENT: Batching Run() input tensors must have at least
one dimension``); the ``sample`` signature takes the scalars ``n``, ``seed`` and ``temperature``,
so with batching on, ``sample`` fails while ``forward``/``inverse``/``log_prob`` are batched.
``enable_batching=True`` (``tfinv serve-config --enable-batching``) adds ``--enable_batching
--batching_parameters_file=/config/batching_parameters.txt`` for deployments that do not sample
on the server (sample locally, or draw ``z`` yourself and call ``inverse``). With batching on,
a request larger than ``max_batch_size`` is refused by the server.

The config files are separate from the SavedModel mount (``/config``, not ``/models``): Docker
cannot create a file mount point inside a read-only bind mount, and a directory mount (not a
file mount) lets the server see a rewritten ``models.config`` (files are replaced by rename,
which a single-file bind mount would not follow).

Every file is written to a temporary sibling and renamed into place; nothing is written unless
every argument is valid, and existing files are replaced only with ``overwrite=True``. Files get
the permissions the umask gives.
"""

from __future__ import annotations

import importlib.resources
import ipaddress
import json
import os
import pathlib
import re
import shlex
import uuid
import string
from typing import Sequence, Union

from tfinv.export.signatures import check_model_name
from tfinv import files as tfinv_files

__all__ = ["CONFIG_MOUNT", "DEFAULT_IMAGE", "DEFAULT_ONNX_PORT", "FILES", "saved_model_base_from_manifest",
           "write_serving_config"]

#: The official TF Serving image, pinned to the TensorFlow release this project is built on
#: (TF Serving tags are ``MAJOR.MINOR.PATCH``; ``-gpu`` tags exist for CUDA hosts).
DEFAULT_IMAGE = "tensorflow/serving:2.21.0"

#: Where the config directory is mounted in the container.
CONFIG_MOUNT = "/config"

#: Key in the returned dict -> file name in ``out_dir``.
FILES: dict[str, str] = {
    "models_config": "models.config",
    "batching_parameters": "batching_parameters.txt",
    "docker_compose": "docker-compose.yml",
    "docker_run": "docker-run.sh",
    "readme": "SERVING.md",
    "dockerfile_onnx": "Dockerfile.onnx",
    "requirements_onnx": "requirements-onnx.txt",
    "docker_compose_onnx": "docker-compose.onnx.yml",
}

#: Host port of the lean ONNX server in ``docker-compose.onnx.yml`` (beside TF Serving's 8501).
DEFAULT_ONNX_PORT = 8502

# The official image's entrypoint always starts the server with these container ports.
_CONTAINER_GRPC_PORT, _CONTAINER_REST_PORT = 8500, 8501
_CONTAINER_PATH = re.compile(r"/[A-Za-z0-9._/-]*")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@+-]*")

VersionPolicy = Union[str, Sequence[int]]


# --------------------------------------------------------------------------- validation
def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r} ({type(value).__name__})")
    if value < low or (high is not None and value > high):
        bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ValueError(f"{name} must be {bounds}, got {value}")
    return value


def _versions(model_dir: pathlib.Path) -> list[int]:
    """The version directories TF Serving would load from ``model_dir``: all-digit names holding
    a ``saved_model.pb``."""
    return sorted(int(p.name) for p in model_dir.iterdir()
                  if p.name.isdigit() and p.is_dir() and (p / "saved_model.pb").is_file())


def _check_version_policy(policy: VersionPolicy, available: list[int]) -> tuple[str, tuple[int, ...]]:
    """``"latest"`` / ``"all"`` / a non-empty sequence of versions (each must be exported)."""
    if isinstance(policy, str):
        if policy in ("latest", "all"):
            return policy, ()
        raise ValueError(f"version_policy must be 'latest', 'all' or a list of versions, got {policy!r}")
    if isinstance(policy, (bytes, bytearray)) or not isinstance(policy, Sequence) or not policy:
        raise TypeError(f"version_policy must be 'latest', 'all' or a non-empty list of versions, got {policy!r}")
    versions = tuple(sorted({_check_int("a version in version_policy", v, 1) for v in policy}))
    missing = [v for v in versions if v not in available]
    if missing:
        # TF Serving would wait for them forever at start-up instead of failing.
        raise FileNotFoundError(f"version_policy names version(s) {missing} that are not exported; "
                                f"available: {available}")
    return "specific", versions


def _check_arguments(saved_model_base, out_dir, name, container_base, rest_port, grpc_port,
                     max_batch_size, batch_timeout_micros, num_batch_threads, max_enqueued_batches,
                     version_policy, image, bind_address):
    """Validates everything (before anything is written); returns the normalised values."""
    check_model_name(name)
    base = pathlib.Path(saved_model_base).absolute()
    model_dir = base / name
    if not model_dir.is_dir():
        raise FileNotFoundError(f"{model_dir} does not exist: saved_model_base must be the directory holding "
                                f"{name}/<version>/ (e.g. OUT/saved_model after `tfinv export`)")
    available = _versions(model_dir)
    if not available:
        raise FileNotFoundError(f"{model_dir} has no version directory (<digits>/saved_model.pb); "
                                "TF Serving would have nothing to load")
    policy = _check_version_policy(version_policy, available)
    if not isinstance(container_base, str) or not _CONTAINER_PATH.fullmatch(container_base) \
            or container_base.rstrip("/") in ("", CONFIG_MOUNT) or "//" in container_base \
            or any(part in (".", "..") for part in container_base.split("/")):
        raise ValueError(f"container_base must be an absolute container path like '/models' (letters, digits, "
                         f"'.', '_', '-', '/'; not '/' or {CONFIG_MOUNT!r}), got {container_base!r}")
    rest = _check_int("rest_port", rest_port, 1, 65535)
    grpc = _check_int("grpc_port", grpc_port, 1, 65535)
    if rest == grpc:
        raise ValueError(f"rest_port and grpc_port must differ, both are {rest}")
    _check_int("max_batch_size", max_batch_size, 1)
    _check_int("batch_timeout_micros", batch_timeout_micros, 0)
    _check_int("num_batch_threads", num_batch_threads, 1)
    _check_int("max_enqueued_batches", max_enqueued_batches, 1)
    if not isinstance(image, str) or not _IMAGE.fullmatch(image):
        raise ValueError(f"image must be a Docker image reference like {DEFAULT_IMAGE!r}, got {image!r}")
    if bind_address is not None:
        try:
            ipaddress.ip_address(bind_address)
        except ValueError:
            raise ValueError(f"bind_address must be an IP address (e.g. '127.0.0.1', '0.0.0.0') or None, "
                             f"got {bind_address!r}") from None
    out = pathlib.Path(out_dir).absolute()
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"{out} exists and is not a directory")
    existing = next(p for p in (out, *out.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write the serving files to {out}: {existing} is a file, not a directory")
    if not tfinv_files.is_writable_folder(existing):
        raise PermissionError(f"cannot write the serving files to {out}: {existing} is not writable; "
                              "expected a writable output folder")
    return base, out, container_base.rstrip("/"), rest, grpc, policy, available


# --------------------------------------------------------------------------- file contents
def _template(filename: str, **values) -> str:
    """A file of ``tfinv/serving/templates/`` with ``${...}`` filled in (`string.Template`)."""
    text = importlib.resources.files("tfinv.serving").joinpath("templates", filename).read_text(encoding="utf-8")
    return string.Template(text).substitute(values)


def _requirements_onnx() -> str:
    return importlib.resources.files("tfinv.serving").joinpath("requirements-onnx.txt").read_text(encoding="utf-8")


def _version_rule(policy: tuple[str, tuple[int, ...]]) -> str:
    kind, versions = policy
    if kind == "latest":
        return "latest { num_versions: 1 }"
    if kind == "all":
        return "all {}"
    return "specific { " + " ".join(f"versions: {v}" for v in versions) + " }"


def _server_args(enable_batching: bool) -> list[str]:
    """Arguments appended to the image's entrypoint (which sets --port=8500 --rest_api_port=8501)."""
    args = [f"--model_config_file={CONFIG_MOUNT}/{FILES['models_config']}",
            "--model_config_file_poll_wait_seconds=60"]
    if enable_batching:
        args += ["--enable_batching", f"--batching_parameters_file={CONFIG_MOUNT}/{FILES['batching_parameters']}"]
    return args


def _port(bind_address: str | None, host_port: int, container_port: int) -> str:
    if bind_address is None:
        return f"{host_port}:{container_port}"
    host = f"[{bind_address}]" if ":" in bind_address else bind_address
    return f"{host}:{host_port}:{container_port}"


def _service_name(name: str) -> str:
    return "tfinv-" + re.sub(r"[^a-z0-9_-]", "-", name.lower())


def _relative_source(path: pathlib.Path, out: pathlib.Path) -> str:
    """``path`` relative to ``out`` (POSIX separators), or absolute on another drive."""
    try:
        source = os.path.relpath(path, out)
    except ValueError:  # another drive (Windows)
        return str(path)
    return source.replace(os.sep, "/")


def _batching_text(enable_batching: bool, max_batch_size: int) -> str:
    if enable_batching:
        return (
            f"Batching is **on** (`--enable_batching`, parameters in `batching_parameters.txt`: batches of up to "
            f"{max_batch_size}). TF Serving's batching rejects rank-0 inputs, so the `sample` signature (scalar "
            "`n`, `seed`, `temperature`) fails with `INVALID_ARGUMENT: Batching Run() input tensors must have at "
            "least one dimension`; draw `z` yourself and call `inverse`, or serve without batching. A request "
            f"with more than {max_batch_size} rows is refused.")
    return (
        "Batching is **off**. `batching_parameters.txt` is ready for it: add `--enable_batching "
        f"--batching_parameters_file={CONFIG_MOUNT}/{FILES['batching_parameters']}` to the server arguments "
        "(or regenerate with `tfinv serve-config --enable-batching`). TF Serving then batches every signature, "
        "and the `sample` signature (scalar inputs) stops working: batching rejects rank-0 inputs.")


def _render(name, versions, policy, image, ports, rest, grpc, onnx_port, enable_batching, models_source,
            export_source, container_base, server_args, batching) -> dict[str, str]:
    """Every file's text (keys of `FILES`)."""
    import tfinv

    q = json.dumps  # a JSON string is a valid YAML double-quoted scalar
    service = _service_name(name)
    if os.path.isabs(models_source):
        models_line = f"MODELS={shlex.quote(models_source)}"
    else:  # relative to the script's directory, resolved when the script runs
        models_line = f'MODELS=$(CDPATH= cd -- "$HERE" && CDPATH= cd -- {shlex.quote(models_source)} && pwd)'
    models_for_readme = models_source if os.path.isabs(models_source) else f"$PWD/{models_source}"
    run_line = " \\\n  ".join(
        ["docker run --rm", *[f"-p {shlex.quote(p)}" for p in ports], f"-e {shlex.quote('MODEL_NAME=' + name)}",
         f'-v "{models_for_readme}:{container_base}:ro"', f'-v "$PWD:{CONFIG_MOUNT}:ro"', shlex.quote(image),
         *[shlex.quote(a) for a in server_args]])
    host = ports[0].rsplit(":", 2)[0] if ports[0].count(":") >= 2 else None
    kind, specific = policy
    onnx_port_mapping = _port(host.strip("[]") if host else None, onnx_port, 8501)
    onnx_image = f"{service}-onnx:{tfinv.__version__}"
    common = dict(name=name, version=tfinv.__version__, onnx_image=onnx_image, onnx_port=onnx_port_mapping,
                  export_source=shlex.quote(export_source))
    return {
        "models_config": _template(FILES["models_config"], container_base=container_base, name_json=q(name),
                                   base_path_json=q(f"{container_base}/{name}"), rule=_version_rule(policy)),
        "batching_parameters": _template(
            FILES["batching_parameters"], batching_file=f"{CONFIG_MOUNT}/{FILES['batching_parameters']}",
            **{k: v for k, v in batching.items()}),
        "docker_compose": _template(
            FILES["docker_compose"], service=service, image_json=q(image), name_json=q(name),
            ports="\n".join(f"      - {q(p)}" for p in ports), models_source_json=q(models_source),
            container_base_json=q(container_base), config_mount_json=q(CONFIG_MOUNT),
            command="\n".join(f"      - {q(a)}" for a in server_args)),
        "docker_run": _template(
            FILES["docker_run"], name=name, models_line=models_line,
            service_quoted=shlex.quote(service), port_options="\n".join(f"  -p {shlex.quote(p)} \\" for p in ports),
            model_env_quoted=shlex.quote("MODEL_NAME=" + name), container_base=container_base,
            config_mount=CONFIG_MOUNT, image_quoted=shlex.quote(image),
            server_args="\n".join(f"  {shlex.quote(a)} \\" for a in server_args)),
        "readme": _template(
            FILES["readme"], image=image, versions=", ".join(map(str, versions)),
            policy_text={"latest": "the newest version only", "all": "every exported version"}.get(
                kind, "versions " + ", ".join(map(str, specific))),
            rest_port=rest, grpc_port=grpc, run_line=run_line, host_rest=f"http://127.0.0.1:{rest}",
            host_grpc=f"127.0.0.1:{grpc}", batching=_batching_text(enable_batching, batching["max_batch_size"]),
            onnx_port_host=onnx_port, bind_text=f"`{host}` only" if host else "all interfaces",
            **{k: v for k, v in common.items() if k != "onnx_port"}),
        "dockerfile_onnx": _template(FILES["dockerfile_onnx"], **common),
        "requirements_onnx": _requirements_onnx(),
        "docker_compose_onnx": _template(
            FILES["docker_compose_onnx"], service=service, onnx_image_json=q(onnx_image),
            onnx_port_json=q(onnx_port_mapping), export_source_json=q(export_source)),
    }


# --------------------------------------------------------------------------- writing
def _write_all(files: dict[pathlib.Path, tuple[str, int | None]]) -> None:
    """Writes every file to a hidden temporary sibling first, then renames them all into place
    (a failure while writing leaves the old files untouched and no temporary file behind)."""
    staged: dict[pathlib.Path, pathlib.Path] = {}
    try:
        for path, (text, mode) in files.items():
            tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex}")
            staged[path] = tmp
            with open(tmp, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
            if mode is not None:
                os.chmod(tmp, mode & ~_umask())
        for path, tmp in staged.items():
            os.replace(tmp, path)
    finally:
        for tmp in staged.values():
            if os.path.lexists(tmp):
                os.unlink(tmp)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_serving_config(
    saved_model_base: str | os.PathLike,
    out_dir: str | os.PathLike,
    name: str,
    *,
    container_base: str = "/models",
    rest_port: int = 8501,
    grpc_port: int = 8500,
    max_batch_size: int = 64,
    batch_timeout_micros: int = 2000,
    num_batch_threads: int = 2,
    max_enqueued_batches: int = 100,
    version_policy: VersionPolicy = "latest",
    enable_batching: bool = False,
    image: str = DEFAULT_IMAGE,
    bind_address: str | None = "127.0.0.1",
    overwrite: bool = False,
    onnx_port: int = DEFAULT_ONNX_PORT,
    export_dir: str | os.PathLike | None = None,
) -> dict[str, pathlib.Path]:
    """Writes the TF Serving config for the SavedModel(s) under ``saved_model_base/name``.

    Args:
        saved_model_base: the directory holding ``<name>/<version>/saved_model.pb`` (TF Serving's
            model base), e.g. ``OUT/saved_model`` after ``tfinv export``. Mounted read-only at
            ``container_base`` in the container.
        out_dir: where to write the files (created if missing).
        name: the served model name (``/v1/models/<name>``); must be ``saved_model_base``'s
            subdirectory.
        container_base: the mount point of ``saved_model_base`` in the container;
            ``models.config``'s ``base_path`` is ``<container_base>/<name>``.
        rest_port: host port published for REST (container port 8501).
        grpc_port: host port published for gRPC (container port 8500).
        max_batch_size: `BatchingParameters.max_batch_size`.
        batch_timeout_micros: `BatchingParameters.batch_timeout_micros`.
        num_batch_threads: `BatchingParameters.num_batch_threads`.
        max_enqueued_batches: `BatchingParameters.max_enqueued_batches`.
        version_policy: ``"latest"`` (newest version), ``"all"`` or a list of exported versions.
        enable_batching: start the server with ``--enable_batching`` and the batching file. Off
            by default: TF Serving's batching rejects the scalar inputs of ``sample`` (see the
            module docstring).
        image: the TF Serving image.
        bind_address: host address the ports are published on (``None``: all interfaces).
        overwrite: replace existing files; otherwise refuse if any of them exists.
        onnx_port: host port of the lean ONNX server in ``docker-compose.onnx.yml``.
        export_dir: the ONNX export (``manifest.json``, ``forward.onnx``, ``inverse.onnx``) the
            lean server mounts at ``/export``; default: ``saved_model_base``'s parent (the layout
            ``tfinv export`` writes).

    Returns:
        `FILES`' keys -> the written paths.

    Raises:
        ValueError, TypeError: a bad argument.
        FileNotFoundError: no exported version under ``saved_model_base/name``, or a version in
            ``version_policy`` that is not exported.
        FileExistsError: a file exists and ``overwrite`` is false (nothing is written).
    """
    base, out, container_base, rest, grpc, policy, available = _check_arguments(
        saved_model_base, out_dir, name, container_base, rest_port, grpc_port, max_batch_size,
        batch_timeout_micros, num_batch_threads, max_enqueued_batches, version_policy, image, bind_address)
    if not isinstance(enable_batching, bool):
        raise TypeError(f"enable_batching must be a bool, got {enable_batching!r}")
    paths = {key: out / filename for key, filename in FILES.items()}
    if not overwrite:
        existing = [str(p) for p in paths.values() if os.path.lexists(p)]
        if existing:
            raise FileExistsError(f"{', '.join(existing)} already exist(s); pass overwrite=True (--overwrite) "
                                  "to replace")
    for path in paths.values():
        if path.is_dir():
            raise IsADirectoryError(f"{path} is a directory")

    _check_int("onnx_port", onnx_port, 1, 65535)
    if onnx_port in (rest, grpc):
        raise ValueError(f"onnx_port must differ from rest_port and grpc_port, got {onnx_port}")
    export = base.parent if export_dir is None else pathlib.Path(export_dir).absolute()
    ports = [_port(bind_address, rest, _CONTAINER_REST_PORT), _port(bind_address, grpc, _CONTAINER_GRPC_PORT)]
    batching = dict(max_batch_size=max_batch_size, batch_timeout_micros=batch_timeout_micros,
                    max_enqueued_batches=max_enqueued_batches, num_batch_threads=num_batch_threads)
    texts = _render(name, available, policy, image, ports, rest, grpc, onnx_port, enable_batching,
                    _relative_source(base, out), _relative_source(export, out), container_base,
                    _server_args(enable_batching), batching)
    out.mkdir(parents=True, exist_ok=True)
    _write_all({path: (texts[key], 0o777 if key == "docker_run" else None) for key, path in paths.items()})
    return paths


# --------------------------------------------------------------------------- from an export
def saved_model_base_from_manifest(export_dir: pathlib.Path, name: str | None = None) -> tuple[pathlib.Path, str]:
    """``(saved_model_base, name)`` from ``export_dir/manifest.json`` (keys ``name``, ``saved_model``)."""
    from tfinv.export.manifest import read_manifest

    manifest = read_manifest(export_dir)  # refuses a manifest newer than this tfinv reads
    manifest_path, relative = manifest.path, manifest.saved_model
    if not relative:
        raise ValueError(f"{manifest_path} records no SavedModel ('saved_model'); export without "
                         "--no-saved-model")
    version_dir = pathlib.PurePosixPath(relative)
    if version_dir.is_absolute() or ".." in version_dir.parts or len(version_dir.parts) < 3 \
            or not version_dir.name.isdigit():
        raise ValueError(f"{manifest_path}: 'saved_model' must be a relative path BASE/NAME/VERSION, got {relative!r}")
    exported_name = version_dir.parent.name
    if name is not None and name != exported_name:
        raise ValueError(f"--name {name!r} differs from the exported model name {exported_name!r} "
                         f"({relative}); TF Serving serves the directory name")
    return export_dir.joinpath(*version_dir.parent.parent.parts), exported_name
