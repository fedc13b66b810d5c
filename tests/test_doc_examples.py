"""Every fenced ``python`` block of README.md and every docstring ``Example::`` runs, as written.

README blocks run in order in one namespace (a reader's session: the export block uses the model
the first block trained), in a temporary working directory. The serving block addresses TF
Serving's default ports; here its REST address is mapped to a ``tfinv serve`` process on a free
port and its gRPC address to the fake TF Serving (tests/fake_tf_serving.py) on the SavedModel the
export block wrote — the code is unchanged. Docstring examples run in their module's namespace
(plus ``import tfinv``), with the files they name created first.
"""

from __future__ import annotations

import importlib
import pathlib
import pkgutil
import re
import textwrap

import numpy as np
import pytest

import tfinv

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
_FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def readme_blocks() -> list[str]:
    return _FENCE.findall(README.read_text())


def docstring_examples() -> list[tuple[str, str]]:
    """``(module name, code)`` of every ``Example::`` block in tfinv, tfinv.export, tfinv.serving."""
    found = []
    for info in pkgutil.walk_packages(tfinv.__path__, "tfinv."):
        try:
            module = importlib.import_module(info.name)
        except ImportError:  # an optional extra that is not installed
            continue
        source = pathlib.Path(module.__file__).read_text()
        for match in re.finditer(r"^( *)Example::\n\n((?:\1    .*\n|\n)+)", source, re.M):
            found.append((info.name, textwrap.dedent(match.group(2)).strip() + "\n"))
    return found


def test_the_readme_has_the_blocks_this_test_runs():
    blocks = readme_blocks()
    assert len(blocks) == 4, [b.splitlines()[0] for b in blocks]
    assert "Glow(" in blocks[0] and "fit_flow" in blocks[1] and "export_flow" in blocks[2] and "Client(" in blocks[3]


def test_readme_python_blocks_run_as_written(tmp_path, monkeypatch):
    import fake_tf_serving
    from test_serving_onnx import running_server

    import tfinv.serving

    monkeypatch.chdir(tmp_path)
    usage, training_api, export, client = readme_blocks()
    # The training-API block runs in a namespace of its own (it names its model `model` too).
    trained: dict = {"__name__": "readme"}
    exec(compile(training_api, "README.md[training]", "exec"), trained)
    assert trained["result"].history["loss"] and np.isfinite(trained["result"].history["loss"][-1])
    namespace: dict = {"__name__": "readme"}
    exec(compile(usage, "README.md[usage]", "exec"), namespace)
    model, x = namespace["model"], namespace["x"]
    assert tuple(x.shape) == (8, 8, 8, 1) and tuple(namespace["samples"].shape) == (16, 8, 8, 1)
    assert np.all(np.isfinite(np.asarray(model.log_prob(x))))
    assert np.all(np.isfinite(np.asarray(namespace["cglow"].log_prob(x, context=namespace["one_hot_labels"]))))

    exec(compile(export, "README.md[export]", "exec"), namespace)
    assert {p.name for p in (tmp_path / "export_dir").iterdir()} >= {"forward.onnx", "inverse.onnx", "manifest.json"}

    real_client = tfinv.serving.Client
    with running_server(tmp_path / "export_dir", tmp_path / "server.log") as (_, rest_url), \
            fake_tf_serving.serve_grpc(tmp_path / "models" / "digits" / "1", "digits") as grpc_url:
        addresses = {"http://127.0.0.1:8501": rest_url, "127.0.0.1:8500": grpc_url}

        class MappedClient(real_client):
            def __init__(self, url, *args, **kwargs):
                super().__init__(addresses[url], *args, **kwargs)

        monkeypatch.setattr(tfinv.serving, "Client", MappedClient)
        exec(compile(client, "README.md[serving]", "exec"), namespace)
    # The block's claims: samples reproducible for a seed, the inverse of z is x, and the served
    # model is the trained one.
    first = namespace["x"]
    expected = np.asarray(model.sample(16, temperature=0.7, seed=1))
    from tfinv.testing.contract import relative_error

    assert relative_error(first, expected) <= 1e-4
    assert relative_error(namespace["x_back"], expected) <= 1e-4
    assert relative_error(namespace["log_p"], np.asarray(model.log_prob(expected))) <= 1e-4


EXAMPLES = docstring_examples()


def test_docstring_examples_are_found():
    assert {name for name, _ in EXAMPLES} >= {"tfinv.layers.periodic_conv", "tfinv.data.digits", "tfinv.data.images"}


@pytest.mark.parametrize("module_name, code", EXAMPLES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(EXAMPLES)])
def test_docstring_example_runs_as_written(module_name, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if "faces.npz" in code:  # the file the example reads: 40 small RGB images with 8-bit counts
        rng = np.random.default_rng(0)
        np.savez(tmp_path / "faces.npz", images=rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8))
    namespace = dict(vars(importlib.import_module(module_name)))
    namespace["tfinv"] = tfinv
    exec(compile(code, f"{module_name}[Example]", "exec"), namespace)
