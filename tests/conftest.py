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
