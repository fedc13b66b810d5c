"""scikit-learn's 8x8 handwritten digits, embedded in the package (``tfinv/data/digits.npz``).

1797 grey-level images of shape ``(8, 8)`` with 17 levels (counts ``0 .. 16``) and labels ``0 .. 9``
(the UCI "Optical Recognition of Handwritten Digits" test set as shipped by
``sklearn.datasets.load_digits``). The train/test split is fixed: 1437 train and 360 test images
(the last 20 % of ``numpy.random.default_rng(0).permutation(1797)``), see `tfinv.data.images`.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: TensorFlow is imported where a pipeline is built
    import tensorflow as tf

from tfinv.data.images import TEST_FRACTION, Split, load_npz_arrays, npz_images

__all__ = ["DIGITS_NUM_LEVELS", "DIGITS_PATH", "DIGITS_SHAPE", "digits", "digits_arrays"]

#: Number of grey levels of the digits (counts 0..16): the ``num_levels`` of a digits model.
DIGITS_NUM_LEVELS = 17
#: Shape of one digits image as the loaders yield it.
DIGITS_SHAPE = (8, 8, 1)
#: The embedded archive: ``images`` uint8 ``(1797, 8, 8)``, ``labels`` uint8 ``(1797,)``.
DIGITS_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "digits.npz")


def digits_arrays(split: Split = "train", with_labels: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """The digits split as numpy arrays: uint8 counts ``(n, 8, 8, 1)`` and int64 labels ``(n,)``.

    ``n`` is 1437 for ``"train"``, 360 for ``"test"`` and 1797 for ``"all"``. No noise is added.
    """
    return load_npz_arrays(
        DIGITS_PATH, split, "images", DIGITS_NUM_LEVELS, "labels", with_labels, TEST_FRACTION
    )


def digits(
    batch_size: int = 64,
    split: Split = "train",
    dequantize: bool = True,
    seed: int = 0,
    shuffle: bool = True,
    fixed_noise: bool | None = None,
    with_labels: bool = False,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Dequantised digits as a batched `tf.data.Dataset` of float32 ``(B, 8, 8, 1)`` images.

    Values are ``counts + U[0, 1)`` in ``[0, 17)`` — not rescaled: ``tfinv.models.Glow(num_levels=17)``
    scales them in its `LogitPreprocess` front layer. The ``"train"`` split draws fresh noise every
    epoch; ``"test"`` and ``"all"`` use fixed noise (a function of ``seed`` and the image) so that
    evaluation is reproducible. ``seed`` drives shuffling and noise, never the split.

    Example::

        model = tfinv.models.Glow((8, 8, 1), steps_per_level=1, hidden_channels=16,
                                  num_levels=tfinv.data.DIGITS_NUM_LEVELS)
        train = tfinv.data.digits(batch_size=64)
        model.initialize(next(iter(train)))
        model.compile(optimizer="adam")
        model.fit(train, epochs=1, validation_data=tfinv.data.digits(split="test", shuffle=False))

    Args:
        batch_size: images per batch.
        split: ``"train"`` (1437 images), ``"test"`` (360) or ``"all"`` (1797).
        dequantize: add uniform noise; if False the counts come back as float32 integers.
        seed: seed of the shuffling and the noise.
        shuffle: reshuffle every epoch.
        fixed_noise: override the split's default noise mode (see above).
        with_labels: yield ``(x, y)`` pairs with int64 labels ``0 .. 9``.
        drop_remainder: drop a last, smaller batch.
    """
    return npz_images(
        DIGITS_PATH,
        key="images",
        num_levels=DIGITS_NUM_LEVELS,
        batch_size=batch_size,
        split=split,
        dequantize=dequantize,
        seed=seed,
        shuffle=shuffle,
        fixed_noise=fixed_noise,
        with_labels=with_labels,
        label_key="labels",
        drop_remainder=drop_remainder,
    )
