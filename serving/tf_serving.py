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
===================================  ===========================================================

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
every argument is valid, and existing files are replaced only with ``overwrite=True``.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import pathlib
import re
import shlex
import uuid
from typing import Sequence, Union

__all__ = ["CONFIG_MOUNT", "DEFAULT_IMAGE", "FILES", "register", "run", "write_serving_config"]

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
}

# The official image's entrypoint always starts the server with these container ports.
_CONTAINER_GRPC_PORT, _CONTAINER_REST_PORT = 8500, 8501
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
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
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError("model name must be 1-128 characters of letters, digits, '.', '_' or '-', starting "
                         f"with a letter or digit (it becomes /v1/models/<name> in URLs), got {name!r}")
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
    return base, out, container_base.rstrip("/"), rest, grpc, policy, available


# --------------------------------------------------------------------------- file contents
def _header(what: str) -> str:
    return f"# Generated by `tfinv serve-config` ({what}).\n"


def _models_config(name: str, base_path: str, policy: tuple[str, tuple[int, ...]]) -> str:
    kind, versions = policy
    if kind == "latest":
        rule = "latest { num_versions: 1 }"
    elif kind == "all":
        rule = "all {}"
    else:
        rule = "specific { " + " ".join(f"versions: {v}" for v in versions) + " }"
    return (
        _header("tensorflow.serving.ModelServerConfig, text format")
        + "# Paths are inside the container: the SavedModel base is mounted at "
        + f"{base_path.rsplit('/', 1)[0]}.\n"
        + "model_config_list {\n"
        + "  config {\n"
        + f"    name: {json.dumps(name)}\n"
        + f"    base_path: {json.dumps(base_path)}\n"
        + '    model_platform: "tensorflow"\n'
        + f"    model_version_policy {{ {rule} }}\n"
        + "  }\n"
        + "}\n"
    )


def _batching_parameters(max_batch_size, batch_timeout_micros, max_enqueued_batches, num_batch_threads) -> str:
    return (
        _header("tensorflow.serving.BatchingParameters, text format")
        + "# Read only when the server runs with --enable_batching "
        + f"--batching_parameters_file={CONFIG_MOUNT}/{FILES['batching_parameters']}.\n"
        + "# Batching rejects rank-0 inputs: the flow's `sample` signature (scalar n, seed,\n"
        + "# temperature) fails while it is on; forward/inverse/log_prob are batched.\n"
        + f"max_batch_size {{ value: {max_batch_size} }}\n"
        + f"batch_timeout_micros {{ value: {batch_timeout_micros} }}\n"
        + f"max_enqueued_batches {{ value: {max_enqueued_batches} }}\n"
        + f"num_batch_threads {{ value: {num_batch_threads} }}\n"
    )


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


def _docker_compose(name, image, models_source, container_base, ports, server_args) -> str:
    q = json.dumps  # a JSON string is a valid YAML double-quoted scalar
    lines = [
        _header("Docker Compose; run `docker compose up -d` in this directory").rstrip("\n"),
        "services:",
        f"  {_service_name(name)}:",
        f"    image: {q(image)}",
        "    restart: unless-stopped",
        "    ports:",
        *[f"      - {q(p)}" for p in ports],
        "    environment:",
        f"      MODEL_NAME: {q(name)}",
        "    volumes:",
        "      - type: bind",
        f"        source: {q(models_source)}",
        f"        target: {q(container_base)}",
        "        read_only: true",
        "      - type: bind",
        f"        source: {q('.')}",
        f"        target: {q(CONFIG_MOUNT)}",
        "        read_only: true",
        "    command:",
        *[f"      - {q(a)}" for a in server_args],
    ]
    return "\n".join(lines) + "\n"


def _docker_run(name, image, models_source, container_base, ports, server_args) -> str:
    q = shlex.quote
    if os.path.isabs(models_source):
        models = f"MODELS={q(models_source)}"
    else:  # relative to this script's directory, resolved when the script runs
        models = f'MODELS=$(CDPATH= cd -- "$HERE" && CDPATH= cd -- {q(models_source)} && pwd)'
    lines = [
        "#!/bin/sh",
        _header("serves the model with the official TF Serving image").rstrip("\n"),
        f"# REST: http://<host>:<port>/v1/models/{name}   gRPC: <host>:<port>. Extra arguments go to the server.",
        "set -eu",
        'HERE=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)',
        models,
        f"exec docker run --rm --name {q(_service_name(name))} \\",
        *[f"  -p {q(p)} \\" for p in ports],
        f"  -e {q('MODEL_NAME=' + name)} \\",
        f'  -v "$MODELS:{container_base}:ro" \\',
        f'  -v "$HERE:{CONFIG_MOUNT}:ro" \\',
        f"  {q(image)} \\",
        *[f"  {q(a)} \\" for a in server_args],
        '  "$@"',
    ]
    return "\n".join(lines) + "\n"


