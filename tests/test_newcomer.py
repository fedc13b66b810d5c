"""What a first-day user hits: each test reproduces a failure found by trying tfinv as a new user
(README journeys with their own data, the CLI's defaults, the server's start-up) and checks the fix.
Tiny shapes; no training beyond a step or two."""

from __future__ import annotations

import numpy as np
import pytest

from tfinv.models.flow_gmm import semi_supervised_labels


def test_all_labels_kept_whatever_the_class_sizes():
    # `tfinv train --model flowgmm` keeps every label by default; the embedded digits' classes
    # differ in size (139..155 of 1437), which used to fail "class 0 has 139 examples, fewer than
    # the 143 labels asked per class".
    labels = np.array([0] * 2 + [1] * 5 + [2] * 3)
    kept = semi_supervised_labels(labels, len(labels), 3, seed=0)
    assert kept.dtype == np.int64 and np.array_equal(kept, labels)
    kept[0] = 2  # a copy, not the caller's array
    assert labels[0] == 0
    # Dropping labels still needs the class-balanced share of every class.
    with pytest.raises(ValueError, match="class 0 has 2 examples, fewer than the 3 labels asked per class"):
        semi_supervised_labels(labels, 9, 3)
