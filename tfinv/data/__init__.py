"""Datasets of integer images, uniform dequantisation and PNG grids.

* `digits`: scikit-learn's 8x8 digits (17 levels), embedded in the package, with a fixed split.
* `npz_images`: any ``.npz`` of ``(N, H, W[, C])`` integer counts through the same path.
* `load_arrays`: the validated, split numpy arrays of either (for the CLI and benchmarks).
* `save_image_grid`: samples or data as a PNG.

Batches hold ``counts + U[0, 1)`` in ``[0, num_levels)``, not rescaled: the model's
`tfinv.layers.LogitPreprocess` front layer does the scaling.
"""

from tfinv.data.digits import DIGITS_NUM_LEVELS, DIGITS_PATH, DIGITS_SHAPE, digits, digits_arrays
from tfinv.data.image_grid import image_grid, save_image_grid
from tfinv.data.images import (
    SPLIT_SEED,
    SPLITS,
    TEST_FRACTION,
    dataset_options,
    dequantized_dataset,
    dequantized_epochs,
    load_npz_arrays,
    npz_images,
    split_indices,
    steps_per_epoch,
    validate_images,
)
from tfinv.data.sources import NAMED_DATASETS, load_arrays, resolve_num_levels

__all__ = [
    "DIGITS_NUM_LEVELS",
    "DIGITS_PATH",
    "DIGITS_SHAPE",
    "NAMED_DATASETS",
    "SPLITS",
    "SPLIT_SEED",
    "TEST_FRACTION",
    "dataset_options",
    "dequantized_dataset",
    "dequantized_epochs",
    "digits",
    "digits_arrays",
    "image_grid",
    "load_arrays",
    "load_npz_arrays",
    "npz_images",
    "resolve_num_levels",
    "save_image_grid",
    "split_indices",
    "steps_per_epoch",
    "validate_images",
]