def _readme(name, versions, policy, image, ports, rest_port, grpc_port, enable_batching, models_source,
            container_base, server_args, max_batch_size) -> str:
    host_rest = f"http://127.0.0.1:{rest_port}"
    host_grpc = f"127.0.0.1:{grpc_port}"
    kind, specific = policy
    policy_text = {"latest": "the newest version only", "all": "every exported version"}.get(
        kind, "versions " + ", ".join(map(str, specific)))
    models = models_source if os.path.isabs(models_source) else f"$PWD/{models_source}"
    run_line = " \\\n  ".join(
        ["docker run --rm", *[f"-p {shlex.quote(p)}" for p in ports], f"-e {shlex.quote('MODEL_NAME=' + name)}",
         f'-v "{models}:{container_base}:ro"', f'-v "$PWD:{CONFIG_MOUNT}:ro"', shlex.quote(image),
         *[shlex.quote(a) for a in server_args]])
    host = ports[0].rsplit(":", 2)[0] if ports[0].count(":") >= 2 else None
    bind_text = f"`{host}` only" if host else "all interfaces"
    batching = (
        f"Batching is **on** (`--enable_batching`, parameters in `batching_parameters.txt`: batches of up to "
        f"{max_batch_size}). TF Serving's batching rejects rank-0 inputs, so the `sample` signature (scalar "
        "`n`, `seed`, `temperature`) fails with `INVALID_ARGUMENT: Batching Run() input tensors must have at "
        "least one dimension`; draw `z` yourself and call `inverse`, or serve without batching. A request with "
        f"more than {max_batch_size} rows is refused."
        if enable_batching else
        "Batching is **off**. `batching_parameters.txt` is ready for it: add `--enable_batching "
        f"--batching_parameters_file={CONFIG_MOUNT}/{FILES['batching_parameters']}` to the server arguments "
        "(or regenerate with `tfinv serve-config --enable-batching`). TF Serving then batches every signature, "
        "and the `sample` signature (scalar inputs) stops working: batching rejects rank-0 inputs."
    )
    return f"""# Serving `{name}` with TF Serving

Generated by `tfinv serve-config`. The official image `{image}` serves the SavedModel
(exported versions: {", ".join(map(str, versions))}; policy: {policy_text}) with
REST on host port {rest_port} and gRPC on host port {grpc_port} (container ports 8501 and 8500).

| file | what |
|---|---|
| `models.config` | `ModelServerConfig`: name `{name}`, base path `/models/{name}` in the container, version policy |
| `batching_parameters.txt` | `BatchingParameters` for `--enable_batching` |
| `docker-compose.yml` | the server as a Compose service |
| `docker-run.sh` | the same server as one `docker run` |

## Start

```sh
docker compose up -d          # in this directory; `docker compose logs -f` to watch it load
# or
sh docker-run.sh
```

The same as one `docker run`, from this directory:

```sh
{run_line}
```

The server re-reads `models.config` every 60 s, and picks up a new version directory
(`tfinv export --version N` into the same base) as the version policy allows.

## Call it

Status and signatures:

```sh
curl {host_rest}/v1/models/{name}
curl {host_rest}/v1/models/{name}/metadata
```

Sample and invert over REST (`sample` takes scalars, so use the columnar `"inputs"` form):

```sh
curl -s -X POST {host_rest}/v1/models/{name}:predict \\
  -d '{{"signature_name": "sample", "inputs": {{"n": 4, "seed": 1, "temperature": 0.7}}}}'
curl -s -X POST {host_rest}/v1/models/{name}:predict \\
  -d '{{"signature_name": "inverse", "inputs": {{"z": [[...latent values...]]}}}}'
```

From Python, over REST or gRPC (`pip install 'tfinv[serving]'`):

```python
from tfinv.serving import Client

with Client("{host_rest}", model="{name}") as client:            # REST
    x, z = client.sample(16, seed=1, temperature=0.7, return_z=True)
    x_back = client.inverse(z)                      # == x
    z_again, log_det = client.forward(x)
    log_p = client.log_prob(x)

with Client("{host_grpc}", model="{name}", transport="grpc") as client:   # gRPC
    x = client.sample(16, seed=1, temperature=0.7)
    print(client.metadata()["metadata"]["signature_def"]["signature_def"].keys())
```

Signatures: `forward` (x -> z, log_det), `inverse` (z -> x, log_det), `sample` (int32 `n`, int32 `seed`,
float32 `temperature` -> x, z; reproducible for a seed), `log_prob` (x -> log_prob), `serving_default`
(= `log_prob`).

## Batching

{batching}

## Notes

- Ports are published on {bind_text} (`--bind-address` of `tfinv serve-config`). TF Serving has no
  authentication: put a proxy in front before exposing it beyond this host.
- GPU hosts: use the `{image}-gpu` image and `--gpus all` (`deploy.resources` in Compose).
"""


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

    Returns:
        ``{"models_config", "batching_parameters", "docker_compose", "docker_run", "readme"}`` ->
        the written paths.

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

    try:
        models_source = os.path.relpath(base, out)
    except ValueError:  # another drive (Windows)
        models_source = str(base)
    models_source = models_source.replace(os.sep, "/") if not os.path.isabs(models_source) else models_source
    ports = [_port(bind_address, rest, _CONTAINER_REST_PORT), _port(bind_address, grpc, _CONTAINER_GRPC_PORT)]
    args = _server_args(enable_batching)
    texts = {
        "models_config": _models_config(name, f"{container_base}/{name}", policy),
        "batching_parameters": _batching_parameters(max_batch_size, batch_timeout_micros, max_enqueued_batches,
                                                    num_batch_threads),
        "docker_compose": _docker_compose(name, image, models_source, container_base, ports, args),
        "docker_run": _docker_run(name, image, models_source, container_base, ports, args),
    }
    texts["readme"] = _readme(name, available, policy, image, ports, rest, grpc, enable_batching, models_source,
                              container_base, args, max_batch_size)
    out.mkdir(parents=True, exist_ok=True)
    _write_all({path: (texts[key], 0o777 if key == "docker_run" else None) for key, path in paths.items()})
    return paths


