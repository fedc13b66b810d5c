import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402

from tfinv.testing.rng import preserved_state  # noqa: E402


@pytest.fixture(autouse=True)
def _restore_global_random_state_and_dtype_policy():
    """No test leaks global RNG state (Python, NumPy, TF, Keras seeds) or the Keras dtype policy
    into the next: whatever a test (or an in-process ``tfinv train``) sets is undone after it."""
    with preserved_state():
        yield
