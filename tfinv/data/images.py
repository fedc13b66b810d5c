"""Integer images from ``.npz`` files: validation, a fixed train/test split, and dequantised
`tf.data` pipelines.

Images are pixel *counts*: integers in ``[0, num_levels - 1]``. Uniform dequantisation adds
``u ~ U[0, 1)`` to every count, so a model sees ``x = counts + u`` in ``[0, num_levels)``; this is
exactly what `tfinv.layers.LogitPreprocess` (the front layer of `tfinv.models.Glow`) expects, and
``-log p(x) / (D ln 2)`` is then the usual bits/dim bound of the discrete data [1, 2]. Nothing here
rescales to ``[0, 1]``.

Split: the examples are permuted once with ``numpy.random.default_rng(SPLIT_SEED)`` and the last
``ceil(test_fraction * N)`` of that permutation are the test split (360 of digits' 1797 images at
the default ``test_fraction=0.2``). The split never depends on the ``seed`` argument of the loaders,
which only drives shuffling and noise.

Noise: by default the ``"train"`` split draws fresh noise every epoch (every pass over the
dataset), and the ``"test"`` and ``"all"`` splits use *fixed* noise, a function of ``(seed, image
index)`` only, so evaluation is reproducible and independent of the batch size and order.
``fixed_noise=`` overrides either default. Both are deterministic given ``seed``.

Pipelines run with `dataset_options`: tf.data's model-based autotuner is off. On a 2-core CPU its
background thread stalled the end of half of the ``fit`` calls of a small Glow by ~0.5 s (160
steps: 8,100 images/s in those calls vs 13,000-16,000 in the others, none of 10 stalled with it
off; ``fit`` of 5 digits epochs with validation 0.85 s vs 0.94-1.31 s), and these in-memory
pipelines (a gather, a cast, uniform noise) have nothing for it to tune. ``AUTOTUNE``
parallelism then means one call per core.

References:
    [1] Theis et al., "A note on the evaluation of generative models", arXiv:1511.01844.
    [2] Dinh et al., "Density estimation using Real NVP", arXiv:1605.08803, §4.1.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from typing import TYPE_CHECKING, Literal

import numpy as np

if TYPE_CHECKING:  # annotations only: TensorFlow is imported where a pipeline is built
    import tensorflow as tf

__all__ = [
    "SPLITS",
    "SPLIT_SEED",
    "TEST_FRACTION",
    "dataset_options",
    "dequantized_dataset",
    "dequantized_epochs",
    "load_npz_arrays",
    "npz_images",
    "split_indices",
    "steps_per_epoch",
    "validate_images",
]

Split = Literal["train", "test", "all"]

#: Accepted values of ``split``.
SPLITS = ("train", "test", "all")
#: Seed of the one permutation that defines every train/test split (never the loaders' ``seed``).
SPLIT_SEED = 0
#: Default share of the examples held out as the test split (rounded up).
TEST_FRACTION = 0.2


def _count_dtype(num_levels: int) -> np.dtype:
    """Smallest unsigned dtype holding the counts ``0 .. num_levels - 1``."""
    if num_levels <= 2**8:
        return np.dtype(np.uint8)
    if num_levels <= 2**16:
        return np.dtype(np.uint16)
    return np.dtype(np.int64)


def validate_images(array: np.ndarray, num_levels: int, source: str = "array") -> np.ndarray:
    """Checks that ``array`` holds integer pixel counts and returns them as ``(N, H, W, C)``.

    Args:
        array: ``(N, H, W)`` or ``(N, H, W, C)`` numbers, integer-valued, in ``[0, num_levels - 1]``.
            Integer, boolean and floating dtypes are accepted (floats must hold whole numbers).
        num_levels: number of discrete pixel values ``L`` (17 for digits, 256 for 8-bit images).
        source: how errors name the data, e.g. ``"faces.npz, key 'images'"``.

    Returns:
        The counts as ``(N, H, W, C)`` with the smallest unsigned dtype that holds them
        (``uint8`` for ``num_levels <= 256``); a channel axis of 1 is added to ``(N, H, W)`` input.

    Raises:
        ValueError: for a wrong rank, an empty array, a non-numeric dtype, NaN/Inf,
            values outside ``[0, num_levels - 1]`` or non-integer values; the message names
            ``source`` and what was expected.
    """
    if int(num_levels) != num_levels or num_levels < 2:
        raise ValueError(f"num_levels must be an integer >= 2, got {num_levels!r}")
    num_levels = int(num_levels)
    expected = f"integer pixel counts in [0, {num_levels - 1}] (num_levels={num_levels})"
    array = np.asarray(array)
    if array.ndim not in (3, 4):
        raise ValueError(
            f"{source}: expected images of shape (N, H, W) or (N, H, W, C), "
            f"got shape {array.shape} (rank {array.ndim})"
        )
    if array.shape[0] == 0 or 0 in array.shape[1:]:
        raise ValueError(f"{source}: expected at least one non-empty image, got shape {array.shape}")
    kind = array.dtype.kind
    if kind not in "biuf":
        raise ValueError(f"{source}: expected {expected}, got an array of dtype {array.dtype}")
    if kind == "f":
        bad = ~np.isfinite(array)
        if bad.any():
            raise ValueError(
                f"{source}: expected {expected}, got {int(bad.sum())} NaN/Inf value(s) "
                f"(first at index {tuple(int(i) for i in np.argwhere(bad)[0])})"
            )
    low, high = array.min(), array.max()
    if low < 0 or high > num_levels - 1:
        raise ValueError(
            f"{source}: expected {expected}, got values in [{low}, {high}]"
            + (" (pass the matching num_levels)" if low >= 0 else "")
        )
    if kind == "f":
        fractional = array != np.floor(array)
        if fractional.any():
            example = array[tuple(np.argwhere(fractional)[0])]
            raise ValueError(
                f"{source}: expected {expected}, got non-integer values (e.g. {example}); "
                "pass raw counts, not images already scaled or dequantised"
            )
    if array.ndim == 3:
        array = array[..., np.newaxis]
    return array.astype(_count_dtype(num_levels))


def split_indices(
    num_examples: int, split: Split = "train", test_fraction: float = TEST_FRACTION
) -> np.ndarray:
    """Indices of one split: the last ``ceil(test_fraction * N)`` of a fixed permutation are test.

    The permutation is ``numpy.random.default_rng(SPLIT_SEED).permutation(N)``, so a split is the
    same on every machine and run. ``"all"`` returns ``arange(N)`` (the original order).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if split == "all":
        return np.arange(num_examples)
    num_test = math.ceil(test_fraction * num_examples)
    if num_test >= num_examples:
        raise ValueError(
            f"cannot split {num_examples} example(s) with test_fraction={test_fraction}: "
            "the train split would be empty"
        )
    order = np.random.default_rng(SPLIT_SEED).permutation(num_examples)
    return np.sort(order[num_examples - num_test :] if split == "test" else order[: num_examples - num_test])


