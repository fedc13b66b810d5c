import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import zlib  # noqa: E402

import pytest  # noqa: E402

from tfinv.testing.rng import preserved_state, seeded  # noqa: E402


def _seed(name: str) -> int:
    return zlib.crc32(name.encode()) % (2**31 - 1)


@pytest.fixture(scope="module", autouse=True)
def _seed_each_module(request):
    """Module-scoped fixtures (models shared by a file's tests) are built under a seed derived from
    the module's name, so they do not depend on which files ran before; restored afterwards."""
    with seeded(_seed(request.module.__name__)):
        yield


@pytest.fixture(autouse=True)
def _seed_each_test_and_restore_global_state(request):
    """Every test starts from a global seed derived from its id (any unseeded draw is the same
    whatever ran before), and no test leaks global RNG state (Python, NumPy, TF, Keras seeds) or
    the Keras dtype policy into the next: whatever it sets (e.g. an in-process ``tfinv train``
    calls ``keras.utils.set_random_seed``) is undone after it."""
    with seeded(_seed(request.node.nodeid)), preserved_state():
        yield


@pytest.fixture(scope="session")
def onnx_glow(tmp_path_factory):
    """``(model, export_dir)``: a small Glow (8x8x1, 2 levels of 1 step, 8 hidden channels, 17 pixel
    levels; data-initialised, weights perturbed by 0.05) and its ONNX export (forward/inverse graphs
    and manifest, no SavedModel), built once and shared read-only by the ONNX serving tests
    (servers read the folder; tests compare with the model's outputs, never change its weights)."""
    import tensorflow as tf

    from tfinv.export import export_flow
    from tfinv.models import Glow
    from tfinv.testing.contract import perturb_weights

    with seeded(_seed("onnx_glow")):
        model = Glow((8, 8, 1), levels=2, steps_per_level=1, hidden_channels=8, num_levels=17)
        model.initialize(tf.random.stateless_uniform((16, 8, 8, 1), [1, 2], 0.5, 16.5))
        perturb_weights(model, 0.05)
        out = tmp_path_factory.mktemp("onnx_glow_export")
        export_flow(model, out, name="digits", saved_model=False)
    return model, out


@pytest.fixture(scope="session")
def tfinv_wheel(tmp_path_factory):
    """A wheel of tfinv built once from this tree (``pip wheel --no-deps``), for the tests that
    install it into a fresh venv (the packaging test and the lean serving install)."""
    import pathlib
    import subprocess
    import sys

    repo = pathlib.Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out),
                    str(repo)], check=True, cwd=out, capture_output=True, timeout=300)
    (wheel,) = out.glob("tfinv-*.whl")
    return wheel


@pytest.fixture(scope="session", autouse=True)
def _no_cpu_xla_training_by_default():
    """Tests train tiny models for a few steps, where an XLA compile costs more than it saves:
    ``compile()`` keeps graph mode on CPU unless a test asks for XLA (``jit_compile=True``) or
    sets ``cpu_xla_training_max_dims`` (the CPU default itself: test_compiled_inference.py).
    Flows of dense vector layers, which opt in through their layers, are kept in graph mode too."""
    from tfinv.core import FlowModel
    from tfinv.models import Glow

    saved = Glow.cpu_xla_training_max_dims, FlowModel.cpu_xla_training_max_dims
    Glow.cpu_xla_training_max_dims = FlowModel.cpu_xla_training_max_dims = 0
    yield
    Glow.cpu_xla_training_max_dims, FlowModel.cpu_xla_training_max_dims = saved