# --------------------------------------------------------------------------- `tfinv serve-config`
def _version_policy_arg(text: str) -> VersionPolicy:
    if text in ("latest", "all"):
        return text
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'latest', 'all' or versions like '1,2', got {text!r}") from None


def register(commands) -> None:
    """Adds ``serve-config`` to the ``tfinv`` subcommands (``tfinv.commands`` entry point)."""
    parser = commands.add_parser(
        "serve-config",
        help="write models.config, batching parameters and a docker compose file for TF Serving",
        description="Write what the official TF Serving image needs to serve the SavedModel of a "
        "`tfinv export` directory: models.config, batching_parameters.txt, docker-compose.yml, "
        "docker-run.sh and SERVING.md.",
    )
    parser.add_argument("--export-dir", required=True, help="a directory written by `tfinv export`")
    parser.add_argument("--name", default=None, help="served model name (default: the exported one)")
    parser.add_argument("--out", default=None, help="output directory (default: EXPORT_DIR/serving)")
    parser.add_argument("--rest-port", type=int, default=8501, help="host port for REST (default: 8501)")
    parser.add_argument("--grpc-port", type=int, default=8500, help="host port for gRPC (default: 8500)")
    parser.add_argument("--bind-address", default="127.0.0.1",
                        help="host address the ports are published on (default: 127.0.0.1; "
                        "0.0.0.0: all interfaces)")
    parser.add_argument("--version-policy", type=_version_policy_arg, default="latest",
                        help="'latest' (default), 'all', or comma-separated versions like 1,2")
    parser.add_argument("--enable-batching", action="store_true",
                        help="start the server with --enable_batching (the `sample` signature then fails: "
                        "TF Serving's batching rejects its scalar inputs)")
    parser.add_argument("--max-batch-size", type=int, default=64, help="batching: max rows per batch (default: 64)")
    parser.add_argument("--batch-timeout-micros", type=int, default=2000,
                        help="batching: max wait for a batch to fill, in microseconds (default: 2000)")
    parser.add_argument("--num-batch-threads", type=int, default=2,
                        help="batching: threads running batches (default: 2)")
    parser.add_argument("--max-enqueued-batches", type=int, default=100,
                        help="batching: queue length before requests are refused (default: 100)")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"TF Serving image (default: {DEFAULT_IMAGE})")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.set_defaults(func=run)


def _from_manifest(export_dir: pathlib.Path, name: str | None) -> tuple[pathlib.Path, str]:
    """``(saved_model_base, name)`` from ``export_dir/manifest.json`` (keys ``name``, ``saved_model``)."""
    manifest_path = export_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{manifest_path} not found: --export-dir must be a directory written by "
                                "`tfinv export`") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {manifest_path}: {err}") from None
    relative = manifest.get("saved_model") if isinstance(manifest, dict) else None
    if not isinstance(relative, str) or not relative:
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


def run(args: argparse.Namespace) -> int:
    """Runs ``tfinv serve-config``; user errors become `tfinv.cli.UsageError`."""
    from tfinv.cli import UsageError

    export_dir = pathlib.Path(args.export_dir)
    out = pathlib.Path(args.out) if args.out else export_dir / "serving"
    try:
        if not export_dir.is_dir():
            raise FileNotFoundError(f"--export-dir {export_dir} is not a directory")
        base, name = _from_manifest(export_dir, args.name)
        paths = write_serving_config(
            base, out, name, rest_port=args.rest_port, grpc_port=args.grpc_port,
            max_batch_size=args.max_batch_size, batch_timeout_micros=args.batch_timeout_micros,
            num_batch_threads=args.num_batch_threads, max_enqueued_batches=args.max_enqueued_batches,
            version_policy=args.version_policy, enable_batching=args.enable_batching, image=args.image,
            bind_address=args.bind_address or None, overwrite=args.overwrite)
    except (ValueError, TypeError, OSError) as err:
        raise UsageError(str(err)) from err
    for path in paths.values():
        print(f"wrote {path}")
    print(f"start TF Serving: (cd {shlex.quote(str(out))} && docker compose up -d)  "
          f"# REST :{args.rest_port}, gRPC :{args.grpc_port}")
    return 0