def load_npz_arrays(
    path: str | os.PathLike,
    split: Split = "train",
    key: str = "images",
    num_levels: int = 256,
    label_key: str | None = "labels",
    with_labels: bool = False,
    test_fraction: float = TEST_FRACTION,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads, validates and splits integer images (and labels) from an ``.npz`` file.

    Args:
        path: a ``.npz`` file (``numpy.savez``) holding ``(N, H, W)`` or ``(N, H, W, C)`` counts.
        split: ``"train"``, ``"test"`` or ``"all"`` (see `split_indices`).
        key: name of the image array in the file.
        num_levels: number of discrete pixel values; counts must lie in ``[0, num_levels - 1]``.
        label_key: name of the label array, ``(N,)`` integers; ``None`` for unlabelled data.
        with_labels: if True, the labels must exist; otherwise they are returned when present.
        test_fraction: share of the examples held out as the test split.

    Returns:
        ``(images, labels)``: counts ``(n, H, W, C)`` (``uint8`` for ``num_levels <= 256``) and
        ``int64`` labels ``(n,)``, or ``None`` when the file has no ``label_key`` array.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file is not an ``.npz`` archive, lacks ``key`` (or ``label_key`` with
            ``with_labels=True``), or holds invalid images or labels (see `validate_images`).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no .npz file at {path!r}")
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: expected an .npz archive (numpy.savez), got another kind of file")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:  # corrupt archives raise several types
        raise ValueError(f"{path}: not a readable .npz archive ({err})") from err
    with archive:
        if key not in archive.files:
            raise ValueError(f"{path}: no array {key!r}; the file holds {sorted(archive.files)} "
                             f"(name the image array with key=..., tfinv's --key)")
        try:
            raw = archive[key]
        except ValueError as err:  # object arrays need pickle, which is refused on purpose
            raise ValueError(f"{path}, key {key!r}: expected a numeric array ({err})") from err
        except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:  # bad CRC, truncated member
            raise ValueError(f"{path}: corrupt .npz archive, array {key!r} cannot be read ({err})") from err
        images = validate_images(raw, num_levels, source=f"{path}, key {key!r}")
        labels = None
        if label_key is not None and label_key in archive.files:
            try:
                raw_labels = archive[label_key]
            except (ValueError, zipfile.BadZipFile, zlib.error, EOFError, OSError) as err:
                raise ValueError(
                    f"{path}: corrupt .npz archive, array {label_key!r} cannot be read ({err})"
                ) from err
            labels = _validate_labels(raw_labels, len(images), f"{path}, key {label_key!r}")
        elif with_labels:
            raise ValueError(
                f"{path}: with_labels=True needs a label array {label_key!r}; "
                f"the file holds {sorted(archive.files)} (name the label array with label_key=..., "
                f"tfinv train's --label-key)"
            )
    index = split_indices(len(images), split, test_fraction)
    return images[index], None if labels is None else labels[index]


def _validate_labels(labels: np.ndarray, num_examples: int, source: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.shape != (num_examples,):
        raise ValueError(f"{source}: expected labels of shape ({num_examples},), got {labels.shape}")
    if labels.dtype.kind not in "biu" and not (
        labels.dtype.kind == "f" and np.isfinite(labels).all() and (labels == np.floor(labels)).all()
    ):
        raise ValueError(f"{source}: expected integer class labels, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def _dataset_arrays(images, labels, batch_size: int, with_labels: bool,
                    allow_empty: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """``(images, labels)`` as arrays after the checks of the dataset builders (``labels`` int64,
    needed only ``with_labels``)."""
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = np.asarray(images)
    if images.ndim != 4 or (len(images) == 0 and not allow_empty):
        raise ValueError(f"expected {'' if allow_empty else 'non-empty '}images of shape (N, H, W, C), "
                         f"got {images.shape}")
    if with_labels:
        if labels is None:
            raise ValueError("with_labels=True needs labels, but this data has none")
        labels = np.asarray(labels, np.int64)
        if labels.shape != images.shape[:1]:
            raise ValueError(f"expected labels of shape ({len(images)},), got {labels.shape}")
    return images, labels


def dataset_options() -> "tf.data.Options":
    """The `tf.data.Options` of tfinv's pipelines: tf.data's model-based autotuner off (see the
    module doc for the stall it caused at the end of ``fit`` calls on a small CPU).
    ``ds.with_options(tfinv.data.dataset_options())`` gives a pipeline of your own the same."""
    import tensorflow as tf

    options = tf.data.Options()
    options.autotune.enabled = False
    return options


def dequantized_dataset(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    batch_size: int = 64,
    dequantize: bool = True,
    seed: int = 0,
    shuffle: bool = True,
    fixed_noise: bool = False,
    with_labels: bool = False,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """A batched `tf.data.Dataset` of float32 ``counts + U[0, 1)`` from validated count arrays.

    Args:
        images: ``(N, H, W, C)`` integer counts, e.g. from `load_npz_arrays`.
        labels: ``(N,)`` integer labels; needed only with ``with_labels=True``.
        batch_size: examples per batch.
        dequantize: add uniform noise; if False the float32 counts are returned unchanged.
        seed: drives shuffling and noise; the same seed gives the same sequence of epochs.
        shuffle: reshuffle the examples every epoch.
        fixed_noise: if True, image ``i`` always gets the same noise (a function of ``seed`` and
            ``i``); if False, fresh noise is drawn every epoch.
        with_labels: yield ``(x, y)`` pairs, ``y`` int64; otherwise ``x`` alone.
        drop_remainder: drop a last, smaller batch (keeps every step's shape equal).

    Returns:
        Batches of float32 ``(B, H, W, C)`` in ``[0, num_levels)`` (or ``(x, y)`` pairs).
    """
    import tensorflow as tf  # here, not at import: `tfinv.data` (PNG grids, counts) works without it

    images, labels = _dataset_arrays(images, labels, batch_size, with_labels)
    event_shape = images.shape[1:]
    seed = int(seed)
    index = np.arange(len(images), dtype=np.int64)
    columns = (index, images) + ((labels,) if with_labels else ())
    ds = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if dequantize and not fixed_noise:
        # One random key per example per epoch: a new, seed-determined sequence every epoch.
        keys = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
        ds = tf.data.Dataset.zip((ds, keys))
    else:
        ds = ds.map(lambda *columns: (columns, tf.constant(seed, tf.int64)))

    def to_float(columns, key):
        x = tf.cast(columns[1], tf.float32)
        if dequantize:
            noise_seed = tf.stack([key, columns[0]])
            x += tf.random.stateless_uniform(event_shape, seed=noise_seed, dtype=tf.float32)
        return (x, columns[2]) if with_labels else x

    ds = ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(int(batch_size), drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
    return ds.with_options(dataset_options())


def _epoch_noise_key(seed: int, epoch: tf.Tensor) -> tf.Tensor:
    """The noise key of one training epoch: distinct from the fixed-noise key ``seed`` and from
    every other epoch's key for seeds below 100003."""
    import tensorflow as tf

    return tf.cast(seed, tf.int64) * 100003 + tf.cast(epoch, tf.int64) + 1


def steps_per_epoch(num_examples: int, batch_size: int, drop_remainder: bool = False) -> int:
    """Batches in one epoch of `dequantized_epochs`."""
    if drop_remainder:
        return int(num_examples) // int(batch_size)
    return math.ceil(int(num_examples) / int(batch_size))


def dequantized_epochs(
    images: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    epochs: int,
    first_epoch: int = 0,
    batch_size: int = 64,
    seed: int = 0,
    with_labels: bool = False,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Training batches of epochs ``first_epoch .. epochs - 1`` back to back, each epoch a
    function of ``(seed, epoch)`` alone.

    Epoch ``e`` is a permutation of the examples (stateless RNG seeded by ``(seed, e)``) with noise
    ``U[0, 1)`` drawn by stateless RNG from ``(seed, e, example index)``; batches never straddle
    two epochs. Unlike `dequantized_dataset`, whose reshuffling depends on how many times the
    dataset object was iterated, epoch ``e`` is the same batches however the run was started: a
    run resumed at epoch ``e`` from a backup (``first_epoch=e``) sees exactly the data an
    uninterrupted run sees. Use with ``model.fit(ds, epochs=epochs, initial_epoch=first_epoch,
    steps_per_epoch=steps_per_epoch(len(images), batch_size, drop_remainder))``.

    Args:
        images: ``(N, H, W, C)`` integer counts.
        labels: ``(N,)`` integer labels; needed only with ``with_labels=True``.
        epochs: index one past the last epoch.
        first_epoch: index of the first epoch yielded.
        batch_size: examples per batch.
        seed: drives shuffling and noise.
        with_labels: yield ``(x, y)`` pairs, ``y`` int64.
        drop_remainder: drop each epoch's last, smaller batch.

    Returns:
        Batches of float32 ``(B, H, W, C)`` in ``[0, num_levels)`` (or ``(x, y)`` pairs).
    """
    import tensorflow as tf

    images, labels = _dataset_arrays(images, labels, batch_size, with_labels, allow_empty=False)
    if not 0 <= int(first_epoch) <= int(epochs):
        raise ValueError(f"expected 0 <= first_epoch <= epochs, got first_epoch={first_epoch}, epochs={epochs}")
    event_shape = images.shape[1:]
    seed, n = int(seed), len(images)
    # Captured by the dataset's functions (eager tensors, not graph constants: no 2 GB limit).
    images_t = tf.convert_to_tensor(images)
    labels_t = tf.convert_to_tensor(labels) if with_labels else None

    def one_epoch(epoch):
        key = _epoch_noise_key(seed, epoch)
        order = tf.argsort(tf.random.stateless_uniform([n], seed=tf.stack([key, tf.constant(-1, tf.int64)])))

        def example(index):
            noise_seed = tf.stack([key, index])
            x = tf.cast(tf.gather(images_t, index), tf.float32)
            x += tf.random.stateless_uniform(event_shape, seed=noise_seed, dtype=tf.float32)
            return (x, tf.gather(labels_t, index)) if with_labels else x

        examples = tf.data.Dataset.from_tensor_slices(tf.cast(order, tf.int64)).map(example)
        return examples.batch(int(batch_size), drop_remainder=drop_remainder)

    epochs_ds = tf.data.Dataset.range(int(first_epoch), int(epochs))
    return epochs_ds.flat_map(one_epoch).prefetch(tf.data.AUTOTUNE).with_options(dataset_options())


def npz_images(
    path: str | os.PathLike,
    key: str = "images",
    num_levels: int = 256,
    batch_size: int = 64,
    split: Split = "train",
    dequantize: bool = True,
    seed: int = 0,
    shuffle: bool = True,
    fixed_noise: bool | None = None,
    with_labels: bool = False,
    label_key: str = "labels",
    test_fraction: float = TEST_FRACTION,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Dequantised integer images from an ``.npz`` file, as a batched `tf.data.Dataset`.

    The file holds ``(N, H, W)`` or ``(N, H, W, C)`` counts in ``[0, num_levels - 1]`` under
    ``key`` (and, optionally, ``(N,)`` integer labels under ``label_key``). Batches are float32
    ``(B, H, W, C)`` values ``counts + U[0, 1)`` in ``[0, num_levels)`` — not rescaled — ready for
    ``tfinv.models.Glow(num_levels=num_levels)``.

    Example::

        train = tfinv.data.npz_images("faces.npz", num_levels=256, batch_size=32)  # images (N, H, W, C)
        model = tfinv.models.Glow((8, 8, 3), steps_per_level=1, hidden_channels=16, num_levels=256)
        model.initialize(next(iter(train)))
        model.compile(optimizer="adam")
        model.fit(train, epochs=1)

    Args:
        path: the ``.npz`` file.
        key: name of the image array.
        num_levels: number of discrete pixel values (256 for 8-bit images).
        batch_size: examples per batch.
        split: ``"train"``, ``"test"`` or ``"all"``; the split is fixed (see the module docstring).
        dequantize: add ``U[0, 1)`` noise to the counts.
        seed: drives shuffling and noise (never the split).
        shuffle: reshuffle every epoch.
        fixed_noise: same noise for an image in every epoch; default: False for ``"train"``,
            True for ``"test"`` and ``"all"`` (reproducible evaluation).
        with_labels: yield ``(x, y)`` pairs (the file must hold ``label_key``).
        label_key: name of the label array.
        test_fraction: share of the examples held out as the test split.
        drop_remainder: drop a last, smaller batch.

    Raises:
        FileNotFoundError, ValueError: see `load_npz_arrays`.
    """
    images, labels = load_npz_arrays(
        path, split, key, num_levels, label_key, with_labels=with_labels, test_fraction=test_fraction
    )
    return dequantized_dataset(
        images,
        labels,
        batch_size=batch_size,
        dequantize=dequantize,
        seed=seed,
        shuffle=shuffle,
        fixed_noise=(split != "train") if fixed_noise is None else fixed_noise,
        with_labels=with_labels,
        drop_remainder=drop_remainder,
    )
