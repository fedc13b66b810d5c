"""One name for every image source: ``"digits"`` (embedded) or the path of an ``.npz`` file.

Used by the CLI (``tfinv train --dataset digits|PATH.npz``) and the benchmarks, so both read data
through the same validation and the same fixed split as `tfinv.data.digits` and
`tfinv.data.npz_images`.
"""

from __future__ import annotations

import os

import numpy as np

from tfinv.data.digits import DIGITS_NUM_LEVELS, DIGITS_PATH
from tfinv.data.images import TEST_FRACTION, Split, load_npz_arrays

__all__ = ["NAMED_DATASETS", "load_arrays", "resolve_num_levels"]

#: Datasets known by name: name -> (path, image key, label key, num_levels).
NAMED_DATASETS = {"digits": (DIGITS_PATH, "images", "labels", DIGITS_NUM_LEVELS)}

#: ``num_levels`` of an ``.npz`` file when none is given: 8-bit images.
DEFAULT_NPZ_NUM_LEVELS = 256


def resolve_num_levels(dataset: str | os.PathLike, num_levels: int | None = None) -> int:
    """Pixel levels of ``dataset``: fixed for a named dataset, ``num_levels`` (default 256) for a file.

    Raises:
        ValueError: if a named dataset is given a different ``num_levels``.
    """
    name = os.fspath(dataset)
    if name in NAMED_DATASETS:
        fixed = NAMED_DATASETS[name][3]
        if num_levels is not None and int(num_levels) != fixed:
            raise ValueError(f"dataset {name!r} has {fixed} pixel levels, got num_levels={num_levels}")
        return fixed
    return DEFAULT_NPZ_NUM_LEVELS if num_levels is None else int(num_levels)


def load_arrays(
    dataset: str | os.PathLike = "digits",
    split: Split = "train",
    key: str | None = None,
    num_levels: int | None = None,
    with_labels: bool = False,
    label_key: str | None = None,
    test_fraction: float = TEST_FRACTION,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validated, split numpy arrays ``(images, labels)`` of a named dataset or an ``.npz`` file.

    Args:
        dataset: ``"digits"`` or the path of an ``.npz`` file.
        split: ``"train"``, ``"test"`` or ``"all"`` (fixed split, see `tfinv.data.images`).
        key: image array name in a file (default ``"images"``); ignored for named datasets.
        num_levels: pixel levels of a file (default 256); must match a named dataset's if given.
        with_labels: require labels (otherwise they are returned when present, else ``None``).
        label_key: label array name in a file (default ``"labels"``).
        test_fraction: share held out as the test split.

    Returns:
        Integer counts ``(n, H, W, C)`` (not dequantised) and int64 labels ``(n,)`` or ``None``.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: unknown name (a string that is neither a dataset name nor an ``.npz`` path)
            or invalid data; the message says what was expected.
    """
    name = os.fspath(dataset)
    levels = resolve_num_levels(name, num_levels)
    if name in NAMED_DATASETS:
        path, key, label_key, _ = NAMED_DATASETS[name]
    elif name.endswith(".npz") or os.path.isfile(name):
        path, key, label_key = name, key or "images", label_key or "labels"
    else:
        raise ValueError(
            f"unknown dataset {name!r}: expected one of {sorted(NAMED_DATASETS)} or the path of an .npz file"
        )
    return load_npz_arrays(path, split, key, levels, label_key, with_labels, test_fraction)
